"""Errors of the SIP stack, each rooted in `SIPStackError`.

A `SIPError` carries the status code, reason phrase and extra headers of the
response it becomes; the server's dispatcher turns it into that response in
one place. `SIPParseError` says that bytes are not a SIP message, and whether
enough survived to answer 400. `TransportError` says a message could not be
sent. The stack imports nothing of the server, so these errors are rooted
here rather than in `presence.errors.PresenceError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from presence.sip.message import SIPRequest


class SIPStackError(Exception):
    """The root of every error the SIP stack raises on purpose."""


class TransportError(SIPStackError):
    """A message could not be sent: no route, connection refused or lost."""


class SIPParseError(SIPStackError):
    """Bytes that cannot be parsed as a SIP message.

    Attributes:
        reason: what is wrong, fit for a reason phrase or a log line.
        request: the part of the request that could be parsed, when enough of it
            (start line and headers) survived that a 400 can be addressed; else
            ``None``, and the message is dropped.
        code: the status to answer with when ``request`` is set.
    """

    def __init__(
        self, reason: str, request: SIPRequest | None = None, code: int = 400
    ) -> None:
        """Record the reason and what survived of the request."""
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.code = code

    @property
    def canRespond(self) -> bool:
        """Whether a response can be sent for this error."""
        return self.request is not None


class SIPError(SIPStackError):
    """An error that becomes a SIP response with its own status.

    Attributes:
        code: the status code.
        reason: the reason phrase.
        headers: extra headers for the response, as (name, value) pairs.
    """

    CODE: ClassVar[int] = 500
    REASON: ClassVar[str] = "Server Internal Error"

    def __init__(
        self,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        code: int | None = None,
    ) -> None:
        """Use the class defaults for whatever is not given."""
        self.code = self.CODE if code is None else code
        self.reason = self.REASON if reason is None else reason
        self.headers = list(headers)
        super().__init__(f"{self.code} {self.reason}")


class BadRequest(SIPError):
    """400: the request is malformed; the reason says how."""

    CODE = 400
    REASON = "Bad Request"


class Unauthorized(SIPError):
    """401: credentials are needed; carries one WWW-Authenticate per challenge.

    RFC 3261 section 22.2: a UAS "can challenge the originator to provide
    credentials by rejecting the request with a 401 (Unauthorized) status
    code".
    """

    CODE = 401
    REASON = "Unauthorized"

    def __init__(self, challenges: Sequence[str], reason: str | None = None) -> None:
        """Carry ``challenges``, the WWW-Authenticate values, in order."""
        super().__init__(
            reason, headers=[("WWW-Authenticate", value) for value in challenges]
        )


class Forbidden(SIPError):
    """403: understood, and refused."""

    CODE = 403
    REASON = "Forbidden"


class NotFound(SIPError):
    """404: the user or domain is not served here."""

    CODE = 404
    REASON = "Not Found"


class MethodNotAllowed(SIPError):
    """405: the method is known but not allowed here; carries Allow."""

    CODE = 405
    REASON = "Method Not Allowed"

    def __init__(self, allow: Sequence[str]) -> None:
        """List the allowed methods in an Allow header."""
        super().__init__(headers=[("Allow", ", ".join(allow))])


class NotAcceptable(SIPError):
    """406: none of the types in Accept can be produced."""

    CODE = 406
    REASON = "Not Acceptable"


class ConditionalRequestFailed(SIPError):
    """412: a PUBLISH named an entity tag that is not known (RFC 3903)."""

    CODE = 412
    REASON = "Conditional Request Failed"


class RequestEntityTooLarge(SIPError):
    """413: the body is larger than the server accepts."""

    CODE = 413
    REASON = "Request Entity Too Large"


class UnsupportedMediaType(SIPError):
    """415: the body's type is not accepted; carries Accept."""

    CODE = 415
    REASON = "Unsupported Media Type"

    def __init__(self, accept: Sequence[str], reason: str | None = None) -> None:
        """List the accepted types in an Accept header."""
        super().__init__(reason, headers=[("Accept", ", ".join(accept))])


class UnsupportedURIScheme(SIPError):
    """416: the Request-URI has a scheme the server does not handle."""

    CODE = 416
    REASON = "Unsupported URI Scheme"


class BadExtension(SIPError):
    """420: a Require names an option the server lacks; carries Unsupported."""

    CODE = 420
    REASON = "Bad Extension"

    def __init__(self, unsupported: Sequence[str]) -> None:
        """List the unsupported option tags in an Unsupported header."""
        super().__init__(headers=[("Unsupported", ", ".join(unsupported))])


class IntervalTooBrief(SIPError):
    """423: the asked expiry is below the minimum; carries Min-Expires."""

    CODE = 423
    REASON = "Interval Too Brief"

    def __init__(self, minExpires: int) -> None:
        """Give the minimum in a Min-Expires header."""
        super().__init__(headers=[("Min-Expires", str(minExpires))])


class CallOrTransactionDoesNotExist(SIPError):
    """481: the request names a dialog or transaction that does not exist."""

    CODE = 481
    REASON = "Call/Transaction Does Not Exist"


class LoopDetected(SIPError):
    """482: the request was merged or looped (RFC 3261 section 8.2.2.2)."""

    CODE = 482
    REASON = "Loop Detected"


class TooManyHops(SIPError):
    """483: Max-Forwards reached zero."""

    CODE = 483
    REASON = "Too Many Hops"


class BadEvent(SIPError):
    """489: the Event package is missing or unknown; carries Allow-Events."""

    CODE = 489
    REASON = "Bad Event"

    def __init__(self, allowEvents: Sequence[str], reason: str | None = None) -> None:
        """List the known packages in an Allow-Events header."""
        headers = [("Allow-Events", ", ".join(allowEvents))] if allowEvents else []
        super().__init__(reason, headers=headers)


class ServerInternalError(SIPError):
    """500: something failed that should not have."""

    CODE = 500
    REASON = "Server Internal Error"


class NotImplementedMethod(SIPError):
    """501: the method is not known to the server; carries Allow."""

    CODE = 501
    REASON = "Not Implemented"

    def __init__(self, allow: Sequence[str]) -> None:
        """List the allowed methods in an Allow header."""
        super().__init__(headers=[("Allow", ", ".join(allow))])


class ServiceUnavailable(SIPError):
    """503: the server cannot serve now; carries Retry-After."""

    CODE = 503
    REASON = "Service Unavailable"

    def __init__(self, retryAfter: int = 5, reason: str | None = None) -> None:
        """Ask the client to retry after ``retryAfter`` seconds."""
        super().__init__(reason, headers=[("Retry-After", str(retryAfter))])


class VersionNotSupported(SIPError):
    """505: the SIP version is not 2.0."""

    CODE = 505
    REASON = "Version Not Supported"


class MessageTooLarge(SIPError):
    """513: the message or its body is larger than the server accepts."""

    CODE = 513
    REASON = "Message Too Large"
