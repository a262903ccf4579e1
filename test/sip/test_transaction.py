"""Tests for `presence.sip.transaction`: matching, timers, synthetic responses."""

# trial's assertions and Twisted's test doubles are untyped.
# mypy: allow-untyped-calls

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from presence.core.dispatcher import Dispatcher
from presence.sip.message import SIPRequest, SIPResponse
from presence.sip.parser import StreamFramer, parseDatagram
from presence.sip.transaction import (
    T1,
    T2,
    T4,
    CompletedTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    SyntheticResponse,
    TransactionLayer,
    TransactionUser,
    newBranch,
)
from presence.sip.transport import Peer, SIPStreamProtocol, SIPTransports
from presence.testing import (
    FakeDatagramTransport,
    RecordingUser,
    requestBytes,
    responseBytes,
)

CLIENT = ("198.51.100.7", 5062)
UDP_VIA = "SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKabc;rport"
TCP_VIA = "SIP/2.0/TCP 198.51.100.7:5062;branch=z9hG4bKabc"


class Stack:
    """A transport and transaction layer on a fake UDP socket and fake clock."""

    def __init__(
        self, user: TransactionUser | None = None, serverHeader: str | None = None
    ) -> None:
        """Wire everything to in-memory fakes."""
        self.clock = MemoryReactorClock()
        self.transports = SIPTransports(
            self.clock, reactor=self.clock, advertisedHost="192.0.2.10"
        )
        self.udp = FakeDatagramTransport()
        self.protocol = self.transports.datagramProtocol()
        self.protocol.makeConnection(self.udp)
        self.layer = TransactionLayer(self.clock, self.transports, user, serverHeader)

    def receive(self, data: bytes, source: tuple[str, int] = CLIENT) -> None:
        """Deliver a datagram from ``source``."""
        self.protocol.datagramReceived(data, source)

    def sentResponses(self) -> list[SIPResponse]:
        """Every response written to the UDP socket, parsed."""
        out = []
        for data, _ in self.udp.written:
            message = parseDatagram(data)
            assert isinstance(message, SIPResponse)
            out.append(message)
        return out

    def connect(self, host: str = CLIENT[0], port: int = CLIENT[1]) -> StringTransport:
        """Open a TCP connection from ``host``:``port``; return its transport."""
        protocol = self.transports.streamFactory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return transport

    def writeTimes(self, until: float, step: float = 0.5) -> list[float]:
        """Advance the clock to ``until`` and note when datagrams were written."""
        times = []
        count = len(self.udp.written)
        while self.clock.seconds() < until:
            self.clock.advance(step)
            if len(self.udp.written) > count:
                times.extend([self.clock.seconds()] * (len(self.udp.written) - count))
                count = len(self.udp.written)
        return times


def notify(uri: str = "sip:alice@198.51.100.7:5062") -> SIPRequest:
    """A NOTIFY to send through a client transaction."""
    return SIPRequest(
        "NOTIFY",
        uri,
        [
            ("Max-Forwards", "70"),
            ("From", "<sip:presence@192.0.2.10>;tag=ours"),
            ("To", "<sip:alice@example.com>;tag=theirs"),
            ("Call-ID", "call-1@192.0.2.10"),
            ("CSeq", "1 NOTIFY"),
            ("Event", "presence"),
        ],
    )


def topVia(data: bytes) -> str:
    """The top Via line of a message's bytes."""
    via = parseDatagram(data).header("via")
    assert via is not None
    return via


class ClientTransactionUDPTests(SynchronousTestCase):
    """Non-INVITE client transactions over UDP (RFC 3261 section 17.1.2)."""

    def setUp(self) -> None:
        """Send a NOTIFY to the client over UDP."""
        self.stack = Stack()
        self.target = Peer("UDP", *CLIENT)
        self.d = self.stack.layer.request(notify(), self.target)
        self.via = topVia(self.stack.udp.written[0][0])

    def respond(self, code: int) -> None:
        """Deliver a response to the NOTIFY."""
        self.stack.receive(responseBytes(code, self.via))

    def test_requestSentWithNewBranch(self) -> None:
        """The request goes out at once with a new magic-cookie branch.

        RFC 3261 8.1.1.7.
        """
        [(data, address)] = self.stack.udp.written
        self.assertEqual(address, CLIENT)
        via = parseDatagram(data).topVia
        self.assertTrue(via.branch and via.branch.startswith("z9hG4bK"))
        self.assertEqual(
            (via.transport, via.host, via.port), ("UDP", "192.0.2.10", 5060)
        )
        self.assertIn("rport", via.params)

    def test_timerEDoublesUpToT2(self) -> None:
        """Timer E doubles from T1 and is capped at T2.

        RFC 3261 17.1.2.2: "If Timer E fires while still in this state, the timer is
        reset, but this time with a value of MIN(2*T1, T2)."
        """
        times = self.stack.writeTimes(31.5)
        # Intervals 0.5, 1, 2, 4, 4, 4...: the timer doubles and stops at T2.
        self.assertEqual(
            times, [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        )
        self.assertEqual(self.stack.layer.stats.retransmissionsSent, 10)
        self.assertEqual(self.stack.layer.stats.requestsRetransmitted, 10)
        self.assertEqual(self.stack.layer.stats.responsesRetransmitted, 0)
        self.assertNoResult(self.d)

    def test_timerFGivesSynthetic408(self) -> None:
        """Timer F fires the Deferred with a 408 made here.

        RFC 3261 17.1.2.2: "If Timer F fires while in the Trying state, the client
        transaction SHOULD inform the TU about the timeout"; 8.1.3.1 makes that a 408.
        """
        self.stack.clock.advance(64 * T1 - 0.01)
        self.assertNoResult(self.d)
        self.stack.clock.advance(0.01)
        response = self.successResultOf(self.d)
        self.assertIsInstance(response, SyntheticResponse)
        self.assertEqual(response.code, 408)
        self.assertEqual(response.cseq.method, "NOTIFY")
        self.assertEqual(response.header("call-id"), "call-1@192.0.2.10")
        self.assertEqual(self.stack.layer.client, {})
        self.assertEqual(self.stack.layer.stats.timeouts, 1)
        written = len(self.stack.udp.written)
        self.stack.clock.advance(60)
        self.assertEqual(len(self.stack.udp.written), written)
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])

    def test_provisionalSwitchesToT2(self) -> None:
        """After a provisional response Timer E fires every T2.

        RFC 3261 17.1.2.2: "If Timer E fires while in the Proceeding state, the request
        MUST be passed to the transport layer for retransmission, and Timer E MUST be
        reset with a value of T2 seconds."
        """
        # One retransmission at 0.5; the next is due at 1.5.
        self.assertEqual(self.stack.writeTimes(1.0), [0.5])
        self.respond(100)
        times = self.stack.writeTimes(14.0)
        self.assertEqual(times, [1.5, 1.5 + T2, 1.5 + 2 * T2, 1.5 + 3 * T2])
        self.assertNoResult(self.d)

    def test_provisionalDoesNotStopTimerF(self) -> None:
        """A provisional response does not stop Timer F."""
        self.respond(100)
        self.stack.clock.advance(64 * T1)
        self.assertEqual(self.successResultOf(self.d).code, 408)

    def test_finalResponseStopsRetransmission(self) -> None:
        """A final response fires the Deferred and stops Timers E and F.

        RFC 3261 17.1.2.2.
        """
        self.stack.clock.advance(0.6)
        self.respond(200)
        response = self.successResultOf(self.d)
        self.assertEqual(response.code, 200)
        self.assertNotIsInstance(response, SyntheticResponse)
        written = len(self.stack.udp.written)
        self.stack.clock.advance(64 * T1)
        self.assertEqual(len(self.stack.udp.written), written)

    def test_timerKAbsorbsResponseRetransmissions(self) -> None:
        """Timer K (T4 over UDP) absorbs response retransmissions.

        RFC 3261 17.1.2.2: "The Completed state exists to buffer any additional response
        retransmissions that may be received."
        """
        self.respond(200)
        self.successResultOf(self.d)
        self.stack.clock.advance(T4 - 0.1)
        self.respond(200)  # absorbed; firing the Deferred twice would raise
        self.assertEqual(self.stack.layer.stats.strayResponses, 0)
        self.assertEqual(len(self.stack.layer.client), 1)
        self.stack.clock.advance(0.1)
        self.assertEqual(self.stack.layer.client, {})
        self.respond(200)
        self.assertEqual(self.stack.layer.stats.strayResponses, 1)

    def test_responseForOtherMethodIsStray(self) -> None:
        """A response must match the CSeq method too.

        RFC 3261 17.1.3.
        """
        self.stack.receive(responseBytes(200, self.via, method="SUBSCRIBE"))
        self.assertNoResult(self.d)
        self.assertEqual(self.stack.layer.stats.strayResponses, 1)

    def test_sendErrorGives503(self) -> None:
        """A transport error gives the TU a 503 made here (RFC 3261 8.1.3.1)."""
        stack = Stack()
        stack.udp.error = OSError("network unreachable")
        d = stack.layer.request(notify(), self.target)
        response = self.successResultOf(d)
        self.assertIsInstance(response, SyntheticResponse)
        self.assertEqual(response.code, 503)
        self.assertEqual(stack.layer.client, {})
        self.assertEqual(stack.clock.getDelayedCalls(), [])

    def test_sendErrorOnRetransmissionGives503(self) -> None:
        """A transport error on a retransmission ends the transaction with a 503."""
        self.stack.udp.error = OSError("network unreachable")
        self.stack.clock.advance(T1)
        self.assertEqual(self.successResultOf(self.d).code, 503)
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])

    def test_stopCancelsTimers(self) -> None:
        """Stopping the layer cancels every timer it started."""
        self.stack.layer.stop()
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])
        self.assertEqual(self.stack.layer.client, {})


class FanOutTimerTests(SynchronousTestCase):
    """Many client transactions share their fixed-delay timers."""

    def setUp(self) -> None:
        """Send 100 NOTIFYs over UDP."""
        self.stack = Stack()
        self.target = Peer("UDP", *CLIENT)
        self.results = [
            self.stack.layer.request(notify(), self.target) for _ in range(100)
        ]
        self.vias = [topVia(data) for data, _ in self.stack.udp.written]

    def test_fewDelayedCalls(self) -> None:
        """100 NOTIFYs wait behind two delayed calls (Timers E and F), not 200."""
        self.assertEqual(len(self.stack.clock.getDelayedCalls()), 2)

    def test_everyOneRetransmittedAtT1(self) -> None:
        """Each unanswered NOTIFY is sent again at T1, then 2*T1 later.

        RFC 3261 17.1.2.2: "the client transaction MUST start timer E with a
        value of T1" and "If timer E fires while still in this state, the
        timer is reset, but this time with a value of MIN(2*T1, T2)."
        """
        self.stack.udp.written.clear()
        self.stack.clock.advance(T1)
        self.assertEqual(len(self.stack.udp.written), 100)
        self.stack.clock.advance(2 * T1 - 0.01)
        self.assertEqual(len(self.stack.udp.written), 100)
        self.stack.clock.advance(0.01)
        self.assertEqual(len(self.stack.udp.written), 200)

    def test_answeredThenTimerK(self) -> None:
        """Answered NOTIFYs wait out Timer K together, then nothing is left.

        RFC 3261 17.1.2.2: "Once the client transaction enters the Completed
        state, it MUST set Timer K to fire in T4 seconds for unreliable
        transports".
        """
        for via in self.vias:
            self.stack.receive(responseBytes(200, via))
        self.assertEqual(
            [self.successResultOf(d).code for d in self.results][:1], [200]
        )
        self.stack.clock.advance(T4 - 0.01)
        self.assertEqual(len(self.stack.layer.client), 100)
        self.stack.clock.advance(0.01)
        self.assertEqual(self.stack.layer.client, {})
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])
        written = len(self.stack.udp.written)
        self.stack.clock.advance(64 * T1)
        self.assertEqual(len(self.stack.udp.written), written)

    def test_endedTransactionNotKept(self) -> None:
        """A transaction that ended is not kept alive by the queues it waits in."""
        for via in self.vias[:50]:
            self.stack.receive(responseBytes(200, via))
        self.stack.clock.advance(T4)
        self.assertEqual(len(self.stack.layer.client), 50)
        layer = self.stack.layer
        alive = [r() for _, r in layer._timerFQueue.queue]
        self.assertEqual(sum(1 for t in alive if t is not None), 50)

    def test_addedWhileFiringDelaysNothing(self) -> None:
        """A request sent from a timeout's callback leaves later timeouts on time.

        RFC 3261 17.1.2.2: "If Timer F fires while the client transaction is
        still in the "Trying" state, the client transaction SHOULD inform the
        TU about the timeout" - at 64*T1 for each transaction.
        """
        stack = Stack()
        layer = stack.layer
        first = layer.request(notify(), self.target)
        stack.clock.advance(1)
        second = layer.request(notify(), self.target)
        later: list[object] = []

        def again(response: SIPResponse) -> SIPResponse:
            later.append(layer.request(notify(), self.target))
            return response

        first.addCallback(again)
        stack.clock.advance(64 * T1 - 1)
        self.assertEqual(self.successResultOf(first).code, 408)
        self.assertEqual(len(later), 1)
        self.assertNoResult(second)
        stack.clock.advance(1)
        self.assertEqual(self.successResultOf(second).code, 408)

    def test_timeoutsTogether(self) -> None:
        """Every unanswered NOTIFY gets its 408 at Timer F (64*T1)."""
        self.stack.clock.advance(64 * T1 - 0.01)
        for d in self.results:
            self.assertNoResult(d)
        self.stack.clock.advance(0.01)
        self.assertEqual({self.successResultOf(d).code for d in self.results}, {408})
        self.assertEqual(self.stack.layer.client, {})
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])


class ClientTransactionTCPTests(SynchronousTestCase):
    """Non-INVITE client transactions over TCP."""

    def setUp(self) -> None:
        """Prepare a stack with a fake reactor."""
        self.stack = Stack()
        self.target = Peer("TCP", *CLIENT)

    def test_noRetransmissionOverTCP(self) -> None:
        """Over TCP nothing is retransmitted, but Timer F still applies.

        RFC 3261 17.1.2.2: Timer E is set only "if an unreliable transport is in use".
        """
        transport = self.stack.connect()
        d = self.stack.layer.request(notify(), self.target)
        sent = transport.value()
        self.assertTrue(sent.startswith(b"NOTIFY "))
        self.stack.clock.advance(64 * T1 - 0.01)
        self.assertEqual(transport.value(), sent)
        self.assertNoResult(d)
        self.stack.clock.advance(0.01)
        self.assertEqual(self.successResultOf(d).code, 408)

    def test_timerKIsZeroOverTCP(self) -> None:
        """Timer K is zero for reliable transports (RFC 3261 17.1.2.2)."""
        transport = self.stack.connect()
        d = self.stack.layer.request(notify(), self.target)
        protocol = self.stack.transports.connections[CLIENT]
        via = topVia(transport.value())
        protocol.dataReceived(responseBytes(202, via))
        self.assertEqual(self.successResultOf(d).code, 202)
        self.stack.clock.advance(0)
        self.assertEqual(self.stack.layer.client, {})

    def test_connectionRefusedGives503(self) -> None:
        """A refused connection gives the TU a 503 made here (RFC 3261 8.1.3.1)."""
        d = self.stack.layer.request(notify(), self.target)
        [(host, port, factory, _, _)] = self.stack.clock.tcpClients
        self.assertEqual((host, port), CLIENT)
        self.assertNoResult(d)
        factory.clientConnectionFailed(
            self.stack.clock.connectors[0], Failure(ConnectionRefusedError())
        )
        response = self.successResultOf(d)
        self.assertIsInstance(response, SyntheticResponse)
        self.assertEqual(response.code, 503)
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])

    def test_connectionLostGives503(self) -> None:
        """Losing the connection a request went over gives a 503 at once.

        The peer answers over that connection (RFC 3261 18.2.2); waiting for
        Timer F would only delay the TU 32 seconds.
        """
        self.stack.connect()
        d = self.stack.layer.request(notify(), self.target)
        protocol = self.stack.transports.connections[CLIENT]
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        response = self.successResultOf(d)
        self.assertIsInstance(response, SyntheticResponse)
        self.assertEqual(response.code, 503)
        self.assertEqual(self.stack.layer.client, {})
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])

    def test_closedByUsGives503(self) -> None:
        """Closing the connection (say, when idle) fails the request with a 503."""
        self.stack.connect()
        d = self.stack.layer.request(notify(), self.target)
        self.stack.transports.connections[CLIENT].close()
        self.assertEqual(self.successResultOf(d).code, 503)

    def test_newConnectionWatched(self) -> None:
        """A request that made its own connection fails when that one is lost."""
        d = self.stack.layer.request(notify(), self.target)
        [(host, port, factory, _, _)] = self.stack.clock.tcpClients
        wrapper = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert wrapper is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        wrapper.makeConnection(transport)
        protocol = self.stack.transports.connections[CLIENT]
        self.assertTrue(transport.value().startswith(b"NOTIFY "))
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.successResultOf(d).code, 503)

    def test_answeredTransactionStopsWatching(self) -> None:
        """Once answered, a transaction no longer watches its connection."""
        transport = self.stack.connect()
        d = self.stack.layer.request(notify(), self.target)
        protocol = self.stack.transports.connections[CLIENT]
        self.assertEqual(len(protocol.watchers), 1)
        protocol.dataReceived(responseBytes(200, topVia(transport.value())))
        self.assertEqual(self.successResultOf(d).code, 200)
        self.stack.clock.advance(0)
        self.assertEqual(protocol.watchers, set())
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.stack.layer.client, {})

    def test_noReactorGives503(self) -> None:
        """Without a reactor to connect with, a TCP request fails at once with a 503."""
        clock = Clock()
        transports = SIPTransports(clock, advertisedHost="192.0.2.10")
        layer = TransactionLayer(clock, transports)
        d = layer.request(notify(), self.target)
        self.assertEqual(self.successResultOf(d).code, 503)


class NonInviteServerTransactionTests(SynchronousTestCase):
    """Non-INVITE server transactions (RFC 3261 section 17.2.2)."""

    def setUp(self) -> None:
        """Answer every request with 200 through a recording user."""
        self.user = RecordingUser(answer=200)
        self.stack = Stack(self.user)

    def test_retransmissionGetsCachedResponse(self) -> None:
        """A retransmission gets the cached response; the TU never sees it.

        RFC 3261 17.2.2: "While in the Completed state, the server transaction MUST pass
        the final response to the transport layer for retransmission whenever a
        retransmission of the request is received."
        """
        self.stack.receive(requestBytes())
        self.stack.receive(requestBytes())
        self.assertEqual(len(self.user.requests), 1)
        first, second = self.stack.udp.written
        self.assertEqual(first, second)
        self.assertEqual(first[1], CLIENT)
        self.assertEqual(self.stack.layer.stats.retransmissionsAbsorbed, 1)

    def test_onFinalResponse(self) -> None:
        """The transaction tells its hook of its final response, once.

        Provisional responses and retransmissions of the final one are not
        told; the transaction knows when its request arrived.
        """
        self.user.answer = None
        self.stack.clock.advance(10)
        self.stack.receive(requestBytes())
        [(_, transaction)] = self.user.requests
        self.assertEqual(transaction.received, 10)
        told: list[tuple[object, int]] = []
        transaction.onFinalResponse = lambda t, r: told.append((t, r.code))
        transaction.respond(transaction.response(100))
        self.assertEqual(told, [])
        transaction.respond(transaction.response(202))
        self.stack.receive(requestBytes())
        transaction.respond(transaction.response(500))
        self.assertEqual(told, [(transaction, 202)])

    def test_retransmissionInTryingIsDiscarded(self) -> None:
        """Retransmissions in Trying are discarded.

        RFC 3261 17.2.2: "Once in the Trying state, any further request
        retransmissions are discarded."
        """
        self.user.answer = None
        self.stack.receive(requestBytes())
        self.stack.receive(requestBytes())
        self.assertEqual(len(self.user.requests), 1)
        self.assertEqual(self.stack.udp.written, [])

    def test_retransmissionInProceedingGetsProvisional(self) -> None:
        """Retransmissions in Proceeding get the last provisional response.

        RFC 3261 17.2.2: "If a retransmission of the request is received while in the
        Proceeding state, the most recently sent provisional response MUST be passed to
        the transport layer for retransmission."
        """
        self.user.answer = None
        self.stack.receive(requestBytes())
        [(_, transaction)] = self.user.requests
        transaction.respond(transaction.response(100))
        self.stack.receive(requestBytes())
        codes = [r.code for r in self.stack.sentResponses()]
        self.assertEqual(codes, [100, 100])
        transaction.respond(transaction.response(200))
        self.stack.receive(requestBytes())
        codes = [r.code for r in self.stack.sentResponses()]
        self.assertEqual(codes, [100, 100, 200, 200])

    def test_secondFinalResponseIgnored(self) -> None:
        """Responses after the final one are not sent.

        RFC 3261 17.2.2.
        """
        self.stack.receive(requestBytes())
        [(_, transaction)] = self.user.requests
        transaction.respond(transaction.response(500))
        self.assertEqual([r.code for r in self.stack.sentResponses()], [200])

    def test_responsesCarryOneToTag(self) -> None:
        """Every response of a transaction carries the same To tag.

        RFC 3261 8.2.6.2.
        """
        self.user.answer = None
        self.stack.receive(requestBytes())
        [(_, transaction)] = self.user.requests
        transaction.respond(transaction.response(180))
        transaction.respond(transaction.response(200))
        tags = {r.toAddr.tag for r in self.stack.sentResponses()}
        self.assertEqual(len(tags), 1)
        self.assertIsNotNone(tags.pop())

    def test_timerJUDP(self) -> None:
        """Timer J is 64*T1 over UDP; then the branch opens a new transaction.

        RFC 3261 17.2.2: Timer J is "64*T1 seconds for unreliable transports".
        """
        self.stack.receive(requestBytes())
        self.stack.clock.advance(64 * T1 - 0.01)
        self.stack.receive(requestBytes())
        self.assertEqual(len(self.user.requests), 1)
        self.stack.clock.advance(0.01)
        self.assertEqual(self.stack.layer.server, {})
        self.stack.receive(requestBytes())
        self.assertEqual(len(self.user.requests), 2)

    def test_timerJRoundedUp(self) -> None:
        """Timer J fires no sooner than 64*T1, at most a tenth of a second later.

        RFC 3261 17.2.2: "it MUST set Timer J to fire in 64*T1 seconds for
        unreliable transports".  The due time is rounded up to a tenth of a
        second, so that the transactions completed within one share it.
        """
        self.stack.clock.advance(0.03)
        self.stack.receive(requestBytes())
        self.stack.clock.advance(64 * T1 - 0.01)
        self.stack.clock.advance(0.01)
        [completed] = self.stack.layer.server.values()
        self.assertEqual(completed.state, "completed")
        self.stack.receive(requestBytes())
        self.assertEqual(len(self.user.requests), 1)
        self.stack.clock.advance(0.08)
        self.assertEqual(self.stack.layer.server, {})
        self.assertEqual(completed.state, "terminated")

    def test_completedKeepsOnlyTheResponse(self) -> None:
        """A completed UDP transaction is kept as its response's bytes and key.

        RFC 3261 17.2.2: "While in the Completed state, the server transaction
        MUST pass the final response to the transport layer for retransmission
        whenever a retransmission of the request is received." Nothing else
        is asked of it, so nothing else (request, Via, peer) is kept.
        """
        self.stack.receive(requestBytes())
        [completed] = self.stack.layer.server.values()
        self.assertIsInstance(completed, CompletedTransaction)
        self.assertEqual(completed.state, "completed")
        self.assertFalse(hasattr(completed, "__dict__"))
        self.assertFalse(hasattr(completed, "request"))
        self.stack.receive(requestBytes())
        first, second = self.stack.udp.written
        self.assertEqual(first, second)
        self.assertEqual(second[1], CLIENT)

    def test_completedAnswersAtTheSourcePort(self) -> None:
        """The retransmitted response goes where the first went: rport, received.

        RFC 3581 section 4: the response is sent "to the IP address from which
        the request was received" and "to the port from which the request was
        received" when the Via has rport.
        """
        via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnat;rport"
        self.stack.receive(requestBytes(via=via), ("203.0.113.9", 40123))
        self.stack.receive(requestBytes(via=via), ("203.0.113.9", 40123))
        first, second = self.stack.udp.written
        self.assertEqual(first, second)
        self.assertEqual(second[1], ("203.0.113.9", 40123))

    def test_mergeKeyKeptUntilTimerJ(self) -> None:
        """A completed transaction still merges a copy by another path; not after J.

        RFC 3261 8.2.2.2: "If the From tag, Call-ID, and CSeq exactly match
        those associated with an ongoing transaction, but the request does not
        match that transaction (based on the matching rules in Section
        17.2.3), the UAS core SHOULD generate a 482 (Loop Detected) response".
        """
        layer = self.stack.layer
        merges: list[bool] = []

        class MergingUser(RecordingUser):
            def requestReceived(
                self, request: SIPRequest, transaction: ServerTransaction
            ) -> None:
                merges.append(layer.merged(request, transaction))
                super().requestReceived(request, transaction)

        layer.user = MergingUser(answer=200)
        self.stack.receive(requestBytes())
        self.assertEqual(merges, [False])
        [completed] = layer.server.values()
        copy = parseDatagram(
            requestBytes(via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKother")
        )
        assert isinstance(copy, SIPRequest)
        other = NonInviteServerTransaction(
            layer, ("other",), copy, Peer("UDP", *CLIENT)
        )
        self.assertTrue(layer.merged(copy, other))
        self.stack.clock.advance(64 * T1)
        self.assertEqual(completed.state, "terminated")
        self.assertFalse(layer.merged(copy, other))

    def test_unroutableResponseEnds(self) -> None:
        """A final response that cannot be routed leaves nothing to wait for."""
        transaction = NonInviteServerTransaction(
            self.stack.layer,
            ("k",),
            SIPRequest("OPTIONS", "sip:x@192.0.2.10", [("call-id", "c")]),
            Peer("UDP", *CLIENT),
        )
        self.stack.layer.server[("k",)] = transaction
        transaction.respond(SIPResponse(200, "OK", [("call-id", "c")]))
        self.assertEqual(transaction.state, "terminated")
        self.assertEqual(self.stack.layer.server, {})

    def test_timerJTCPIsZero(self) -> None:
        """Timer J is "zero seconds for reliable transports" (RFC 3261 17.2.2)."""
        transport = self.stack.connect()
        protocol = self.stack.transports.connections[CLIENT]
        protocol.dataReceived(requestBytes(via=TCP_VIA))
        self.assertTrue(transport.value().startswith(b"SIP/2.0 200 "))
        self.assertEqual(len(self.stack.layer.server), 1)
        self.stack.clock.advance(0)
        self.assertEqual(self.stack.layer.server, {})

    def test_differentSentByIsNewTransaction(self) -> None:
        """The same branch from another sent-by is another transaction.

        RFC 3261 17.2.3.
        """
        self.stack.receive(requestBytes())
        other = "SIP/2.0/UDP 198.51.100.8:5062;branch=z9hG4bKabc;rport"
        self.stack.receive(requestBytes(via=other))
        self.assertEqual(len(self.user.requests), 2)

    def test_differentMethodIsNewTransaction(self) -> None:
        """The same branch with another method is another transaction.

        RFC 3261 17.2.3.
        """
        self.stack.receive(requestBytes("OPTIONS"))
        self.stack.receive(requestBytes("SUBSCRIBE"))
        self.assertEqual(len(self.user.requests), 2)

    def test_rfc2543Retransmission(self) -> None:
        """RFC 2543 requests without a branch are matched on their fields.

        RFC 3261 17.2.3: Request-URI, tags, Call-ID, CSeq and top Via.
        """
        via = "SIP/2.0/UDP 198.51.100.7:5062"
        self.stack.receive(requestBytes(via=via))
        self.stack.receive(requestBytes(via=via))
        self.assertEqual(len(self.user.requests), 1)
        self.assertEqual(len(self.stack.udp.written), 2)
        self.stack.receive(requestBytes(via=via, cseq=2))
        self.assertEqual(len(self.user.requests), 2)

    def test_rfc2543OldBranchRetransmission(self) -> None:
        """A branch without the magic cookie is matched the RFC 2543 way.

        RFC 3261 17.2.3.
        """
        via = "SIP/2.0/UDP 198.51.100.7:5062;branch=1234"
        self.stack.receive(requestBytes(via=via))
        self.stack.receive(requestBytes(via=via))
        self.stack.receive(requestBytes(via=via, callId="other"))
        self.assertEqual(len(self.user.requests), 2)

    def test_malformedRequestAnswered(self) -> None:
        """A malformed request reaches the TU once; retransmissions get its answer."""
        bad = requestBytes(extra=("Content-Length: 5",))
        self.stack.receive(bad)
        self.stack.receive(bad)
        self.assertEqual(len(self.user.malformed), 1)
        self.assertEqual([r.code for r in self.stack.sentResponses()], [400, 400])

    def test_badTopViaDropped(self) -> None:
        """A request whose top Via cannot be parsed is dropped."""
        self.stack.receive(requestBytes(via="garbage"))
        self.assertEqual(self.user.requests, [])
        self.assertEqual(self.stack.udp.written, [])
        self.assertEqual(self.stack.transports.stats.dropped, 1)


class InviteServerTransactionTests(SynchronousTestCase):
    """INVITEs refused through the dispatcher (RFC 3261 section 17.2.1)."""

    def setUp(self) -> None:
        """Send an INVITE, which the dispatcher answers 405."""
        self.stack = Stack(Dispatcher())
        self.stack.receive(requestBytes("INVITE"))
        [response] = self.stack.sentResponses()
        self.response = response
        self.toTag = response.toAddr.tag

    def ack(self) -> None:
        """Send the ACK for the 405."""
        self.stack.receive(requestBytes("ACK", toTag=self.toTag))

    def test_answered405(self) -> None:
        """An INVITE is refused with 405 and an Allow header, with a To tag."""
        self.assertEqual(self.response.code, 405)
        allow = self.response.header("allow")
        assert allow is not None
        self.assertNotIn("INVITE", allow)
        self.assertIsNotNone(self.toTag)
        [transaction] = self.stack.layer.server.values()
        self.assertIsInstance(transaction, InviteServerTransaction)
        self.assertEqual(transaction.state, "completed")

    def test_timerGRetransmitsUntilAck(self) -> None:
        """Timer G retransmits the final response until the ACK.

        RFC 3261 17.2.1: "If timer G fires, the response is passed to the transport
        layer once more for retransmission, and timer G is set to fire in MIN(2*T1, T2)
        seconds."
        """
        times = self.stack.writeTimes(12.0)
        self.assertEqual(times, [0.5, 1.5, 3.5, 7.5, 11.5])
        self.assertEqual({r.code for r in self.stack.sentResponses()}, {405})
        self.assertEqual(self.stack.layer.stats.responsesRetransmitted, 5)
        self.assertEqual(self.stack.layer.stats.requestsRetransmitted, 0)
        self.ack()
        self.assertEqual(self.stack.writeTimes(40.0), [])

    def test_ackConfirmsAndTimerIEnds(self) -> None:
        """The ACK confirms the transaction and Timer I (T4) ends it.

        RFC 3261 17.2.1: "If an ACK is received while the server transaction is in the
        Completed state, the server transaction MUST transition to the Confirmed state."
        """
        self.stack.writeTimes(1.0)
        self.ack()
        [transaction] = self.stack.layer.server.values()
        self.assertEqual(transaction.state, "confirmed")
        written = len(self.stack.udp.written)
        self.ack()
        self.stack.receive(requestBytes("INVITE"))
        self.assertEqual(len(self.stack.udp.written), written)
        self.stack.clock.advance(T4 - 0.01)
        self.assertEqual(len(self.stack.layer.server), 1)
        self.stack.clock.advance(0.01)
        self.assertEqual(self.stack.layer.server, {})
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])

    def test_inviteRetransmissionGetsResponse(self) -> None:
        """An INVITE retransmission in Completed gets the response again.

        RFC 3261 17.2.1: "While in the Completed state, if a request retransmission is
        received, the server SHOULD pass the response to the transport for
        retransmission."
        """
        self.stack.receive(requestBytes("INVITE"))
        self.assertEqual([r.code for r in self.stack.sentResponses()], [405, 405])

    def test_timerHWithoutAck(self) -> None:
        """Without an ACK, Timer H ends the transaction at 64*T1.

        RFC 3261 17.2.1: "If timer H fires while in the Completed state, it implies that
        the ACK was never received."
        """
        times = self.stack.writeTimes(64 * T1 - 0.5)
        intervals = [b - a for a, b in zip([0.0, *times], times, strict=False)]
        self.assertEqual(intervals, [0.5, 1.0, 2.0, 4.0] + [T2] * 6)
        self.assertEqual(len(self.stack.layer.server), 1)
        self.stack.clock.advance(0.5)
        self.assertEqual(self.stack.layer.server, {})
        self.assertEqual(self.stack.clock.getDelayedCalls(), [])
        self.assertEqual(self.stack.writeTimes(40.0), [])

    def test_unmatchedAckIgnored(self) -> None:
        """An ACK matching no transaction is dropped.

        RFC 3261 17.2.3.
        """
        ack = requestBytes(
            "ACK",
            via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKother",
            toTag="x",
        )
        self.stack.receive(ack)
        self.assertEqual(len(self.stack.udp.written), 1)
        self.assertEqual(self.stack.layer.stats.serverTransactions, 1)

    def test_cancelKnownInvite(self) -> None:
        """A CANCEL for a known, answered INVITE gets 200.

        RFC 3261 9.2: "as long as the CANCEL matched an existing transaction,
        the UAS answers the CANCEL request itself with a 200 (OK) response."
        """
        self.stack.receive(requestBytes("CANCEL"))
        codes = [(r.code, r.cseq.method) for r in self.stack.sentResponses()]
        self.assertEqual(codes, [(405, "INVITE"), (200, "CANCEL")])

    def test_cancelUnknownInvite(self) -> None:
        """A CANCEL for an unknown INVITE gets 481.

        RFC 3261 9.2: "If the UAS did not find a matching transaction for the CANCEL
        ..., it SHOULD respond to the CANCEL with a 481."
        """
        cancel = requestBytes(
            "CANCEL", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnone;rport"
        )
        self.stack.receive(cancel)
        self.assertEqual(self.stack.sentResponses()[-1].code, 481)

    def test_cancelRetransmissionAbsorbed(self) -> None:
        """A retransmitted CANCEL gets the same 200 from its own transaction."""
        self.stack.receive(requestBytes("CANCEL"))
        self.stack.receive(requestBytes("CANCEL"))
        codes = [r.code for r in self.stack.sentResponses()]
        self.assertEqual(codes, [405, 200, 200])
        self.assertEqual(self.stack.layer.stats.serverTransactions, 2)


class ServerHeaderTests(SynchronousTestCase):
    """The layer's Server header, on every response its server transactions build."""

    def test_everyResponse(self) -> None:
        """The user's responses and the layer's own (CANCEL) end with Server."""
        stack = Stack(RecordingUser(answer=202), serverHeader="presence/test")
        stack.receive(requestBytes("SUBSCRIBE"))
        stack.receive(
            requestBytes(
                "CANCEL", via="SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKnone"
            )
        )
        responses = stack.sentResponses()
        self.assertEqual([r.code for r in responses], [202, 481])
        for response in responses:
            self.assertEqual(response.headerValues("server"), ["presence/test"])

    def test_noneByDefault(self) -> None:
        """A layer given no Server header adds none."""
        stack = Stack(RecordingUser(answer=200))
        stack.receive(requestBytes())
        [response] = stack.sentResponses()
        self.assertFalse(response.hasHeader("server"))

    def test_notOnSyntheticResponses(self) -> None:
        """A response made up for a client transaction (408) has no Server."""
        stack = Stack(serverHeader="presence/test")
        d = stack.layer.request(notify(), Peer("UDP", *CLIENT))
        stack.clock.advance(64 * T1)
        response = self.successResultOf(d)
        self.assertEqual(response.code, 408)
        self.assertFalse(response.hasHeader("server"))


class InviteServerTransactionTCPTests(SynchronousTestCase):
    """INVITE server transactions over TCP."""

    def test_noRetransmissionOverTCP(self) -> None:
        """Over TCP the response is not retransmitted; Timer H still applies.

        RFC 3261 17.2.1: Timer G is set only "if an unreliable transport is being used".
        """
        stack = Stack(Dispatcher())
        transport = stack.connect()
        protocol = stack.transports.connections[CLIENT]
        protocol.dataReceived(requestBytes("INVITE", via=TCP_VIA))
        [response] = StreamFramer().dataReceived(transport.value())
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 405)
        sent = transport.value()
        stack.clock.advance(64 * T1 - 0.01)
        self.assertEqual(transport.value(), sent)
        self.assertEqual(len(stack.layer.server), 1)
        stack.clock.advance(0.01)
        self.assertEqual(stack.layer.server, {})

    def test_timerIZeroOverTCP(self) -> None:
        """Timer I is zero seconds for reliable transports (RFC 3261 17.2.1)."""
        stack = Stack(Dispatcher())
        transport = stack.connect()
        protocol = stack.transports.connections[CLIENT]
        protocol.dataReceived(requestBytes("INVITE", via=TCP_VIA))
        [response] = StreamFramer().dataReceived(transport.value())
        assert isinstance(response, SIPResponse)
        ack = requestBytes("ACK", via=TCP_VIA, toTag=response.toAddr.tag)
        protocol.dataReceived(ack)
        stack.clock.advance(0)
        self.assertEqual(stack.layer.server, {})


class ServerTransactionUnitTests(SynchronousTestCase):
    """Server transaction classes used directly."""

    def test_nonInviteForOtherMethods(self) -> None:
        """Every method but INVITE opens a non-INVITE server transaction."""
        user = RecordingUser(answer=None)
        stack = Stack(user)
        stack.receive(requestBytes("SUBSCRIBE"))
        [(_, transaction)] = user.requests
        self.assertIsInstance(transaction, NonInviteServerTransaction)

    def test_inviteAnswered2xxTerminates(self) -> None:
        """A 2xx to an INVITE terminates the transaction at once.

        RFC 3261 17.2.1: "If ... the TU passes a 2xx response to the server transaction,
        the server transaction MUST transition to the Terminated state."
        """
        user = RecordingUser(answer=200)
        stack = Stack(user)
        stack.receive(requestBytes("INVITE"))
        self.assertEqual(stack.layer.server, {})
        self.assertEqual(stack.clock.getDelayedCalls(), [])

    def test_newBranchUnique(self) -> None:
        """Branches start with the magic cookie and never repeat.

        RFC 3261 8.1.1.7.
        """
        branches = {newBranch() for _ in range(100)}
        self.assertEqual(len(branches), 100)
        self.assertTrue(all(b.startswith("z9hG4bK") for b in branches))

    def test_streamProtocolType(self) -> None:
        """The connections the tests open are the transports' own stream protocol."""
        stack = Stack()
        stack.connect()
        self.assertIsInstance(stack.transports.connections[CLIENT], SIPStreamProtocol)
