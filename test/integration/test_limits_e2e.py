"""The limits over real loopback sockets, with the default configuration.

A SUBSCRIBE flood from one address leaves another address served at once;
``max_tcp_connections`` closes one connection too many; ``tcp_read_timeout``
closes a connection whose message never ends; ``max_subscriptions_per_watcher``
and ``max_publications_per_presentity`` answer 403 over UDP.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from presence.sip.limits import LimitStatistics
from presence.sip.message import SIPResponse
from presence.sip.parser import parseDatagram
from presence.tap import StackService
from presence.testing import pidf
from test.support.sockets import SocketUA, TCPClient, connectTCP, startServer

#: How many SUBSCRIBEs the flood sends, as fast as one socket can.
FLOOD = 2000


class Flooder(DatagramProtocol):
    """A UDP socket on 127.0.0.2 that sends SUBSCRIBEs and counts the answers."""

    noisy = False

    def __init__(self) -> None:
        """Count nothing yet."""
        self.codes: dict[int, int] = {}
        self.retryAfter: set[str | None] = set()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Count a final response; ignore the NOTIFYs."""
        message = parseDatagram(datagram)
        if isinstance(message, SIPResponse) and message.code >= 200:
            self.codes[message.code] = self.codes.get(message.code, 0) + 1
            if message.code == 503:
                self.retryAfter.add(message.header("retry-after"))

    def flood(self, serverPort: int, count: int) -> None:
        """Send ``count`` initial SUBSCRIBEs, each a dialog of its own."""
        assert self.transport is not None
        port = self.transport.getHost().port
        for i in range(count):
            data = (
                f"SUBSCRIBE sip:bob@example.com SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.2:{port};branch=z9hG4bK-flood-{i};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:mallory{i}@example.com>;tag=f{i}\r\n"
                "To: <sip:bob@example.com>\r\n"
                f"Call-ID: flood-{i}@127.0.0.2\r\n"
                "CSeq: 1 SUBSCRIBE\r\n"
                f"Contact: <sip:mallory@127.0.0.2:{port}>\r\n"
                "Event: presence\r\n"
                "Expires: 600\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            self.transport.write(data, ("127.0.0.1", serverPort))


class LimitsE2ETests(TestCase):
    """The limits on a running server."""

    timeout = 20

    def start(self, settings: str = "") -> tuple[StackService, int, int]:
        """A server with the default limits, and ``settings`` (TOML) on top."""
        argv: list[str] = []
        if settings:
            path = FilePath(self.mktemp() + ".toml")
            path.setContent(settings.encode())
            argv = ["--config", path.path, "--database", "memory"]
        server, udpPort, tcpPort = startServer(reactor, *argv)
        self.addCleanup(server.stopService)
        return server, udpPort, tcpPort

    def stats(self, server: StackService) -> LimitStatistics:
        """The server's limit counters."""
        stats = server.stack.limits
        assert stats is not None
        return stats

    async def ua(self, user: str, port: int, transport: str = "UDP") -> SocketUA:
        """A user agent on 127.0.0.1, closed at the end."""
        ua = SocketUA(reactor, user, port, transport=transport)
        await ua.start()
        self.addCleanup(ua.close)
        return ua

    async def test_floodFromOneAddress(self) -> None:
        """2,000 SUBSCRIBEs at once from 127.0.0.2; 127.0.0.1 is served at once.

        The burst (400) is served, up to 1,200 more get 503 with Retry-After,
        the rest are dropped; alice's SUBSCRIBE, read after all of them, gets
        its 200.
        """
        server, udpPort, _ = self.start()
        flooder = Flooder()
        port = reactor.listenUDP(0, flooder, interface="127.0.0.2")  # type: ignore[attr-defined]  # the global reactor
        self.addCleanup(port.stopListening)
        alice = await self.ua("alice", udpPort)
        flooder.flood(udpPort, FLOOD)
        # Within the user agent's own timeout: no wall-clock assertion here
        # (the benchmark, bench/flood.py, measures the latency).
        response = await alice.subscribe("sip:bob@example.com")
        self.assertEqual(response.code, 200)
        stats = self.stats(server)
        # However slowly the server reads the burst, 2,000 requests need
        # (2,000 - 400) / 200 = 8 s of refill to pass unlimited.
        self.assertGreater(stats.rateLimited + stats.rateDropped, 0)
        self.assertLessEqual(stats.rateLimited + stats.rateDropped, FLOOD - 400)
        # Every 503 the flooder has seen so far carried Retry-After.
        self.assertLessEqual(flooder.retryAfter, {"2"})
        self.assertEqual(alice.errors, [])

    async def test_tcpConnectionLimit(self) -> None:
        """One connection beyond ``max_tcp_connections`` is closed; others kept."""
        server, _, tcpPort = self.start("max_tcp_connections = 2\n")
        first = await self.ua("alice", tcpPort, "TCP")
        second = await self.ua("bob", tcpPort, "TCP")
        third: TCPClient = await connectTCP(reactor, tcpPort)
        await third.lost
        self.assertEqual(self.stats(server).connectionsRefused, 1)
        self.assertEqual((await first.ping()).code, 200)
        self.assertEqual((await second.ping()).code, 200)

    async def test_tcpReadTimeout(self) -> None:
        """A message that never ends closes its connection after the timeout."""
        server, _, tcpPort = self.start("tcp_read_timeout = 0.2\n")
        client = await connectTCP(reactor, tcpPort)
        client.send(b"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1")
        await client.lost
        self.assertEqual(self.stats(server).readTimeouts, 1)

    async def test_subscriptionsPerWatcher(self) -> None:
        """The watcher's subscription beyond the limit gets 403 over UDP."""
        server, udpPort, _ = self.start("max_subscriptions_per_watcher = 1\n")
        alice = await self.ua("alice", udpPort)
        self.assertEqual((await alice.subscribe("sip:bob@example.com")).code, 200)
        await alice.notify()
        refused = await alice.subscribe("sip:carol@example.com")
        self.assertEqual(refused.code, 403)
        self.assertIn("too many subscriptions", refused.phrase)
        self.assertEqual(self.stats(server).subscriptionsRefused, 1)

    async def test_publicationsPerPresentity(self) -> None:
        """The presentity's publication beyond the limit gets 403 over UDP."""
        server, udpPort, _ = self.start("max_publications_per_presentity = 1\n")
        bob = await self.ua("bob", udpPort)
        self.assertEqual((await bob.publish(pidf())).code, 200)
        refused = await bob.publish(pidf())
        self.assertEqual(refused.code, 403)
        self.assertIn("too many publications", refused.phrase)
        self.assertEqual(self.stats(server).publicationsRefused, 1)
