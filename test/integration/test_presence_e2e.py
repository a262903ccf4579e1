"""End to end over real sockets: PUBLISH, SUBSCRIBE and NOTIFY over UDP and TCP."""

from __future__ import annotations

from lxml import etree
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from presence.sip.message import SIPRequest
from presence.testing import pidf
from test.support.sockets import SocketUA, startServer, unusedTCPPort

PIDF_NS = "{urn:ietf:params:xml:ns:pidf}"
BOB = "sip:bob@example.com"


def tuples(notify: SIPRequest) -> dict[str, tuple[str, str]]:
    """The tuples of a NOTIFY's PIDF body: id -> (basic, note)."""
    root = etree.fromstring(notify.body)
    assert root.tag == PIDF_NS + "presence", root.tag
    assert root.get("entity") == BOB, root.get("entity")
    out = {}
    for element in root.iter(PIDF_NS + "tuple"):
        basic = element.findtext(f"{PIDF_NS}status/{PIDF_NS}basic") or ""
        note = element.findtext(PIDF_NS + "note") or ""
        out[element.get("id") or ""] = (basic, note)
    return out


class PresenceEndToEndTests(TestCase):
    """A publisher and a watcher talk to a real server over loopback sockets."""

    timeout = 20

    def setUp(self) -> None:
        """Start a server on ephemeral ports."""
        self.server, self.udpPort, self.tcpPort = startServer(reactor)
        self.addCleanup(self.server.stopService)

    async def ua(self, user: str, transport: str = "UDP", **kwargs: object) -> SocketUA:
        """A started user agent, closed and checked for errors at cleanup."""
        port = self.udpPort if transport == "UDP" else self.tcpPort
        agent = SocketUA(reactor, user, port, transport, **kwargs)  # type: ignore[arg-type]
        await agent.start()
        self.addCleanup(lambda: self.assertEqual(agent.errors, []))
        self.addCleanup(agent.close)
        return agent

    def assertNotify(
        self, notify: SIPRequest, watcher: SocketUA, state: str
    ) -> dict[str, tuple[str, str]]:
        """Check a NOTIFY of the watcher's dialog; return its tuples (if any)."""
        self.assertEqual(notify.method, "NOTIFY")
        self.assertEqual(notify.callId, watcher.callId)
        self.assertEqual(notify.toAddr.tag, watcher.tag)
        self.assertEqual(notify.fromAddr.tag, watcher.toTag)
        self.assertEqual(notify.header("event"), "presence")
        self.assertTrue(
            (notify.header("subscription-state") or "").startswith(state),
            notify.header("subscription-state"),
        )
        if not notify.body:
            return {}
        self.assertEqual(notify.header("content-type"), "application/pidf+xml")
        return tuples(notify)

    async def flow(self, transport: str) -> None:
        """Publish, subscribe, modify, remove and unsubscribe over ``transport``."""
        contactPort = await unusedTCPPort(reactor) if transport == "TCP" else None
        bob = await self.ua("bob", transport)
        alice = await self.ua("alice", transport, contactPort=contactPort)

        registered = await bob.register()
        self.assertEqual(registered.code, 200)

        published = await bob.publish(pidf("open", "phone", "online"))
        self.assertEqual(published.code, 200)
        etag = published.header("sip-etag")
        assert etag is not None

        subscribed = await alice.subscribe(BOB)
        self.assertEqual(subscribed.code, 200)
        self.assertEqual(subscribed.header("expires"), "600")
        first = await alice.notify()
        self.assertEqual(
            self.assertNotify(first, alice, "active"), {"phone": ("open", "online")}
        )

        modified = await bob.publish(pidf("open", "phone", "in a meeting"), etag)
        self.assertEqual(modified.code, 200)
        etag = modified.header("sip-etag")
        assert etag is not None
        update = await alice.notify()
        self.assertEqual(
            self.assertNotify(update, alice, "active"),
            {"phone": ("open", "in a meeting")},
        )
        self.assertGreater(update.cseq.number, first.cseq.number)

        removed = await bob.publish(etag=etag, expires=0)
        self.assertEqual(removed.code, 200)
        gone = await alice.notify()
        self.assertEqual(
            self.assertNotify(gone, alice, "active"), {"offline": ("closed", "")}
        )

        ended = await alice.subscribe(expires=0)
        self.assertEqual(ended.code, 200)
        self.assertEqual(ended.header("expires"), "0")
        last = await alice.notify()
        self.assertNotify(last, alice, "terminated")
        self.assertGreater(last.cseq.number, gone.cseq.number)
        self.assertEqual(
            await self.server.stack.store.subscriptions(BOB, "presence"), []
        )

    async def test_udp(self) -> None:
        """Over UDP the watcher sees the state, the change, the removal, the end."""
        await self.flow("UDP")

    async def test_tcp(self) -> None:
        """Over TCP the NOTIFYs come back over the watcher's connection.

        The watcher's Contact names a port where nothing listens, so a NOTIFY
        sent anywhere but over the watcher's own connection would be lost.
        """
        await self.flow("TCP")

    async def test_twoDevicesAggregated(self) -> None:
        """Publications from two devices reach the watcher as one PIDF document."""
        phone = await self.ua("bob")
        laptop = await self.ua("bob", "TCP")
        alice = await self.ua("alice")

        self.assertEqual(
            (await phone.publish(pidf("open", "phone", "mobile"))).code, 200
        )
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        first = await alice.notify()
        self.assertEqual(
            self.assertNotify(first, alice, "active"), {"phone": ("open", "mobile")}
        )

        published = await laptop.publish(pidf("closed", "laptop", "asleep"))
        self.assertEqual(published.code, 200)
        both = await alice.notify()
        self.assertEqual(
            self.assertNotify(both, alice, "active"),
            {"phone": ("open", "mobile"), "laptop": ("closed", "asleep")},
        )
        root = etree.fromstring(both.body)
        self.assertEqual(root.tag, PIDF_NS + "presence")
        self.assertEqual(len(root.findall(PIDF_NS + "tuple")), 2)

    async def test_watcherAnswering481Dropped(self) -> None:
        """A watcher that answers a NOTIFY with 481 gets no more NOTIFYs."""
        bob = await self.ua("bob")
        carol = await self.ua("carol")
        gone = await self.ua("dave", notifyCode=481)

        published = await bob.publish(pidf("open", "phone", "here"))
        self.assertEqual(published.code, 200)
        etag = published.header("sip-etag")
        assert etag is not None
        self.assertEqual((await carol.subscribe(BOB)).code, 200)
        self.assertEqual((await gone.subscribe(BOB)).code, 200)
        await carol.notify()
        refused = await gone.notify()
        self.assertNotify(refused, gone, "active")
        # The 481 went before the OPTIONS over the same socket.
        self.assertEqual((await gone.ping()).code, 200)
        remaining = await self.server.stack.store.subscriptions(BOB, "presence")
        self.assertEqual([s.callId for s in remaining], [carol.callId])

        modified = await bob.publish(pidf("closed", "phone", "away"), etag)
        self.assertEqual(modified.code, 200)
        update = await carol.notify()
        self.assertEqual(
            self.assertNotify(update, carol, "active"), {"phone": ("closed", "away")}
        )
        # A NOTIFY to dave would have left with carol's, before this OPTIONS.
        self.assertEqual((await gone.ping()).code, 200)
        self.assertEqual(gone.notifications.pending, [])
        self.assertEqual(self.server.stack.notifier.stats.failed, 1)

    async def test_tcpWatcherGoneDropped(self) -> None:
        """A TCP watcher whose connection closed, at a dead Contact, is dropped."""
        contactPort = await unusedTCPPort(reactor)
        bob = await self.ua("bob")
        alice = await self.ua("alice", "TCP", contactPort=contactPort)
        published = await bob.publish(pidf("open", "phone", "here"))
        etag = published.header("sip-etag")
        assert etag is not None
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        await alice.notify()
        await alice.close()

        modified = await bob.publish(pidf("closed", "phone", "away"), etag)
        self.assertEqual(modified.code, 200)
        notifier = self.server.stack.notifier
        while notifier.outstanding:
            await bob.ping()
        self.assertEqual(
            await self.server.stack.store.subscriptions(BOB, "presence"), []
        )
        self.assertEqual(notifier.stats.failed, 1)
