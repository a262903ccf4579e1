"""Requests too large for UDP go over TCP (RFC 3261 section 18.1.1, ``udp_mtu``).

RFC 3261 section 18.1.1: "If a request is within 200 bytes of the path MTU,
or if it is larger than 1300 bytes and the path MTU is unknown, the request
MUST be sent using an RFC 2914 congestion controlled transport protocol,
such as TCP. If this causes a change in the transport protocol from the one
indicated in the top Via, the value in the top Via MUST be changed." And:
"However, implementations MUST be able to handle messages up to the maximum
datagram packet size. For UDP, this size is 65,535 bytes, including IP and
UDP headers."
"""

# trial's assertions and Twisted's test doubles are untyped.
# mypy: allow-untyped-calls

from __future__ import annotations

import errno
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    NoRouteError,
    TCPTimedOutError,
)
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from presence.config import ConfigError, fromMapping
from presence.sip.message import SIPRequest
from presence.sip.parser import parseDatagram
from presence.sip.transaction import T1, SyntheticResponse, TransactionLayer
from presence.sip.transport import (
    DEFAULT_UDP_MTU,
    NO_STREAM_ENTRIES,
    NO_STREAM_MEMORY,
    Peer,
    SIPTransports,
    datagramFits,
)
from presence.testing import FakeDatagramTransport, responseBytes

WATCHER = ("198.51.100.7", 5062)


def notify(size: int) -> SIPRequest:
    """A NOTIFY whose bytes, with the Via the layer adds, are about ``size``."""
    return SIPRequest(
        "NOTIFY",
        f"sip:alice@{WATCHER[0]}:{WATCHER[1]}",
        [
            ("Max-Forwards", "70"),
            ("From", "<sip:presence@192.0.2.10>;tag=ours"),
            ("To", "<sip:alice@example.com>;tag=theirs"),
            ("Call-ID", "call-1@192.0.2.10"),
            ("CSeq", "1 NOTIFY"),
            ("Event", "presence"),
            ("Content-Type", "application/pidf+xml"),
        ],
        b"x" * max(0, size - 330),
    )


class Stack:
    """Transports and a transaction layer on a fake UDP socket and reactor."""

    def __init__(self, tcpListener: bool = True, udpMtu: int | None = 1300) -> None:
        """Listen on UDP (and on TCP port 5060 when ``tcpListener``)."""
        self.clock = MemoryReactorClock()
        self.transports = SIPTransports(
            self.clock, reactor=self.clock, advertisedHost="192.0.2.10", udpMtu=udpMtu
        )
        self.events: list[dict[str, Any]] = []
        self.transports.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.udp = FakeDatagramTransport()
        self.transports.datagramProtocol().makeConnection(self.udp)
        if tcpListener:
            self.transports.tcpListening(5060)
        self.layer = TransactionLayer(self.clock, self.transports)

    def send(self, size: int) -> tuple[Any, SIPRequest]:
        """Send a NOTIFY of about ``size`` bytes to the watcher over UDP."""
        request = notify(size)
        d = self.layer.request(request, Peer("UDP", *WATCHER))
        return d, request

    def accept(self) -> StringTransport:
        """Let the pending TCP connection succeed; return its transport."""
        host, port, factory, _, _ = self.clock.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "192.0.2.10", 40001),
            peerAddress=IPv4Address("TCP", host, port),
        )
        protocol.makeConnection(transport)
        return transport

    def refuse(self, reason: Exception) -> None:
        """Make the pending TCP connection fail with ``reason``."""
        _, _, factory, _, _ = self.clock.tcpClients[-1]
        factory.clientConnectionFailed(self.clock.connectors[-1], Failure(reason))


def topVia(data: bytes) -> str:
    """The top Via of a message's bytes."""
    via = parseDatagram(data).header("via")
    assert via is not None
    return via


class OverTCPTests(SynchronousTestCase):
    """A request over ``udp_mtu`` to a UDP destination goes over TCP."""

    def test_largeNotifyOverTCP(self) -> None:
        """A 2,000-byte NOTIFY to a UDP watcher goes over TCP, its Via says TCP.

        RFC 3261 18.1.1: "if it is larger than 1300 bytes and the path MTU
        is unknown, the request MUST be sent using an RFC 2914 congestion
        controlled transport protocol, such as TCP. If this causes a change
        in the transport protocol from the one indicated in the top Via, the
        value in the top Via MUST be changed."
        """
        stack = Stack()
        d, _ = stack.send(2000)
        [(host, port, _, _, _)] = stack.clock.tcpClients
        self.assertEqual((host, port), WATCHER)
        transport = stack.accept()
        data = transport.value()
        self.assertGreater(len(data), 1300)
        self.assertTrue(data.startswith(b"NOTIFY sip:alice@198.51.100.7:5062 "))
        via = topVia(data)
        self.assertTrue(via.startswith("SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bK"))
        self.assertEqual(len(parseDatagram(data).headerValues("via")), 1)
        self.assertEqual(stack.udp.written, [])
        self.assertEqual(stack.layer.stats.movedToTCP, 1)
        protocol = stack.transports.connections[WATCHER]
        protocol.dataReceived(responseBytes(200, via))
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_noRetransmissionOverTCP(self) -> None:
        """Moved to TCP, the request is not retransmitted; Timer F still ends it.

        RFC 3261 17.1.2.2: Timer E is set only "if an unreliable transport
        is in use"; Timer F is set in any case.
        """
        stack = Stack()
        d, _ = stack.send(2000)
        transport = stack.accept()
        sent = transport.value()
        stack.clock.advance(64 * T1 - 0.01)
        self.assertEqual(transport.value(), sent)
        self.assertEqual(stack.udp.written, [])
        self.assertNoResult(d)
        stack.clock.advance(0.01)
        self.assertEqual(self.successResultOf(d).code, 408)

    def test_winfoSizeOverTCP(self) -> None:
        """A 138 KB NOTIFY (winfo of 1,000 watchers) goes whole over TCP.

        Over UDP no datagram could carry it (RFC 3261 18.1.1: "For UDP, this
        size is 65,535 bytes, including IP and UDP headers.").
        """
        stack = Stack()
        d, _ = stack.send(138_586)
        transport = stack.accept()
        data = transport.value()
        self.assertGreater(len(data), 138_000)
        head, body = data.split(b"\r\n\r\n", 1)
        self.assertEqual(len(body), len(notify(138_586).body))
        via = head.decode().split("\r\n")[1].removeprefix("Via: ")
        self.assertTrue(via.startswith("SIP/2.0/TCP "))
        stack.transports.connections[WATCHER].dataReceived(responseBytes(200, via))
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_connectionReused(self) -> None:
        """A second large request goes over the connection the first opened."""
        stack = Stack()
        stack.send(2000)
        transport = stack.accept()
        stack.send(3000)
        self.assertEqual(len(stack.clock.tcpClients), 1)
        self.assertEqual(transport.value().count(b"NOTIFY sip:"), 2)

    def test_smallStaysUDP(self) -> None:
        """A request of ``udp_mtu`` bytes or fewer goes over UDP with a UDP Via."""
        stack = Stack()
        _, request = stack.send(1000)
        size = len(request.toBytes())
        self.assertLessEqual(size, 1300)
        [(data, addr)] = stack.udp.written
        self.assertEqual(addr, WATCHER)
        self.assertTrue(topVia(data).startswith("SIP/2.0/UDP "))
        self.assertEqual(stack.clock.tcpClients, [])
        self.assertEqual(stack.layer.stats.movedToTCP, 0)

    def test_atTheThreshold(self) -> None:
        """Exactly ``udp_mtu`` bytes stays on UDP; one more byte goes over TCP."""
        stack = Stack()
        probe = stack.layer.request(notify(1000), Peer("UDP", *WATCHER))
        self.assertNoResult(probe)
        [(data, _)] = stack.udp.written
        size = 1000 + 1300 - len(data)
        for extra, tcp in ((0, 0), (1, 1)):
            stack.layer.request(notify(size + extra), Peer("UDP", *WATCHER))
            self.assertEqual(len(stack.clock.tcpClients), tcp)
        self.assertEqual(len(stack.udp.written[1][0]), 1300)

    def test_offStaysUDP(self) -> None:
        """``udp_mtu`` off (``None``): large requests stay on UDP."""
        stack = Stack(udpMtu=None)
        stack.send(2000)
        self.assertEqual(len(stack.udp.written), 1)
        self.assertEqual(stack.clock.tcpClients, [])

    def test_noTCPListenerStaysUDPLoggedOnce(self) -> None:
        """Without a TCP listener the request stays on UDP, and that is logged once.

        A TCP Via needs a port where this server listens over TCP.
        """
        stack = Stack(tcpListener=False)
        stack.send(2000)
        stack.send(2000)
        self.assertEqual(len(stack.udp.written), 2)
        self.assertTrue(topVia(stack.udp.written[0][0]).startswith("SIP/2.0/UDP "))
        self.assertEqual(stack.clock.tcpClients, [])
        logged = [e for e in stack.events if "udp_mtu" in e.get("log_format", "")]
        self.assertEqual(len(logged), 1)

    def test_streamTargetUntouched(self) -> None:
        """A large request to a TCP destination goes over TCP as it was."""
        stack = Stack()
        stack.layer.request(notify(2000), Peer("TCP", *WATCHER))
        stack.accept()
        self.assertEqual(stack.layer.stats.movedToTCP, 0)


class RetryOverUDPTests(SynchronousTestCase):
    """Back to UDP when the TCP connection is refused (RFC 3261 18.1.1).

    "If an element sends a request over TCP because of these message size
    constraints, and that request would have otherwise been sent over UDP,
    if the attempt to establish the connection generates either an ICMP
    Protocol Not Supported, or results in a TCP reset, the element SHOULD
    retry the request, using UDP."
    """

    def test_refusedRetriesOverUDP(self) -> None:
        """A refused connection: the request goes over UDP, Via UDP, same branch."""
        stack = Stack()
        d, _ = stack.send(2000)
        stack.refuse(ConnectionRefusedError())
        [(data, addr)] = stack.udp.written
        self.assertEqual(addr, WATCHER)
        via = topVia(data)
        self.assertTrue(via.startswith("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK"))
        self.assertEqual(len(parseDatagram(data).headerValues("via")), 1)
        self.assertEqual(stack.layer.stats.udpRetries, 1)
        self.assertNoResult(d)
        # Over UDP Timer E retransmits it (RFC 3261 17.1.2.2).
        stack.clock.advance(T1)
        self.assertEqual(len(stack.udp.written), 2)
        self.assertEqual(stack.udp.written[1][0], data)
        stack.transports.datagramReceived(
            stack.transports.udp[0], responseBytes(200, via), *WATCHER
        )
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_resetRetriesOverUDP(self) -> None:
        """A TCP reset while connecting (ECONNRESET) retries over UDP too."""
        stack = Stack()
        stack.send(2000)
        stack.refuse(ConnectError(osError=errno.ECONNRESET))
        self.assertEqual(len(stack.udp.written), 1)

    def test_protocolNotSupportedRetriesOverUDP(self) -> None:
        """ICMP Protocol Not Supported (ENOPROTOOPT) retries over UDP."""
        stack = Stack()
        stack.send(2000)
        stack.refuse(ConnectError(osError=errno.ENOPROTOOPT))
        self.assertEqual(len(stack.udp.written), 1)

    def test_timeoutRetriesOverUDP(self) -> None:
        """A connection attempt that times out retries over UDP as well.

        Beyond the RFC's two cases, decided here: a NAT or firewall that
        drops the SYN would otherwise cost the watcher every NOTIFY over
        ``udp_mtu`` that UDP still delivers (and with it its subscription).
        """
        stack = Stack()
        d, _ = stack.send(2000)
        stack.refuse(TCPTimedOutError())
        [(data, addr)] = stack.udp.written
        self.assertEqual(addr, WATCHER)
        self.assertTrue(topVia(data).startswith("SIP/2.0/UDP "))
        self.assertNoResult(d)

    def test_noRouteRetriesOverUDP(self) -> None:
        """No route to the host over TCP: UDP is tried."""
        stack = Stack()
        stack.send(2000)
        stack.refuse(NoRouteError())
        self.assertEqual(len(stack.udp.written), 1)

    def test_otherConnectErrorIsTransportError(self) -> None:
        """A failure that is none of those (here: a DNS lookup) is a 503."""
        stack = Stack()
        d, _ = stack.send(2000)
        stack.refuse(DNSLookupError())
        self.assertEqual(stack.udp.written, [])
        response = self.successResultOf(d)
        self.assertIsInstance(response, SyntheticResponse)
        self.assertEqual(response.code, 503)

    def test_failedDestinationRemembered(self) -> None:
        """After a failed attempt, large requests go straight over UDP for a while.

        No new connection attempt (and no wait for one) for
        ``NO_STREAM_MEMORY`` seconds; after that TCP is tried again.
        """
        stack = Stack()
        stack.send(2000)
        stack.refuse(TCPTimedOutError())
        attempts = len(stack.clock.tcpClients)
        stack.send(2000)
        self.assertEqual(len(stack.clock.tcpClients), attempts)
        self.assertEqual(len(stack.udp.written), 2)
        self.assertTrue(topVia(stack.udp.written[1][0]).startswith("SIP/2.0/UDP "))
        stack.clock.advance(NO_STREAM_MEMORY)
        stack.send(2000)
        self.assertEqual(len(stack.clock.tcpClients), attempts + 1)

    def test_failedDestinationsBounded(self) -> None:
        """The memory of failed destinations holds at most NO_STREAM_ENTRIES."""
        stack = Stack()
        for port in range(NO_STREAM_ENTRIES + 10):
            stack.transports._streamFailed("198.51.100.9", port)
        self.assertEqual(len(stack.transports._noStream), NO_STREAM_ENTRIES)
        self.assertNotIn(("198.51.100.9", 0), stack.transports._noStream)

    def test_tooLargeForUDPFails(self) -> None:
        """Over 65,535 bytes with TCP refused: a 503 made here, nothing sent, no crash.

        A transport error, as RFC 3261 8.1.3.1 reports it to the TU (the
        notifier ends the subscription on it, RFC 6665 section 4.2.2).
        """
        stack = Stack()
        d, _ = stack.send(70_000)
        stack.refuse(ConnectionRefusedError())
        self.assertEqual(stack.udp.written, [])
        response = self.successResultOf(d)
        self.assertIsInstance(response, SyntheticResponse)
        self.assertEqual(response.code, 503)
        self.assertEqual(stack.layer.client, {})
        self.assertEqual(stack.clock.getDelayedCalls(), [])

    def test_lostAfterSendingIsTransportError(self) -> None:
        """A connection lost after the request went over it: 503, no UDP retry."""
        stack = Stack()
        d, _ = stack.send(2000)
        stack.accept()
        stack.transports.connections[WATCHER].connectionLost(
            Failure(ConnectionRefusedError())
        )
        self.assertEqual(stack.udp.written, [])
        self.assertEqual(self.successResultOf(d).code, 503)


class DatagramSizeTests(SynchronousTestCase):
    """What fits one UDP datagram, and the setting."""

    def test_fits(self) -> None:
        """65,535 bytes including the IP (20 or 40) and UDP (8) headers.

        RFC 3261 18.1.1: "For UDP, this size is 65,535 bytes, including IP
        and UDP headers."
        """
        self.assertTrue(datagramFits(65_507, "198.51.100.7"))
        self.assertFalse(datagramFits(65_508, "198.51.100.7"))
        self.assertTrue(datagramFits(65_487, "2001:db8::7"))
        self.assertFalse(datagramFits(65_488, "2001:db8::7"))

    def test_setting(self) -> None:
        """``udp_mtu`` defaults to the RFC's 1300; 0 is off; out of range refused."""
        self.assertEqual(DEFAULT_UDP_MTU, 1300)
        self.assertEqual(fromMapping({}).udpMtu, 1300)
        self.assertEqual(fromMapping({"udp_mtu": 0}).udpMtu, 0)
        self.assertEqual(fromMapping({"udp_mtu": 1400}).udpMtu, 1400)

        def load(value: object) -> object:
            return fromMapping({"udp_mtu": value}).validate()

        for bad in (-1, 65536, "big", 1.5):
            self.assertRaises(ConfigError, load, bad)
