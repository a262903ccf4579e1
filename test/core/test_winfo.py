"""Watcher information (RFC 3857, RFC 3858) over in-memory transports."""

from __future__ import annotations

from lxml import etree
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from presence.packages.interfaces import (
    ExpiryRange,
    IEventPackage,
    IWatcherInfoPackage,
)
from presence.packages.winfo import WINFO_NS, WINFO_TYPE, WatcherInfoPackage
from presence.sip.message import SIPRequest
from presence.storage.memory import MemoryStore
from presence.testing import Server, Subscriber

W = f"{{{WINFO_NS}}}"


def parse(notify: SIPRequest) -> etree._Element:
    """The watcherinfo root of a NOTIFY."""
    return etree.fromstring(notify.body)


def watchers(notify: SIPRequest) -> list[dict[str, str]]:
    """The watcher elements of a NOTIFY as dicts (attributes and uri)."""
    out = []
    for element in parse(notify).iter(W + "watcher"):
        entry = {str(k): str(v) for k, v in element.attrib.items()}
        entry["uri"] = element.text or ""
        out.append(entry)
    return out


class WatcherInfoTests(SynchronousTestCase):
    """The presence.winfo package through the whole server."""

    def setUp(self) -> None:
        """A server; bob watches his watchers, alice and carol watch bob."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.carol = Subscriber(self.server, "carol", "192.0.2.22", 5072)

    def watchPresence(self, watcher: Subscriber, **kw: object) -> None:
        """Subscribe ``watcher`` to bob's presence, answering its NOTIFY."""
        self.assertEqual(watcher.subscribe(**kw).code, 200)  # type: ignore[arg-type]
        for notify in watcher.notifies():
            watcher.answer(notify)

    def watchWatchers(self) -> SIPRequest:
        """Bob subscribes to his own watcher information; return the NOTIFY."""
        response = self.bob.subscribe("sip:bob@example.com", event="presence.winfo")
        self.assertEqual(response.code, 200)
        [notify] = self.bob.notifies()
        self.bob.answer(notify)
        return notify

    def nextWinfo(self) -> SIPRequest:
        """The one winfo NOTIFY bob got since the last call, answered."""
        [notify] = self.bob.notifies()
        self.bob.answer(notify)
        return notify

    def test_interface(self) -> None:
        """The package provides IEventPackage."""
        self.assertTrue(
            verifyObject(
                IEventPackage, WatcherInfoPackage(self.server.reactor, MemoryStore())
            )
        )

    def test_watcherInfoInterface(self) -> None:
        """The package provides IWatcherInfoPackage, which the tracker feeds."""
        self.assertTrue(
            verifyObject(
                IWatcherInfoPackage,
                WatcherInfoPackage(self.server.reactor, MemoryStore()),
            )
        )

    def test_attributes(self) -> None:
        """RFC 3857 4.1, 4.5, 4.6: the event, its type, owner-only; never published."""
        package = WatcherInfoPackage(self.server.reactor, MemoryStore())
        self.assertEqual(package.name, "presence.winfo")
        self.assertEqual(package.acceptTypes, [])
        self.assertEqual(package.notifyTypes, [WINFO_TYPE])
        self.assertFalse(package.acceptsPublish)
        self.assertFalse(package.needsAuthorisation)
        self.assertTrue(package.ownerOnly)
        self.assertIsNone(package.watcherInfo)
        self.assertEqual(package.watched, "presence")
        self.assertEqual(package.publishExpires, ExpiryRange(0, 0, 0))
        self.assertEqual(package.subscribeExpires, ExpiryRange(3600, 60, 7200))

    def test_foreignWatcherForbidden(self) -> None:
        """RFC 3857 4.6: only the presentity may watch its watchers; others get 403."""
        response = self.alice.subscribe("sip:bob@example.com", event="presence.winfo")
        self.assertEqual(response.code, 403)

    def test_fullStateFirst(self) -> None:
        """RFC 3857 4.7, RFC 3858 section 4: the first NOTIFY is full state.

        It has version 0 and lists every watcher of the presentity's presence.
        """
        self.watchPresence(self.alice)
        self.watchPresence(self.carol)
        notify = self.watchWatchers()
        self.assertEqual(notify.header("content-type"), "application/watcherinfo+xml")
        self.assertEqual(notify.header("event"), "presence.winfo")
        root = parse(notify)
        self.assertEqual((root.get("version"), root.get("state")), ("0", "full"))
        [watcherList] = root.iter(W + "watcher-list")
        self.assertEqual(watcherList.get("resource"), "sip:bob@example.com")
        self.assertEqual(watcherList.get("package"), "presence")
        entries = watchers(notify)
        self.assertEqual(
            sorted(e["uri"] for e in entries),
            ["sip:alice@example.com", "sip:carol@example.com"],
        )
        for entry in entries:
            self.assertEqual(entry["status"], "active")
            self.assertEqual(entry["event"], "subscribe")
            self.assertIn("duration-subscribed", entry)
            self.assertTrue(entry["id"])

    def test_newWatcherPartial(self) -> None:
        """RFC 3858 section 4: a new watcher is sent as partial state with only it."""
        self.watchPresence(self.alice)
        self.watchWatchers()
        self.watchPresence(self.carol)
        notify = self.nextWinfo()
        root = parse(notify)
        self.assertEqual((root.get("version"), root.get("state")), ("1", "partial"))
        self.assertEqual(
            [e["uri"] for e in watchers(notify)], ["sip:carol@example.com"]
        )

    def test_endedWatcher(self) -> None:
        """An unsubscribing watcher is sent as terminated with event timeout."""
        self.watchPresence(self.alice)
        self.watchWatchers()
        self.alice.subscribe(expires=0, refresh=True)
        notify = self.nextWinfo()
        [entry] = watchers(notify)
        self.assertEqual((entry["status"], entry["event"]), ("terminated", "timeout"))

    def test_expiredWatcher(self) -> None:
        """A presence subscription that expires is sent as terminated/timeout."""
        self.watchPresence(self.alice, expires=60)
        self.watchWatchers()
        self.server.advance(61)
        for notify in self.alice.notifies():
            self.alice.answer(notify)
        notify = self.nextWinfo()
        [entry] = watchers(notify)
        self.assertEqual((entry["status"], entry["event"]), ("terminated", "timeout"))

    def test_refreshedWatcher(self) -> None:
        """A refreshed presence subscription triggers a winfo NOTIFY."""
        self.watchPresence(self.alice)
        self.watchWatchers()
        self.alice.subscribe(expires=1200, refresh=True)
        notify = self.nextWinfo()
        [entry] = watchers(notify)
        self.assertEqual(entry["status"], "active")

    def test_versionsWithoutGaps(self) -> None:
        """RFC 3858 section 3: the version counts up by one per NOTIFY."""
        self.watchWatchers()
        versions = []
        for watcher in (self.alice, self.carol):
            self.watchPresence(watcher)
            versions.append(parse(self.nextWinfo()).get("version"))
        self.bob.subscribe(event="presence.winfo", refresh=True)
        versions.append(parse(self.nextWinfo()).get("version"))
        self.assertEqual(versions, ["1", "2", "3"])

    def test_changesCoalesced(self) -> None:
        """Changes while a winfo NOTIFY is in flight are sent together after it."""
        self.watchWatchers()
        self.watchPresence(self.alice)
        [first] = self.bob.notifies()
        self.watchPresence(self.carol)
        self.assertEqual(self.bob.notifies(), [])
        self.bob.answer(first)
        notify = self.nextWinfo()
        self.assertEqual(
            [e["uri"] for e in watchers(notify)], ["sip:carol@example.com"]
        )
        self.assertEqual(parse(notify).get("version"), "2")

    def test_watchersTable(self) -> None:
        """Each presence watcher has a row in the watchers table."""
        self.watchPresence(self.alice)
        rows = self.successResultOf(
            self.server.store.watchers("sip:bob@example.com", "presence")
        )
        self.assertEqual([(r.watcherUsername, r.status) for r in rows], [("alice", 1)])

    def test_watcherRowRemovedWithLastSubscription(self) -> None:
        """A watcher's row goes when its last subscription to the presentity ends."""
        self.watchPresence(self.alice)
        self.alice.subscribe(expires=0, refresh=True)
        rows = self.successResultOf(
            self.server.store.watchers("sip:bob@example.com", "presence")
        )
        self.assertEqual(rows, [])
