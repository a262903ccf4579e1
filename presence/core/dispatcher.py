"""Routing of requests by method, and the one funnel from errors to responses.

The dispatcher is the transaction layer's user. It checks every new request
as RFC 3261 section 8.2 asks, routes it by method to a handler, and turns
whatever a handler raises into a response in `Dispatcher.errorResponse`:
a `SIPError` becomes its own status, a `SIPParseError` a 400, a storage
error a 503, and anything else is logged as a bug and answered with 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from presence import __version__
from presence.sip.errors import (
    BadExtension,
    BadRequest,
    LoopDetected,
    MessageTooLarge,
    MethodNotAllowed,
    ServiceUnavailable,
    SIPError,
    SIPParseError,
    TooManyHops,
    UnsupportedURIScheme,
)
from presence.sip.message import SIPRequest, SIPResponse, canonicalName
from presence.sip.transaction import ServerTransaction
from presence.storage.errors import StorageError

#: A method handler: answers the request through the transaction, or raises.
Handler = Callable[[SIPRequest, ServerTransaction], Awaitable[None]]

SERVER: Final = f"presence/{__version__}"

#: Headers every request must carry (RFC 3261 section 8.1.1).
MANDATORY: Final = ("via", "to", "from", "call-id", "cseq", "max-forwards")


def checkRequest(
    request: SIPRequest,
    maxBodySize: int,
    supported: Iterable[str] = (),
) -> None:
    """Check a new request as RFC 3261 section 8.2 asks, before routing.

    Raises:
        BadRequest: a mandatory header is missing or malformed, or the CSeq
            method differs from the request's.
        MessageTooLarge: the body is larger than ``maxBodySize``.
        TooManyHops: Max-Forwards is 0 (OPTIONS excepted: RFC 3261 section
            16.3 lets the element answer it).
        UnsupportedURIScheme: the Request-URI is neither sip nor sips.
        BadExtension: a Require names an option not in ``supported``.
    """
    for name in MANDATORY:
        if not request.hasHeader(name):
            raise BadRequest(f"Missing {canonicalName(name)} header")
    try:
        # Every Via, not only the top one the response is routed by: RFC 4475
        # section 3.1.2.1 asks for a 400 when any is malformed.
        _ = (request.vias, request.topVia)
        _ = (request.fromAddr, request.toAddr, request.callId)
        _ = request.contentLength
        cseq = request.cseq
        maxForwards = request.maxForwards
    except SIPParseError as e:
        raise BadRequest(e.reason) from None
    if cseq.method != request.method:
        raise BadRequest("CSeq method does not match the request method")
    if len(request.body) > maxBodySize:
        raise MessageTooLarge()
    if maxForwards == 0 and request.method != "OPTIONS":
        raise TooManyHops()
    try:
        uri = request.uri
    except SIPParseError as e:
        if request.uriText.split(":", 1)[0].lower() not in ("sip", "sips"):
            raise UnsupportedURIScheme() from None
        raise BadRequest(e.reason) from None
    if uri.scheme not in ("sip", "sips"):
        raise UnsupportedURIScheme()
    if getattr(uri, "headers", None) is not None:
        # RFC 3261 19.1.1: headers are not allowed in a Request-URI.
        raise BadRequest("headers are not allowed in the Request-URI")
    if request.method not in ("ACK", "CANCEL") and request.hasHeader("require"):
        try:
            required = request.tokens("require")
        except SIPParseError as e:
            raise BadRequest(e.reason) from None
        known = {s.lower() for s in supported}
        missing = [tag for tag in required if tag.lower() not in known]
        if missing:
            raise BadExtension(missing)


class Dispatcher:
    """Checks requests, routes them by method, and answers errors.

    Attributes:
        handlers: method -> handler; register more with `register`.
        accept: the body types the server accepts, for OPTIONS and 415.
        allowEvents: the event packages served, for OPTIONS and 489.
        supported: the option tags the server supports.
    """

    log = Logger()

    def __init__(self, maxBodySize: int = 60000) -> None:
        """Start with OPTIONS only."""
        self.maxBodySize = maxBodySize
        self.handlers: dict[str, Handler] = {"OPTIONS": self._options}
        self.accept: list[str] = []
        self.allowEvents: list[str] = []
        self.supported: list[str] = []
        self.ready: Callable[[], bool] = lambda: True
        self.requests = 0
        self.errors = 0

    def register(self, method: str, handler: Handler) -> None:
        """Route requests of ``method`` to ``handler``."""
        self.handlers[method] = handler

    @property
    def allow(self) -> list[str]:
        """The methods served, for Allow headers (ACK and CANCEL included)."""
        return [*self.handlers, "ACK", "CANCEL"]

    # -- from the transaction layer -------------------------------------------

    def requestReceived(
        self, request: SIPRequest, transaction: ServerTransaction
    ) -> None:
        """Check and route a new request; never raises."""
        self.requests += 1
        try:
            checkRequest(request, self.maxBodySize, self.supported)
            handler = self.handlers.get(request.method)
            if handler is None:
                raise MethodNotAllowed(self.allow)
            self._checkMerged(request, transaction)
            if not self.ready():
                raise ServiceUnavailable()
            d = Deferred.fromCoroutine(_call(handler, request, transaction))
        except Exception:
            self._answerError(transaction, Failure())
            return
        d.addErrback(lambda f: self._answerError(transaction, f))

    def _checkMerged(self, request: SIPRequest, transaction: ServerTransaction) -> None:
        """Refuse a merged request (RFC 3261 section 8.2.2.2) with 482.

        A request outside a dialog with the From tag, Call-ID and CSeq of a
        transaction still under way, but another branch, arrived by two paths.
        The transaction layer keeps the index, since it knows which
        transactions are under way.
        """
        layer = getattr(transaction, "layer", None)
        if layer is not None and layer.merged(request, transaction):
            raise LoopDetected()

    def malformedReceived(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        reason: str,
        code: int,
    ) -> None:
        """Answer a request that failed to parse with 400 (or 505, 513)."""
        self.requests += 1
        self.errors += 1
        transaction.respond(self._response(transaction, code, reason))

    def _answerError(self, transaction: ServerTransaction, failure: Failure) -> None:
        self.errors += 1
        response = self.errorResponse(transaction, failure)
        if transaction.state in ("trying", "proceeding"):
            transaction.respond(response)

    def errorResponse(
        self, transaction: ServerTransaction, failure: Failure
    ) -> SIPResponse:
        """Map a failure to its response: the one place this happens."""
        error = failure.value
        if isinstance(error, SIPError):
            self.log.debug(
                "{method} answered {statusCode} {reason}",
                method=transaction.request.method,
                statusCode=error.code,
                reason=error.reason,
            )
            return self._response(transaction, error.code, error.reason, error.headers)
        if isinstance(error, SIPParseError):
            self.log.warn(
                "malformed {method} from {peer}: {reason}",
                method=transaction.request.method,
                peer=transaction.peer,
                reason=error.reason,
            )
            return self._response(transaction, 400, error.reason)
        if isinstance(error, StorageError):
            self.log.debug(
                "{method} answered 503: storage unavailable ({error})",
                method=transaction.request.method,
                error=str(error),
            )
            return self._response(transaction, 503, "", [("Retry-After", "5")])
        self.log.failure(
            "unexpected error answering {method}",
            failure,
            method=transaction.request.method,
        )
        return self._response(transaction, 500)

    def _response(
        self,
        transaction: ServerTransaction,
        code: int,
        phrase: str = "",
        headers: Iterable[tuple[str, str]] = (),
    ) -> SIPResponse:
        return transaction.response(
            code, _phrase(phrase), [*headers, ("Server", SERVER)]
        )

    # -- OPTIONS --------------------------------------------------------------

    async def _options(
        self, request: SIPRequest, transaction: ServerTransaction
    ) -> None:
        """Answer OPTIONS with what the server does (RFC 3261 section 11.2)."""
        headers = [
            ("Allow", ", ".join(self.allow)),
            ("Accept", ", ".join(self.accept)),
            ("Supported", ", ".join(self.supported)),
        ]
        if self.allowEvents:
            headers.append(("Allow-Events", ", ".join(self.allowEvents)))
        headers.append(("Server", SERVER))
        transaction.respond(transaction.response(200, "", headers))


async def _call(
    handler: Handler, request: SIPRequest, transaction: ServerTransaction
) -> None:
    await handler(request, transaction)


def _phrase(text: str) -> str:
    """A reason phrase: one line, printable, not too long."""
    text = text.replace("\r", " ").replace("\n", " ")
    return text[:120]
