"""The memory store's compact indexes: a lone row, then a dict, then a lone row.

`presence.storage.memory` keeps a presentity's only subscription (or watcher
row) directly under its name and a dict only when there are several, finds
a dialog's subscriptions by Call-ID, and keeps no second dict of due times
beside its expiry heap. These tests walk each index through every shape.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from presence.status import ACTIVE
from presence.storage.memory import MemoryStore
from presence.storage.records import Publication, Subscription, Watcher

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a store coroutine that never waits (the memory store)."""
    d = Deferred.fromCoroutine(coroutine)
    results: list[T] = []
    d.addCallback(results.append)
    return results[0]


def subscription(
    callId: str = "c1",
    toTag: str = "ours",
    fromTag: str = "theirs",
    presentity: str = "sip:alice@example.com",
    event: str = "presence",
    eventId: str = "",
    expires: float = 100.0,
    watcher: str = "bob",
) -> Subscription:
    """A subscription with the fields the indexes read."""
    return Subscription(
        presentity=presentity,
        event=event,
        eventId=eventId,
        callId=callId,
        toTag=toTag,
        fromTag=fromTag,
        watcherUsername=watcher,
        watcherDomain="example.org",
        toUser="alice",
        toDomain="example.com",
        localCSeq=0,
        remoteCSeq=1,
        contact="sip:bob@192.0.2.2",
        recordRoute="",
        expires=expires,
    )


def watcher(user: str, presentity: str = "sip:alice@example.com") -> Watcher:
    """An active watcher row."""
    return Watcher(presentity, user, "example.org", "presence", ACTIVE, None, 1.0)


class SubscriptionIndexTests(SynchronousTestCase):
    """Subscriptions by presentity and by dialog."""

    def setUp(self) -> None:
        """An empty store."""
        self.store = MemoryStore()

    def presentity(self, uri: str = "sip:alice@example.com") -> list[str]:
        """The Call-IDs of a presentity's subscriptions, in order."""
        return [s.callId for s in run(self.store.subscriptions(uri, "presence"))]

    def test_oneTwoOne(self) -> None:
        """A presentity's subscriptions, one, two, one again, then none."""
        store = self.store
        run(store.putSubscription(subscription("c1")))
        self.assertEqual(self.presentity(), ["c1"])
        run(store.putSubscription(subscription("c2")))
        run(store.putSubscription(subscription("c1", expires=200.0)))
        self.assertEqual(self.presentity(), ["c1", "c2"])
        run(store.removeSubscription(subscription("c1").key))
        self.assertEqual(self.presentity(), ["c2"])
        run(store.putSubscription(subscription("c2", expires=300.0)))
        [row] = run(store.subscriptions("sip:alice@example.com", "presence"))
        self.assertEqual(row.expires, 300.0)
        run(store.removeSubscription(subscription("c2").key))
        self.assertEqual(self.presentity(), [])
        self.assertEqual(store._byPresentity, {"presence": {}})
        self.assertEqual(store._byCallId, {})

    def test_presentityChanges(self) -> None:
        """A row put again for another presentity leaves the first one's index."""
        run(self.store.putSubscription(subscription("c1")))
        run(self.store.putSubscription(subscription("c1", presentity="sip:b@x")))
        self.assertEqual(self.presentity(), [])
        self.assertEqual(self.presentity("sip:b@x"), ["c1"])

    def test_sharedCallId(self) -> None:
        """Two dialogs with one Call-ID (a forked SUBSCRIBE) stay apart.

        RFC 6665 4.5.2: a dialog is Call-ID, local tag and remote tag; the
        Call-ID alone is not enough.
        """
        store = self.store
        run(store.putSubscription(subscription("c1", toTag="a")))
        run(store.putSubscription(subscription("c1", toTag="b")))
        run(store.putSubscription(subscription("c1", toTag="b", eventId="2")))
        self.assertEqual(
            [s.toTag for s in run(store.dialogSubscriptions(("c1", "a", "theirs")))],
            ["a"],
        )
        self.assertEqual(
            [s.eventId for s in run(store.dialogSubscriptions(("c1", "b", "theirs")))],
            ["", "2"],
        )
        self.assertEqual(run(store.nextCSeq(subscription("c1", toTag="b").key)), 1)
        self.assertEqual(run(store.nextCSeq(subscription("c1", toTag="a").key)), 1)
        run(store.removeSubscription(subscription("c1", toTag="a").key))
        self.assertEqual(run(store.dialogSubscriptions(("c1", "a", "theirs"))), [])
        self.assertEqual(len(run(store.dialogSubscriptions(("c1", "b", "theirs")))), 2)

    def test_refreshMovesExpiry(self) -> None:
        """A refreshed subscription expires at its new time, once."""
        store = self.store
        run(store.putSubscription(subscription("c1", expires=100.0)))
        run(store.putSubscription(subscription("c1", expires=200.0)))
        self.assertEqual(run(store.expiredSubscriptions(150.0)), [])
        [gone] = run(store.expiredSubscriptions(250.0))
        self.assertEqual(gone.callId, "c1")
        self.assertEqual(run(store.expiredSubscriptions(250.0)), [])

    def test_refreshBackAndForth(self) -> None:
        """Expiry set to a time, away, and back: one expiry, at that time."""
        store = self.store
        for expires in (100.0, 200.0, 100.0):
            run(store.putSubscription(subscription("c1", expires=expires)))
        [gone] = run(store.expiredSubscriptions(100.0))
        self.assertEqual(gone.expires, 100.0)
        self.assertEqual(run(store.expiredSubscriptions(300.0)), [])

    def test_heapCompacted(self) -> None:
        """Stale heap entries are dropped once they outnumber the rows."""
        store = self.store
        for n in range(3000):
            run(store.putSubscription(subscription("c1", expires=float(n))))
        self.assertLess(len(store._subscriptionExpiry._heap), 1100)
        [gone] = run(store.expiredSubscriptions(5000.0))
        self.assertEqual(gone.expires, 2999.0)


class WatcherIndexTests(SynchronousTestCase):
    """Watcher rows by presentity."""

    def test_oneTwoOne(self) -> None:
        """A presentity's watchers, one, two, one again, then none."""
        store = MemoryStore()

        def users() -> list[str]:
            rows = run(store.watchers("sip:alice@example.com", "presence"))
            return [w.watcherUsername for w in rows]

        run(store.putWatcher(watcher("bob")))
        run(store.putWatcher(watcher("bob")))
        self.assertEqual(users(), ["bob"])
        run(store.putWatcher(watcher("carol")))
        self.assertEqual(users(), ["bob", "carol"])
        self.assertEqual(store.counts()["watchers"], 2)
        run(store.removeWatcher(watcher("bob")))
        self.assertEqual(users(), ["carol"])
        run(store.removeWatcher(watcher("bob")))
        run(store.removeWatcher(watcher("carol")))
        self.assertEqual(users(), [])
        self.assertEqual(store.counts()["watchers"], 0)
        page = run(store.listWatchers())
        self.assertEqual(page.entries, [])

    def test_listedByPresentity(self) -> None:
        """The listing by presentity reads the same index."""
        store = MemoryStore()
        run(store.putWatcher(watcher("carol")))
        run(store.putWatcher(watcher("bob")))
        run(store.putWatcher(watcher("dave", presentity="sip:x@example.com")))
        page = run(store.listWatchers(presentity="sip:alice@example.com"))
        self.assertEqual([w.watcherUsername for w in page.entries], ["bob", "carol"])
        page = run(store.listWatchers())
        self.assertEqual(len(page.entries), 3)


class PublicationExpiryTests(SynchronousTestCase):
    """The publication heap, read against the rows."""

    def test_replacedTagNeverExpires(self) -> None:
        """A publication replaced under a new entity tag leaves no live entry."""
        store = MemoryStore()
        first = Publication("a@x", "presence", "e1", 100.0, 1.0, b"")
        second = Publication("a@x", "presence", "e2", 200.0, 2.0, b"")
        run(store.putPublication(first))
        run(store.putPublication(second, replacing="e1"))
        self.assertEqual(run(store.expiredPublications(150.0)), [])
        [gone] = run(store.expiredPublications(250.0))
        self.assertEqual(gone.etag, "e2")
