"""URIs and addresses: SIP and SIPS URIs, other URIs, name-addr and addr-spec.

RFC 3261 sections 19.1 and 20.10. A SIP URI is parsed into its parts and
compared as section 19.1.4 says; a URI of another scheme is kept as written.
A name-addr or addr-spec (To, From, Contact, Route...) is a `NameAddr`: the
URI, the display name and the header's own parameters.

Parsed SIP URIs, and the display-name-and-URI part of addresses, are kept in
caches by text (see `presence.sip.grammar`); each parse builds new objects
from the cached immutable parts.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final

from presence.sip.errors import SIPParseError
from presence.sip.grammar import (
    _CACHE_LIMIT,
    _PARAMS,
    _PARAMS_FULL_RE,
    _QUOTED,
    _TOKEN,
    _paramDict,
    _unbackslash,
    formatParams,
    quote,
    unescape,
)

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


__all__ = [
    "SIPURI",
    "URI",
    "NameAddr",
    "parseNameAddr",
    "parseURI",
]
