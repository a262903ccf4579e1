"""Tests for `presence.sip.transport`: framing, Via stamping, routing, DNS."""

# trial's assertions and Twisted's test doubles are untyped.
# mypy: allow-untyped-calls

from __future__ import annotations

import socket

from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
    InvalidAddressError,
    MessageLengthError,
)
from twisted.internet.interfaces import IResolver, IUDPTransport
from twisted.internet.task import Clock
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import globalLogPublisher
from twisted.names import dns
from twisted.names.error import DNSServerError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from presence.sip.message import SIPURI, SIPRequest, SIPResponse, responseTo
from presence.sip.parser import StreamFramer
from presence.sip.transaction import TransactionLayer
from presence.sip.transport import (
    Peer,
    SIPDatagramProtocol,
    SIPStreamProtocol,
    SIPTransports,
    TransportError,
)
from presence.testing import (
    FakeDatagramTransport,
    FakeResolver,
    RecordingSink,
    RecordingUser,
    requestBytes,
)

SOURCE = ("198.51.100.7", 40000)
NAMESPACE = "presence.sip.transport.SIPTransports"


def udpTransports(
    trace: bool = False,
) -> tuple[SIPTransports, SIPDatagramProtocol, FakeDatagramTransport, RecordingSink]:
    """Transports with one fake UDP socket and a recording sink."""
    transports = SIPTransports(Clock(), trace=trace, advertisedHost="192.0.2.10")
    sink = RecordingSink()
    transports.sink = sink
    protocol = transports.datagramProtocol()
    udp = FakeDatagramTransport()
    protocol.makeConnection(udp)
    return transports, protocol, udp, sink


def streamConnection(
    transports: SIPTransports, host: str = SOURCE[0], port: int = SOURCE[1]
) -> tuple[SIPStreamProtocol, StringTransport]:
    """A TCP connection from ``host``:``port`` on an in-memory transport."""
    protocol = transports.streamFactory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
    protocol.makeConnection(transport)
    return protocol, transport


class FakeTests(SynchronousTestCase):
    """The fakes in `presence.testing` match the interfaces they stand for."""

    def test_datagramTransport(self) -> None:
        """The fake datagram transport provides ``IUDPTransport`` and records writes."""
        udp = FakeDatagramTransport()
        self.assertTrue(verifyObject(IUDPTransport, udp))
        udp.write(b"x", ("192.0.2.1", 5060))
        self.assertEqual(udp.written, [(b"x", ("192.0.2.1", 5060))])

    def test_resolver(self) -> None:
        """The fake resolver provides ``IResolver``."""
        self.assertTrue(verifyObject(IResolver, FakeResolver()))


class DatagramTests(SynchronousTestCase):
    """Receiving datagrams (RFC 3261 section 18.2.1)."""

    def setUp(self) -> None:
        """Listen on a fake UDP socket."""
        self.transports, self.protocol, self.udp, self.sink = udpTransports()

    def test_requestHandedOn(self) -> None:
        """A well-formed datagram reaches the sink with the UDP peer it came from."""
        self.protocol.datagramReceived(requestBytes(), SOURCE)
        [(message, peer)] = self.sink.messages
        self.assertIsInstance(message, SIPRequest)
        self.assertEqual(peer, Peer("UDP", *SOURCE))
        self.assertIs(peer.connection, self.protocol)
        self.assertEqual(self.transports.stats.received, 1)

    def test_garbageDropped(self) -> None:
        """An unparseable datagram is counted and dropped; nothing is raised."""
        for garbage in (b"\x00\xff\xfe garbage", b"SIP/2.0 abc\r\n\r\n", b"HELLO\r\n"):
            self.protocol.datagramReceived(garbage, SOURCE)
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.sink.malformed, [])
        self.assertEqual(self.transports.stats.malformed, 3)
        self.assertEqual(self.transports.stats.dropped, 3)
        self.assertEqual(self.udp.written, [])

    def test_malformedAnswerableRequest(self) -> None:
        """An answerable malformed request reaches the sink, its Via stamped."""
        self.protocol.datagramReceived(
            requestBytes(extra=("Content-Length: x",)), SOURCE
        )
        [(error, _)] = self.sink.malformed
        assert error.request is not None
        self.assertEqual(error.request.topVia.params["rport"], str(SOURCE[1]))
        self.assertEqual(self.transports.stats.malformed, 1)
        self.assertEqual(self.transports.stats.dropped, 0)

    def test_keepAliveIgnored(self) -> None:
        """A datagram of CRLFs is a keep-alive: counted, not parsed."""
        self.protocol.datagramReceived(b"\r\n\r\n", SOURCE)
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.transports.stats.keepAlives, 1)
        self.assertEqual(self.transports.stats.malformed, 0)

    def test_badViaDropped(self) -> None:
        """A request whose top Via cannot be parsed is dropped."""
        self.protocol.datagramReceived(requestBytes(via="nonsense"), SOURCE)
        self.assertEqual(self.sink.messages, [])
        self.assertEqual(self.transports.stats.dropped, 1)

    def test_responseNotStamped(self) -> None:
        """Responses are handed on with their Via untouched."""
        response = responseTo(
            SIPRequest(
                "NOTIFY",
                "sip:a@b",
                [("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx;rport")],
            ),
            200,
        )
        self.protocol.datagramReceived(response.toBytes(), SOURCE)
        [(message, _)] = self.sink.messages
        self.assertEqual(
            message.header("via"), "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx;rport"
        )


class ViaStampingTests(SynchronousTestCase):
    """received and rport on the top Via (RFC 3261 18.2.1, RFC 3581 section 4)."""

    def stamp(self, via: str, source: tuple[str, int] = SOURCE) -> str:
        """Receive a request with top Via ``via``; return the stamped value."""
        _, protocol, _, sink = udpTransports()
        extra = ("Via: SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKlower",)
        protocol.datagramReceived(requestBytes(via=via, extra=extra), source)
        [(message, _)] = sink.messages
        lines = message.headerLines("via")
        self.assertEqual(lines[1], "SIP/2.0/UDP 203.0.113.1;branch=z9hG4bKlower")
        self.assertIn(("via", lines[0]), message.headers)
        return lines[0]

    def test_receivedWhenAddressDiffers(self) -> None:
        """A sent-by address unlike the source gets received.

        RFC 3261 18.2.1: "If the host portion of the sent-by parameter contains ... an
        IP address that differs from the packet source address, the server MUST add a
        received parameter."
        """
        via = self.stamp("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1")
        self.assertEqual(
            via, "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=198.51.100.7"
        )

    def test_receivedForDomainName(self) -> None:
        """A sent-by domain name gets received.

        RFC 3261 18.2.1: "If the host portion of the sent-by parameter contains a domain
        name ... the server MUST add a received parameter."
        """
        via = self.stamp("SIP/2.0/UDP client.example.com;branch=z9hG4bK1")
        self.assertTrue(via.endswith(";received=198.51.100.7"))

    def test_nothingWhenAddressMatches(self) -> None:
        """Without rport, a sent-by equal to the source is left alone.

        RFC 3261 18.2.1.
        """
        via = self.stamp("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1")
        self.assertEqual(via, "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1")

    def test_sameIPv6AddressWrittenDifferently(self) -> None:
        """An IPv6 sent-by equal to the source in another spelling needs no received."""
        via = self.stamp(
            "SIP/2.0/UDP [2001:DB8:0::7]:5060;branch=z9hG4bK1", ("2001:db8::7", 5060)
        )
        self.assertNotIn("received", via)

    def test_rportFilledAndReceivedAlways(self) -> None:
        """An empty rport gets the source port, and received is always added.

        RFC 3581 section 4: received is added "even if it is identical to the value of
        the sent-by component".
        """
        via = self.stamp("SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bK1")
        self.assertEqual(
            via,
            "SIP/2.0/UDP 198.51.100.7:5060;rport=40000;branch=z9hG4bK1"
            ";received=198.51.100.7",
        )

    def test_rportWithValueKept(self) -> None:
        """An rport that already has a value is not changed."""
        via = self.stamp("SIP/2.0/UDP 10.0.0.1;rport=1234;branch=z9hG4bK1")
        self.assertIn(";rport=1234;", via)

    def test_commaSeparatedVias(self) -> None:
        """When Vias share a line, only the top value changes."""
        _, protocol, _, sink = udpTransports()
        via = (
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2"
        )
        protocol.datagramReceived(requestBytes(via=via), SOURCE)
        [(message, _)] = sink.messages
        self.assertEqual(
            message.headerLines("via"),
            [
                "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;received=198.51.100.7, "
                "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2"
            ],
        )
        self.assertEqual(len(message.vias), 2)


class ResponseRoutingTests(SynchronousTestCase):
    """Where responses go (RFC 3261 18.2.2, RFC 3581 section 4)."""

    def answer(
        self, via: str, source: tuple[str, int] = SOURCE
    ) -> list[tuple[bytes, tuple[str, int]]]:
        """Receive a request with top Via ``via``, answer it, return what was sent."""
        transports, protocol, udp, sink = udpTransports()
        protocol.datagramReceived(requestBytes(via=via), source)
        [(request, peer)] = sink.messages
        assert isinstance(request, SIPRequest)
        transports.sendResponse(responseTo(request, 200), peer)
        return udp.written

    def test_rportAsked(self) -> None:
        """With rport, the response goes to received:rport.

        RFC 3581 section 4: "the response MUST be sent to the IP address listed in the
        received parameter, and the port in the rport parameter."
        """
        written = self.answer("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport")
        self.assertEqual([a for _, a in written], [SOURCE])

    def test_noRport(self) -> None:
        """Without rport, the response goes to received:sent-by port.

        RFC 3261 18.2.2.
        """
        written = self.answer("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1")
        self.assertEqual([a for _, a in written], [("198.51.100.7", 5070)])

    def test_noRportDefaultPort(self) -> None:
        """Without a sent-by port, the response goes to port 5060 (RFC 3261 18.2.2)."""
        written = self.answer("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1")
        self.assertEqual([a for _, a in written], [("198.51.100.7", 5060)])

    def test_sentByWhenNoReceived(self) -> None:
        """With no received, the response goes to the sent-by address.

        RFC 3261 18.2.2.
        """
        written = self.answer("SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK1")
        self.assertEqual([a for _, a in written], [("198.51.100.7", 5070)])

    def test_sendErrorCounted(self) -> None:
        """A socket error sending a response is counted and logged, not raised."""
        transports, protocol, udp, sink = udpTransports()
        protocol.datagramReceived(requestBytes(), SOURCE)
        [(request, peer)] = sink.messages
        assert isinstance(request, SIPRequest)
        udp.error = OSError("no buffer space")
        transports.sendResponse(responseTo(request, 200), peer)
        self.assertEqual(transports.stats.sendErrors, 1)

    def test_tcpResponseOverRequestConnection(self) -> None:
        """A TCP response goes back over the request's connection.

        RFC 3261 18.2.2: "the response MUST be sent using the existing connection to the
        source of the original request."
        """
        transports = SIPTransports(Clock())
        sink = RecordingSink()
        transports.sink = sink
        protocol, transport = streamConnection(transports)
        protocol.dataReceived(
            requestBytes(via="SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK1")
        )
        [(request, peer)] = sink.messages
        assert isinstance(request, SIPRequest)
        transports.sendResponse(responseTo(request, 200), peer)
        self.assertTrue(transport.value().startswith(b"SIP/2.0 200 OK\r\n"))

    def test_tcpResponseAfterConnectionLost(self) -> None:
        """With the connection gone, a new one goes to received:sent-by port.

        RFC 3261 18.2.2: "If that connection is no longer open, the server SHOULD open a
        connection to the IP address in the received parameter ... using the port in the
        sent-by value."
        """
        reactor = MemoryReactorClock()
        transports = SIPTransports(reactor, reactor=reactor)
        sink = RecordingSink()
        transports.sink = sink
        protocol, _ = streamConnection(transports)
        protocol.dataReceived(
            requestBytes(via="SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK1;rport")
        )
        [(request, peer)] = sink.messages
        assert isinstance(request, SIPRequest)
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        transports.sendResponse(responseTo(request, 200), peer)
        [(host, port, *_)] = reactor.tcpClients
        self.assertEqual((host, port), ("198.51.100.7", 5070))


class StreamTests(SynchronousTestCase):
    """TCP connections: framing, keep-alives, errors, idle timeout."""

    def setUp(self) -> None:
        """Connect a fake TCP client."""
        self.clock = Clock()
        self.transports = SIPTransports(self.clock, idleTimeout=60)
        self.sink = RecordingSink()
        self.transports.sink = self.sink
        self.protocol, self.transport = streamConnection(self.transports)
        self.tcpVia = "SIP/2.0/TCP 198.51.100.7:40000;branch=z9hG4bK{}"

    def message(self, n: int, body: bytes = b"") -> bytes:
        """A request over TCP with branch ``n``."""
        return requestBytes(via=self.tcpVia.format(n), body=body)

    def test_connectionsCounted(self) -> None:
        """Each accepted connection is counted, and kept until it is lost."""
        self.assertEqual(self.transports.stats.connectionsOpened, 1)
        self.assertEqual(len(self.transports.connections), 1)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.transports.connections, {})
        self.assertEqual(self.transports.stats.connectionsOpened, 1)

    def test_twoMessagesInOneRead(self) -> None:
        """Two messages in one read are framed by Content-Length (RFC 3261 18.3)."""
        self.protocol.dataReceived(self.message(1, b"hello") + self.message(2))
        bodies = [m.body for m, _ in self.sink.messages]
        self.assertEqual(bodies, [b"hello", b""])
        self.assertEqual({p for _, p in self.sink.messages}, {Peer("TCP", *SOURCE)})

    def test_messageOverSeveralReads(self) -> None:
        """A message split over reads is handed on once complete."""
        data = self.message(1, b"body")
        self.protocol.dataReceived(data[:30])
        self.protocol.dataReceived(data[30:-2])
        self.assertEqual(self.sink.messages, [])
        self.protocol.dataReceived(data[-2:])
        self.assertEqual([m.body for m, _ in self.sink.messages], [b"body"])

    def test_byteAtATime(self) -> None:
        """Messages fed one byte at a time come out whole and in order."""
        data = self.message(1, b"abc") + b"\r\n\r\n" + self.message(2)
        for i in range(len(data)):
            self.protocol.dataReceived(data[i : i + 1])
        self.assertEqual([m.body for m, _ in self.sink.messages], [b"abc", b""])
        self.assertEqual(self.transport.value(), b"\r\n")

    def test_keepAlivePong(self) -> None:
        """A double-CRLF ping is answered with a single CRLF pong (RFC 5626 3.5.1)."""
        self.protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(self.transport.value(), b"\r\n")
        self.assertEqual(self.transports.stats.keepAlives, 1)
        self.assertFalse(self.transport.disconnecting)

    def test_malformedStreamAnswered400AndClosed(self) -> None:
        """A broken stream gets a 400 if the request line was readable, then closes.

        STYLE 2.11.
        """
        layer = TransactionLayer(self.clock, self.transports, RecordingUser())
        self.assertIs(self.transports.sink, layer)
        bad = requestBytes(via=self.tcpVia.format(1)).replace(
            b"Content-Length: 0\r\n", b""
        )
        self.protocol.dataReceived(bad + self.message(2))
        [response] = StreamFramer().dataReceived(self.transport.value())
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 400)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transports.connections, {})
        self.assertEqual(self.transports.stats.malformed, 1)
        self.protocol.dataReceived(self.message(3))
        self.assertEqual(self.transports.stats.malformed, 1)

    def test_garbageStreamClosed(self) -> None:
        """A stream whose start line is unreadable is closed without an answer."""
        self.protocol.dataReceived(b"\x00\x01 what\r\n\r\n")
        self.assertEqual(self.transport.value(), b"")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transports.stats.dropped, 1)
        self.assertEqual(self.sink.messages, [])

    def test_idleTimeout(self) -> None:
        """An idle connection is closed and forgotten; activity postpones it."""
        self.assertIn(SOURCE, self.transports.connections)
        self.clock.advance(59)
        self.protocol.dataReceived(b"\r\n\r\n")
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transports.connections, {})
        self.protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionLostCancelsIdleTimer(self) -> None:
        """A lost connection is forgotten and its idle timer cancelled."""
        self.protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.transports.connections, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RequestSendingTests(SynchronousTestCase):
    """Sending requests: connection reuse, new connections, UDP."""

    def setUp(self) -> None:
        """Transports with a fake reactor."""
        self.reactor = MemoryReactorClock()
        self.transports = SIPTransports(self.reactor, reactor=self.reactor)
        self.transports.sink = RecordingSink()
        self.target = Peer("TCP", *SOURCE)

    def completeConnection(self, index: int = 0) -> StringTransport:
        """Make the fake reactor's pending connection succeed."""
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        return transport

    def test_reuseExistingConnection(self) -> None:
        """A request reuses an open connection to its target."""
        _, transport = streamConnection(self.transports)
        d = self.transports.sendBytes(b"NOTIFY", self.target)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(transport.value(), b"NOTIFY")
        self.assertEqual(self.reactor.tcpClients, [])

    def test_connectWhenNone(self) -> None:
        """Without a connection, one is made, used, then reused."""
        d = self.transports.sendBytes(b"ONE", self.target)
        [(host, port, _, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), SOURCE)
        self.assertNoResult(d)
        transport = self.completeConnection()
        self.successResultOf(d)
        self.successResultOf(self.transports.sendBytes(b"TWO", self.target))
        self.assertEqual(transport.value(), b"ONETWO")
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_sendsWhileConnectingShareConnection(self) -> None:
        """Requests sent while connecting wait for the same connection."""
        first = self.transports.sendBytes(b"ONE", self.target)
        second = self.transports.sendBytes(b"TWO", self.target)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        transport = self.completeConnection()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(transport.value(), b"ONETWO")

    def test_connectionRefused(self) -> None:
        """A refused connection fails every waiting send with `TransportError`."""
        first = self.transports.sendBytes(b"ONE", self.target)
        second = self.transports.sendBytes(b"TWO", self.target)
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(
            self.reactor.connectors[0], Failure(ConnectionRefusedError())
        )
        self.failureResultOf(first, TransportError)
        self.failureResultOf(second, TransportError)
        self.transports.sendBytes(b"THREE", self.target)
        self.assertEqual(len(self.reactor.tcpClients), 2)

    def test_closedConnectionNotReused(self) -> None:
        """A connection we are closing is not reused."""
        protocol, transport = streamConnection(self.transports)
        protocol.close()
        self.transports.sendBytes(b"NOTIFY", self.target)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_udp(self) -> None:
        """A UDP request goes out on a listening socket."""
        protocol = self.transports.datagramProtocol()
        udp = FakeDatagramTransport()
        protocol.makeConnection(udp)
        target = Peer("UDP", *SOURCE)
        self.successResultOf(self.transports.sendBytes(b"NOTIFY", target))
        self.assertEqual(udp.written, [(b"NOTIFY", SOURCE)])

    def test_udpSocketErrors(self) -> None:
        """Socket errors on a UDP send, too-large messages included, fail the send."""
        protocol = self.transports.datagramProtocol()
        udp = FakeDatagramTransport()
        protocol.makeConnection(udp)
        target = Peer("UDP", *SOURCE)
        for error in (
            OSError("no buffer space"),
            MessageLengthError("message too long"),
            InvalidAddressError("example.com", "not an IP"),
        ):
            udp.error = error
            self.failureResultOf(
                self.transports.sendBytes(b"NOTIFY", target), TransportError
            )

    def test_udpWithoutSocket(self) -> None:
        """A UDP request with no socket to send on fails with `TransportError`."""
        d = self.transports.sendBytes(b"NOTIFY", Peer("UDP", *SOURCE))
        self.failureResultOf(d, TransportError)

    def test_unsupportedTransport(self) -> None:
        """A transport other than UDP, TCP and TLS fails with `TransportError`."""
        d = self.transports.sendBytes(b"NOTIFY", Peer("SCTP", *SOURCE))
        self.failureResultOf(d, TransportError)

    def test_viaAndContact(self) -> None:
        """Via and Contact name our host, port and transport."""
        transports, _, _, _ = udpTransports()
        via = transports.makeVia(Peer("UDP", *SOURCE), "z9hG4bKx")
        self.assertEqual(str(via), "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx;rport")
        transports.tcpListening(5070)
        contact = transports.contactURI(Peer("TCP", *SOURCE), "presence")
        self.assertEqual(str(contact), "sip:presence@192.0.2.10:5070;transport=tcp")


class ResolveTests(SynchronousTestCase):
    """RFC 3263 server location with an injected resolver."""

    def setUp(self) -> None:
        """Transports with a fake resolver."""
        self.resolver = FakeResolver()
        self.transports = SIPTransports(Clock(), resolver=self.resolver)

    def resolve(self, uri: SIPURI) -> Peer:
        """Resolve ``uri``, which must succeed at once."""
        peer = self.successResultOf(self.transports.resolve(uri))
        assert isinstance(peer, Peer)
        return peer

    def test_ipLiteral(self) -> None:
        """An IP literal is used as it is, with no lookup.

        RFC 3263 4.2: "If TARGET is a numeric IP address, the client uses that address."
        """
        self.assertEqual(
            self.resolve(SIPURI("192.0.2.5", "bob")), Peer("UDP", "192.0.2.5", 5060)
        )
        self.assertEqual(
            self.resolve(SIPURI("[2001:db8::5]", "bob", 5070, {"transport": "tcp"})),
            Peer("TCP", "2001:db8::5", 5070),
        )
        self.assertEqual(self.resolver.queries, [])

    def test_explicitPortAddressOnly(self) -> None:
        """With an explicit port only the address is looked up.

        RFC 3263 4.2: "If the TARGET was not a numeric IP address, but a port is present
        in the URI, the client performs an A or AAAA record lookup of the domain name."
        """
        self.resolver.addAddress("example.com", "192.0.2.7")
        self.resolver.addService("_sip._udp.example.com", "sip.example.com", 5080)
        peer = self.resolve(SIPURI("example.com", "bob", 5070))
        self.assertEqual(peer, Peer("UDP", "192.0.2.7", 5070))
        self.assertEqual(self.resolver.queries, [("example.com", dns.ALL_RECORDS)])

    def test_srvThenAddress(self) -> None:
        """Without a port, SRV comes first, then its target's address.

        RFC 3263 4.2.
        """
        self.resolver.addService("_sip._udp.example.com", "sip.example.com", 5080)
        self.resolver.addAddress("sip.example.com", "192.0.2.8")
        peer = self.resolve(SIPURI("example.com", "bob"))
        self.assertEqual(peer, Peer("UDP", "192.0.2.8", 5080))
        self.assertEqual(
            self.resolver.queries,
            [("_sip._udp.example.com", dns.SRV), ("sip.example.com", dns.ALL_RECORDS)],
        )

    def test_srvTCP(self) -> None:
        """A URI with transport=tcp looks up _sip._tcp (RFC 3263 4.2)."""
        self.resolver.addService("_sip._tcp.example.com", "sip.example.com", 5090)
        self.resolver.addAddress("sip.example.com", "192.0.2.8")
        peer = self.resolve(SIPURI("example.com", "bob", None, {"transport": "tcp"}))
        self.assertEqual(peer, Peer("TCP", "192.0.2.8", 5090))

    def test_srvLowestPriority(self) -> None:
        """The SRV record with the lowest priority is used (RFC 2782)."""
        self.resolver.addService("_sip._udp.example.com", "b.example.com", 5082, 20)
        self.resolver.addService("_sip._udp.example.com", "a.example.com", 5081, 10)
        self.resolver.addAddress("a.example.com", "192.0.2.1")
        self.resolver.addAddress("b.example.com", "192.0.2.2")
        peer = self.resolve(SIPURI("example.com"))
        self.assertEqual(peer, Peer("UDP", "192.0.2.1", 5081))

    def test_noSrvFallsBackToAddress(self) -> None:
        """Without SRV records, the host's address is used on port 5060.

        RFC 3263 4.2: "If no SRV records were found, the client performs an A or AAAA
        record lookup of the domain name."
        """
        self.resolver.addAddress("example.com", "192.0.2.9")
        self.assertEqual(
            self.resolve(SIPURI("example.com")), Peer("UDP", "192.0.2.9", 5060)
        )

    def test_srvServerFailureFallsBack(self) -> None:
        """A failing SRV lookup falls back to the address lookup."""
        self.resolver.failures["_sip._udp.example.com"] = DNSServerError("boom")
        self.resolver.addAddress("example.com", "192.0.2.9")
        self.assertEqual(
            self.resolve(SIPURI("example.com")), Peer("UDP", "192.0.2.9", 5060)
        )

    def test_srvNoService(self) -> None:
        """An SRV target of "." means the service is not offered (RFC 2782)."""
        self.resolver.addService("_sip._udp.example.com", ".", 0)
        self.resolver.addAddress("example.com", "192.0.2.9")
        self.failureResultOf(
            self.transports.resolve(SIPURI("example.com")), TransportError
        )

    def test_failure(self) -> None:
        """A name that does not resolve gives `TransportError`."""
        self.failureResultOf(
            self.transports.resolve(SIPURI("nowhere.example")), TransportError
        )
        self.failureResultOf(
            self.transports.resolve(SIPURI("nowhere.example", None, 5060)),
            TransportError,
        )

    def test_noResolver(self) -> None:
        """A host name without a resolver gives `TransportError`."""
        transports = SIPTransports(Clock())
        self.failureResultOf(transports.resolve(SIPURI("example.com")), TransportError)

    def test_unsupportedTransport(self) -> None:
        """A transport this server does not speak gives `TransportError`."""
        uri = SIPURI("192.0.2.5", params={"transport": "sctp"})
        self.failureResultOf(self.transports.resolve(uri), TransportError)

    def test_maddr(self) -> None:
        """An maddr parameter overrides the host (RFC 3261 19.1.1)."""
        uri = SIPURI("example.com", "bob", 5070, {"maddr": "192.0.2.3"})
        self.assertEqual(self.resolve(uri), Peer("UDP", "192.0.2.3", 5070))

    def test_connectionKept(self) -> None:
        """The connection given to resolve is kept on the peer for reuse."""
        marker = object()
        peer = self.successResultOf(
            self.transports.resolve(SIPURI("192.0.2.5"), marker)
        )
        self.assertIs(peer.connection, marker)


class TraceTests(SynchronousTestCase):
    """--sip-trace logs every message in and out with its peer."""

    def events(self) -> list[dict[str, object]]:
        """The trace events logged by the transports."""
        return [
            e
            for e in self.observer
            if e.get("log_namespace") == NAMESPACE
            and str(e.get("log_format", "")).startswith("SIP ")
        ]

    def setUp(self) -> None:
        """Observe the global log publisher."""
        # It only calls addCleanup, which SynchronousTestCase has too.
        self.observer = EventLoggingObserver.createWithCleanup(
            self,  # type: ignore[arg-type]
            globalLogPublisher,
        )

    def test_udpInAndOut(self) -> None:
        """A UDP request and its response are both traced with their peer and text."""
        transports, protocol, _, sink = udpTransports(trace=True)
        data = requestBytes()
        protocol.datagramReceived(data, SOURCE)
        [(request, peer)] = sink.messages
        assert isinstance(request, SIPRequest)
        transports.sendResponse(responseTo(request, 200), peer)
        incoming, outgoing = self.events()
        self.assertEqual(incoming["log_format"], "SIP in from {peer}:\n{text}")
        self.assertEqual(incoming["peer"], Peer("UDP", *SOURCE))
        self.assertEqual(incoming["text"], data.decode())
        self.assertEqual(outgoing["log_format"], "SIP out to {peer}:\n{text}")
        self.assertEqual(outgoing["peer"], Peer("UDP", *SOURCE))
        self.assertTrue(str(outgoing["text"]).startswith("SIP/2.0 200 OK"))

    def test_malformedDatagramTraced(self) -> None:
        """A datagram that fails to parse is traced too."""
        _, protocol, _, _ = udpTransports(trace=True)
        protocol.datagramReceived(b"garbage\r\n\r\n", SOURCE)
        [event] = self.events()
        self.assertEqual(event["text"], "garbage\r\n\r\n")

    def test_tcpInAndOut(self) -> None:
        """TCP messages in and out are traced with the TCP peer."""
        transports = SIPTransports(Clock(), trace=True)
        transports.sink = RecordingSink()
        protocol, _ = streamConnection(transports)
        protocol.dataReceived(requestBytes(via="SIP/2.0/TCP h;branch=z9hG4bK1"))
        transports.sendBytes(b"NOTIFY", Peer("TCP", *SOURCE))
        incoming, outgoing = self.events()
        self.assertEqual(incoming["peer"], Peer("TCP", *SOURCE))
        self.assertTrue(str(incoming["text"]).startswith("OPTIONS "))
        self.assertEqual(outgoing["peer"], Peer("TCP", *SOURCE))
        self.assertEqual(outgoing["text"], "NOTIFY")

    def test_noTraceByDefault(self) -> None:
        """Without --sip-trace no message is logged."""
        _, protocol, _, _ = udpTransports(trace=False)
        protocol.datagramReceived(requestBytes(), SOURCE)
        self.assertEqual(self.events(), [])


class _SocketPort:
    """A stand-in for Twisted's UDP Port: a real socket, and a write that counts."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.writes = 0

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != "127.0.0.1":
            raise ValueError(f"not an IPv4 address: {addr[0]!r}")
        self.writes += 1
        self.socket.sendto(data, addr)


class DirectSendTests(SynchronousTestCase):
    """`SIPDatagramProtocol.send` writes to the socket once a host is checked."""

    def setUp(self) -> None:
        """A protocol on a real loopback socket, and a receiving socket."""
        self.port = _SocketPort()
        self.protocol = SIPTransports(Clock()).datagramProtocol()
        self.protocol.transport = self.port  # type: ignore[assignment]
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.settimeout(5)
        self.addCleanup(self.port.socket.close)
        self.addCleanup(self.receiver.close)

    def test_firstThroughWriteThenDirect(self) -> None:
        """The first datagram to a host goes through Port.write, later ones not."""
        target = self.receiver.getsockname()
        self.protocol.send(b"one", *target)
        self.protocol.send(b"two", *target)
        self.protocol.send(b"three", *target)
        self.assertEqual(self.port.writes, 1)
        received = [self.receiver.recv(100) for _ in range(3)]
        self.assertEqual(received, [b"one", b"two", b"three"])

    def test_refusedHostNeverDirect(self) -> None:
        """A host Port.write refuses is refused every time, never sent directly."""
        for _ in range(2):
            with self.assertRaises(TransportError):
                self.protocol.send(b"x", "not-an-address", 5060)
        self.assertEqual(self.port.writes, 0)

    def test_tooLargeIsTransportError(self) -> None:
        """A datagram the socket refuses as too large is a TransportError."""
        target = self.receiver.getsockname()
        self.protocol.send(b"one", *target)
        with self.assertRaises(TransportError):
            self.protocol.send(b"x" * 70000, *target)
