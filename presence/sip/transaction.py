"""Transactions (RFC 3261 section 17) and their timers.

Server transactions absorb retransmitted requests and send the last response
again; client transactions retransmit over UDP and report a final response,
or a timeout as a 408 and a transport error as a 503 (RFC 3261 section
8.1.3.1), through a Deferred. All timers run on an injected clock.
"""

from __future__ import annotations

import secrets
import weakref
from collections import deque
from collections.abc import Callable
from math import ceil
from typing import Any, ClassVar, Final
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from presence.sip.errors import SIPParseError
from presence.sip.headers import MAGIC_COOKIE, Via
from presence.sip.message import SIPMessage, SIPRequest, SIPResponse, responseTo
from presence.sip.transport import (
    Peer,
    SIPStreamProtocol,
    SIPTransports,
    StreamRefused,
    TransportError,
    datagramFits,
)

T1: Final = 0.5
T2: Final = 4.0
T4: Final = 5.0

#: The due time of a `CompletedTransaction` that has ended.
_TERMINATED: Final = -1.0


class SyntheticResponse(SIPResponse):
    """A final response made here for a request that got none (RFC 3261 8.1.3.1).

    A client transaction fires its Deferred with one of these on a timeout
    (408) or a transport error (503); tell it from a response that came over
    the network with ``isinstance``.
    """

    __slots__ = ()


def newBranch() -> str:
    """A branch parameter unique in space and time (RFC 3261 8.1.1.7)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def newTag() -> str:
    """A random tag for To and From (RFC 3261 section 19.3)."""
    return secrets.token_hex(6)


class TransactionUser(TypingProtocol):
    """What the transaction layer hands new requests to (the dispatcher)."""

    def requestReceived(
        self, request: SIPRequest, transaction: ServerTransaction
    ) -> None:
        """Take a new request; answer it through ``transaction.respond``."""

    def malformedReceived(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        reason: str,
        code: int,
    ) -> None:
        """Take a request that failed to parse; answer it with an error."""


#: What names a server transaction: one string for an RFC 3261 request (its
#: branch, sent-by host and port, and method), a tuple for an RFC 2543 one.
ServerKey = str | tuple[Any, ...]


def _serverKey(request: SIPMessage, method: str) -> ServerKey:
    """The key matching a request to its server transaction (17.2.3).

    Raises:
        SIPParseError: the top Via is missing or malformed.
    """
    via = request.topVia
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        # One string, not a tuple of four: a completed transaction keeps its
        # key 32 s.  A branch is a token and a host has no space, so the
        # spaces keep the parts apart.
        return f"{branch} {via.host.lower()} {via.port} {method}"
    # RFC 2543 peers: match on the fields that identify the request.
    assert isinstance(request, SIPRequest)
    try:
        fromTag = request.fromAddr.tag
        cseq = request.cseq.number
    except SIPParseError:
        fromTag, cseq = None, None
    return (
        "2543",
        request.uriText,
        fromTag,
        request.header("call-id"),
        cseq,
        str(via),
        method,
    )


class _FixedDelayQueue:
    """Many transactions' timers of one fixed delay, behind one delayed call.

    Timers F (64*T1), K (T4) and the first Timer E (T1) have the same delay
    for every client transaction, so they wait in order in a queue and one
    delayed call fires for its head: a NOTIFY fan-out to thousands of
    watchers makes no delayed call of its own for them. An entry holds its
    transaction weakly, so that a transaction that ended is not kept for the
    rest of the delay; ``fire`` is called with each live one when due and
    checks that the timer still applies (the transaction's state).
    """

    def __init__(
        self, clock: IReactorTime, delay: float, fire: Callable[[Any], object]
    ) -> None:
        self.clock = clock
        self.delay = delay
        self.fire = fire
        self.queue: deque[tuple[float, weakref.ref[Any]]] = deque()
        self.call: IDelayedCall | None = None
        self._running = False

    def add(self, item: Any) -> None:
        self.queue.append((self.clock.seconds() + self.delay, weakref.ref(item)))
        if self.call is None and not self._running:
            self.call = self.clock.callLater(self.delay, self._run)

    def _run(self) -> None:
        self.call = None
        queue = self.queue
        now = self.clock.seconds()
        # What ``fire`` adds meanwhile is due after what already waits: the
        # next call is set for the head once the due ones are done.
        self._running = True
        try:
            while queue and queue[0][0] <= now:
                item = queue.popleft()[1]()
                if item is not None:
                    self.fire(item)
        finally:
            self._running = False
        if queue and self.call is None:
            self.call = self.clock.callLater(max(0.0, queue[0][0] - now), self._run)

    def clear(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        self.queue.clear()


class _Timed:
    """The named timers of a transaction, on its layer's clock."""

    layer: TransactionLayer
    _timers: dict[str, IDelayedCall]

    def _schedule(self, name: str, delay: float, f: Any, *args: Any) -> None:
        self._cancel(name)
        self._timers[name] = self.layer.clock.callLater(delay, f, *args)

    def _cancel(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def _cancelTimers(self) -> None:
        for name in list(self._timers):
            self._cancel(name)


class CompletedTransaction:
    """A non-INVITE server transaction over UDP in Completed, waiting out Timer J.

    RFC 3261 17.2.2: "While in the Completed state, the server transaction
    MUST pass the final response to the transport layer for retransmission
    whenever a retransmission of the request is received."  That is all it
    does until Timer J ends it, so the layer keeps only this in its place:
    the response's bytes, where they go, the key, and the merge key (RFC 3261
    8.2.2.2).  Tens of thousands wait at once under load; the transaction
    object, its request, response, Via and peer are left to the garbage
    collector.

    Attributes:
        key: the transaction's key (RFC 3261 17.2.3).
        state: ``"completed"``, then ``"terminated"``.
        due: when Timer J fires, on the layer's clock.
    """

    __slots__ = (
        "_data",
        "_host",
        "_port",
        "_protocol",
        "due",
        "key",
        "mergeKey",
    )

    #: The layer it belongs to: a class attribute of the subclass each layer
    #: makes (`TransactionLayer`), not a slot of every transaction.
    _layer: ClassVar[TransactionLayer]

    def __init__(
        self,
        key: ServerKey,
        data: bytes,
        destination: Any,
        mergeKey: str | None,
        due: float,
    ) -> None:
        """Keep what retransmitting the final response needs."""
        self.key = key
        self._data = data
        # The destination's three parts rather than its tuple: 40 bytes less.
        self._protocol: Any
        self._host: str
        self._port: int
        self._protocol, self._host, self._port = destination or (None, "", 0)
        self.mergeKey = mergeKey
        self.due = due

    @property
    def state(self) -> str:
        """``"completed"``, then ``"terminated"`` (``due`` is then -1)."""
        return "completed" if self.due >= 0 else "terminated"

    def requestRetransmitted(self) -> None:
        """The request came again: send the final response again."""
        self._layer.stats.retransmissionsAbsorbed += 1
        destination = None
        if self._protocol is not None:
            destination = (self._protocol, self._host, self._port)
        self._layer.transports.sendDatagramTo(destination, self._data)

    def terminate(self) -> None:
        """End the transaction (Timer J fired, or the layer stops)."""
        self.due = _TERMINATED
        self._layer._serverEnded(self)


class ServerTransaction(_Timed):
    """A server transaction: the request, its peer and its last response.

    Attributes:
        request: the request that opened the transaction.
        peer: where it came from.
        state: ``"trying"``, ``"proceeding"``, ``"completed"``, ``"confirmed"``
            or ``"terminated"``.
        lastResponse: the last response sent, or ``None``.
        received: when the request arrived, on the layer's clock.
        onFinalResponse: called with the transaction and its final response
            when that is sent (once); the transaction user sets it to time
            and count what it answers.
    """

    onFinalResponse: Callable[[ServerTransaction, SIPResponse], object] | None = None

    def __init__(
        self,
        layer: TransactionLayer,
        key: ServerKey,
        request: SIPRequest,
        peer: Peer,
    ) -> None:
        """Open the transaction."""
        self.layer = layer
        self.key = key
        self.request = request
        self.peer = peer
        self.state = "trying"
        self.lastResponse: SIPResponse | None = None
        self.received = layer.clock.seconds()
        self.toTag = newTag()
        self._timers: dict[str, IDelayedCall] = {}
        self._wire: tuple[bytes, Via] | None = None
        self._destination: Any = None
        self.mergeKey: str | None = None

    def respond(self, response: SIPResponse) -> None:
        """Send a response; a final one completes the transaction."""
        raise NotImplementedError()

    def response(
        self,
        code: int,
        phrase: str = "",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SIPResponse:
        """Build a response to this transaction's request, with its To tag.

        The layer's Server header ends the headers, when it has one.
        """
        return responseTo(
            self.request,
            code,
            phrase,
            headers or (),
            body,
            toTag=self.toTag,
            server=self.layer.serverHeader,
        )

    def requestRetransmitted(self) -> None:
        """The request came again: send the last response again, if any."""
        if self._wire is not None and self.state != "confirmed":
            self.layer.stats.retransmissionsAbsorbed += 1
            self._resend()

    def _send(self, response: SIPResponse) -> None:
        """Send a response and keep its bytes for retransmissions."""
        try:
            via = self._responseVia(response)
        except SIPParseError as e:
            self.layer.log.warn("cannot route a response: {reason}", reason=e.reason)
            return
        data = response.toBytes()
        self._wire = (data, via)
        transports = self.layer.transports
        if via.transport == "UDP" and not self.peer.reliable:
            # Worked out once, for this send and every retransmission.
            self._destination = transports.datagramDestination(via, self.peer)
            transports.sendDatagramTo(self._destination, data)
        else:
            transports.sendResponseBytes(data, via, self.peer)

    def _responseVia(self, response: SIPResponse) -> Via:
        """The response's top Via, parsed.

        A response built by `responseTo` copies the request's Via lines, so
        the request's top Via, already parsed and stamped with received and
        rport by the transport, is the response's when the lines are equal.

        Raises:
            SIPParseError: the top Via is missing or malformed.
        """
        mine = response._index.get("via")
        theirs = self.request._index.get("via")
        if mine and theirs and mine[0] == theirs[0]:
            return self.request.topVia
        return response.topVia

    def _resend(self) -> None:
        if self._wire is not None:
            self.layer.transports.sendResponseBytes(*self._wire, self.peer)

    def terminate(self) -> None:
        """End the transaction and cancel its timers."""
        self.state = "terminated"
        self._cancelTimers()
        self.layer._serverEnded(self)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 section 17.2.2: Trying, Proceeding, Completed, Timer J."""

    def respond(self, response: SIPResponse) -> None:
        """Send a response; a final one starts Timer J."""
        if self.state in ("completed", "terminated"):
            return
        self.lastResponse = response
        self._send(response)
        if response.code < 200:
            self.state = "proceeding"
            return
        self.state = "completed"
        if self.onFinalResponse is not None:
            self.onFinalResponse(self, response)
        if self.peer.reliable:
            self._schedule("J", 0.0, self.terminate)
        elif self._wire is not None:
            self.layer._complete(self, *self._wire)
        else:
            # The response could not be routed: nothing to retransmit.
            self.terminate()


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 section 17.2.1, for the INVITEs this server refuses.

    A final non-2xx response is retransmitted over UDP (Timer G) until the ACK
    comes or Timer H ends the wait; after the ACK, Timer I absorbs ACK
    retransmissions.
    """

    def respond(self, response: SIPResponse) -> None:
        """Send a response; a final one starts Timers G and H."""
        if self.state not in ("trying", "proceeding"):
            return
        self.lastResponse = response
        self._send(response)
        if response.code < 200:
            self.state = "proceeding"
            return
        if self.onFinalResponse is not None:
            self.onFinalResponse(self, response)
        if response.code < 300:
            self.terminate()
            return
        self.state = "completed"
        if not self.peer.reliable:
            self._schedule("G", T1, self._timerG, T1)
        self._schedule("H", 64 * T1, self._timerH)

    def _timerG(self, interval: float) -> None:
        if self.state != "completed" or self._wire is None:
            return
        self.layer.stats.retransmissionsSent += 1
        self.layer.stats.responsesRetransmitted += 1
        self._resend()
        interval = min(2 * interval, T2)
        self._schedule("G", interval, self._timerG, interval)

    def _timerH(self) -> None:
        self.layer.log.debug(
            "no ACK for {statusCode} to INVITE {callId}",
            statusCode=self.lastResponse.code if self.lastResponse else None,
            callId=self.request.header("call-id"),
        )
        self.terminate()

    def ackReceived(self) -> None:
        """The ACK for the final response arrived: wait Timer I, then end."""
        if self.state != "completed":
            return
        self.state = "confirmed"
        self._cancel("G")
        self._cancel("H")
        delay = 0.0 if self.peer.reliable else T4
        self._schedule("I", delay, self.terminate)


class ClientTransaction(_Timed):
    """A non-INVITE client transaction (RFC 3261 section 17.1.2).

    Attributes:
        request: the request sent.
        target: where it goes.
        deferred: fires with the final response; a timeout gives a 408 and a
            transport error a 503, both made here.
        state: ``"trying"``, ``"proceeding"``, ``"completed"`` or
            ``"terminated"``.
    """

    def __init__(
        self,
        layer: TransactionLayer,
        request: SIPRequest,
        target: Peer,
        branch: str | None = None,
        data: bytes | None = None,
        udpFallback: Peer | None = None,
    ) -> None:
        """Prepare the transaction; `start` sends.

        Args:
            layer: the transaction layer.
            request: the request, its Via on top.
            target: where it goes.
            branch: the top Via's branch, when the caller knows it (saves
                parsing the Via just written).
            data: the request's bytes, when the caller has them.
            udpFallback: the UDP destination of a request moved to TCP for
                its size (`moveLargeRequest`): where it goes again if the
                TCP connection is refused or reset.
        """
        self.layer = layer
        self.request = request
        self.target = target
        if branch is None:
            branch = request.topVia.branch
        self.key = (branch, request.method)
        self.deferred: defer.Deferred[SIPResponse] = defer.Deferred()
        self.state = "trying"
        self._data = request.toBytes() if data is None else data
        self._udpFallback = udpFallback
        self._timers: dict[str, IDelayedCall] = {}
        self._connection: SIPStreamProtocol | None = None

    def start(self) -> None:
        """Send the request and start Timers E and F.

        Their first firing waits in the layer's queues (`_FixedDelayQueue`);
        Timer E's later ones, rare, are delayed calls of their own.
        """
        if not self.target.reliable:
            self.layer._timerEQueue.add(self)
        self.layer._timerFQueue.add(self)
        self._transmit()

    def _transmit(self) -> None:
        d = self.layer.transports.sendBytes(self._data, self.target)
        d.addCallbacks(self._sent, self._transportError)

    def _sent(self, _: object) -> None:
        """Watch the TCP connection the request went over.

        The peer answers over it (RFC 3261 18.2.2); its loss is reported as
        a transport error (8.1.3.1) at once, rather than as a timeout when
        Timer F fires 32 seconds later.
        """
        if self.target.transport == "UDP" or self.state not in (
            "trying",
            "proceeding",
        ):
            return
        connection = self.layer.transports.connectionFor(self.target)
        if connection is None:
            # Not found: Timer F still ends the wait.
            return
        self._connection = connection
        connection.watchers.add(self)

    def streamLost(self, connection: SIPStreamProtocol) -> None:
        """The connection the request went over was lost: a 503 made here."""
        self._connection = None
        self._transportError(
            Failure(TransportError(f"connection to {self.target} lost"))
        )

    def _transportError(self, failure: Failure) -> None:
        if self.state in ("completed", "terminated"):
            return
        if self._udpFallback is not None and failure.check(StreamRefused):
            self._retryOverUDP(failure)
            return
        self.layer.log.info(
            "{method} to {peer} failed: {error}",
            method=self.request.method,
            peer=self.target,
            error=failure.getErrorMessage(),
        )
        self._finish(self._synthetic(503, "Service Unavailable"))

    def _retryOverUDP(self, failure: Failure) -> None:
        """Send a request moved to TCP for its size over UDP after all.

        RFC 3261 section 18.1.1: "If an element sends a request over TCP
        because of these message size constraints, and that request would
        have otherwise been sent over UDP, if the attempt to establish the
        connection generates either an ICMP Protocol Not Supported, or
        results in a TCP reset, the element SHOULD retry the request, using
        UDP." The top Via says UDP again and Timer E starts (Timer F runs on
        from the first attempt); a request too large for one datagram ends
        the transaction as a transport error.
        """
        target, self._udpFallback = self._udpFallback, None
        branch = self.key[0]
        assert target is not None and isinstance(branch, str)
        setTopVia(self.request, self.layer.transports.makeVia(target, branch))
        data = self.request.toBytes()
        if not datagramFits(len(data), target.host):
            self.layer.log.info(
                "{method} to {peer} failed: {error}, and its {size} bytes do"
                " not fit a UDP datagram",
                method=self.request.method,
                peer=self.target,
                error=failure.getErrorMessage(),
                size=len(data),
            )
            self._finish(self._synthetic(503, "Service Unavailable"))
            return
        self.layer.log.info(
            "{method} to {peer}: {error}; retrying over UDP",
            method=self.request.method,
            peer=self.target,
            error=failure.getErrorMessage(),
        )
        self.layer.stats.udpRetries += 1
        self.target = target
        self._data = data
        self.layer._timerEQueue.add(self)
        self._transmit()

    def _timerE(self, interval: float) -> None:
        if self.state not in ("trying", "proceeding"):
            return
        self.layer.stats.retransmissionsSent += 1
        self.layer.stats.requestsRetransmitted += 1
        interval = T2 if self.state == "proceeding" else min(2 * interval, T2)
        # Schedule before sending: a send that fails at once terminates the
        # transaction, which must then cancel this timer too.
        self._schedule("E", interval, self._timerE, interval)
        self._transmit()

    def _timerF(self) -> None:
        if self.state not in ("trying", "proceeding"):
            return
        self.layer.stats.timeouts += 1
        self._finish(self._synthetic(408, "Request Timeout"))

    def responseReceived(self, response: SIPResponse) -> None:
        """Move through the states; a final response fires the Deferred."""
        if self.state in ("completed", "terminated"):
            return
        if response.code < 200:
            self.state = "proceeding"
            return
        self.state = "completed"
        self._cancel("E")
        if self.target.reliable:
            self._schedule("K", 0.0, self.terminate)
        else:
            self.layer._timerKQueue.add(self)
        self.deferred.callback(response)

    def _firstTimerE(self) -> None:
        if self.state in ("trying", "proceeding") and "E" not in self._timers:
            self._timerE(T1)

    def _timerK(self) -> None:
        if self.state == "completed":
            self.terminate()

    def _finish(self, response: SIPResponse) -> None:
        self.terminate()
        self.deferred.callback(response)

    def _synthetic(self, code: int, phrase: str) -> SyntheticResponse:
        made = responseTo(self.request, code, phrase)
        return SyntheticResponse(made.code, made.phrase, made.headers, made.body)

    def terminate(self) -> None:
        """End the transaction and cancel its timers."""
        self.state = "terminated"
        self._cancelTimers()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.watchers.discard(self)
        self.layer._clientEnded(self)


def setTopVia(request: SIPRequest, via: Via) -> None:
    """Put ``via`` in place of the request's top Via (the first header line).

    For a request of ours, whose Via we put on top: the first header is it.
    """
    headers = request.headers
    assert headers and headers[0][0] == "via"
    value = str(via)
    headers[0] = ("via", value)
    lines = request._index["via"]
    lines[0] = value
    request._cache.pop("via", None)
    request._cache.pop("via:top", None)


def moveLargeRequest(request: SIPRequest, via: Via) -> bytes:
    """Rewrite a request going over TCP rather than UDP for its size.

    RFC 3261 section 18.1.1: "If this causes a change in the transport
    protocol from the one indicated in the top Via, the value in the top Via
    MUST be changed." Only the top Via changes (as Kamailio's ``udp_mtu``
    does): the Contact and the dialog stay as they are, so later, smaller
    requests go over UDP.

    Returns:
        The request's bytes.
    """
    setTopVia(request, via)
    return request.toBytes()


class TransactionStatistics:
    """Counters of the transaction layer.

    Attributes:
        serverTransactions: server transactions opened.
        clientTransactions: client transactions opened (the NOTIFYs sent).
        retransmissionsAbsorbed: retransmitted requests answered again
            with the last response.
        retransmissionsSent: every retransmission sent, requests (Timer E)
            and responses (Timer G) together.
        requestsRetransmitted: requests retransmitted by Timer E (NOTIFYs
            over UDP).
        responsesRetransmitted: responses retransmitted by Timer G (the
            refusals of INVITE over UDP).
        timeouts: client transactions ended by Timer F.
        strayResponses: responses matching no client transaction.
        movedToTCP: requests to a UDP destination sent over TCP instead,
            being over ``udp_mtu`` (RFC 3261 section 18.1.1).
        udpRetries: of those, the ones sent over UDP after all, their TCP
            connection refused or reset.
    """

    def __init__(self) -> None:
        """Start every counter at zero."""
        self.serverTransactions = 0
        self.clientTransactions = 0
        self.retransmissionsAbsorbed = 0
        self.retransmissionsSent = 0
        self.requestsRetransmitted = 0
        self.responsesRetransmitted = 0
        self.timeouts = 0
        self.strayResponses = 0
        self.movedToTCP = 0
        self.udpRetries = 0


class TransactionLayer:
    """Matches messages to transactions and hands new requests to the user.

    It is the transports' sink, and the user (the dispatcher) answers through
    the server transactions and sends requests through `request`.

    Attributes:
        user: the transaction user new requests are handed to.
        serverHeader: the Server header of every response built by a server
            transaction, or ``None`` for none.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        transports: SIPTransports,
        user: TransactionUser | None = None,
        serverHeader: str | None = None,
    ) -> None:
        """Sit between ``transports`` and ``user``.

        Args:
            clock: the clock of the transaction timers.
            transports: what messages come from and go to.
            user: what new requests are handed to.
            serverHeader: the Server header value every response built by
                a server transaction ends with; ``None`` adds none.
        """
        self.clock = clock
        self.transports = transports
        self.user = user
        self.serverHeader = serverHeader
        self.server: dict[ServerKey, ServerTransaction | CompletedTransaction] = {}
        self.client: dict[tuple[Any, ...], ClientTransaction] = {}
        self.stats = TransactionStatistics()
        transports.sink = self
        # Timer J is the same for every UDP transaction, so the completed ones
        # wait in one queue, in order, behind one delayed call.
        self._timerJQueue: deque[CompletedTransaction] = deque()
        self._outsideDialog: dict[str, ServerTransaction | CompletedTransaction] = {}
        self._timerJCall: IDelayedCall | None = None
        self._lastDue = 0.0
        # What this layer's completed transactions are: the layer is their
        # class's attribute rather than a slot of each.
        self._completedType: type[CompletedTransaction] = type(
            "CompletedTransaction",
            (CompletedTransaction,),
            {"__slots__": (), "_layer": self, "__module__": __name__},
        )
        self._timerEQueue = _FixedDelayQueue(clock, T1, ClientTransaction._firstTimerE)
        self._timerFQueue = _FixedDelayQueue(clock, 64 * T1, ClientTransaction._timerF)
        self._timerKQueue = _FixedDelayQueue(clock, T4, ClientTransaction._timerK)

    # -- from the transports --------------------------------------------------

    def messageReceived(self, message: SIPMessage, peer: Peer) -> None:
        """Match a message to its transaction, or open a new one."""
        if isinstance(message, SIPResponse):
            self._responseReceived(message)
            return
        assert isinstance(message, SIPRequest)
        method = message.method
        try:
            key = _serverKey(message, "INVITE" if method == "ACK" else method)
        except SIPParseError as e:
            self.transports.stats.dropped += 1
            self.log.warn(
                "dropped request from {peer}: {reason}", peer=peer, reason=e.reason
            )
            return
        existing = self.server.get(key)
        if method == "ACK":
            if isinstance(existing, InviteServerTransaction):
                existing.ackReceived()
            else:
                self.log.debug("ACK matches no transaction, from {peer}", peer=peer)
            return
        if existing is not None:
            existing.requestRetransmitted()
            return
        transaction = self._open(key, message, peer)
        if method == "CANCEL":
            self._cancelReceived(message, transaction)
            return
        assert self.user is not None
        self.user.requestReceived(message, transaction)

    def malformedReceived(self, error: SIPParseError, peer: Peer) -> None:
        """Answer a malformed request through a transaction of its own."""
        request = error.request
        assert request is not None
        if request.method == "ACK":
            return
        try:
            key = _serverKey(request, request.method)
        except SIPParseError:
            self.transports.stats.dropped += 1
            return
        existing = self.server.get(key)
        if existing is not None:
            existing.requestRetransmitted()
            return
        transaction = self._open(key, request, peer)
        assert self.user is not None
        self.user.malformedReceived(request, transaction, error.reason, error.code)

    def _open(
        self, key: ServerKey, request: SIPRequest, peer: Peer
    ) -> ServerTransaction:
        transaction: ServerTransaction
        if request.method == "INVITE":
            transaction = InviteServerTransaction(self, key, request, peer)
        else:
            transaction = NonInviteServerTransaction(self, key, request, peer)
        self.server[key] = transaction
        self.stats.serverTransactions += 1
        return transaction

    def _cancelReceived(
        self, cancel: SIPRequest, transaction: ServerTransaction
    ) -> None:
        """Answer CANCEL (RFC 3261 section 9.2).

        Every INVITE is answered at once, so there is never anything left to
        cancel: 200 when the INVITE is known, 481 otherwise.
        """
        try:
            key = _serverKey(cancel, "INVITE")
        except SIPParseError:
            key = ()
        code = 200 if key in self.server else 481
        transaction.respond(transaction.response(code))

    def _responseReceived(self, response: SIPResponse) -> None:
        try:
            key = (response.topVia.branch, response.cseq.method)
        except SIPParseError:
            self.stats.strayResponses += 1
            return
        transaction = self.client.get(key)
        if transaction is None:
            self.stats.strayResponses += 1
            self.log.debug("response matches no transaction: {key}", key=key)
            return
        transaction.responseReceived(response)

    # -- from the user ----------------------------------------------------------

    def request(self, request: SIPRequest, target: Peer) -> defer.Deferred[SIPResponse]:
        """Send a non-INVITE request through a new client transaction.

        A Via with a new branch is put on top of the request.

        Returns:
            A Deferred firing with the final response (a 408 made here on
            timeout, a 503 on a transport error); it never fails.
        """
        branch = newBranch()
        via = self.transports.makeVia(target, branch)
        request.prependHeader("via", str(via))
        data = request.toBytes()
        udpFallback = None
        stream = self.transports.largeRequestTarget(target, len(data))
        if stream is not None:
            udpFallback, target = target, stream
            data = moveLargeRequest(request, self.transports.makeVia(target, branch))
            self.stats.movedToTCP += 1
        transaction = ClientTransaction(
            self, request, target, branch, data, udpFallback
        )
        self.client[transaction.key] = transaction
        self.stats.clientTransactions += 1
        transaction.start()
        return transaction.deferred

    # -- bookkeeping -------------------------------------------------------------

    def merged(self, request: SIPRequest, transaction: ServerTransaction) -> bool:
        """Whether ``request`` was merged (RFC 3261 section 8.2.2.2).

        A request outside a dialog (no To tag) is merged when another
        transaction still under way has its From tag, Call-ID, CSeq and
        method: the same request reached us by two paths. Otherwise it is
        recorded, until its transaction ends.

        Raises:
            SIPParseError: From, To, Call-ID or CSeq is malformed.
        """
        fromTag = request.fromAddr.tag
        if request.toAddr.tag is not None or fromTag is None:
            return False
        # One string rather than a tuple of four: it is kept as long as the
        # transaction, through Timer J.  Tags and Call-IDs hold no space.
        key = f"{fromTag} {request.callId} {request.cseq.number} {request.method}"
        other = self._outsideDialog.get(key)
        if other is not None and other is not transaction:
            return True
        self._outsideDialog[key] = transaction
        transaction.mergeKey = key
        return False

    def _serverEnded(
        self, transaction: ServerTransaction | CompletedTransaction
    ) -> None:
        if self.server.get(transaction.key) is transaction:
            del self.server[transaction.key]
        key = transaction.mergeKey
        if key is not None and self._outsideDialog.get(key) is transaction:
            del self._outsideDialog[key]

    def _clientEnded(self, transaction: ClientTransaction) -> None:
        if self.client.get(transaction.key) is transaction:
            del self.client[transaction.key]
        if not self.client:
            # Nothing left to time: what the queues hold is stale.
            self._clearClientQueues()

    def _clearClientQueues(self) -> None:
        for queue in (self._timerEQueue, self._timerFQueue, self._timerKQueue):
            queue.clear()

    def _complete(self, transaction: ServerTransaction, data: bytes, via: Via) -> None:
        """Put a `CompletedTransaction` in place of ``transaction``; start Timer J.

        RFC 3261 17.2.2: "When the server transaction enters the "Completed"
        state, it MUST set Timer J to fire in 64*T1 seconds for unreliable
        transports."
        """
        # Timer J is rounded up to the next tenth of a second, so that the
        # transactions completed within one share one due time's float.
        due = ceil((self.clock.seconds() + 64 * T1) * 10) / 10
        if due == self._lastDue:
            due = self._lastDue
        else:
            self._lastDue = due
        completed = self._completedType(
            transaction.key,
            data,
            transaction._destination
            or self.transports.datagramDestination(via, transaction.peer),
            transaction.mergeKey,
            due,
        )
        if self.server.get(transaction.key) is transaction:
            self.server[transaction.key] = completed
        key = transaction.mergeKey
        if key is not None and self._outsideDialog.get(key) is transaction:
            self._outsideDialog[key] = completed
        self._timerJQueue.append(completed)
        if self._timerJCall is None:
            self._timerJCall = self.clock.callLater(64 * T1, self._timerJ)

    def _timerJ(self) -> None:
        self._timerJCall = None
        queue = self._timerJQueue
        now = self.clock.seconds()
        while queue and queue[0].due <= now:
            completed = queue.popleft()
            if completed.state == "completed":
                completed.terminate()
        if queue:
            self._timerJCall = self.clock.callLater(
                max(0.0, queue[0].due - now), self._timerJ
            )

    def stop(self) -> None:
        """Cancel every timer (the service is stopping)."""
        if self._timerJCall is not None and self._timerJCall.active():
            self._timerJCall.cancel()
        self._timerJCall = None
        self._timerJQueue.clear()
        for server in list(self.server.values()):
            server.terminate()
        for client in list(self.client.values()):
            client.terminate()
        self._clearClientQueues()
