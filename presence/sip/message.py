"""SIP messages: requests, responses, and the responses to requests.

RFC 3261 sections 7, 8.2.6 and 20. A message keeps its headers in order as
(name, value) pairs of text, the name lower case with compact forms expanded;
the value of a header is parsed into an object (a `Via`, a `NameAddr`, a
`CSeq`...) only when it is first asked for, and the result is kept. Parse
errors found then raise `SIPParseError`, which the dispatcher turns into 400.

The grammar of values is in `presence.sip.grammar`, URIs and addresses in
`presence.sip.uri`, header names and the other values in
`presence.sip.headers`. This module re-exports their public names, so that
``from presence.sip.message import Via`` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from presence.sip.errors import SIPParseError
from presence.sip.grammar import (
    _CACHE_LIMIT,
    firstElement,
    formatParams,
    isToken,
    parseParams,
    quote,
    splitList,
    unescape,
    unquote,
)
from presence.sip.headers import (
    _INTEGER_CACHE,
    CANONICAL_NAMES,
    COMPACT_FORMS,
    LIST_HEADERS,
    MAGIC_COOKIE,
    MAY_BE_EMPTY,
    CSeq,
    TokenParams,
    Via,
    canonicalName,
    parseCSeq,
    parseEvent,
    parseInteger,
    parseMediaType,
    parseVia,
    salvageVia,
)
from presence.sip.uri import SIPURI, URI, NameAddr, parseNameAddr, parseURI

SIP_VERSION: Final = "SIP/2.0"

#: A whole Accept line -> its media types.
_MEDIA_LIST_CACHE: dict[
    str, tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...]
] = {}


#: Header names as given to `SIPMessage` -> lower case, compact forms
#: expanded: the names a server writes are a few dozen spellings.
_NORMALISED: dict[str, str] = {}


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
        names = _NORMALISED
        out = []
        index: dict[str, list[str]] = {}
        for name, value in headers:
            key = names.get(name)
            if key is None:
                key = name.lower()
                key = COMPACT_FORMS.get(key, key)
                if len(names) < 4096:
                    names[name] = key
            out.append((key, value))
            values = index.get(key)
            if values is None:
                index[key] = [value]
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
            values = self.headerValues("via")
            top = self._cache.get("via:top")
            if top is not None and values:
                # The top one is parsed already (and maybe stamped with
                # received and rport): parse only those below it.
                value = [top, *(parseVia(v) for v in values[1:])]
            else:
                value = [parseVia(v) for v in values]
            self._cache["via"] = value
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
    # The headers are built with their index at once: the names copied are
    # already lower case, so `SIPMessage.__init__`'s pass over them is saved.
    index: dict[str, list[str]] = {}
    vias = request._index.get("via")
    out: list[tuple[str, str]] = [("via", v) for v in vias] if vias else []
    if vias:
        index["via"] = list(vias)
    fromValue = request.header("from")
    if fromValue is not None:
        out.append(("from", fromValue))
        index["from"] = [fromValue]
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
        index["to"] = [to]
    for name in ("call-id", "cseq"):
        value = request.header(name)
        if value is not None:
            out.append((name, value))
            index[name] = [value]
    names = _NORMALISED
    extra: Sequence[tuple[str, str]] = headers
    if server is not None:
        extra = (*headers, ("server", server))
    for given, text in extra:
        key = names.get(given)
        if key is None:
            key = given.lower()
            key = COMPACT_FORMS.get(key, key)
            if len(names) < 4096:
                names[given] = key
        out.append((key, text))
        values = index.get(key)
        if values is None:
            index[key] = [text]
        else:
            values.append(text)
    response: SIPResponse = SIPResponse._fromParsed(out, index, body)
    response.code = code
    response.phrase = phrase or REASON_PHRASES.get(code, "")
    response.version = SIP_VERSION
    return response


__all__ = [
    "CANONICAL_NAMES",
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "MAGIC_COOKIE",
    "MAY_BE_EMPTY",
    "REASON_PHRASES",
    "SIPURI",
    "SIP_VERSION",
    "URI",
    "CSeq",
    "NameAddr",
    "SIPMessage",
    "SIPRequest",
    "SIPResponse",
    "TokenParams",
    "Via",
    "canonicalName",
    "firstElement",
    "formatParams",
    "isToken",
    "parseCSeq",
    "parseEvent",
    "parseInteger",
    "parseMediaType",
    "parseNameAddr",
    "parseParams",
    "parseURI",
    "parseVia",
    "quote",
    "responseTo",
    "salvageVia",
    "splitList",
    "unescape",
    "unquote",
]
