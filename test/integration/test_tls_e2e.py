"""SIP over TLS end to end (RFC 3261 section 26, RFC 5630), on real sockets.

The server listens with ``tls:0:privateKey=KEY:certKey=CERT``, a throw-away
self-signed certificate made in each test's temporary directory.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from presence.sip.message import SIPRequest, responseTo
from presence.sip.parser import StreamFramer
from presence.testing import pidf
from test.support.certificates import selfSignedCertificate
from test.support.sockets import SocketUA, TCPClient, startServer

BOB = "sip:bob@example.com"


class Responder(Protocol):
    """A watcher's TLS listener: answers every request 200 and queues it."""

    def __init__(self, received: defer.DeferredQueue[SIPRequest]) -> None:
        """Queue the requests in ``received``."""
        self.framer = StreamFramer()
        self.received = received

    def dataReceived(self, data: bytes) -> None:
        """Answer and queue each request."""
        for item in self.framer.dataReceived(data):
            if isinstance(item, SIPRequest):
                assert self.transport is not None
                self.transport.write(responseTo(item, 200, toTag="w").toBytes())
                self.received.put(item)


class TLSEndToEndTests(TestCase):
    """Clients talk to the server over TLS on loopback."""

    timeout = 20

    def setUp(self) -> None:
        """Make a certificate; start a server listening for TLS with it."""
        self.start()

    def start(self, *settings: str) -> None:
        """Start a server with TLS and the TOML ``settings`` lines.

        ``{cert}`` in a line is the certificate's path.
        """
        directory = os.path.abspath(self.mktemp())
        self.key, self.cert = selfSignedCertificate(directory)
        config = os.path.join(directory, "presence.toml")
        with open(config, "w") as f:
            f.write("".join(line.format(cert=self.cert) + "\n" for line in settings))
        self.server, self.udpPort, self.tcpPort = startServer(
            reactor,
            "--config",
            config,
            "--database",
            "memory",
            "--listen",
            f"tls:0:privateKey={self.key}:certKey={self.cert}:interface=127.0.0.1",
        )
        self.addCleanup(self.server.stopService)
        self.tlsPort = self.server.stack.transports.tlsPorts[0]

    async def restart(self, *settings: str) -> None:
        """Stop the server of `setUp` and start one with ``settings``."""
        await self.server.stopService()
        self.start(*settings)

    async def ua(self, user: str, transport: str = "TLS", **kwargs: Any) -> SocketUA:
        """A started user agent, closed and checked for errors at cleanup."""
        port = {"UDP": self.udpPort, "TCP": self.tcpPort}.get(transport, self.tlsPort)
        agent = SocketUA(reactor, user, port, transport, **kwargs)
        await agent.start()
        self.addCleanup(lambda: self.assertEqual(agent.errors, []))
        self.addCleanup(agent.close)
        return agent

    async def rawClient(self) -> TCPClient:
        """A plain TCP connection to the TLS port, closed at cleanup."""
        client = TCPClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.tlsPort)
        await connectProtocol(endpoint, client)

        def close() -> defer.Deferred[None]:
            if client.transport is not None and not client.lost.called:
                client.transport.abortConnection()  # type: ignore[attr-defined]
            return client.lost

        self.addCleanup(close)
        return client

    async def responder(self) -> tuple[int, defer.DeferredQueue[SIPRequest]]:
        """A TLS listener with the test's certificate; its port and requests."""
        received: defer.DeferredQueue[SIPRequest] = defer.DeferredQueue()
        connections: list[Responder] = []

        def build() -> Responder:
            protocol = Responder(received)
            connections.append(protocol)
            return protocol

        endpoint = serverFromString(
            reactor,
            f"ssl:0:privateKey={self.key}:certKey={self.cert}:interface=127.0.0.1",
        )
        port = await endpoint.listen(Factory.forProtocol(build))

        async def stop() -> None:
            for protocol in connections:
                if protocol.transport is not None:
                    protocol.transport.abortConnection()  # type: ignore[attr-defined]
            await defer.maybeDeferred(port.stopListening)

        self.addCleanup(stop)
        return int(port.getHost().port), received

    async def next(self, queue: defer.DeferredQueue[Any]) -> Any:
        """The next item of ``queue``, within five seconds."""
        d = queue.get()
        d.addTimeout(5, reactor)
        return await d

    async def test_options(self) -> None:
        """OPTIONS over TLS gets 200, its Via (TLS, branch) kept."""
        alice = await self.ua("alice")
        response = await alice.ping()
        self.assertEqual(response.code, 200)
        via = response.topVia
        self.assertEqual(via.transport, "TLS")
        self.assertEqual(via.port, alice.localPort)
        self.assertTrue((via.branch or "").startswith("z9hG4bK-ua-"))

    async def test_sipsRequestURI(self) -> None:
        """A ``sips:`` Request-URI is served over TLS; the Contact is sips.

        The presentity is the same address of record as ``sip:``'s.
        """
        bob = await self.ua("bob", "UDP")
        self.assertEqual((await bob.publish(pidf("open", "phone", "secure"))).code, 200)
        alice = await self.ua("alice")
        options = await alice.request("OPTIONS", f"sips:127.0.0.1:{self.tlsPort}")
        self.assertEqual(options.code, 200)
        subscribed = await alice.subscribe("sips:bob@example.com")
        self.assertEqual(subscribed.code, 200)
        contact = subscribed.addressList("contact")[0].uri
        self.assertEqual(contact.scheme, "sips")
        self.assertEqual(str(contact), f"sips:127.0.0.1:{self.tlsPort}")
        notify = await alice.notify()
        self.assertEqual(notify.topVia.transport, "TLS")
        self.assertEqual(notify.header("contact"), f"<{contact}>")
        self.assertIn(b"secure", notify.body)

    async def test_subscribeNotifyOverConnection(self) -> None:
        """The NOTIFYs to a TLS watcher come back over its TLS connection.

        Its Contact names a port where nothing listens, so a NOTIFY sent any
        other way would be lost.
        """
        bob = await self.ua("bob", "UDP")
        published = await bob.publish(pidf("open", "phone", "online"))
        etag = published.header("sip-etag")
        assert etag is not None
        alice = await self.ua("alice", contactPort=9)
        subscribed = await alice.subscribe(BOB)
        self.assertEqual(subscribed.code, 200)
        self.assertEqual(
            subscribed.header("contact"),
            f"<sip:127.0.0.1:{self.tlsPort};transport=tls>",
        )
        first = await alice.notify()
        via = first.topVia
        self.assertEqual(
            (via.transport, via.port, via.host), ("TLS", self.tlsPort, "127.0.0.1")
        )
        self.assertEqual(first.header("contact"), subscribed.header("contact"))
        self.assertIn(b"online", first.body)

        modified = await bob.publish(pidf("open", "phone", "away"), etag)
        self.assertEqual(modified.code, 200)
        update = await alice.notify()
        self.assertEqual(update.topVia.transport, "TLS")
        self.assertIn(b"away", update.body)
        self.assertEqual((await alice.subscribe(expires=0)).code, 200)
        await alice.notify()

    async def notifyAfterConnectionGone(self) -> defer.DeferredQueue[SIPRequest]:
        """Subscribe over TLS with the responder's Contact, close, change state.

        Returns:
            What the responder received.
        """
        port, received = await self.responder()
        bob = await self.ua("bob", "UDP")
        published = await bob.publish(pidf("open", "phone", "online"))
        etag = published.header("sip-etag")
        assert etag is not None
        alice = await self.ua("alice", contactPort=port)
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        await alice.notify()
        await alice.close()
        modified = await bob.publish(pidf("open", "phone", "away"), etag)
        self.assertEqual(modified.code, 200)
        notifier = self.server.stack.notifier
        while notifier.outstanding:
            await bob.ping()
        return received

    async def test_notifyOverNewConnection(self) -> None:
        """The watcher's connection gone, the NOTIFY opens a TLS one to its Contact."""
        received = await self.notifyAfterConnectionGone()
        notify = await self.next(received)
        self.assertEqual(notify.method, "NOTIFY")
        self.assertEqual(notify.topVia.transport, "TLS")
        self.assertIn(b"away", notify.body)
        self.assertEqual(
            len(await self.server.stack.store.subscriptions(BOB, "presence")), 1
        )

    async def test_verifiedWithCA(self) -> None:
        """``tls_verify`` with ``tls_ca`` holding the watcher's certificate."""
        await self.restart("tls_verify = true", 'tls_ca = "{cert}"')
        received = await self.notifyAfterConnectionGone()
        notify = await self.next(received)
        self.assertEqual(notify.topVia.transport, "TLS")
        self.assertEqual(
            len(await self.server.stack.store.subscriptions(BOB, "presence")), 1
        )

    async def test_verifyFailureEndsSubscription(self) -> None:
        """A certificate ``tls_verify`` refuses ends the subscription (RFC 5057)."""
        await self.restart("tls_verify = true")
        received = await self.notifyAfterConnectionGone()
        self.assertEqual(
            await self.server.stack.store.subscriptions(BOB, "presence"), []
        )
        self.assertEqual(received.pending, [])
        self.assertEqual(self.server.stack.notifier.stats.failed, 1)

    async def test_plainTextClient(self) -> None:
        """Plain SIP on the TLS port is closed; the next client is served."""
        plain = await self.rawClient()
        alice = await self.ua("alice")
        data, _ = alice.build("OPTIONS", f"sip:127.0.0.1:{self.tlsPort}")
        plain.send(data)
        await plain.lost
        self.assertEqual(plain.queue.pending, [])
        self.assertEqual((await alice.ping()).code, 200)

    async def test_halfDoneHandshakes(self) -> None:
        """Silent and garbage-sending connections do not hold up the next client."""
        silent = await self.rawClient()
        garbage = await self.rawClient()
        garbage.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)
        alice = await self.ua("alice")
        self.assertEqual((await alice.ping()).code, 200)
        bob = await self.ua("bob")
        self.assertEqual((await bob.ping()).code, 200)
        self.assertFalse(silent.lost.called)
        self.assertEqual(silent.queue.pending, [])
        self.assertEqual(garbage.queue.pending, [])

    async def test_handshakeTimeout(self) -> None:
        """A handshake not finished in ``tcp_read_timeout`` is closed and counted."""
        await self.restart("tcp_read_timeout = 0.3")
        silent = await self.rawClient()
        alice = await self.ua("alice")
        self.assertEqual((await alice.ping()).code, 200)
        partial = await self.rawClient()
        partial.send(b"\x16\x03\x01\x02\x00")
        await silent.lost
        await partial.lost
        limits = self.server.stack.limits
        assert limits is not None
        self.assertEqual(limits.readTimeouts, 2)
        # The client whose handshake finished is still served.
        self.assertEqual((await alice.ping()).code, 200)

    async def test_connectionsCountedWithTCP(self) -> None:
        """``max_tcp_connections`` counts a TCP and a TLS connection together."""
        await self.restart("max_tcp_connections = 1")
        alice = await self.ua("alice", "TCP")
        self.assertEqual((await alice.ping()).code, 200)
        refused = await self.rawClient()
        await refused.lost
        limits = self.server.stack.limits
        assert limits is not None
        self.assertEqual(limits.connectionsRefused, 1)
        await alice.close()
        while self.server.stack.transports.inboundConnections:
            await deferLater(reactor, 0.01)
        bob = await self.ua("bob")
        self.assertEqual((await bob.ping()).code, 200)
