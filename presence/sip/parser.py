"""Bytes to SIP messages: datagrams, and streams framed by Content-Length.

The parser is pure: it knows nothing of transports, time or logging. It finds
the start line and the header boundaries at once and leaves the header values
as text; `presence.sip.message` parses a value when it is first asked for.
Every error is a `SIPParseError`; when the start line was a readable request
the error carries what could be parsed, so that a 400 can still be addressed.
"""

from __future__ import annotations

import re
from typing import Final

from presence.sip.errors import SIPParseError
from presence.sip.grammar import isToken
from presence.sip.headers import COMPACT_FORMS, canonicalName, salvageVia
from presence.sip.message import SIPMessage, SIPRequest, SIPResponse

#: The largest message accepted. RFC 3261 section 18.1.1: a UDP datagram
#: cannot carry more; the same bound keeps one TCP message in memory.
MAX_MESSAGE_SIZE: Final = 65535

_FOLD_RE: Final = re.compile(r"[ \t]*\r\n[ \t]+")
_LF_RE: Final = re.compile(r"\r?\n")
_CRLF: Final = "\r\n"
# One header line, from the LF that ends the line before: the name up to the
# colon, then the value without leading whitespace. The value must end at a
# CRLF, so a lone CR inside a line makes the line fail to match; the parser
# counts the matches against the lines to find such lines.
# (The head is normalised to CRLFs first, so "[^\r]" never crosses a line; it
# is also twice as fast as "[^\r\n]".)
_HEADER_RE: Final = re.compile(r"\n([^:\r\n]+):[ \t]*([^\r]*)\r(?=\n)")
_LINE_RE: Final = re.compile(r"([^:\r\n]+):[ \t]*([^\r\n]*)")
# The empty line that ends a head, allowing bare LFs (RFC 3261 7.5 leniency).
_BLANK_RE: Final = re.compile(rb"\r?\n\r?\n")

# Raw header name as written (before the colon) -> lower-case full name.
_NAMES: dict[str, str] = {}
_NAMES_LIMIT: Final = 2048


class KeepAlive:
    """A double-CRLF keep-alive ping read from a stream (RFC 5626 3.5.1)."""

    __slots__ = ()

    def __repr__(self) -> str:
        """Name the ping."""
        return "KEEPALIVE"


KEEPALIVE: Final = KeepAlive()


def _headerName(raw: str) -> str | None:
    name = _NAMES.get(raw)
    if name is None:
        stripped = raw.rstrip(" \t")
        if not isToken(stripped):
            return None
        lower = stripped.lower()
        name = COMPACT_FORMS.get(lower, lower)
        if len(_NAMES) < _NAMES_LIMIT:
            _NAMES[raw] = name
    return name


def _badLine(lines: list[str]) -> str:
    for line in lines:
        m = _LINE_RE.fullmatch(line)
        if m is None or _headerName(m.group(1)) is None:
            return f"malformed header line: {line[:40]!r}"
    return "malformed header line"


def _splitHead(data: bytes | bytearray, start: int = 0) -> tuple[str | None, int, int]:
    """Find the head of the message at the start of ``data`` and decode it.

    The head ends at the first empty line; bare LFs are accepted as line ends
    (RFC 3261 7.5 leniency). ``start`` is where to resume the search for it.

    Returns:
        The head as text, every line ending in CRLF (the empty line not
        included), the number of its lines, and where the body starts; or
        ``(None, 0, -1)`` when there is no empty line yet.
    """
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        text = data[: end + 2].decode("utf-8", "surrogateescape")
        lines = text.count(_CRLF)
        if lines == text.count("\n"):
            return text, lines, end + 4
    # Bare LFs: the head may end earlier, at "\n\n" or "\n\r\n".
    m = _BLANK_RE.search(data, start)
    if m is None:
        return None, 0, -1
    text = _normalise(data[: m.start()])
    return text, text.count(_CRLF), m.end()


def _normalise(head: bytes | bytearray) -> str:
    """Decode a head that has no empty line, making every line end in CRLF."""
    text = _LF_RE.sub(_CRLF, head.decode("utf-8", "surrogateescape"))
    return text if text[-2:] == _CRLF else text + _CRLF


def _parseHeaders(
    text: str, nl: int, lines: int
) -> tuple[list[tuple[str, str]], dict[str, list[str]], str | None]:
    """Parse the header lines of ``text``, which start at index ``nl``.

    Returns:
        The (name, value) pairs, the index of values by name, and the first
        error found or ``None``.
    """
    pairs = _HEADER_RE.findall(text, nl)
    headers: list[tuple[str, str]] = []
    index: dict[str, list[str]] = {}
    error: str | None = None
    names = _NAMES
    append = headers.append
    for raw, value in pairs:
        name = names.get(raw)
        if name is None:
            name = _headerName(raw)
            if name is None:
                if error is None:
                    error = f"malformed header name: {raw[:40]!r}"
                continue
        if value and value[-1] in " \t":
            value = value.rstrip(" \t")
        append((name, value))
        values = index.get(name)
        if values is None:
            index[name] = [value]
        else:
            values.append(value)
    if len(pairs) != lines:
        error = _badLine(text[nl + 1 :].split(_CRLF)[:-1])
    return headers, index, error


def _notUTF8(startLine: str, headers: list[tuple[str, str]]) -> str | None:
    """Name the first part of a head that is not valid UTF-8, if any.

    RFC 3261 section 25.1: the grammar's text (``UTF8-NONASCII`` in quoted
    strings, comments, reason phrases and ``TEXT-UTF8``) is UTF-8, and the
    rest of it is ASCII; bytes that are not UTF-8 are valid nowhere. They
    were decoded as lone surrogates, so that the 400 can echo them back.

    Returns:
        The error, or ``None`` when every part is valid UTF-8.
    """
    if _SURROGATE_RE.search(startLine) is not None:
        return "start line is not valid UTF-8"
    for name, value in headers:
        if _SURROGATE_RE.search(value) is not None:
            return f"{canonicalName(name)} header is not valid UTF-8"
    return None


# What ``surrogateescape`` makes of a byte that is not part of valid UTF-8.
_SURROGATE_RE: Final = re.compile("[\udc80-\udcff]")


def _parseHead(text: str, lines: int) -> tuple[SIPMessage, str | None, int]:
    """Parse a start line and headers (no body yet).

    Args:
        text: the start line and header lines, each ending in CRLF; the empty
            line that ends them is not included.
        lines: how many lines ``text`` has.

    Returns:
        The message with an empty body, the first error found in the header
        lines or ``None``, and the status to answer that error with.

    Raises:
        SIPParseError: the start line is unreadable, or the message is a
            response with a malformed start line (dropped, never answered).
    """
    nl = text.find(_CRLF)
    startLine = text[:nl]
    headers, index, error = _parseHeaders(text, nl + 1, lines - 1)
    if error is not None and ("\r\n " in text or "\r\n\t" in text):
        # Folded lines (RFC 3261 7.3.1) are rare: look for them only when
        # some line did not parse as a header of its own.
        text = _FOLD_RE.sub(" ", text)
        nl = text.find(_CRLF)
        startLine = text[:nl]
        headers, index, error = _parseHeaders(text, nl + 1, text.count(_CRLF) - 1)
    if error is None and not text.isascii():
        error = _notUTF8(startLine, headers)

    code = 400
    if startLine[:4] == "SIP/":
        parts = startLine.split(" ", 2)
        if len(parts) < 2:
            raise SIPParseError(f"malformed status line: {startLine[:60]!r}")
        version, status = parts[0], parts[1]
        phrase = parts[2] if len(parts) == 3 else ""
        if (
            len(status) != 3
            or not status.isdigit()
            or not status.isascii()
            or not "100" <= status <= "699"
        ):
            raise SIPParseError(f"malformed status code: {startLine[:60]!r}")
        if version.upper() != "SIP/2.0":
            raise SIPParseError(f"unsupported SIP version: {version!r}")
        response = SIPResponse._fromParsed(headers, index, b"")
        response.code = int(status)
        response.phrase = phrase
        response.version = version
        if error is not None:
            raise SIPParseError(error)
        return response, None, code

    parts = startLine.split(" ")
    if len(parts) != 3 or not isToken(parts[0]):
        # Extra whitespace in the request line (RFC 4475 3.1.2.7-9) makes it
        # malformed, but the request can still be answered with a 400 when
        # the method and version are where they belong.
        parts = startLine.split()
        if len(parts) < 3 or not isToken(parts[0]) or parts[-1][:4].upper() != "SIP/":
            raise SIPParseError(f"malformed request line: {startLine[:60]!r}")
        parts = [parts[0], " ".join(parts[1:-1]), parts[-1]]
        error = f"malformed request line: {startLine[:60]!r}"
    method, uri, version = parts
    request = SIPRequest._fromParsed(headers, index, b"")
    request.method = method
    request.uriText = uri
    request.version = version
    if error is not None:
        pass
    elif not uri or "<" in uri or ">" in uri:
        error = f"malformed Request-URI: {uri[:60]!r}"
    elif version.upper() != "SIP/2.0":
        error = f"unsupported SIP version: {version!r}"
        code = 505
    else:
        error = _checkTopVia(request)
    return request, error, code


def _checkTopVia(request: SIPRequest) -> str | None:
    """Check the top Via, which every response to the request needs.

    A request whose top Via is malformed (RFC 4475 section 3.1.2.1) but still
    names a sent-protocol and sent-by is an error that can be answered: the
    top Via value is replaced by what could be read of it (as a line of its
    own, followed by the rest of its line), so that the 400 can be routed.
    One without even a sent-by is left for the transport to drop.

    Returns:
        The error, or ``None`` when the top Via is well formed or cannot be
        salvaged.
    """
    try:
        _ = request.topVia
    except SIPParseError as e:
        lines = request._index.get("via")
        via = salvageVia(lines[0]) if lines else None
        if via is None or lines is None:
            return None
        first = lines[0]
        rest = first.split(",", 1)[1].strip() if "," in first else ""
        replaced = [str(via), rest] if rest else [str(via)]
        lines[0:1] = replaced
        headers = request.headers
        for i, (name, _value) in enumerate(headers):
            if name == "via":
                headers[i : i + 1] = [("via", value) for value in replaced]
                break
        request._cache["via:top"] = via
        return e.reason
    return None


def _contentLength(message: SIPMessage) -> int | None:
    """The Content-Length of a parsed head.

    Raises:
        SIPParseError: repeated, negative or not a number.
    """
    lines = message._index.get("content-length")
    if lines is None:
        return None
    if len(lines) != 1:
        raise SIPParseError("more than one Content-Length")
    value = lines[0]
    if not value.isdigit() or not value.isascii() or len(value) > 10:
        raise SIPParseError(f"malformed Content-Length: {value!r}")
    return int(value)


def _fail(message: SIPMessage, reason: str, code: int = 400) -> SIPParseError:
    if isinstance(message, SIPRequest):
        return SIPParseError(reason, message, code)
    return SIPParseError(reason)


def parseDatagram(data: bytes) -> SIPMessage:
    """Parse one message from a UDP datagram (RFC 3261 sections 7 and 18.3).

    Leading CRLFs are skipped (section 7.5). Without a Content-Length the body
    is the rest of the datagram; octets past the Content-Length are discarded;
    a Content-Length past the end of the datagram is an error.

    Raises:
        SIPParseError: the datagram is not a well-formed message.
    """
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    if not data:
        raise SIPParseError("empty message")
    text, lines, bodyStart = _splitHead(data)
    if text is None:
        text = _normalise(data)
        lines = text.count(_CRLF)
        body = b""
    else:
        body = data[bodyStart:]
    message, error, code = _parseHead(text, lines)
    if len(data) > MAX_MESSAGE_SIZE:
        raise _fail(message, "message too large", 513)
    if error is not None:
        raise _fail(message, error, code)
    try:
        length = _contentLength(message)
    except SIPParseError as e:
        raise _fail(message, e.reason) from None
    if length is not None:
        if length > len(body):
            raise _fail(message, "Content-Length larger than the message")
        if length < len(body):
            body = body[:length]
    message.body = body
    return message


class StreamFramer:
    """Frames SIP messages in a byte stream by Content-Length (RFC 3261 18.3).

    Feed it bytes as they arrive; it returns the complete messages and
    keep-alive pings. Once it has returned a `SIPParseError` the stream is
    broken and the framer returns nothing more.
    """

    def __init__(self, maxSize: int = MAX_MESSAGE_SIZE) -> None:
        """Frame messages of at most ``maxSize`` bytes."""
        self.maxSize = maxSize
        self._buffer = bytearray()
        # Where to resume looking for the end of the head being received.
        self._searched = 0
        self._pending: SIPMessage | None = None
        self._needed = 0
        self._broken = False

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of their message."""
        return len(self._buffer)

    def dataReceived(self, data: bytes) -> list[SIPMessage | KeepAlive | SIPParseError]:
        """Take more bytes and return what they complete.

        Returns:
            Messages, `KEEPALIVE` pings, and at most one `SIPParseError`,
            always last, after which the stream must be closed.
        """
        if self._broken:
            return []
        buf = self._buffer
        buf += data
        out: list[SIPMessage | KeepAlive | SIPParseError] = []
        while buf:
            pending = self._pending
            if pending is not None:
                needed = self._needed
                if len(buf) < needed:
                    break
                pending.body = bytes(buf[:needed])
                del buf[:needed]
                self._pending = None
                out.append(pending)
                continue
            if buf[0] in b"\r\n":
                if buf[:4] == b"\r\n\r\n":
                    out.append(KEEPALIVE)
                    del buf[:4]
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(buf):
                    break
                stripped = len(buf) - len(buf.lstrip(b"\r\n"))
                if buf.find(b"\r\n\r\n", 0, stripped) >= 0:
                    out.append(KEEPALIVE)
                del buf[:stripped]
                continue
            text, lines, bodyStart = _splitHead(buf, self._searched)
            if text is None:
                self._searched = max(0, len(buf) - 3)
                if len(buf) > self.maxSize:
                    out.append(self._broke(SIPParseError("header too large")))
                break
            self._searched = 0
            try:
                message, error, code = _parseHead(text, lines)
                if error is not None:
                    raise _fail(message, error, code)
                try:
                    length = _contentLength(message)
                except SIPParseError as e:
                    raise _fail(message, e.reason) from None
                if length is None:
                    raise _fail(message, "Content-Length is required on a stream")
                if bodyStart + length > self.maxSize:
                    raise _fail(message, "message too large", 513)
            except SIPParseError as e:
                out.append(self._broke(e))
                break
            del buf[:bodyStart]
            if length == 0:
                message.body = b""
                out.append(message)
            else:
                self._pending = message
                self._needed = length
        return out

    def _broke(self, error: SIPParseError) -> SIPParseError:
        self._broken = True
        self._pending = None
        self._buffer = bytearray()
        return error
