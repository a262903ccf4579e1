"""Routing of requests by method, and the one funnel from errors to responses.

The dispatcher is the transaction layer's user. It checks every new request
as RFC 3261 section 8.2 asks, runs its request checks (the first answers 503
while the store is not ready; authentication comes after it), routes it by
method to a handler with the identity the checks established, and turns
whatever a check or handler raises into a response in
`Dispatcher.errorResponse`:
a `SIPError` becomes its own status, a `SIPParseError` a 400, a storage
error a 503, and anything else is logged as a bug and answered with 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from presence import __version__
from presence.auth.identity import Identity
from presence.core.statistics import RequestStatistics
from presence.packages.interfaces import PackageRegistry
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
from presence.storage.errors import RowsRejected, StorageError

#: A method handler: answers the request through the transaction, or raises.
#: The third argument is who sent the request, as the request checks
#: established it (`Identity`), or ``None`` when no check did (authentication
#: off, no trusted peer): then nothing is known beyond what From says.
Handler = Callable[[SIPRequest, ServerTransaction, Identity | None], Awaitable[None]]

#: A check of a request about to be routed, given the request and its
#: transaction (whose ``peer`` says where it came from). It refuses the
#: request by raising `SIPError`, or lets it through, returning who sent it
#: (an `Identity`) or ``None`` when it does not say; either at once or
#: through an awaitable, for a check that must look something up. The
#: identity the last check names goes to the handler.
RequestCheck = Callable[
    [SIPRequest, ServerTransaction], "Identity | Awaitable[Identity | None] | None"
]

#: What the server calls itself: the Server header of every response (the
#: transaction layer adds it) and the User-Agent of every NOTIFY.
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


def requireReady(ready: Callable[[], bool], retryAfter: int = 5) -> RequestCheck:
    """A request check refusing every request while ``ready()`` is false.

    Args:
        ready: whether the server can serve now (the store is open).
        retryAfter: the seconds a refused client is asked to wait.

    Returns:
        A check raising `ServiceUnavailable` (503 with Retry-After).
    """

    def check(request: SIPRequest, transaction: ServerTransaction) -> None:
        if not ready():
            raise ServiceUnavailable(retryAfter)

    return check


class Dispatcher:
    """Checks requests, routes them by method, and answers errors.

    Attributes:
        handlers: method -> handler; OPTIONS is the dispatcher's own.
        packages: the event packages served, which `accept` and
            `allowEvents` are worked out from.
        checks: the request checks run, in order, before a request is handed
            to its handler; the first is the readiness check. Only requests
            are checked: responses (to the server's NOTIFYs) go to client
            transactions and never reach the dispatcher.
        supported: the option tags the server supports.
        stats: the requests answered, by method and status, and how fast.
        gate: a check run before everything else, even for a request that
            failed to parse or will be refused: the source rate limit, so
            that a flood of malformed or unroutable requests is limited
            too. It answers at once (no awaitable) and names no identity.
    """

    log = Logger()

    def __init__(
        self,
        handlers: Mapping[str, Handler] | None = None,
        packages: PackageRegistry | None = None,
        ready: Callable[[], bool] = lambda: True,
        checks: Sequence[RequestCheck] = (),
        maxBodySize: int = 60000,
        stats: RequestStatistics | None = None,
        gate: Callable[[SIPRequest, ServerTransaction], None] | None = None,
    ) -> None:
        """Route to ``handlers`` and advertise ``packages``.

        Args:
            handlers: method -> handler, besides OPTIONS.
            packages: the event packages served (none when not given).
            ready: whether the server can serve now; while it cannot, every
                request gets 503 (it becomes the first request check).
            checks: more request checks, run after the readiness one.
            maxBodySize: the largest body accepted (513 above it).
            stats: where the requests answered are counted (a new
                `RequestStatistics` when not given).
            gate: the check run first on every request, parsed or not,
                raising `SIPError` to refuse it (see the class).
        """
        self.gate = gate
        self.maxBodySize = maxBodySize
        self.handlers: dict[str, Handler] = {"OPTIONS": self._options}
        self.handlers.update(handlers or {})
        self.packages = packages if packages is not None else PackageRegistry()
        self.checks: list[RequestCheck] = [requireReady(ready), *checks]
        self.supported: list[str] = []
        self.requests = 0
        self.errors = 0
        self.stats = stats if stats is not None else RequestStatistics()
        # Made once: a bound method made per request would cost an object each.
        self._onFinal = self._answered

    @property
    def allow(self) -> list[str]:
        """The methods served, for Allow headers (ACK and CANCEL included)."""
        return [*self.handlers, "ACK", "CANCEL"]

    @property
    def accept(self) -> list[str]:
        """The body types the packages accept, for OPTIONS (in package order)."""
        out: list[str] = []
        for package in self.packages:
            for kind in package.acceptTypes:
                if kind not in out:
                    out.append(kind)
        return out

    @property
    def allowEvents(self) -> list[str]:
        """The event packages served, for OPTIONS."""
        return self.packages.allowEvents

    # -- from the transaction layer -------------------------------------------

    def requestReceived(
        self, request: SIPRequest, transaction: ServerTransaction
    ) -> None:
        """Check and route a new request; never raises."""
        self.requests += 1
        transaction.onFinalResponse = self._onFinal
        try:
            if self.gate is not None:
                self.gate(request, transaction)
            checkRequest(request, self.maxBodySize, self.supported)
            handler = self.handlers.get(request.method)
            if handler is None:
                raise MethodNotAllowed(self.allow)
            self._checkMerged(request, transaction)
            d = Deferred.fromCoroutine(self._serve(handler, request, transaction))
        except Exception:
            self._answerError(transaction, Failure())
            return
        d.addErrback(lambda f: self._answerError(transaction, f))

    async def _serve(
        self, handler: Handler, request: SIPRequest, transaction: ServerTransaction
    ) -> None:
        """Run the request checks in order, then the handler with the identity.

        A check that answers at once costs no suspension; one that returns
        an awaitable is awaited before the next runs.
        """
        identity: Identity | None = None
        for check in self.checks:
            found = check(request, transaction)
            if found is not None and not isinstance(found, Identity):
                found = await found
            if found is not None:
                identity = found
        await handler(request, transaction, identity)

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
        if self.gate is not None:
            try:
                self.gate(request, transaction)
            except Exception:
                self._answerError(transaction, Failure())
                return
        self.errors += 1
        transaction.onFinalResponse = self._onFinal
        transaction.respond(self._response(transaction, code, reason))

    def _answered(self, transaction: ServerTransaction, response: SIPResponse) -> None:
        """Count a request's final response and how long it took to come."""
        self.stats.answered(
            transaction.request.method,
            response.code,
            transaction.layer.clock.seconds() - transaction.received,
        )

    def _answerError(self, transaction: ServerTransaction, failure: Failure) -> None:
        self.errors += 1
        if transaction.state == "terminated":
            # A check ended it to leave the request unanswered (a source
            # far over its rate): nothing to build.
            return
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
        if isinstance(error, RowsRejected):
            # Shared mode writes at once: a value the database cannot store
            # (a Call-ID longer than its column) is the request's fault.
            self.log.warn(
                "{method} answered 400: the database refused its values ({error})",
                method=transaction.request.method,
                error=str(error),
            )
            return self._response(
                transaction, 400, "a value of the request cannot be stored"
            )
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
        return transaction.response(code, _phrase(phrase), list(headers))

    # -- OPTIONS --------------------------------------------------------------

    async def _options(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        identity: Identity | None = None,
    ) -> None:
        """Answer OPTIONS with what the server does (RFC 3261 section 11.2)."""
        headers = [
            ("Allow", ", ".join(self.allow)),
            ("Accept", ", ".join(self.accept)),
            ("Supported", ", ".join(self.supported)),
        ]
        allowEvents = self.allowEvents
        if allowEvents:
            headers.append(("Allow-Events", ", ".join(allowEvents)))
        transaction.respond(transaction.response(200, "", headers))


def _phrase(text: str) -> str:
    """A reason phrase: one line, printable, not too long."""
    text = text.replace("\r", " ").replace("\n", " ")
    return text[:120]
