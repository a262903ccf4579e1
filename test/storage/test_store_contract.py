"""The store contract, run against every backend, and the SQL stores' extras.

The contract is written once, as `StoreContract`, and run against the
memory store (synchronously), SQLite (in a temporary file) and PostgreSQL (a
database created for each test class, when ``PRESENCE_TEST_PG_DSN`` is set).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from presence.status import ACTIVE, PENDING, TERMINATED
from presence.storage.cached import CachedStore
from presence.storage.errors import StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.memory import MemoryStore
from presence.storage.postgres import PostgresStore
from presence.storage.records import (
    Batch,
    Binding,
    EventCounts,
    Publication,
    Subscription,
    Watcher,
)
from presence.storage.sql import SCHEMA_VERSION
from presence.storage.sqlite import SQLiteStore
from test.support.postgres import (
    PostgresPerClass,
    pgDSN,
)
from test.support.proxy import CuttableProxy

#: The tables emptied before each PostgreSQL test (DELETE is quicker than
#: TRUNCATE on tables this small).
EMPTIED = ("presentity", "active_watchers", "watchers", "xcap", "location")


if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


def publication(
    etag: str = "e1", presentity: str = "alice@example.com", **kw: Any
) -> Publication:
    """A publication with a body that is not UTF-8."""
    fields: dict[str, Any] = {
        "presentity": presentity,
        "event": "presence",
        "etag": etag,
        "expires": 1000.0,
        "receivedTime": 10.0,
        "body": b"<presence>\xff\xfe\x00\x80</presence>",
        "contentType": "application/pidf+xml",
        "sender": "sip:alice@192.0.2.1:5060",
        "extraHeaders": b"X-Extra: \xe9t\xe9\r\n",
    }
    fields.update(kw)
    return Publication(**fields)


def subscription(
    callId: str = "call-1", eventId: str = "", event: str = "presence", **kw: Any
) -> Subscription:
    """A subscription with every field set."""
    fields: dict[str, Any] = {
        "presentity": "sip:alice@example.com",
        "event": event,
        "eventId": eventId,
        "callId": callId,
        "toTag": "ours",
        "fromTag": "theirs",
        "watcherUsername": "bob",
        "watcherDomain": "example.org",
        "toUser": "alice",
        "toDomain": "example.com",
        "localCSeq": 1,
        "remoteCSeq": 7,
        "contact": "sip:bob@192.0.2.2:5062;transport=tcp",
        "recordRoute": "<sip:proxy.example.org;lr>",
        "expires": 3600.0,
        "status": PENDING,
        "reason": None,
        "version": 3,
        "socketInfo": "tcp:192.0.2.2:5062",
        "localContact": "sip:presence@192.0.2.10:5060",
        "watcherURI": "sip:bob@example.org",
        "watcherDisplayName": "Bob B\u00e9b\u00e9",
        "fromHeader": '"Bob" <sip:bob@example.org>;tag=theirs',
        "toHeader": "<sip:alice@example.com>;tag=ours",
        "sharingTag": "node-1",
        "createdTime": 50.0,
    }
    fields.update(kw)
    return Subscription(**fields)


def watcher(username: str = "bob", **kw: Any) -> Watcher:
    """A watcher row."""
    fields: dict[str, Any] = {
        "presentity": "sip:alice@example.com",
        "watcherUsername": username,
        "watcherDomain": "example.org",
        "event": "presence",
        "status": ACTIVE,
        "reason": None,
        "insertedTime": 20.0,
    }
    fields.update(kw)
    return Watcher(**fields)


def binding(contact: str = "sip:alice@192.0.2.1", **kw: Any) -> Binding:
    """A binding of alice."""
    fields: dict[str, Any] = {
        "aor": "alice@example.com",
        "contact": contact,
        "expires": 500.0,
        "q": 0.7,
        "callId": "reg-1",
        "cseq": 3,
        "received": "udp:192.0.2.1:5060",
        "path": "<sip:edge.example.com;lr>",
        "userAgent": "Phone/1.0",
        "methods": "INVITE, SUBSCRIBE, NOTIFY",
        "params": ';+sip.instance="<urn:uuid:1>"',
    }
    fields.update(kw)
    return Binding(**fields)


class StoreContract(_Base):
    """What every `IPresenceStore` promises; mixed into a test case per store."""

    store: Any

    async def test_interface(self) -> None:
        """The store provides IPresenceStore, and is ready."""
        self.assertTrue(verifyObject(IPresenceStore, self.store))
        self.assertTrue(self.store.ready)

    # -- publications ---------------------------------------------------------

    async def test_publicationRoundTrip(self) -> None:
        """A publication comes back as it was put, bodies as exact bytes."""
        await self.store.putPublication(publication())
        got = await self.store.publication("alice@example.com", "presence", "e1")
        self.assertEqual(got, publication())
        assert got is not None
        self.assertIsInstance(got.body, bytes)

    async def test_publicationMissing(self) -> None:
        """An unknown entity tag gives None."""
        await self.store.putPublication(publication())
        self.assertIsNone(
            await self.store.publication("alice@example.com", "presence", "nope")
        )
        self.assertIsNone(
            await self.store.publication("alice@example.com", "dialog", "e1")
        )

    async def test_publicationsOldestFirst(self) -> None:
        """The publications of a presentity and event come oldest first."""
        await self.store.putPublication(publication("new", receivedTime=30.0))
        await self.store.putPublication(publication("old", receivedTime=20.0))
        await self.store.putPublication(publication("other", event="dialog"))
        await self.store.putPublication(publication("x", presentity="carol@a.b"))
        got = await self.store.publications("alice@example.com", "presence")
        self.assertEqual([p.etag for p in got], ["old", "new"])
        self.assertEqual(await self.store.publications("nobody@a.b", "presence"), [])

    async def test_putPublicationSameTag(self) -> None:
        """Putting a publication with the same etag replaces it."""
        await self.store.putPublication(publication())
        await self.store.putPublication(publication(body=b"\x00two", expires=2000.0))
        got = await self.store.publications("alice@example.com", "presence")
        self.assertEqual(got, [publication(body=b"\x00two", expires=2000.0)])

    async def test_putPublicationReplacing(self) -> None:
        """Putting with ``replacing`` removes the publication of the old etag."""
        await self.store.putPublication(publication("e1"))
        await self.store.putPublication(publication("e2"), replacing="e1")
        got = await self.store.publications("alice@example.com", "presence")
        self.assertEqual([p.etag for p in got], ["e2"])

    async def test_removePublication(self) -> None:
        """Removing returns the publication once, then None."""
        await self.store.putPublication(publication())
        self.assertEqual(
            await self.store.removePublication("alice@example.com", "presence", "e1"),
            publication(),
        )
        self.assertIsNone(
            await self.store.removePublication("alice@example.com", "presence", "e1")
        )
        self.assertEqual(
            await self.store.publications("alice@example.com", "presence"), []
        )

    async def test_expiredPublications(self) -> None:
        """A sweep removes and returns each expired publication exactly once."""
        await self.store.putPublication(publication("a", expires=100.0))
        await self.store.putPublication(publication("b", expires=200.0))
        await self.store.putPublication(publication("c", expires=300.0))
        self.assertEqual(await self.store.expiredPublications(50.0), [])
        got = await self.store.expiredPublications(200.0)
        self.assertEqual([p.etag for p in got], ["a", "b"])
        self.assertEqual(got[0], publication("a", expires=100.0))
        self.assertEqual(await self.store.expiredPublications(200.0), [])
        left = await self.store.publications("alice@example.com", "presence")
        self.assertEqual([p.etag for p in left], ["c"])

    async def test_refreshDelaysExpiry(self) -> None:
        """A publication put again with a later expiry is not swept early."""
        await self.store.putPublication(publication(expires=100.0))
        await self.store.putPublication(publication(expires=400.0))
        self.assertEqual(await self.store.expiredPublications(200.0), [])
        self.assertEqual(len(await self.store.expiredPublications(400.0)), 1)

    # -- subscriptions --------------------------------------------------------

    async def test_subscriptionRoundTrip(self) -> None:
        """A subscription comes back with every field as it was put."""
        await self.store.putSubscription(subscription())
        self.assertEqual(
            await self.store.subscription(subscription().key), subscription()
        )

    async def test_subscriptionDefaults(self) -> None:
        """Optional fields left at their defaults come back the same."""
        plain = subscription(
            watcherDisplayName=None, sharingTag=None, reason=None, recordRoute=""
        )
        await self.store.putSubscription(plain)
        self.assertEqual(await self.store.subscription(plain.key), plain)

    async def test_subscriptionMissing(self) -> None:
        """An unknown key gives None; the event id is part of the key."""
        await self.store.putSubscription(subscription())
        self.assertIsNone(
            await self.store.subscription(subscription(eventId="other").key)
        )

    async def test_dialogSubscriptions(self) -> None:
        """Every subscription of one dialog, and only those, are listed."""
        await self.store.putSubscription(subscription(eventId="1"))
        await self.store.putSubscription(subscription(eventId="2"))
        await self.store.putSubscription(subscription(callId="call-2"))
        got = await self.store.dialogSubscriptions(("call-1", "ours", "theirs"))
        self.assertEqual(sorted(s.eventId for s in got), ["1", "2"])
        self.assertEqual(
            await self.store.dialogSubscriptions(("call-1", "ours", "x")), []
        )

    async def test_subscriptionsOfPresentity(self) -> None:
        """Subscriptions are listed by presentity and event."""
        await self.store.putSubscription(subscription("c1"))
        await self.store.putSubscription(subscription("c2"))
        await self.store.putSubscription(subscription("c3", event="dialog"))
        await self.store.putSubscription(
            subscription("c4", presentity="sip:carol@example.com")
        )
        got = await self.store.subscriptions("sip:alice@example.com", "presence")
        self.assertEqual(sorted(s.callId for s in got), ["c1", "c2"])

    async def test_putSubscriptionReplaces(self) -> None:
        """Putting a subscription again replaces it, even its presentity."""
        await self.store.putSubscription(subscription())
        moved = subscription(
            presentity="sip:carol@example.com", status=ACTIVE, remoteCSeq=8
        )
        await self.store.putSubscription(moved)
        self.assertEqual(await self.store.subscription(moved.key), moved)
        self.assertEqual(
            await self.store.subscriptions("sip:alice@example.com", "presence"), []
        )
        self.assertEqual(
            await self.store.subscriptions("sip:carol@example.com", "presence"),
            [moved],
        )

    async def test_removeSubscription(self) -> None:
        """Removing returns the subscription once, then None."""
        await self.store.putSubscription(subscription())
        self.assertEqual(
            await self.store.removeSubscription(subscription().key), subscription()
        )
        self.assertIsNone(await self.store.removeSubscription(subscription().key))
        self.assertEqual(
            await self.store.dialogSubscriptions(subscription().dialogKey), []
        )

    async def test_expiredSubscriptions(self) -> None:
        """A sweep removes and returns each expired subscription exactly once."""
        await self.store.putSubscription(subscription("a", expires=100.0))
        await self.store.putSubscription(subscription("b", expires=300.0))
        got = await self.store.expiredSubscriptions(100.0)
        self.assertEqual(got, [subscription("a", expires=100.0)])
        self.assertEqual(await self.store.expiredSubscriptions(200.0), [])
        self.assertIsNone(await self.store.subscription(subscription("a").key))
        self.assertIsNotNone(await self.store.subscription(subscription("b").key))

    async def test_nextCSeq(self) -> None:
        """The next CSeq is one above the dialog's highest, saved on every row."""
        await self.store.putSubscription(subscription(eventId="1", localCSeq=5))
        await self.store.putSubscription(subscription(eventId="2", localCSeq=3))
        await self.store.putSubscription(subscription(callId="other", localCSeq=40))
        self.assertEqual(await self.store.nextCSeq(subscription(eventId="2").key), 6)
        self.assertEqual(await self.store.nextCSeq(subscription(eventId="1").key), 7)
        rows = await self.store.dialogSubscriptions(subscription().dialogKey)
        self.assertEqual([s.localCSeq for s in rows], [7, 7])
        other = await self.store.subscription(subscription(callId="other").key)
        assert other is not None
        self.assertEqual(other.localCSeq, 40)

    async def test_claimNotify(self) -> None:
        """Claiming a NOTIFY takes the next CSeq and returns the row with it."""
        await self.store.putSubscription(subscription(eventId="1", localCSeq=5))
        await self.store.putSubscription(
            subscription(eventId="2", localCSeq=3, contact="sip:b@192.0.2.9")
        )
        row = await self.store.claimNotify(subscription(eventId="2").key)
        assert row is not None
        self.assertEqual((row.localCSeq, row.eventId), (6, "2"))
        self.assertEqual(row.contact, "sip:b@192.0.2.9")
        self.assertEqual(await self.store.nextCSeq(subscription(eventId="1").key), 7)
        self.assertIsNone(await self.store.claimNotify(subscription(callId="x").key))

    async def test_nextCSeqGone(self) -> None:
        """The next CSeq of a subscription that is gone is None."""
        await self.store.putSubscription(subscription(eventId="1"))
        self.assertIsNone(await self.store.nextCSeq(subscription(eventId="2").key))
        got = await self.store.subscription(subscription(eventId="1").key)
        assert got is not None
        self.assertEqual(got.localCSeq, 1)

    async def test_nextCSeqConcurrent(self) -> None:
        """Concurrent calls on one dialog never return the same CSeq."""
        await self.store.putSubscription(subscription(eventId="1"))
        await self.store.putSubscription(subscription(eventId="2"))
        keys = [subscription(eventId=str(1 + i % 2)).key for i in range(20)]
        got = await gatherResults(
            [Deferred.fromCoroutine(self.store.nextCSeq(k)) for k in keys]
        )
        self.assertEqual(sorted(got), list(range(2, 22)))

    # -- watchers -------------------------------------------------------------

    async def test_watchers(self) -> None:
        """Watcher rows are put, replaced, listed by presentity and event, removed."""
        await self.store.putWatcher(watcher("bob"))
        await self.store.putWatcher(watcher("carol", status=PENDING))
        await self.store.putWatcher(watcher("dave", event="dialog"))
        await self.store.putWatcher(watcher("bob", status=TERMINATED, reason="x"))
        got = await self.store.watchers("sip:alice@example.com", "presence")
        self.assertEqual(
            sorted(got, key=lambda w: w.watcherUsername),
            [watcher("bob", status=TERMINATED, reason="x"), watcher("carol", status=2)],
        )
        await self.store.removeWatcher(watcher("bob"))
        await self.store.removeWatcher(watcher("nobody"))
        got = await self.store.watchers("sip:alice@example.com", "presence")
        self.assertEqual([w.watcherUsername for w in got], ["carol"])

    # -- bindings -------------------------------------------------------------

    async def test_bindings(self) -> None:
        """Bindings are put, replaced by contact, listed by AOR and removed."""
        await self.store.putBinding(binding("sip:a@192.0.2.1"))
        await self.store.putBinding(binding("sip:b@192.0.2.1", q=None, methods=""))
        await self.store.putBinding(binding("sip:a@192.0.2.1", cseq=4))
        await self.store.putBinding(binding("sip:c@192.0.2.1", aor="carol@a.b"))
        got = await self.store.bindings("alice@example.com")
        self.assertEqual(
            sorted(got, key=lambda b: b.contact),
            [
                binding("sip:a@192.0.2.1", cseq=4),
                binding("sip:b@192.0.2.1", q=None, methods=""),
            ],
        )
        await self.store.removeBinding("alice@example.com", "sip:a@192.0.2.1")
        await self.store.removeBinding("alice@example.com", "sip:zzz@192.0.2.1")
        got = await self.store.bindings("alice@example.com")
        self.assertEqual([b.contact for b in got], ["sip:b@192.0.2.1"])

    async def test_expiredBindings(self) -> None:
        """A sweep removes and returns each expired binding exactly once."""
        await self.store.putBinding(binding("sip:a@192.0.2.1", expires=100.0))
        await self.store.putBinding(binding("sip:b@192.0.2.1", expires=900.0))
        got = await self.store.expiredBindings(150.0)
        self.assertEqual(got, [binding("sip:a@192.0.2.1", expires=100.0)])
        self.assertEqual(await self.store.expiredBindings(150.0), [])
        got = await self.store.bindings("alice@example.com")
        self.assertEqual([b.contact for b in got], ["sip:b@192.0.2.1"])

    # -- listings -------------------------------------------------------------

    async def everything(
        self, listing: Callable[..., Any], limit: int, **filters: Any
    ) -> tuple[list[Any], int]:
        """Every row of a listing, page by page; the rows and the pages."""
        rows: list[Any] = []
        after = None
        pages = 0
        while True:
            page = await listing(after=after, limit=limit, **filters)
            pages += 1
            self.assertLessEqual(len(page.entries), limit)
            rows.extend(page.entries)
            if page.next is None:
                return rows, pages
            after = page.next
            self.assertLess(pages, 1000, "the listing does not end")

    def assertInKeyOrder(self, rows: list[Any], expected: list[Any]) -> None:
        """Rows come once each, in key order, and are those expected."""
        keys = [row.key for row in rows]
        self.assertEqual(keys, sorted(set(keys)))
        self.assertEqual(keys, sorted(row.key for row in expected))
        self.assertEqual(rows, sorted(expected, key=lambda row: row.key))

    async def test_listPublicationsPaged(self) -> None:
        """Publications come page by page in key order, each exactly once."""
        made = [
            publication(
                f"e{n:02d}",
                presentity=f"user{n % 4}@example.com",
                event="dialog" if n % 3 == 0 else "presence",
            )
            for n in range(23)
        ]
        for p in made:
            await self.store.putPublication(p)
        rows, pages = await self.everything(self.store.listPublications, 5)
        self.assertInKeyOrder(rows, made)
        self.assertEqual(pages, 5)
        rows, _ = await self.everything(self.store.listPublications, 100)
        self.assertInKeyOrder(rows, made)

    async def test_listPublicationsFiltered(self) -> None:
        """A listing may keep to a presentity, an event, or both."""
        made = [
            publication(
                f"e{n:02d}",
                presentity=f"user{n % 4}@example.com",
                event="dialog" if n % 3 == 0 else "presence",
            )
            for n in range(23)
        ]
        for p in made:
            await self.store.putPublication(p)
        for presentity, event in [
            ("user1@example.com", None),
            (None, "dialog"),
            ("user2@example.com", "presence"),
            ("nobody@example.com", None),
        ]:
            rows, _ = await self.everything(
                self.store.listPublications, 2, presentity=presentity, event=event
            )
            expected = [
                p
                for p in made
                if presentity in (None, p.presentity) and event in (None, p.event)
            ]
            self.assertInKeyOrder(rows, expected)

    async def test_listSubscriptionsPaged(self) -> None:
        """Subscriptions come page by page in key order, each exactly once."""
        made = [
            subscription(
                f"call-{n:02d}",
                event="dialog" if n % 5 == 0 else "presence",
                presentity=f"sip:user{n % 3}@example.com",
            )
            for n in range(31)
        ]
        for s in made:
            await self.store.putSubscription(s)
        rows, pages = await self.everything(self.store.listSubscriptions, 10)
        self.assertInKeyOrder(rows, made)
        self.assertEqual(pages, 4)
        for presentity, event in [
            ("sip:user0@example.com", None),
            (None, "dialog"),
            ("sip:user1@example.com", "presence"),
        ]:
            rows, _ = await self.everything(
                self.store.listSubscriptions, 3, presentity=presentity, event=event
            )
            expected = [
                s
                for s in made
                if presentity in (None, s.presentity) and event in (None, s.event)
            ]
            self.assertInKeyOrder(rows, expected)

    async def test_listRareEvent(self) -> None:
        """An event that few rows have is found whatever the page size."""
        made = [subscription(f"call-{n:03d}") for n in range(60)]
        made += [subscription("call-030x", event="dialog")]
        for s in made:
            await self.store.putSubscription(s)
        rows, _ = await self.everything(self.store.listSubscriptions, 1, event="dialog")
        self.assertEqual([s.callId for s in rows], ["call-030x"])

    async def test_listWatchersPaged(self) -> None:
        """Watcher rows come page by page in key order, each exactly once."""
        made = [
            watcher(
                f"user{n:02d}",
                presentity=f"sip:p{n % 2}@example.com",
                event="presence.winfo" if n % 4 == 0 else "presence",
            )
            for n in range(17)
        ]
        for w in made:
            await self.store.putWatcher(w)
        rows, pages = await self.everything(self.store.listWatchers, 4)
        self.assertInKeyOrder(rows, made)
        self.assertEqual(pages, 5)
        rows, _ = await self.everything(
            self.store.listWatchers, 3, presentity="sip:p1@example.com"
        )
        self.assertInKeyOrder(
            rows, [w for w in made if w.presentity == "sip:p1@example.com"]
        )
        rows, _ = await self.everything(
            self.store.listWatchers, 3, event="presence.winfo"
        )
        self.assertInKeyOrder(rows, [w for w in made if w.event == "presence.winfo"])

    async def test_listWhileChanging(self) -> None:
        """Rows there for the whole listing come once, whatever else changes."""
        for n in range(0, 40, 2):
            await self.store.putSubscription(subscription(f"call-{n:02d}"))
        first = await self.store.listSubscriptions(limit=5)
        await self.store.removeSubscription(subscription("call-04").key)
        await self.store.removeSubscription(subscription("call-20").key)
        for n in range(1, 40, 2):
            await self.store.putSubscription(subscription(f"call-{n:02d}"))
        rest, _ = await self.everything(
            lambda **kw: self.store.listSubscriptions(
                **{**kw, "after": kw["after"] or first.next}
            ),
            5,
        )
        seen = [s.callId for s in first.entries + rest]
        self.assertEqual(len(seen), len(set(seen)))
        kept = {f"call-{n:02d}" for n in range(0, 40, 2)} - {"call-04", "call-20"}
        self.assertLessEqual(kept, set(seen))

    async def test_listBadArguments(self) -> None:
        """A key of the wrong shape, or a limit below 1, is a ValueError."""
        for call in [
            self.store.listSubscriptions(after=("a", "b")),
            self.store.listPublications(after=("a", "b", "c", 4)),
            self.store.listWatchers(limit=0),
            self.store.listSubscriptions(presentity="sip:a@b", after=("a",)),
        ]:
            with self.assertRaises(ValueError):
                await call

    async def test_eventCounts(self) -> None:
        """The rows of each table are counted by event."""
        self.assertEqual(await self.store.eventCounts(), EventCounts())
        await self.store.putPublication(publication("a"))
        await self.store.putPublication(publication("b"))
        await self.store.putPublication(publication("c", event="dialog"))
        await self.store.putPublication(publication("d"), replacing="b")
        await self.store.removePublication("alice@example.com", "presence", "a")
        await self.store.putSubscription(subscription("c1"))
        await self.store.putSubscription(subscription("c1"))
        await self.store.putSubscription(subscription("c2", event="dialog"))
        await self.store.putSubscription(subscription("c3", event="dialog"))
        await self.store.removeSubscription(subscription("c3", event="dialog").key)
        await self.store.putWatcher(watcher("w1"))
        await self.store.putWatcher(watcher("w1"))
        await self.store.putWatcher(watcher("w2"))
        await self.store.removeWatcher(watcher("w2"))
        self.assertEqual(
            await self.store.eventCounts(),
            EventCounts(
                publications={"presence": 1, "dialog": 1},
                subscriptions={"presence": 1, "dialog": 1},
                watchers={"presence": 1},
            ),
        )

    async def test_recordsAreCopies(self) -> None:
        """Changing a record handed out does not change the store."""
        await self.store.putSubscription(subscription())
        got = await self.store.subscription(subscription().key)
        assert got is not None
        got.status = TERMINATED
        again = await self.store.subscription(subscription().key)
        assert again is not None
        self.assertEqual(again.status, PENDING)


def synchronously(cls: type[SynchronousTestCase]) -> type[SynchronousTestCase]:
    """Run a class's ``async def`` tests to completion at once.

    For stores that never wait (the memory store): each test coroutine must
    have finished when it is first run, or the test fails.
    """

    def wrap(
        method: Callable[[Any], Coroutine[Any, Any, None]],
    ) -> Callable[[Any], None]:
        @functools.wraps(method)
        def run(self: SynchronousTestCase) -> None:
            self.successResultOf(Deferred.fromCoroutine(method(self)))

        return run

    for name, method in inspect.getmembers(cls, inspect.iscoroutinefunction):
        if name.startswith("test_"):
            setattr(cls, name, wrap(method))
    return cls


@synchronously
class MemoryStoreContractTests(StoreContract, SynchronousTestCase):
    """The memory store keeps the contract."""

    def setUp(self) -> None:
        """Use an empty memory store."""
        self.store = MemoryStore()


@synchronously
class CachedStoreContractTests(StoreContract, SynchronousTestCase):
    """The cache keeps the contract: it reads and writes its memory copy."""

    def setUp(self) -> None:
        """Use an empty cache; its database is never reached before a flush."""
        self.store = CachedStore(database=None)


# -- the SQL stores ----------------------------------------------------------


class SQLStoreTests(_Base):
    """What the SQL stores add: schema, bulk load and write, OpenSIPS rows."""

    store: Any

    async def rows(self, sql: str) -> list[Any]:
        """The rows of a query, run through the store's own runner."""
        assert self.store.runner is not None
        return list(await self.store.runner.runQuery(sql, {}))

    async def test_schemaVersion(self) -> None:
        """The database holds the version this server knows."""
        self.assertEqual(await self.store.schemaVersion(), SCHEMA_VERSION)
        await self.store.ensureSchema(create=False)

    async def test_unknownVersionRefused(self) -> None:
        """A database of another schema version is refused, create or not."""
        assert self.store.runner is not None
        await self.store.runner.runInteraction(
            [("UPDATE version SET table_version = 99", {})]
        )
        try:
            for create in (False, True):
                e = await self.assertFailure(
                    Deferred.fromCoroutine(self.store.ensureSchema(create)),
                    StorageError,
                )
                self.assertIn("version 99", str(e))
        finally:
            await self.store.runner.runInteraction(
                [(f"UPDATE version SET table_version = {SCHEMA_VERSION}", {})]
            )

    async def test_createMissingTables(self) -> None:
        """Missing tables are created only when allowed."""
        assert self.store.runner is not None
        await self.store.runner.runInteraction(
            [("DROP TABLE xcap", {}), ("DROP TABLE version", {})]
        )
        e = await self.assertFailure(
            Deferred.fromCoroutine(self.store.ensureSchema(False)), StorageError
        )
        self.assertIn("version", str(e))
        self.assertIsNone(await self.store.schemaVersion())
        await self.store.ensureSchema(True)
        self.assertEqual(await self.store.schemaVersion(), SCHEMA_VERSION)
        self.assertEqual(await self.rows("SELECT COUNT(*) FROM xcap"), [(0,)])
        await self.store.runner.runInteraction([("DROP TABLE location", {})])
        e = await self.assertFailure(
            Deferred.fromCoroutine(self.store.ensureSchema(False)), StorageError
        )
        self.assertIn("location", str(e))
        await self.store.ensureSchema(True)

    async def test_connectionNotStored(self) -> None:
        """A subscription's connection is runtime state, not stored."""
        await self.store.putSubscription(subscription(connection=object()))
        got = await self.store.subscription(subscription().key)
        assert got is not None
        self.assertIsNone(got.connection)

    async def test_openSIPSColumns(self) -> None:
        """Rows keep OpenSIPS's columns: user and domain split, methods as bits."""
        await self.store.putBinding(binding())
        await self.store.putPublication(publication())
        self.assertEqual(
            await self.rows("SELECT username, domain, methods, q FROM location"),
            [("alice", "example.com", 1 + 512 + 1024, 0.7)],
        )
        self.assertEqual(
            await self.rows("SELECT username, domain, etag FROM presentity"),
            [("alice", "example.com", "e1")],
        )

    async def test_rowWrittenByOpenSIPS(self) -> None:
        """A row with only OpenSIPS's columns, ours at their defaults, reads."""
        assert self.store.runner is not None
        await self.store.runner.runInteraction(
            [
                (
                    "INSERT INTO active_watchers (presentity_uri, watcher_username,"
                    " watcher_domain, to_user, to_domain, to_tag, from_tag, callid,"
                    " local_cseq, remote_cseq, contact, expires, socket_info,"
                    " local_contact) VALUES ('sip:alice@example.com', 'bob',"
                    " 'example.org', 'alice', 'example.com', 't', 'f', 'c', 1, 2,"
                    " 'sip:bob@h', 100, 'udp:h:5060', 'sip:p@h')",
                    {},
                )
            ]
        )
        got = await self.store.subscriptions("sip:alice@example.com", "presence")
        self.assertEqual(len(got), 1)
        self.assertEqual(
            (got[0].status, got[0].version, got[0].eventId, got[0].recordRoute),
            (PENDING, 0, "", ""),
        )
        self.assertEqual((got[0].watcherURI, got[0].createdTime), ("", 0.0))

    async def test_batchRoundTrip(self) -> None:
        """A batch writes and deletes rows of every table; loadAll reads them."""
        await self.store.putPublication(publication("gone"))
        await self.store.putSubscription(subscription("gone"))
        await self.store.putWatcher(watcher("gone"))
        await self.store.putBinding(binding("sip:gone@h"))
        subscriptions = [subscription(f"c{i:03}", localCSeq=i) for i in range(450)]
        batch = Batch(
            publications=[publication("p1"), publication("p2", receivedTime=11.0)],
            publicationDeletes=[("alice@example.com", "presence", "gone")],
            subscriptions=[*subscriptions, subscription("c000", localCSeq=99)],
            subscriptionDeletes=[subscription("gone").key],
            watchers=[watcher("w1"), watcher("w2")],
            watcherDeletes=[watcher("gone").key],
            bindings=[binding("sip:b1@h")],
            bindingDeletes=[("alice@example.com", "sip:gone@h")],
        )
        await self.store.applyBatch(batch)
        snapshot = await self.store.loadAll()
        self.assertEqual(snapshot.publications, batch.publications)
        self.assertEqual(
            snapshot.subscriptions,
            [subscriptions[0].copy(localCSeq=99), *subscriptions[1:]],
        )
        self.assertEqual(snapshot.watchers, batch.watchers)
        self.assertEqual(snapshot.bindings, batch.bindings)
        self.assertEqual(len(snapshot[1]), 450)

    async def test_batchIsOneTransaction(self) -> None:
        """A batch that fails leaves nothing written."""
        bad = subscription("bad")
        bad.contact = None  # type: ignore[assignment]  # violates NOT NULL
        batch = Batch(publications=[publication()], subscriptions=[bad])
        await self.assertFailure(
            Deferred.fromCoroutine(self.store.applyBatch(batch)), StorageError
        )
        snapshot = await self.store.loadAll()
        self.assertEqual((snapshot.publications, snapshot.subscriptions), ([], []))
        self.assertTrue(self.store.ready)

    async def test_errorsCounted(self) -> None:
        """Each statement the database refuses is counted."""
        self.assertEqual(self.store.stats.errors, 0)
        await self.assertFailure(
            Deferred.fromCoroutine(self.store._query("SELECT nope FROM nothing", {})),
            StorageError,
        )
        self.assertEqual(self.store.stats.errors, 1)

    async def test_emptyBatch(self) -> None:
        """An empty batch does nothing."""
        await self.store.applyBatch(Batch())
        self.assertEqual(await self.store.loadAll(), ([], [], [], []))

    async def test_stopped(self) -> None:
        """A stopped store is not ready and raises StorageError."""
        await self.store.stop()
        self.assertFalse(self.store.ready)
        await self.assertFailure(
            Deferred.fromCoroutine(self.store.publications("a@b", "presence")),
            StorageError,
        )


class SQLiteStoreContractTests(StoreContract, SQLStoreTests, TestCase):
    """The SQLite store keeps the contract."""

    timeout = 10

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Open a new database in a temporary file."""
        self.store = SQLiteStore(self.mktemp() + ".sqlite", reactor=reactor)
        await self.store.start()
        self.addCleanup(self.store.stop)
        await self.store.ensureSchema(create=True)

    async def test_walJournal(self) -> None:
        """The database is in WAL mode."""
        self.assertEqual(await self.rows("PRAGMA journal_mode"), [("wal",)])

    async def test_unopenable(self) -> None:
        """A database that cannot be opened fails start with StorageError."""
        store = SQLiteStore(self.mktemp() + "/missing/dir/db", reactor=reactor)
        await self.assertFailure(Deferred.fromCoroutine(store.start()), StorageError)
        self.assertFalse(store.ready)


# -- PostgreSQL --------------------------------------------------------------


class PostgresTestCase(PostgresPerClass, TestCase):
    """A test case with a database of its own for the class."""

    timeout = 20

    async def makeStore(self, dsn: str | None = None, **kw: Any) -> PostgresStore:
        """A started store of the class's database, with the schema, emptied."""
        store = PostgresStore(dsn or self.pg.dsn, reactor=reactor, **kw)
        await store.start()
        self.addCleanup(store.stop)
        await store.ensureSchema(create=True)
        assert store.runner is not None
        await store.runner.runInteraction(
            [(f"DELETE FROM {table}", {}) for table in EMPTIED]
        )
        return store


class PostgresStoreContractTests(StoreContract, SQLStoreTests, PostgresTestCase):
    """The PostgreSQL store keeps the contract."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Connect to the class's database, emptied."""
        self.store = await self.makeStore(connections=3)

    async def test_unreachable(self) -> None:
        """A server that cannot be reached fails start with StorageError."""
        store = PostgresStore(pgDSN(host="127.0.0.1", port="1"), reactor=reactor)
        await self.assertFailure(Deferred.fromCoroutine(store.start()), StorageError)
        self.assertFalse(store.ready)

    async def test_sharedExpiry(self) -> None:
        """Two stores sweeping one database never both get the same row."""
        other = await self.makeStore(connections=2)
        subs = [subscription(f"c{i}", expires=float(i)) for i in range(200)]
        await self.store.applyBatch(Batch(subscriptions=subs))
        sweeps = [
            Deferred.fromCoroutine(store.expiredSubscriptions(float(now)))
            for now in range(0, 220, 20)
            for store in (self.store, other)
        ]
        got = [s.callId for swept in await gatherResults(sweeps) for s in swept]
        self.assertEqual(sorted(got), sorted(s.callId for s in subs))

    async def test_sharedNextCSeq(self) -> None:
        """Two stores taking CSeqs of one dialog never get the same one."""
        other = await self.makeStore(connections=2)
        await self.store.putSubscription(subscription(eventId="1"))
        await self.store.putSubscription(subscription(eventId="2", localCSeq=4))
        calls = [
            Deferred.fromCoroutine(store.nextCSeq(subscription(eventId=e).key))
            for _ in range(15)
            for store in (self.store, other)
            for e in ("1", "2")
        ]
        got = await gatherResults(calls)
        self.assertEqual(sorted(got), list(range(5, 65)))


class PostgresOutageTests(PostgresTestCase):
    """The PostgreSQL store survives losing the server and recovers by itself."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Put a proxy between the store and the server."""
        params = psycopg2.extensions.parse_dsn(self.pg.dsn)
        self.proxy = CuttableProxy(
            params.get("host", "127.0.0.1"), int(params.get("port", 5432))
        )
        tcp: Any = reactor
        self.port: IListeningPort = tcp.listenTCP(0, self.proxy, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.proxy.cut)
        dsn = pgDSN(
            dbname=self.pg.name,
            host="127.0.0.1",
            port=str(self.port.getHost().port),
        )
        self.store = await self.makeStore(
            dsn, connections=2, retryDelay=0.05, maxRetryDelay=0.2
        )

    async def test_outageAndRecovery(self) -> None:
        """A cut fails the next call and clears ready; the store then recovers."""
        await self.store.putPublication(publication())
        self.proxy.cut()
        await self.assertFailure(
            Deferred.fromCoroutine(
                self.store.publications("alice@example.com", "presence")
            ),
            StorageError,
        )
        self.assertFalse(self.store.ready)
        await self.assertFailure(
            Deferred.fromCoroutine(self.store.putPublication(publication("e2"))),
            StorageError,
        )
        self.assertFalse(self.store.ready)
        self.proxy.refusing = False
        # The store's own probe reconnects.
        await self.store.whenReady()
        got = await self.store.publications("alice@example.com", "presence")
        self.assertEqual(got, [publication()])
        self.assertTrue(self.store.ready)

    async def test_idleCutRecoversWithoutFailure(self) -> None:
        """Connections cut while idle are replaced on their next use."""
        await self.store.putPublication(publication())
        self.proxy.cut()
        self.proxy.refusing = False
        # Idle: the reactor tells each connection that it was cut, a turn or
        # two later.
        pool = self.store._pool
        assert pool is not None
        while any(connection.alive for connection in pool.connections):
            await deferLater(reactor, 0)
        got = await self.store.publications("alice@example.com", "presence")
        self.assertEqual(got, [publication()])
        self.assertTrue(self.store.ready)
