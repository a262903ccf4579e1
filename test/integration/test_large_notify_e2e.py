"""A NOTIFY too large for UDP reaches a UDP subscriber over TCP, on real sockets.

RFC 3261 section 18.1.1: "If a request is within 200 bytes of the path MTU,
or if it is larger than 1300 bytes and the path MTU is unknown, the request
MUST be sent using an RFC 2914 congestion controlled transport protocol,
such as TCP. If this causes a change in the transport protocol from the one
indicated in the top Via, the value in the top Via MUST be changed."
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from presence.sip.message import SIPRequest, SIPResponse, responseTo
from presence.sip.parser import StreamFramer
from presence.testing import pidf
from test.support.sockets import SocketUA, startServer

BOB = "sip:bob@example.com"


class NotifyListener(Protocol):
    """The watcher's TCP side: queues each request and answers it 200."""

    def __init__(
        self, received: defer.DeferredQueue[SIPRequest], open: list[NotifyListener]
    ) -> None:
        """Queue requests in ``received``; note each connection in ``open``."""
        self.received = received
        self.open = open
        self.framer = StreamFramer()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        """Note the connection, to close it at the end."""
        self.open.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        """Fire `lost`."""
        self.lost.callback(None)

    def dataReceived(self, data: bytes) -> None:
        """Answer and queue each request framed."""
        for item in self.framer.dataReceived(data):
            if isinstance(item, SIPRequest):
                assert self.transport is not None
                self.transport.write(responseTo(item, 200, toTag="tcp").toBytes())
                self.received.put(item)


class LargeNotifyOverTCPTests(TestCase):
    """A presence NOTIFY of about 5 KB to a watcher subscribed over UDP."""

    timeout = 20

    async def watcher(self, serverPort: int) -> tuple[SocketUA, Any]:
        """Alice on UDP, and a TCP listener on the same port number."""
        for _ in range(10):
            alice = SocketUA(reactor, "alice", serverPort)
            await alice.start()
            endpoint = TCP4ServerEndpoint(
                reactor, alice.localPort, interface="127.0.0.1"
            )
            factory = Factory.forProtocol(
                lambda: NotifyListener(self.overTCP, self.accepted)
            )
            try:
                listening = await endpoint.listen(factory)
            except CannotListenError:
                # The TCP port of that number is taken: another UDP port.
                await alice.close()
                continue
            self.addCleanup(alice.close)
            self.addCleanup(listening.stopListening)
            return alice, listening
        raise AssertionError("no port free over both UDP and TCP")

    async def test_largeNotifyArrivesOverTCP(self) -> None:
        """The ~5 KB NOTIFY comes over TCP with a TCP Via; small ones over UDP."""
        self.overTCP: defer.DeferredQueue[SIPRequest] = defer.DeferredQueue()
        self.accepted: list[NotifyListener] = []
        server, udpPort, tcpPort = startServer(reactor)
        self.addCleanup(server.stopService)

        async def hangUp() -> None:
            # The server does not close its connections when it stops: the
            # watcher does, and the server's side goes when it sees that.
            for listener in self.accepted:
                assert listener.transport is not None
                listener.transport.loseConnection()
                await listener.lost
            while server.stack.transports.connections:
                await deferLater(reactor, 0.01)

        self.addCleanup(lambda: defer.ensureDeferred(hangUp()))
        bob = SocketUA(reactor, "bob", udpPort)
        await bob.start()
        self.addCleanup(bob.close)
        alice, _ = await self.watcher(udpPort)
        self.addCleanup(lambda: self.assertEqual(alice.errors + bob.errors, []))

        subscribed = await alice.subscribe(BOB)
        self.assertEqual(subscribed.code, 200)
        first = await alice.notify()
        self.assertEqual(first.topVia.transport, "UDP")

        published: SIPResponse = await bob.publish(pidf("open", "phone", "x" * 5000))
        self.assertEqual(published.code, 200)
        d = self.overTCP.get()
        d.addTimeout(5, reactor)
        large = await d
        self.assertGreater(len(large.toBytes()), 5000)
        self.assertEqual(large.method, "NOTIFY")
        self.assertEqual(large.callId, alice.callId)
        via = large.topVia
        self.assertEqual(via.transport, "TCP")
        self.assertEqual(via.port, tcpPort)
        self.assertIn(b"x" * 5000, large.body)
        # Nothing came over UDP for it, and the transaction was answered.
        await alice.ping()
        self.assertEqual(alice.notifications.pending, [])
        self.assertEqual(server.stack.transactions.stats.movedToTCP, 1)
        # The 200 comes back over the TCP connection: the NOTIFY is answered.
        while server.stack.notifier.stats.accepted < 2:
            await deferLater(reactor, 0.01)
        self.assertEqual(server.stack.notifier.stats.failed, 0)
