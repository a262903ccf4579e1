"""Header names, and the values of the headers a presence server reads.

RFC 3261 sections 7.3 and 20, RFC 3581, RFC 6665. Names: the compact forms,
the wire spelling, which headers are lists. Values: `Via`, `CSeq`, and
`TokenParams` for Event, Content-Type and Accept elements, with the numbers
of Expires and Max-Forwards; addresses (To, From, Contact) are
`presence.sip.uri.NameAddr`.

Event, Content-Type, Accept elements and numbers are kept in caches by text
(see `presence.sip.grammar`); each parse builds new objects from the cached
immutable parts.
"""

from __future__ import annotations

import re
from typing import Final

from presence.sip.errors import SIPParseError
from presence.sip.grammar import (
    _CACHE_LIMIT,
    _PARAM_ITEM_RE,
    _PARAMS,
    _TOKEN,
    _paramDict,
    formatParams,
)

# -- names --------------------------------------------------------------------

#: Compact forms (RFC 3261 section 7.3.3 and the event RFCs).
COMPACT_FORMS: Final[dict[str, str]] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
}

#: How header names are written on the wire.
CANONICAL_NAMES: Final[dict[str, str]] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
}

#: Headers whose values may be combined into one line separated by commas
#: (RFC 3261 section 7.3.1). Others (From, Call-ID, the authentication
#: headers, Date...) carry commas inside one value.
LIST_HEADERS: Final = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "service-route",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow",
        "allow-events",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "proxy-require",
        "require",
        "supported",
        "unsupported",
        "warning",
        "alert-info",
        "call-info",
        "error-info",
        "reply-to",
    }
)

#: List headers whose value may be empty: an empty Accept accepts nothing,
#: an empty Allow or Supported lists nothing (RFC 3261 sections 20.1, 20.5, 20.37).
MAY_BE_EMPTY: Final = frozenset(
    {"accept", "accept-encoding", "accept-language", "allow", "supported"}
)


def canonicalName(name: str) -> str:
    """Give the wire spelling of a lower-case header name."""
    known = _SPELLINGS.get(name)
    if known is None:
        known = CANONICAL_NAMES.get(name) or "-".join(
            part.capitalize() for part in name.split("-")
        )
        if len(_SPELLINGS) < 4096:
            _SPELLINGS[name] = known
    return known


# Header name -> wire spelling, filled as names are met.
_SPELLINGS: dict[str, str] = {}


# -- Via ----------------------------------------------------------------------

#: The magic cookie that starts an RFC 3261 branch (section 8.1.1.7).
MAGIC_COOKIE: Final = "z9hG4bK"

_VIA_RE: Final = re.compile(
    r"[ \t]*("
    + _TOKEN
    + r")[ \t]*/[ \t]*("
    + _TOKEN
    + r")[ \t]*/[ \t]*("
    + _TOKEN
    + r")"
    r"[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
    r"(" + _PARAMS + r")[ \t]*"
)


class Via:
    """One Via value (RFC 3261 section 20.42, RFC 3581).

    Attributes:
        transport: the transport, upper case (UDP, TCP, TLS...).
        host: the sent-by host.
        port: the sent-by port, or ``None``.
        params: the parameters, names lower case, in order.
    """

    __slots__ = ("host", "params", "port", "protocol", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        """Build a Via from its parts."""
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.protocol = protocol

    @property
    def branch(self) -> str | None:
        """The branch parameter, or ``None``."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The received parameter, or ``None``."""
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport parameter's value, or ``None`` when absent or empty."""
        value = self.params.get("rport")
        if value is None or not value.isdigit() or not value.isascii():
            return None
        return int(value)

    @property
    def sentBy(self) -> tuple[str, int | None]:
        """The sent-by host (lower case) and port."""
        return self.host.lower(), self.port

    def __str__(self) -> str:
        """Write the Via value."""
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}" + formatParams(
            self.params
        )

    def __repr__(self) -> str:
        """Show the Via."""
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """Compare every part."""
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.protocol,
            self.transport,
            self.host,
            self.port,
            self.params,
        ) == (other.protocol, other.transport, other.host, other.port, other.params)

    def __hash__(self) -> int:
        """Hash the sent-by and branch."""
        return hash((self.host, self.port, self.branch))


def parseVia(text: str) -> Via:
    """Parse one Via value.

    Raises:
        SIPParseError: the value is malformed.
    """
    m = _VIA_RE.fullmatch(text)
    if m is None:
        raise SIPParseError(f"malformed Via: {text!r}")
    name, version, transport, host, port, paramText = m.groups()
    params = _paramDict(paramText)
    portNumber = None
    if port is not None:
        portNumber = int(port)
        if portNumber > 65535:
            raise SIPParseError(f"Via port out of range: {text!r}")
    if "branch" in params and not params["branch"]:
        raise SIPParseError(f"empty branch: {text!r}")
    protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else None
    return Via(
        transport, host, portNumber, params, protocol or f"{name.upper()}/{version}"
    )


_VIA_SENT_BY_RE: Final = re.compile(
    r"[ \t]*(" + _TOKEN + r")[ \t]*/[ \t]*(" + _TOKEN + r")[ \t]*/[ \t]*("
    r"" + _TOKEN + r")[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    r"(?:[ \t]*:[ \t]*([0-9]{1,5}))?(?=[ \t;]|$)"
)


def salvageVia(text: str) -> Via | None:
    """Read what can be read of a malformed Via value, to address a 400.

    RFC 4475 section 3.1.2.1 asks for a 400 to a request whose Via holds empty
    elements and parameters (``SIP/2.0/UDP 192.0.2.15;;,;,,``); the response
    goes where the sent-by of the first element says. This keeps the
    sent-protocol, the sent-by and the well-formed parameters of the first
    element (up to the first comma), and skips the rest.

    Returns:
        The Via, or ``None`` when there is no sent-protocol and sent-by.
    """
    first = text.split(",", 1)[0]
    m = _VIA_SENT_BY_RE.match(first)
    if m is None:
        return None
    name, version, transport, host, port = m.groups()
    portNumber = None if port is None else int(port)
    if portNumber is not None and portNumber > 65535:
        return None
    params: dict[str, str | None] = {}
    for pname, eq, value in _PARAM_ITEM_RE.findall(first, m.end()):
        params.setdefault(pname.lower(), value if eq else None)
    if not params.get("branch", "x"):
        del params["branch"]
    protocol = f"{name.upper()}/{version}"
    return Via(transport, host, portNumber, params, protocol)


# -- CSeq, Event, Content-Type -------------------------------------------------

_CSEQ_RE: Final = re.compile(r"([0-9]{1,10})[ \t]+(" + _TOKEN + r")")


class CSeq:
    """A CSeq value: the sequence number and the method.

    Attributes:
        number: the sequence number, below 2**31.
        method: the method, as written (methods are case-sensitive).
    """

    __slots__ = ("method", "number")

    def __init__(self, number: int, method: str) -> None:
        """Keep the number and method."""
        self.number = number
        self.method = method

    def __str__(self) -> str:
        """Write the value."""
        return f"{self.number} {self.method}"

    def __repr__(self) -> str:
        """Show the value."""
        return f"CSeq({self.number}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        """Compare number and method."""
        if not isinstance(other, CSeq):
            return NotImplemented
        return (self.number, self.method) == (other.number, other.method)

    def __hash__(self) -> int:
        """Hash number and method."""
        return hash((self.number, self.method))


def parseCSeq(text: str) -> CSeq:
    """Parse a CSeq value; the number must be below 2**31 (RFC 3261 8.1.1.5).

    Raises:
        SIPParseError: the value is malformed or the number too large.
    """
    m = _CSEQ_RE.fullmatch(text)
    if m is None:
        raise SIPParseError(f"malformed CSeq: {text!r}")
    number = int(m.group(1))
    if number >= 2**31:
        raise SIPParseError(f"CSeq number too large: {text!r}")
    return CSeq(number, m.group(2))


class TokenParams:
    """A token with parameters: an Event, a Content-Type, an Accept element.

    Attributes:
        value: the token, lower case (event package names and media types
            compare case-insensitively).
        params: the parameters, names lower case.
    """

    __slots__ = ("params", "value")

    def __init__(self, value: str, params: dict[str, str | None] | None = None) -> None:
        """Keep the token and parameters."""
        self.value = value
        self.params = {} if params is None else params

    def __str__(self) -> str:
        """Write the value."""
        return self.value + formatParams(self.params)

    def __repr__(self) -> str:
        """Show the value."""
        return f"TokenParams({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """Compare the token and parameters."""
        if not isinstance(other, TokenParams):
            return NotImplemented
        return (self.value, self.params) == (other.value, other.params)

    def __hash__(self) -> int:
        """Hash the token."""
        return hash(self.value)


_EVENT_RE: Final = re.compile(r"[ \t]*(" + _TOKEN + r")(" + _PARAMS + r")[ \t]*")
_MEDIA_RE: Final = re.compile(
    r"[ \t]*(" + _TOKEN + r"|\*)[ \t]*/[ \t]*(" + _TOKEN + r"|\*)"
    r"(" + _PARAMS + r")[ \t]*"
)

# Values that repeat from message to message (Event, Content-Type, Accept
# elements) parsed once: text -> (value, parameters as pairs). The parts are
# immutable; each parse builds a new TokenParams, which callers may change.
_EVENT_CACHE: dict[str, tuple[str, tuple[tuple[str, str | None], ...]]] = {}
_MEDIA_CACHE: dict[str, tuple[str, tuple[tuple[str, str | None], ...]]] = {}
_INTEGER_CACHE: dict[str, int] = {}


def _tokenParams(
    cache: dict[str, tuple[str, tuple[tuple[str, str | None], ...]]],
    text: str,
    value: str,
    params: dict[str, str | None],
) -> TokenParams:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[text] = (value, tuple(params.items()))
    return TokenParams(value, params)


def parseEvent(text: str) -> TokenParams:
    """Parse an Event or Allow-Events value (RFC 6665 section 8.2.1).

    Raises:
        SIPParseError: the value is malformed.
    """
    cached = _EVENT_CACHE.get(text)
    if cached is not None:
        return TokenParams(cached[0], dict(cached[1]))
    m = _EVENT_RE.fullmatch(text)
    if m is None:
        raise SIPParseError(f"malformed Event: {text!r}")
    return _tokenParams(_EVENT_CACHE, text, m.group(1).lower(), _paramDict(m.group(2)))


def parseMediaType(text: str) -> TokenParams:
    """Parse a media type with parameters (Content-Type, Accept element).

    Raises:
        SIPParseError: the value is malformed.
    """
    cached = _MEDIA_CACHE.get(text)
    if cached is not None:
        return TokenParams(cached[0], dict(cached[1]))
    m = _MEDIA_RE.fullmatch(text)
    if m is None:
        raise SIPParseError(f"malformed media type: {text!r}")
    kind, subtype, paramText = m.groups()
    return _tokenParams(
        _MEDIA_CACHE, text, f"{kind}/{subtype}".lower(), _paramDict(paramText)
    )


def parseInteger(text: str, name: str, limit: int = 2**32 - 1) -> int:
    """Parse a decimal header value such as Expires or Max-Forwards.

    Raises:
        SIPParseError: not a number, or larger than ``limit``.
    """
    value = _INTEGER_CACHE.get(text)
    if value is None:
        digits = text.strip(" \t")
        if not digits.isdigit() or not digits.isascii() or len(digits) > 10:
            raise SIPParseError(f"malformed {name}: {text!r}")
        value = int(digits)
        if len(_INTEGER_CACHE) >= _CACHE_LIMIT:
            _INTEGER_CACHE.clear()
        _INTEGER_CACHE[text] = value
    if value > limit:
        raise SIPParseError(f"{name} too large: {text!r}")
    return value


__all__ = [
    "CANONICAL_NAMES",
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "MAGIC_COOKIE",
    "MAY_BE_EMPTY",
    "CSeq",
    "TokenParams",
    "Via",
    "canonicalName",
    "parseCSeq",
    "parseEvent",
    "parseInteger",
    "parseMediaType",
    "parseVia",
    "salvageVia",
]
