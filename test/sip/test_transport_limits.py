"""Tests for the TCP limits of `presence.sip.transport`.

``max_tcp_connections`` and ``tcp_read_timeout``.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from presence.sip.limits import LimitStatistics
from presence.sip.message import SIPResponse
from presence.sip.parser import StreamFramer
from presence.testing import UA, Server


class ConnectionLimitTests(SynchronousTestCase):
    """At most ``max_tcp_connections`` accepted connections open at once."""

    def setUp(self) -> None:
        """A server accepting two connections."""
        self.server = Server(maxTcpConnections=2)
        self.addCleanup(self.server.close)

    @property
    def stats(self) -> LimitStatistics:
        """The server's limit counters."""
        stats = self.server.stack.limits
        assert stats is not None
        return stats

    def test_beyondClosedAtOnce(self) -> None:
        """The third connection is closed on arrival; the two others kept."""
        _, firstTransport = self.server.tcp("192.0.2.30", 40000)
        _, secondTransport = self.server.tcp("192.0.2.31", 40000)
        third, thirdTransport = self.server.tcp("192.0.2.32", 40000)
        self.assertTrue(thirdTransport.disconnecting)
        self.assertFalse(third.connected)
        self.assertFalse(firstTransport.disconnecting)
        self.assertFalse(secondTransport.disconnecting)
        self.assertEqual(self.stats.connectionsRefused, 1)
        self.assertEqual(self.server.stack.transports.inboundConnections, 2)
        # What the refused connection sends is not read.
        ua = UA(self.server, "alice", "192.0.2.32", 40000, transport="TCP")
        third.dataReceived(ua.request("OPTIONS", "sip:example.com"))
        self.assertEqual(thirdTransport.value(), b"")

    def test_closedFreesOne(self) -> None:
        """Once a connection is gone, a new one is accepted."""
        first, _ = self.server.tcp("192.0.2.30", 40000)
        first2, _ = self.server.tcp("192.0.2.31", 40000)
        first.connectionLost()
        first.connectionLost()  # Twisted's report after our own close
        _, transport = self.server.tcp("192.0.2.32", 40000)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.server.stack.transports.inboundConnections, 2)
        first2.close()
        first2.connectionLost()
        self.assertEqual(self.server.stack.transports.inboundConnections, 1)

    def test_outgoingNotCounted(self) -> None:
        """Connections the server makes (for NOTIFYs) are not limited."""
        self.server.tcp("192.0.2.30", 40000)
        self.server.tcp("192.0.2.31", 40000)
        transports = self.server.stack.transports
        protocol = transports._clientFactories["TCP"].buildProtocol(None)
        protocol.makeConnection(
            StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.40", 5060))
        )
        self.assertTrue(protocol.connected)
        self.assertEqual(self.stats.connectionsRefused, 0)


class ReadTimeoutTests(SynchronousTestCase):
    """An incomplete message has ``tcp_read_timeout`` seconds to arrive."""

    def setUp(self) -> None:
        """A server with the default read timeout, 10 s."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.protocol, self.transport = self.server.tcp()
        self.ua = UA(self.server, "alice", "192.0.2.30", 40000, transport="TCP")
        self.data = self.ua.request("OPTIONS", "sip:example.com")

    def test_oneByteASecond(self) -> None:
        """A peer sending a byte a second is closed after 10 s all the same."""
        for i in range(10):
            self.assertFalse(self.transport.disconnecting, i)
            self.protocol.dataReceived(self.data[i : i + 1])
            self.server.advance(1)
        self.assertTrue(self.transport.disconnecting)
        stats = self.server.stack.limits
        assert stats is not None
        self.assertEqual(stats.readTimeouts, 1)

    def test_completeInTime(self) -> None:
        """A message completed in time is served and the connection kept."""
        half = len(self.data) // 2
        self.protocol.dataReceived(self.data[:half])
        self.server.advance(9)
        self.protocol.dataReceived(self.data[half:])
        [response] = [
            m
            for m in StreamFramer().dataReceived(self.transport.value())
            if isinstance(m, SIPResponse)
        ]
        self.assertEqual(response.code, 200)
        self.server.advance(60)
        self.assertFalse(self.transport.disconnecting)

    def test_eachMessageItsOwnBudget(self) -> None:
        """The time runs again for the next incomplete message."""
        self.protocol.dataReceived(self.data[:10])
        self.server.advance(9)
        self.protocol.dataReceived(self.data[10:] + self.data[:10])
        self.server.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.server.advance(1)
        self.assertTrue(self.transport.disconnecting)

    def test_idleNotClosed(self) -> None:
        """A connection with nothing half-sent is left to the idle timeout."""
        self.protocol.dataReceived(self.data)
        self.server.advance(3600)
        self.assertFalse(self.transport.disconnecting)

    def test_off(self) -> None:
        """``tcp_read_timeout = 0`` waits for ever."""
        server = Server(tcpReadTimeout=0)
        self.addCleanup(server.close)
        protocol, transport = server.tcp()
        protocol.dataReceived(self.data[:10])
        server.advance(3600)
        self.assertFalse(transport.disconnecting)
