"""SIP messages and the grammar of the headers a presence server reads.

RFC 3261 sections 7, 19, 20 and 25. A message keeps its headers in order as
(name, value) pairs of text, the name lower case with compact forms expanded;
the value of a header is parsed into an object (a `Via`, a `NameAddr`, a
`CSeq`...) only when it is first asked for, and the result is kept. Parse
errors found then raise `SIPParseError`, which the dispatcher turns into 400.

Values that repeat from message to message (URIs, the display-name-and-URI
part of addresses, Event, Content-Type, Accept, numbers) are parsed once and
kept in small module-level caches, emptied when they reach ``_CACHE_LIMIT``
entries. The caches hold only immutable parts; every parse returns new
objects, so changing a parsed value never affects another message.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any, Final

from presence.sip.errors import SIPParseError

SIP_VERSION: Final = "SIP/2.0"
MAGIC_COOKIE: Final = "z9hG4bK"

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

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE: Final = re.compile(_TOKEN)

# Parameters: ;name[=value] where value is a token, a host or a quoted string.
# A quoted string (RFC 3261 25.1: qdtext or a backslash and any character).
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PVALUE = r"(?:" + _QUOTED + r"|[A-Za-z0-9\-.!%*_+`'~:\[\]]+)"
_PARAMS = r"(?:[ \t]*;[ \t]*" + _TOKEN + r"(?:[ \t]*=[ \t]*" + _PVALUE + r")?)*"
_PARAMS_FULL_RE: Final = re.compile(_PARAMS + r"[ \t]*")
_PARAM_ITEM_RE: Final = re.compile(
    r";[ \t]*(" + _TOKEN + r")(?:[ \t]*(=)[ \t]*(" + _PVALUE + r"))?"
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


def isToken(text: str) -> bool:
    """Tell whether ``text`` is a non-empty RFC 3261 token."""
    return _TOKEN_RE.fullmatch(text) is not None


def splitList(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets.

    Args:
        value: the value of a list header.

    Returns:
        The elements, stripped of surrounding whitespace.

    Raises:
        SIPParseError: an element is empty or a quote is unterminated.
    """
    if '"' not in value and "<" not in value:
        parts = [p.strip() for p in value.split(",")]
    else:
        commas, openQuote = _topLevelCommas(value)
        if openQuote:
            raise SIPParseError("unterminated quoted string")
        bounds = [-1, *commas, len(value)]
        parts = [value[start + 1 : end].strip() for start, end in pairwise(bounds)]
    if "" in parts:
        raise SIPParseError("empty element in a list header")
    return parts


def firstElement(value: str) -> str:
    """The first element of a list header value, without parsing the rest.

    Commas inside quotes and angle brackets do not count; the element is
    stripped of surrounding whitespace.
    """
    if "," not in value:
        return value.strip()
    if '"' not in value and "<" not in value:
        return value.split(",", 1)[0].strip()
    commas, _ = _topLevelCommas(value, first=True)
    return value[: commas[0]].strip() if commas else value.strip()


def _topLevelCommas(value: str, first: bool = False) -> tuple[list[int], bool]:
    """The positions of the commas outside quotes and angle brackets.

    Args:
        value: a list header value.
        first: stop at the first such comma.

    Returns:
        The positions, and whether a quoted string was left open.
    """
    commas: list[int] = []
    inQuote = inAngle = False
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if inQuote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                inQuote = False
        elif ch == '"':
            inQuote = True
        elif ch == "<":
            inAngle = True
        elif ch == ">":
            inAngle = False
        elif ch == "," and not inAngle:
            commas.append(i)
            if first:
                break
        i += 1
    return commas, inQuote


def parseParams(text: str, pos: int = 0) -> dict[str, str | None]:
    """Parse ``;name=value`` parameters from ``text`` starting at ``pos``.

    Names are lower-cased; values keep their case, quoted strings keep their
    quotes. Whatever follows the parameters must be whitespace only.

    Raises:
        SIPParseError: the parameters are malformed.
    """
    if pos >= len(text):
        return {}
    if _PARAMS_FULL_RE.fullmatch(text, pos) is None:
        raise SIPParseError(f"malformed parameters: {text[pos:]!r}")
    return _paramDict(text[pos:])


def formatParams(params: dict[str, str | None]) -> str:
    """Write parameters as ``;name=value``, in order."""
    return "".join(
        f";{name}" if value is None else f";{name}={value}"
        for name, value in params.items()
    )


def unquote(text: str) -> str:
    """Remove the quotes and backslash escapes of a quoted string."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _unbackslash(text[1:-1])
    return text


_BACKSLASH_RE: Final = re.compile(r"\\(.)", re.DOTALL)


def _unbackslash(text: str) -> str:
    return _BACKSLASH_RE.sub(r"\1", text) if "\\" in text else text


def quote(text: str) -> str:
    """Write ``text`` as a quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes (RFC 3261 section 19.1.2) as UTF-8."""
    if "%" not in text:
        return text
    encoded = text.encode("utf-8", "surrogateescape")
    raw = _ESCAPE_RE.sub(lambda m: bytes((int(m.group(1), 16),)), encoded)
    return raw.decode("utf-8", "surrogateescape")


_ESCAPE_RE: Final = re.compile(rb"%([0-9A-Fa-f]{2})")


# -- URIs -------------------------------------------------------------------

_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")


class URI:
    """A URI of a scheme other than sip and sips, kept as written.

    Attributes:
        scheme: the scheme, lower case.
        rest: everything after the colon.
    """

    __slots__ = ("rest", "scheme")

    def __init__(self, scheme: str, rest: str) -> None:
        """Keep the scheme and the rest as written."""
        self.scheme = scheme.lower()
        self.rest = rest

    def __str__(self) -> str:
        """Write the URI."""
        return f"{self.scheme}:{self.rest}"

    def __repr__(self) -> str:
        """Show the URI."""
        return f"URI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """Compare scheme and text."""
        if not isinstance(other, URI) or isinstance(other, SIPURI):
            return NotImplemented
        return (self.scheme, self.rest) == (other.scheme, other.rest)

    def __hash__(self) -> int:
        """Hash as the text."""
        return hash((self.scheme, self.rest))


class SIPURI(URI):
    """A SIP or SIPS URI (RFC 3261 section 19.1).

    Attributes:
        user: the user part as written (escapes kept), or ``None``.
        password: the password as written, or ``None``.
        host: the host: a name, an IPv4 address, or an IPv6 reference in
            brackets; as written.
        port: the port, or ``None`` when absent.
        params: the URI parameters, names lower case, in order.
        headers: the header part after ``?``, as written, or ``None``.
    """

    __slots__ = ("headers", "host", "params", "password", "port", "user")

    def __init__(
        self,
        host: str,
        user: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: str | None = None,
        password: str | None = None,
        scheme: str = "sip",
    ) -> None:
        """Build a SIP URI from its parts."""
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = headers

    @property
    def rest(self) -> str:  # type: ignore[override]
        """Everything after the scheme's colon."""
        return str(self)[len(self.scheme) + 1 :]

    @property
    def hostport(self) -> str:
        """The host, with the port when there is one."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, upper case, or ``None``."""
        value = self.params.get("transport")
        return value.upper() if value else None

    def __str__(self) -> str:
        """Write the URI."""
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        if self.params:
            out.append(formatParams(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)

    def __repr__(self) -> str:
        """Show the URI."""
        return f"SIPURI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """Compare as RFC 3261 section 19.1.4 says.

        User and password compare case-sensitively, the host
        case-insensitively, all after unescaping; a port, and the ``user``,
        ``ttl``, ``method``, ``maddr`` and ``transport`` parameters, must be in
        both or neither; other parameters are compared only when in both;
        headers must match as a set.
        """
        if not isinstance(other, SIPURI):
            return NotImplemented
        if (
            self.scheme != other.scheme
            or self.port != other.port
            or self.host.lower() != other.host.lower()
        ):
            return False
        if self.user != other.user and (
            self.user is None
            or other.user is None
            or unescape(self.user) != unescape(other.user)
        ):
            return False
        if self.password != other.password and (
            self.password is None
            or other.password is None
            or unescape(self.password) != unescape(other.password)
        ):
            return False
        if self.headers != other.headers and _headerSet(self.headers) != _headerSet(
            other.headers
        ):
            return False
        mine, theirs = self.params, other.params
        if not mine and not theirs:
            return True
        for name in _STRICT_URI_PARAMS:
            if (name in mine) != (name in theirs):
                return False
        for name, value in mine.items():
            if name in theirs and _paramValue(value) != _paramValue(theirs[name]):
                return False
        return True

    def __hash__(self) -> int:
        """Hash what every equal URI shares."""
        user = None if self.user is None else unescape(self.user)
        return hash((self.scheme, user, self.host.lower(), self.port))

    def aor(self) -> str:
        """The address of record: ``user@host`` lower-cased host, no port.

        The user is unescaped (RFC 3261 section 19.1.4), so ``sip:%61lice@x``
        and ``sip:alice@X`` name the same presentity.
        """
        host = self.host.lower()
        if self.user is None:
            return host
        return f"{unescape(self.user)}@{host}"

    def copy(self, **changes: Any) -> SIPURI:
        """Return a copy with some attributes changed."""
        values: dict[str, Any] = {
            "host": self.host,
            "user": self.user,
            "port": self.port,
            "params": dict(self.params),
            "headers": self.headers,
            "password": self.password,
            "scheme": self.scheme,
        }
        values.update(changes)
        return SIPURI(**values)


def parseURI(text: str) -> URI:
    """Parse a URI; sip and sips are parsed fully, others kept as written.

    Raises:
        SIPParseError: the URI is malformed.
    """
    cached = _URI_CACHE.get(text)
    if cached is not None:
        return _fromParts(cached)
    m = _SCHEME_RE.match(text)
    if m is None:
        raise SIPParseError(f"malformed URI: {text!r}")
    scheme = m.group(1).lower()
    rest = text[m.end() :]
    if scheme not in ("sip", "sips"):
        if not rest or any(c in rest for c in ' \t\r\n<>"'):
            raise SIPParseError(f"malformed URI: {text!r}")
        return URI(scheme, rest)
    return _parseSIPURI(scheme, rest, text)


_UCHAR = r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})"
_PCHAR = r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})"
_PMCHAR = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})"
_HCHAR = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$&=]|%[0-9A-Fa-f]{2})"
# The parts of a SIP URI after the scheme: userinfo, host, port, parameters
# and headers. Every repetition ends at a character that cannot occur inside
# it, so matching takes linear time.
_SIP_URI_REST = (
    r"(?:(" + _UCHAR + r"+)(?::(" + _PCHAR + r"*))?@)?"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?"
    r"((?:;" + _PMCHAR + r"+(?:=" + _PMCHAR + r"*)?)*)"
    r"(?:\?(" + _HCHAR + r"*))?"
)
_SIP_URI_REST_RE: Final = re.compile(_SIP_URI_REST)
_URI_PARAM_ITEM_RE: Final = re.compile(r";([^;=]+)(=?)([^;]*)")

#: A parsed SIP URI: (scheme, user, password, host, port, parameters as
#: pairs, headers). It is immutable, so it can be cached; `_fromParts` builds
#: a new `SIPURI` from it each time, which callers may change freely.
_URIParts = tuple[
    str,
    str | None,
    str | None,
    str,
    int | None,
    tuple[tuple[str, str | None], ...],
    str | None,
]

#: Parsed SIP URIs by text.
_URI_CACHE: dict[str, _URIParts] = {}
#: The size at which a cache of parsed values is emptied.
_CACHE_LIMIT: Final = 4096


def _fromParts(parts: _URIParts) -> SIPURI:
    uri = SIPURI.__new__(SIPURI)
    (
        uri.scheme,
        uri.user,
        uri.password,
        uri.host,
        uri.port,
        params,
        uri.headers,
    ) = parts
    uri.params = dict(params)
    return uri


def _uriParts(
    text: str,
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: str | None,
    paramText: str,
    headers: str | None,
) -> _URIParts:
    """Check and convert the groups of a SIP URI match.

    Raises:
        SIPParseError: the port, host or parameters are malformed.
    """
    portNumber = None
    if port is not None:
        portNumber = int(port)
        if portNumber > 65535:
            raise SIPParseError(f"port out of range in URI: {text!r}")
    if host[0] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SIPParseError(f"malformed IPv6 reference in URI: {text!r}") from None
    elif host[0] in ".-" or ".." in host:
        raise SIPParseError(f"malformed host in URI: {text!r}")
    params: tuple[tuple[str, str | None], ...] = ()
    if paramText:
        items = _URI_PARAM_ITEM_RE.findall(paramText)
        if len(items) == 1:
            name, eq, value = items[0]
            params = ((name.lower(), value if eq else None),)
        else:
            params = tuple(
                [(name.lower(), (value if eq else None)) for name, eq, value in items]
            )
            if len(dict(params)) != len(params):
                # RFC 3261 section 19.1.1: a parameter name appears at most once.
                raise SIPParseError(f"repeated parameter in URI: {text!r}")
    return (scheme, user, password, host, portNumber, params, headers)


#: URI parameters that make two URIs differ when only one has them
#: (RFC 3261 section 19.1.4).
_STRICT_URI_PARAMS: Final = ("user", "ttl", "method", "maddr", "transport")


def _paramValue(value: str | None) -> str | None:
    return None if value is None else unescape(value).lower()


def _headerSet(headers: str | None) -> frozenset[tuple[str, str]]:
    if not headers:
        return frozenset()
    out = set()
    for item in headers.split("&"):
        name, _, value = item.partition("=")
        out.add((unescape(name).lower(), unescape(value)))
    return frozenset(out)


def _parseSIPURI(scheme: str, rest: str, text: str) -> SIPURI:
    m = _SIP_URI_REST_RE.fullmatch(rest)
    if m is None:
        raise SIPParseError(f"malformed URI: {text!r}")
    parts = _uriParts(text, scheme, *m.groups())
    if len(_URI_CACHE) >= _CACHE_LIMIT:
        _URI_CACHE.clear()
    _URI_CACHE[text] = parts
    return _fromParts(parts)


# -- name-addr / addr-spec ----------------------------------------------------


class NameAddr:
    """A name-addr or addr-spec with its header parameters (To, From, Contact).

    Attributes:
        uri: the URI.
        displayName: the display name, unquoted, or ``None``.
        params: the header parameters (``tag``, ``expires``, ``q``...), names
            lower case.
    """

    __slots__ = ("displayName", "params", "uri")

    def __init__(
        self,
        uri: URI,
        displayName: str | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        """Build a name-addr from its parts."""
        self.uri = uri
        self.displayName = displayName
        self.params = {} if params is None else params

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter, or ``None``."""
        return self.params.get("tag")

    def withParams(self, **params: str | None) -> NameAddr:
        """Return a copy with parameters added or replaced."""
        merged = dict(self.params)
        merged.update(params)
        return NameAddr(self.uri, self.displayName, merged)

    def __str__(self) -> str:
        """Write as a name-addr, always with angle brackets."""
        name = ""
        if self.displayName is not None:
            name = (
                self.displayName
                if _TOKEN_DISPLAY_RE.fullmatch(self.displayName)
                else quote(self.displayName)
            ) + " "
        return f"{name}<{self.uri}>{formatParams(self.params)}"

    def __repr__(self) -> str:
        """Show the name-addr."""
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """Compare URI, display name and parameters."""
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (self.uri, self.displayName, self.params) == (
            other.uri,
            other.displayName,
            other.params,
        )

    def __hash__(self) -> int:
        """Hash the URI."""
        return hash(self.uri)


_TOKEN_DISPLAY_RE: Final = re.compile(_TOKEN + r"(?: " + _TOKEN + r")*")


# An optional display name: a quoted string or tokens (RFC 3261 25.1).
_DISPLAY = (
    r"[ \t]*(?:(" + _QUOTED + r")[ \t]*|(" + _TOKEN + r"(?:[ \t]+" + _TOKEN + r")*)"
    r"[ \t]*)?"
)
# A name-addr with any URI, and its header parameters.
_NAME_ADDR_RE: Final = re.compile(_DISPLAY + r"<([^<>\s]*)>(" + _PARAMS + r")[ \t]*")
# The common case in one match: a name-addr whose URI is a SIP or SIPS URI.
_SIP_NAME_ADDR_RE: Final = re.compile(
    _DISPLAY + r"<((?i:sips?)):" + _SIP_URI_REST + r">(" + _PARAMS + r")[ \t]*"
)
_ADDR_SPEC_RE: Final = re.compile(r"[ \t]*([^ \t;<>\"]+)(" + _PARAMS + r")[ \t]*")


def _paramDict(paramText: str) -> dict[str, str | None]:
    """The parameters of text already checked against ``_PARAMS``."""
    if not paramText:
        return {}
    items = _PARAM_ITEM_RE.findall(paramText)
    if len(items) == 1:
        name, eq, value = items[0]
        return {name.lower(): value if eq else None}
    params = {name.lower(): (value if eq else None) for name, eq, value in items}
    if len(params) != len(items):
        # RFC 3261 section 7.3.1: a parameter name appears at most once.
        raise SIPParseError(f"repeated parameter: {paramText!r}")
    return params


#: The part of a name-addr before its parameters (display name and URI in
#: angle brackets) -> (display name, parsed SIP URI or None, URI text).
#: Contacts, Record-Routes and initial To values repeat from message to
#: message; From and To differ mostly in their tags, parsed each time.
_NAME_ADDR_CACHE: dict[str, tuple[str | None, _URIParts | None, str]] = {}
#: Header parameter text -> parameters as pairs (";lr", ";expires=3600").
_PARAMS_CACHE: dict[str, tuple[tuple[str, str | None], ...]] = {}


def _headerParams(text: str) -> dict[str, str | None]:
    """Parse header parameters making up all of ``text``.

    Raises:
        SIPParseError: they are malformed.
    """
    cached = _PARAMS_CACHE.get(text)
    if cached is not None:
        return dict(cached)
    if _PARAMS_FULL_RE.fullmatch(text) is None:
        raise SIPParseError(f"malformed parameters: {text!r}")
    params = _paramDict(text)
    if len(_PARAMS_CACHE) >= _CACHE_LIMIT:
        _PARAMS_CACHE.clear()
    _PARAMS_CACHE[text] = tuple(params.items())
    return params


def parseNameAddr(text: str) -> NameAddr:
    """Parse a name-addr or addr-spec with parameters (RFC 3261 section 20.10).

    After an addr-spec (no angle brackets) every parameter is the header's:
    the URI runs to the first semicolon.

    Raises:
        SIPParseError: the value is malformed.
    """
    end = text.rfind(">") + 1
    if end:
        cached = _NAME_ADDR_CACHE.get(text[:end] if end < len(text) else text)
        if cached is not None:
            # The head of text is a known name-addr without parameters, so
            # the rest (which holds no ">") can only be its parameters.
            displayName, known, uriText = cached
            return NameAddr(
                parseURI(uriText) if known is None else _fromParts(known),
                displayName,
                _headerParams(text[end:]) if end < len(text) else {},
            )
    m = _SIP_NAME_ADDR_RE.fullmatch(text)
    if m is not None:
        g = m.groups()
        quoted, tokens, paramText = g[0], g[1], g[9]
        prefixEnd = m.start(10)
        uriText = text[m.start(3) : prefixEnd - 1]
        sipParts = _uriParts(uriText, g[2].lower(), g[3], g[4], g[5], g[6], g[7], g[8])
        uri: URI = _fromParts(sipParts)
        parts: _URIParts | None = sipParts
        # The Request-URI is often the To URI: keep it for parseURI too.
        if len(_URI_CACHE) >= _CACHE_LIMIT:
            _URI_CACHE.clear()
        _URI_CACHE[uriText] = sipParts
    else:
        m = _NAME_ADDR_RE.fullmatch(text)
        if m is None:
            return _parseAddrSpec(text)
        quoted, tokens, uriText, paramText = m.groups()
        uri = parseURI(uriText)
        parts = None
        prefixEnd = m.start(4)
    displayName = tokens if quoted is None else _unbackslash(quoted[1:-1])
    if len(_NAME_ADDR_CACHE) >= _CACHE_LIMIT:
        _NAME_ADDR_CACHE.clear()
    _NAME_ADDR_CACHE[text[:prefixEnd]] = (displayName, parts, uriText)
    return NameAddr(uri, displayName, _paramDict(paramText))


def _parseAddrSpec(text: str) -> NameAddr:
    m = _ADDR_SPEC_RE.fullmatch(text)
    if m is None or "?" in m.group(1):
        # A URI holding "?" (or ";" or ",") must be in angle brackets.
        if not text.strip():
            raise SIPParseError("empty address")
        raise SIPParseError(f"malformed name-addr: {text!r}")
    uriText, paramText = m.groups()
    return NameAddr(parseURI(uriText), None, _paramDict(paramText))


# -- Via ----------------------------------------------------------------------

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
#: A whole Accept line -> its media types.
_MEDIA_LIST_CACHE: dict[
    str, tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...]
] = {}


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


# -- messages -------------------------------------------------------------------


class SIPMessage:
    """What requests and responses share: headers, body and parsed values.

    The headers are a list of (name, value) pairs: names lower case, compact
    forms expanded, values as text with surrounding whitespace removed.
    Parsed values are computed when first asked for and kept.
    """

    __slots__ = ("_cache", "_index", "body", "headers")

    headers: list[tuple[str, str]]
    body: bytes

    def __init__(self, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Index the headers by name."""
        compact = COMPACT_FORMS
        out = []
        index: dict[str, list[str]] = {}
        for name, value in headers:
            name = name.lower()
            name = compact.get(name, name)
            out.append((name, value))
            values = index.get(name)
            if values is None:
                index[name] = [value]
            else:
                values.append(value)
        self.headers = out
        self.body = body
        self._index = index
        self._cache: dict[str, Any] = {}

    @classmethod
    def _fromParsed(
        cls, headers: list[tuple[str, str]], index: dict[str, list[str]], body: bytes
    ) -> Any:
        # The parser has already lower-cased and indexed the headers.
        self = cls.__new__(cls)
        self.headers = headers
        self._index = index
        self.body = body
        self._cache = {}
        return self

    # Raw access

    def header(self, name: str) -> str | None:
        """The first value of a header, as text, or ``None`` when absent."""
        values = self._index.get(name.lower())
        return values[0] if values else None

    def headerLines(self, name: str) -> list[str]:
        """Every line of a header, unsplit."""
        return list(self._index.get(name.lower(), ()))

    def headerValues(self, name: str) -> list[str]:
        """Every value of a header, lines split at commas for list headers.

        Raises:
            SIPParseError: a list element is empty.
        """
        name = name.lower()
        lines = self._index.get(name)
        if not lines:
            return []
        if name not in LIST_HEADERS:
            return list(lines)
        out: list[str] = []
        for line in lines:
            if "," in line:
                out.extend(splitList(line))
            elif line:
                out.append(line)
            elif name not in MAY_BE_EMPTY:
                raise SIPParseError(f"empty {canonicalName(name)} header")
        return out

    def prependHeader(self, name: str, value: str) -> None:
        """Put a header above every other (a new Via), forgetting parsed ones."""
        name = name.lower()
        self.headers.insert(0, (name, value))
        self._index[name] = [value, *self._index.get(name, ())]
        self._cache.pop(name, None)
        self._cache.pop(name + ":top", None)

    def addHeader(self, name: str, value: str) -> None:
        """Add a header below every other."""
        name = name.lower()
        self.headers.append((name, value))
        self._index.setdefault(name, []).append(value)
        self._cache.pop(name, None)

    def hasHeader(self, name: str) -> bool:
        """Whether the header is present."""
        return name.lower() in self._index

    # Parsed values

    @property
    def vias(self) -> list[Via]:
        """Every Via, topmost first.

        Raises:
            SIPParseError: a Via is malformed.
        """
        value = self._cache.get("via")
        if value is None:
            value = self._cache["via"] = [parseVia(v) for v in self.headerValues("via")]
        return value

    @property
    def topVia(self) -> Via:
        """The topmost Via.

        Only the first Via value is parsed, so that a response can be routed
        even when a Via below it is malformed (`vias` parses them all).

        Raises:
            SIPParseError: missing or malformed.
        """
        vias: list[Via] | None = self._cache.get("via")
        if vias is not None:
            if not vias:
                raise SIPParseError("missing Via")
            return vias[0]
        value: Via | None = self._cache.get("via:top")
        if value is None:
            lines = self._index.get("via")
            if not lines:
                raise SIPParseError("missing Via")
            value = self._cache["via:top"] = parseVia(firstElement(lines[0]))
        return value

    def _single(self, name: str) -> str:
        lines = self._index.get(name)
        if not lines:
            raise SIPParseError(f"missing {canonicalName(name)}")
        if len(lines) > 1:
            raise SIPParseError(f"more than one {canonicalName(name)}")
        return lines[0]

    @property
    def fromAddr(self) -> NameAddr:
        """The From header.

        Raises:
            SIPParseError: missing, repeated or malformed.
        """
        value = self._cache.get("from")
        if value is None:
            value = self._cache["from"] = parseNameAddr(self._single("from"))
        return value

    @property
    def toAddr(self) -> NameAddr:
        """The To header.

        Raises:
            SIPParseError: missing, repeated or malformed.
        """
        value = self._cache.get("to")
        if value is None:
            value = self._cache["to"] = parseNameAddr(self._single("to"))
        return value

    @property
    def callId(self) -> str:
        """The Call-ID.

        Raises:
            SIPParseError: missing, repeated or malformed.
        """
        value = self._single("call-id")
        if not value or " " in value or "\t" in value:
            raise SIPParseError(f"malformed Call-ID: {value!r}")
        return value

    @property
    def cseq(self) -> CSeq:
        """The CSeq.

        Raises:
            SIPParseError: missing, repeated or malformed.
        """
        value = self._cache.get("cseq")
        if value is None:
            value = self._cache["cseq"] = parseCSeq(self._single("cseq"))
        return value

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact (empty for ``Contact: *``, see `contactStar`).

        Raises:
            SIPParseError: a Contact is malformed.
        """
        value = self._cache.get("contact")
        if value is None:
            values = self.headerValues("contact")
            if values == ["*"]:
                value = []
            else:
                value = [parseNameAddr(v) for v in values]
            self._cache["contact"] = value
        return value

    @property
    def contactStar(self) -> bool:
        """Whether the Contact is the single ``*`` of a REGISTER removal."""
        lines = self._index.get("contact")
        return lines is not None and [v.strip() for v in lines] == ["*"]

    def addressList(self, name: str) -> list[NameAddr]:
        """Parse a list header of name-addrs (Route, Record-Route, Path).

        Raises:
            SIPParseError: an element is malformed.
        """
        key = "list:" + name.lower()
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = [
                parseNameAddr(v) for v in self.headerValues(name)
            ]
        return value

    def integer(self, name: str, limit: int = 2**32 - 1) -> int | None:
        """Parse a single-valued integer header, or ``None`` when absent.

        Raises:
            SIPParseError: repeated, not a number, or over ``limit``.
        """
        lines = self._index.get(name)
        if lines is None:
            name = name.lower()
            lines = self._index.get(name)
            if lines is None:
                return None
        if len(lines) == 1:
            value = _INTEGER_CACHE.get(lines[0])
            if value is not None and value <= limit:
                return value
        return parseInteger(self._single(name), canonicalName(name), limit)

    @property
    def expires(self) -> int | None:
        """The Expires header, or ``None`` when absent.

        Raises:
            SIPParseError: malformed or over 2**32-1 (RFC 3261 section 20.19).
        """
        return self.integer("expires")

    @property
    def maxForwards(self) -> int | None:
        """The Max-Forwards header, or ``None`` when absent.

        Raises:
            SIPParseError: malformed or over 255 (RFC 3261 section 20.22).
        """
        return self.integer("max-forwards", 255)

    @property
    def contentLength(self) -> int | None:
        """The Content-Length header, or ``None`` when absent."""
        return self.integer("content-length")

    @property
    def event(self) -> TokenParams | None:
        """The Event header, or ``None`` when absent.

        Raises:
            SIPParseError: malformed or repeated.
        """
        if "event" not in self._index:
            return None
        value = self._cache.get("event")
        if value is None:
            value = self._cache["event"] = parseEvent(self._single("event"))
        return value

    @property
    def contentType(self) -> TokenParams | None:
        """The Content-Type header, or ``None`` when absent.

        Raises:
            SIPParseError: malformed or repeated.
        """
        if "content-type" not in self._index:
            return None
        value = self._cache.get("content-type")
        if value is None:
            value = self._cache["content-type"] = parseMediaType(
                self._single("content-type")
            )
        return value

    def tokens(self, name: str) -> list[str]:
        """The elements of a list header of tokens (Require, Supported...).

        Raises:
            SIPParseError: an element is not a token.
        """
        out = []
        for value in self.headerValues(name):
            if not isToken(value):
                raise SIPParseError(f"malformed {canonicalName(name)}: {value!r}")
            out.append(value)
        return out

    def mediaTypes(self, name: str = "accept") -> list[TokenParams]:
        """The elements of Accept (or another list of media types).

        Raises:
            SIPParseError: an element is malformed.
        """
        name = name.lower()
        lines = self._index.get(name)
        if not lines:
            return []
        if len(lines) == 1:
            cached = _MEDIA_LIST_CACHE.get(lines[0])
            if cached is not None:
                return [TokenParams(value, dict(params)) for value, params in cached]
        types = [parseMediaType(v) for v in self.headerValues(name)]
        if len(lines) == 1:
            if len(_MEDIA_LIST_CACHE) >= _CACHE_LIMIT:
                _MEDIA_LIST_CACHE.clear()
            _MEDIA_LIST_CACHE[lines[0]] = tuple(
                [(t.value, tuple(t.params.items())) for t in types]
            )
        return types

    # Serialisation

    def _startLine(self) -> str:
        raise NotImplementedError()

    def toBytes(self) -> bytes:
        """Write the message with a Content-Length that matches the body."""
        lines = [self._startLine()]
        append = lines.append
        for name, value in self.headers:
            if name != "content-length":
                append(f"{canonicalName(name)}: {value}")
        append(f"Content-Length: {len(self.body)}")
        append("")
        append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        """Write the message."""
        return self.toBytes()

    def _comparable(self) -> tuple[Any, ...]:
        return (
            [(n, v) for n, v in self.headers if n != "content-length"],
            self.body,
        )


class SIPRequest(SIPMessage):
    """A SIP request.

    Attributes:
        method: the method, as written (case-sensitive).
        uriText: the Request-URI as written.
        version: the SIP version as written.
    """

    __slots__ = ("method", "uriText", "version")

    def __init__(
        self,
        method: str,
        uri: str | URI,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        """Build a request; ``uri`` may be text or a parsed URI."""
        super().__init__(headers, body)
        self.method = method
        self.uriText = str(uri)
        self.version = version
        if not isinstance(uri, str):
            self._cache["uri"] = uri

    @property
    def uri(self) -> URI:
        """The Request-URI, parsed.

        Raises:
            SIPParseError: the Request-URI is malformed.
        """
        value = self._cache.get("uri")
        if value is None:
            value = self._cache["uri"] = parseURI(self.uriText)
        return value

    def _startLine(self) -> str:
        return f"{self.method} {self.uriText} {self.version}"

    def __eq__(self, other: object) -> bool:
        """Compare start line, headers (except Content-Length) and body."""
        if not isinstance(other, SIPRequest):
            return NotImplemented
        return (self.method, self.uriText, self.version, *self._comparable()) == (
            other.method,
            other.uriText,
            other.version,
            *other._comparable(),
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        """Show the start line."""
        return f"<SIPRequest {self._startLine()}>"


class SIPResponse(SIPMessage):
    """A SIP response.

    Attributes:
        code: the status code.
        phrase: the reason phrase.
        version: the SIP version as written.
    """

    __slots__ = ("code", "phrase", "version")

    def __init__(
        self,
        code: int,
        phrase: str = "",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        """Build a response."""
        super().__init__(headers, body)
        self.code = code
        self.phrase = phrase or REASON_PHRASES.get(code, "")
        self.version = version

    def _startLine(self) -> str:
        return f"{self.version} {self.code} {self.phrase}"

    def __eq__(self, other: object) -> bool:
        """Compare start line, headers (except Content-Length) and body."""
        if not isinstance(other, SIPResponse):
            return NotImplemented
        return (self.code, self.phrase, self.version, *self._comparable()) == (
            other.code,
            other.phrase,
            other.version,
            *other._comparable(),
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        """Show the start line."""
        return f"<SIPResponse {self._startLine()}>"


REASON_PHRASES: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    489: "Bad Event",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}


def responseTo(
    request: SIPRequest,
    code: int,
    phrase: str = "",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    toTag: str | None = None,
    server: str | None = None,
) -> SIPResponse:
    """Build a response to ``request`` (RFC 3261 section 8.2.6.2).

    Via, From, To, Call-ID and CSeq are copied as written; a To tag is added
    when the To has none and ``toTag`` is given (every response but 100).

    Args:
        request: the request answered.
        code: the status code.
        phrase: the reason phrase; the standard one when empty.
        headers: further headers, in order.
        body: the body.
        toTag: the tag to add to a To that has none.
        server: the value of a Server header to end the headers with.
    """
    out: list[tuple[str, str]] = [("via", v) for v in request.headerLines("via")]
    fromValue = request.header("from")
    if fromValue is not None:
        out.append(("from", fromValue))
    to = request.header("to")
    if to is not None:
        if toTag is not None and code != 100:
            try:
                hasTag = request.toAddr.tag is not None
            except SIPParseError:
                hasTag = True
            if not hasTag:
                to = f"{to};tag={toTag}"
        out.append(("to", to))
    for name in ("call-id", "cseq"):
        value = request.header(name)
        if value is not None:
            out.append((name, value))
    out.extend((n.lower(), v) for n, v in headers)
    if server is not None:
        out.append(("server", server))
    return SIPResponse(code, phrase, out, body)
