"""Bytes to SIP messages: datagrams, and streams framed by Content-Length.

The parser is pure: it knows nothing of transports, time or logging. It finds
the start line and the header boundaries at once and leaves the header values
as text; L{presence.sip.message} parses a value when it is first asked for.
Every error is a L{SIPParseError}; when the start line was a readable request
the error carries what could be parsed, so that a 400 can still be addressed.
"""

from __future__ import annotations

import re
from typing import Final

from presence.errors import SIPParseError
from presence.sip.message import (
    COMPACT_FORMS,
    SIPMessage,
    SIPRequest,
    SIPResponse,
    isToken,
)

#: The largest message accepted (RFC 3261 section 18.1.1: a UDP datagram
#: cannot carry more; the same bound keeps one TCP message in memory).
MAX_MESSAGE_SIZE: Final = 65535

_FOLD_RE: Final = re.compile(r"[ \t]*\r\n[ \t]+")
_LF_RE: Final = re.compile(r"\r?\n")
_CRLF: Final = "\r\n"
_HEADER_RE: Final = re.compile(r"\r\n([^:\r\n]+):[ \t]*([^\r\n]*)")

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


def _badLine(text: str) -> str:
    for line in text.split(_CRLF):
        if line.find(":") <= 0:
            return f"malformed header line: {line[:40]!r}"
    return "malformed header line"


def _parseHead(
    head: bytes,
) -> tuple[SIPMessage, str | None, int]:
    """Parse a start line and headers (no body yet).

    Returns:
        The message with an empty body, the first error found in the header
        lines or C{None}, and the status to answer that error with.

    Raises:
        SIPParseError: the start line is unreadable, or the message is a
            response with a malformed start line (dropped, never answered).
    """
    text = head.decode("utf-8", "surrogateescape")
    if text.count("\n") != text.count("\r\n"):
        text = _LF_RE.sub(_CRLF, text)
    if "\r\n " in text or "\r\n\t" in text:
        text = _FOLD_RE.sub(" ", text)
    nl = text.find(_CRLF)
    if nl < 0:
        startLine, pairs = text, []
    else:
        startLine = text[:nl]
        pairs = _HEADER_RE.findall(text, nl)
    headers: list[tuple[str, str]] = []
    index: dict[str, list[str]] = {}
    error: str | None = None
    if nl >= 0 and len(pairs) != text.count(_CRLF):
        error = _badLine(text[nl + 2 :])
    names = _NAMES
    for raw, value in pairs:
        name = names.get(raw) or _headerName(raw)
        if name is None:
            if error is None:
                error = f"malformed header name: {raw[:40]!r}"
            continue
        if value[-1:] in (" ", "\t"):
            value = value.rstrip(" \t")
        headers.append((name, value))
        values = index.get(name)
        if values is None:
            index[name] = [value]
        else:
            values.append(value)

    message: SIPMessage
    code = 400
    if startLine.startswith("SIP/"):
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
        message = SIPResponse._fromParsed(headers, index, b"")
        message.code = int(status)  # type: ignore[attr-defined]
        message.phrase = phrase  # type: ignore[attr-defined]
        message.version = version  # type: ignore[attr-defined]
        if error is not None:
            raise SIPParseError(error)
        return message, None, code

    parts = startLine.split(" ")
    if len(parts) != 3 or not isToken(parts[0]):
        raise SIPParseError(f"malformed request line: {startLine[:60]!r}")
    method, uri, version = parts
    request = SIPRequest._fromParsed(headers, index, b"")
    request.method = method
    request.uriText = uri
    request.version = version
    if not uri or "<" in uri or ">" in uri:
        error = f"malformed Request-URI: {uri[:60]!r}"
    elif version.upper() != "SIP/2.0":
        error = f"unsupported SIP version: {version!r}"
        code = 505
    return request, error, code


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
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, body = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end >= 0:
            head, body = data[:end], data[end + 2 :]
        else:
            head, body = data.rstrip(b"\r\n"), b""
    if not head:
        raise SIPParseError("empty message")
    message, error, code = _parseHead(head)
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
    keep-alive pings. Once it has returned a L{SIPParseError} the stream is
    broken and the framer returns nothing more.
    """

    def __init__(self, maxSize: int = MAX_MESSAGE_SIZE) -> None:
        """Frame messages of at most C{maxSize} bytes."""
        self.maxSize = maxSize
        self._buffer = b""
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
            Messages, L{KEEPALIVE} pings, and at most one L{SIPParseError},
            always last, after which the stream must be closed.
        """
        if self._broken:
            return []
        buf = self._buffer + data if self._buffer else data
        out: list[SIPMessage | KeepAlive | SIPParseError] = []
        while buf:
            pending = self._pending
            if pending is not None:
                if len(buf) < self._needed:
                    break
                pending.body = buf[: self._needed]
                buf = buf[self._needed :]
                self._pending = None
                out.append(pending)
                continue
            if buf[:1] in (b"\r", b"\n"):
                if buf[:4] == b"\r\n\r\n":
                    out.append(KEEPALIVE)
                    buf = buf[4:]
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(buf):
                    break
                stripped = buf.lstrip(b"\r\n")
                if buf[: len(buf) - len(stripped)].count(b"\r\n\r\n"):
                    out.append(KEEPALIVE)
                buf = stripped
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.maxSize:
                    out.append(self._broke(SIPParseError("header too large")))
                    buf = b""
                break
            try:
                message, error, code = _parseHead(buf[:end])
                if error is not None:
                    raise _fail(message, error, code)
                try:
                    length = _contentLength(message)
                except SIPParseError as e:
                    raise _fail(message, e.reason) from None
                if length is None:
                    raise _fail(message, "Content-Length is required on a stream")
                if end + 4 + length > self.maxSize:
                    raise _fail(message, "message too large", 513)
            except SIPParseError as e:
                out.append(self._broke(e))
                buf = b""
                break
            buf = buf[end + 4 :]
            if length == 0:
                out.append(message)
            else:
                self._pending = message
                self._needed = length
        self._buffer = buf
        return out

    def _broke(self, error: SIPParseError) -> SIPParseError:
        self._broken = True
        self._pending = None
        return error
