"""Cache mode (presence.storage.cached) and the storage service.

Over a fake database that keeps its rows in dictionaries.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from presence.storage.cached import CachedStore
from presence.storage.errors import RowsRejected, StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Batch, Binding, Publication, Subscription, Watcher
from presence.storage.service import CACHE, MEMORY, SHARED, StorageService
from test.support.records import aliceSubscription


class FakeDatabase:
    """A database that keeps rows in dicts and can be made to fail."""

    def __init__(self) -> None:
        """Start empty and up."""
        self.publications: dict[Any, Publication] = {}
        self.subscriptions: dict[Any, Subscription] = {}
        self.watchers: dict[Any, Watcher] = {}
        self.bindings: dict[Any, Binding] = {}
        self.down = False
        self.batches: list[Batch] = []
        self.started = 0
        self.stopped = 0
        self.markers: dict[str, int] = {}
        self.ready = True
        #: Call-IDs of subscriptions whose rows the database refuses.
        self.refused: set[str] = set()

    def _check(self) -> None:
        if self.down:
            self.ready = False
            raise StorageError("connection refused")
        self.ready = True

    async def start(self) -> None:
        """Connect."""
        self.started += 1
        self._check()

    async def stop(self) -> None:
        """Close."""
        self.stopped += 1

    async def marker(self, name: str) -> int | None:
        """A named integer."""
        self._check()
        return self.markers.get(name)

    async def setMarker(self, name: str, value: int) -> None:
        """Keep a named integer."""
        self._check()
        self.markers[name] = value

    async def ensureSchema(self, create: bool) -> None:
        """Check the schema."""
        self._check()

    async def loadAll(self) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        """Every row."""
        self._check()
        return (
            list(self.publications.values()),
            list(self.subscriptions.values()),
            list(self.watchers.values()),
            list(self.bindings.values()),
        )

    async def applyBatch(self, batch: Batch) -> None:
        """Apply a batch."""
        self._check()
        if any(s.callId in self.refused for s in batch.subscriptions):
            raise RowsRejected("sqlite: UnicodeEncodeError: surrogates not allowed")
        self.batches.append(batch)
        for p in batch.publications:
            self.publications[(p.presentity, p.event, p.etag)] = p.copy()
        for pkey in batch.publicationDeletes:
            self.publications.pop(pkey, None)
        for s in batch.subscriptions:
            self.subscriptions[s.key] = s.copy()
        for skey in batch.subscriptionDeletes:
            self.subscriptions.pop(skey, None)
        for w in batch.watchers:
            self.watchers[w.key] = w
        for wkey in batch.watcherDeletes:
            self.watchers.pop(wkey, None)
        for b in batch.bindings:
            self.bindings[(b.aor, b.contact)] = b
        for bkey in batch.bindingDeletes:
            self.bindings.pop(bkey, None)


def publication(etag: str = "e1", expires: float = 100.0) -> Publication:
    """A publication of bob's presence."""
    return Publication("bob@example.com", "presence", etag, expires, 0.0, b"<x/>")


def subscription(callId: str = "c1", expires: float = 100.0) -> Subscription:
    """A subscription of alice to bob's presence."""
    return aliceSubscription(
        callId=callId,
        toTag="t",
        fromTag="f",
        localCSeq=1,
        contact="sip:alice@192.0.2.1",
        expires=expires,
    )


class CachedStoreTests(SynchronousTestCase):
    """Writes go to memory at once and to the database on flush."""

    def setUp(self) -> None:
        """A cached store over a fake database."""
        self.database = FakeDatabase()
        self.store = CachedStore(self.database)

    def test_refusedRowCostsNoOtherRow(self) -> None:
        """A row the database refuses is left out; every other row is written.

        The batch is split down to the refused row, which is logged once and
        stays in memory; the flush loses nothing else, and nothing is kept to
        be retried for ever.
        """
        self.database.refused = {"bad"}
        self.store.chunkSize = 1000
        for n in range(10):
            self.successResultOf(self.store.putPublication(publication(f"e{n}")))
        self.successResultOf(self.store.putSubscription(subscription("bad")))
        self.successResultOf(self.store.putSubscription(subscription("good")))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]
        written = self.successResultOf(Deferred.fromCoroutine(self.store.flush()))
        self.assertEqual(written, 11)
        self.assertEqual(len(self.database.publications), 10)
        self.assertEqual(
            [s.callId for s in self.database.subscriptions.values()], ["good"]
        )
        self.assertEqual(self.store.rowsRefused, 1)
        self.assertEqual(self.store.pending, 0)
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("'bad'", errors[0]["row"])
        # Still served from memory.
        key = subscription("bad").key
        self.assertIsNotNone(self.successResultOf(self.store.subscription(key)))
        # The next flush has nothing left to try.
        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(self.store.flush())), 0
        )

    def test_outageDuringSplitKeepsEverything(self) -> None:
        """An outage while the refused row is looked for keeps the rest."""
        self.database.refused = {"bad"}
        self.successResultOf(self.store.putSubscription(subscription("bad")))
        self.successResultOf(self.store.putSubscription(subscription("good")))
        real = self.database.applyBatch

        async def failAfterRefusal(batch: Batch) -> None:
            try:
                await real(batch)
            except RowsRejected:
                self.database.down = True
                raise

        self.database.applyBatch = failAfterRefusal  # type: ignore[method-assign]
        self.successResultOf(Deferred.fromCoroutine(self.store.flush()))
        self.assertEqual(self.store.pending, 2)
        self.assertEqual(self.store.rowsRefused, 0)

    def test_interface(self) -> None:
        """The cached store provides IPresenceStore."""
        self.assertTrue(verifyObject(IPresenceStore, self.store))

    def test_writesWaitForFlush(self) -> None:
        """A change is in memory at once and in the database after a flush."""
        self.successResultOf(self.store.putPublication(publication()))
        self.assertEqual(self.database.publications, {})
        self.assertEqual(self.store.pending, 1)
        self.assertEqual(self.successResultOf(self.store.flush()), 1)
        self.assertEqual(
            list(self.database.publications), [("bob@example.com", "presence", "e1")]
        )
        self.assertEqual(self.store.pending, 0)

    def test_oneWritePerKey(self) -> None:
        """A row changed many times between flushes is written once, as it is."""
        self.successResultOf(self.store.putSubscription(subscription()))
        for _ in range(5):
            self.successResultOf(self.store.nextCSeq(subscription().key))
        self.successResultOf(self.store.flush())
        [batch] = self.database.batches
        self.assertEqual(len(batch.subscriptions), 1)
        self.assertEqual(batch.subscriptions[0].localCSeq, 6)

    def test_replacedETag(self) -> None:
        """A refresh with a new entity tag deletes the old row and writes the new."""
        self.successResultOf(self.store.putPublication(publication("e1")))
        self.successResultOf(self.store.flush())
        self.successResultOf(
            self.store.putPublication(publication("e2"), replacing="e1")
        )
        self.successResultOf(self.store.flush())
        self.assertEqual([k[2] for k in self.database.publications], ["e2"])

    def test_deletesAndExpiry(self) -> None:
        """Removed and expired rows are deleted from the database."""
        self.successResultOf(self.store.putSubscription(subscription("c1", 10)))
        self.successResultOf(self.store.putSubscription(subscription("c2", 100)))
        self.successResultOf(
            self.store.putBinding(
                Binding("bob@example.com", "sip:b@h", 10, None, "r", 1)
            )
        )
        self.successResultOf(self.store.flush())
        self.successResultOf(self.store.removeSubscription(subscription("c2").key))
        self.successResultOf(self.store.expiredSubscriptions(20))
        self.successResultOf(self.store.expiredBindings(20))
        self.successResultOf(self.store.flush())
        self.assertEqual(self.database.subscriptions, {})
        self.assertEqual(self.database.bindings, {})

    def test_watchers(self) -> None:
        """Watcher rows are written and deleted."""
        watcher = Watcher(
            "sip:bob@example.com", "alice", "example.com", "presence", 1, None, 0
        )
        self.successResultOf(self.store.putWatcher(watcher))
        self.successResultOf(self.store.flush())
        self.assertEqual(list(self.database.watchers), [watcher.key])
        self.successResultOf(self.store.removeWatcher(watcher))
        self.successResultOf(self.store.flush())
        self.assertEqual(self.database.watchers, {})

    def test_reload(self) -> None:
        """A new cached store on the same database has every row back."""
        self.successResultOf(self.store.putPublication(publication()))
        self.successResultOf(self.store.putSubscription(subscription()))
        self.successResultOf(self.store.nextCSeq(subscription().key))
        self.successResultOf(self.store.flush())
        again = CachedStore(self.database)
        self.assertEqual(self.successResultOf(again.load()), 2)
        row = self.successResultOf(again.subscription(subscription().key))
        assert row is not None
        self.assertEqual(row.localCSeq, 2)
        self.assertIsNotNone(
            self.successResultOf(again.publication("bob@example.com", "presence", "e1"))
        )
        self.assertEqual(again.pending, 0)

    def test_loadKeepsNewerMemoryRows(self) -> None:
        """Rows made in memory while the database was away win over loaded ones."""
        self.database.subscriptions[subscription().key] = subscription()
        newer = subscription()
        newer.localCSeq = 40
        self.successResultOf(self.store.putSubscription(newer))
        self.successResultOf(self.store.load())
        row = self.successResultOf(self.store.subscription(newer.key))
        assert row is not None
        self.assertEqual(row.localCSeq, 40)

    def test_failedFlushKeepsChanges(self) -> None:
        """A flush while the database is down keeps every change for later.

        And the outage is logged once.
        """
        # Typed for trial's TestCase; a SynchronousTestCase has addCleanup too.
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]
        self.database.down = True
        self.successResultOf(self.store.putPublication(publication()))
        self.assertEqual(self.successResultOf(self.store.flush()), 0)
        self.successResultOf(self.store.putSubscription(subscription()))
        self.assertEqual(self.successResultOf(self.store.flush()), 0)
        self.assertEqual(self.store.pending, 2)
        errors = [
            e
            for e in events
            if e.get("log_namespace", "").startswith("presence.storage.cached")
            and e["log_level"].name == "error"
        ]
        self.assertEqual(len(errors), 1)
        self.database.down = False
        self.assertEqual(self.successResultOf(self.store.flush()), 2)
        self.assertEqual(len(self.database.subscriptions), 1)
        self.assertEqual(len(self.database.publications), 1)

    def test_whenFlushed(self) -> None:
        """It fires once every change is written, not while a flush fails."""
        self.flushLoggedErrors()
        self.successResultOf(self.store.whenFlushed())
        self.successResultOf(self.store.putPublication(publication()))
        flushed = self.store.whenFlushed()
        self.assertNoResult(flushed)
        self.database.down = True
        self.successResultOf(self.store.flush())
        self.assertNoResult(flushed)
        self.database.down = False
        self.successResultOf(self.store.flush())
        self.successResultOf(flushed)
        self.assertEqual(len(self.database.publications), 1)

    def test_whenFlushedWaitsForFlushUnderWay(self) -> None:
        """A flush under way is not done: its rows still count as pending."""
        writing: Deferred[None] = Deferred()
        real = self.database.applyBatch

        async def slow(batch: Batch) -> None:
            await writing
            await real(batch)

        self.database.applyBatch = slow  # type: ignore[method-assign]
        self.successResultOf(self.store.putPublication(publication()))
        flush = Deferred.fromCoroutine(self.store.flush())
        self.assertEqual(self.store.pending, 1)
        flushed = self.store.whenFlushed()
        self.assertNoResult(flushed)
        self.successResultOf(self.store.putPublication(publication("e2")))
        writing.callback(None)
        self.assertEqual(self.successResultOf(flush), 1)
        self.assertNoResult(flushed)
        self.successResultOf(self.store.flush())
        self.successResultOf(flushed)
        self.assertEqual(len(self.database.publications), 2)


class StorageServiceTests(SynchronousTestCase):
    """The service opens, loads, flushes periodically and on stop."""

    def setUp(self) -> None:
        """A clock and a fake database."""
        self.clock = Clock()
        self.database = FakeDatabase()

    def service(self, mode: str = CACHE) -> StorageService:
        """A storage service in ``mode`` over the fake database."""
        store = CachedStore(self.database) if mode == CACHE else self.database
        return StorageService(self.clock, mode, store, self.database, flushPeriod=5)

    def test_cacheLoadsAtStart(self) -> None:
        """At start the cache loads the database and then serves."""
        self.database.subscriptions[subscription().key] = subscription()
        service = self.service()
        self.assertFalse(service.serving)
        service.startService()
        self.assertTrue(service.serving)
        row = self.successResultOf(service.store.subscription(subscription().key))
        self.assertIsNotNone(row)
        self.successResultOf(service.stopService())

    def test_periodicFlush(self) -> None:
        """Changes are written every flush period."""
        service = self.service()
        service.startService()
        self.successResultOf(service.store.putPublication(publication()))
        self.clock.advance(4)
        self.assertEqual(self.database.publications, {})
        self.clock.advance(1)
        self.assertEqual(len(self.database.publications), 1)
        self.successResultOf(service.stopService())

    def test_stopFlushes(self) -> None:
        """A clean stop writes everything and closes the database."""
        service = self.service()
        service.startService()
        self.successResultOf(service.store.putPublication(publication()))
        self.successResultOf(service.stopService())
        self.assertEqual(len(self.database.publications), 1)
        self.assertEqual(self.database.stopped, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushesCountedAndTimed(self) -> None:
        """Each flush with rows to write is counted, with its duration."""
        service = self.service()
        service.startService()
        slow: Deferred[None] = Deferred()
        applyBatch = self.database.applyBatch

        async def slowBatch(batch: Batch) -> None:
            await slow
            await applyBatch(batch)

        self.database.applyBatch = slowBatch  # type: ignore[method-assign]
        self.clock.advance(5)
        self.assertEqual(service.stats.flushes, 0)  # nothing to write
        self.successResultOf(service.store.putPublication(publication()))
        self.successResultOf(service.store.putPublication(publication("e2")))
        self.clock.advance(5)
        self.clock.advance(0.3)
        slow.callback(None)
        stats = service.stats
        self.assertEqual((stats.flushes, stats.rowsFlushed), (1, 2))
        self.assertAlmostEqual(stats.flushSeconds, 0.3)
        self.assertEqual(sum(stats.flushDurations), 1)
        self.database.applyBatch = applyBatch  # type: ignore[method-assign]
        self.database.down = True
        self.successResultOf(service.store.putPublication(publication("e3")))
        self.clock.advance(5)
        self.assertEqual((stats.flushes, stats.flushFailures), (2, 1))
        self.database.down = False
        self.successResultOf(service.stopService())
        self.assertEqual((stats.flushes, stats.rowsFlushed), (3, 3))

    def test_cacheServesWhileDown(self) -> None:
        """A database down at start.

        Cache mode serves from memory, retries and merges what it loads when the
        database is back.
        """
        self.flushLoggedErrors()
        self.database.down = True
        self.database.subscriptions[subscription("old").key] = subscription("old")
        service = self.service()
        service.startService()
        self.assertTrue(service.serving)
        self.assertFalse(service.loaded)
        self.successResultOf(service.store.putPublication(publication()))
        self.database.down = False
        self.clock.advance(5)
        self.assertTrue(service.loaded)
        self.assertIsNotNone(
            self.successResultOf(service.store.subscription(subscription("old").key))
        )
        self.clock.advance(5)
        self.assertEqual(len(self.database.publications), 1)
        self.successResultOf(service.stopService())

    def test_whenLoaded(self) -> None:
        """It fires once the cache is loaded, after retries if need be."""
        self.flushLoggedErrors()
        memory = StorageService(self.clock, MEMORY, None)
        self.assertIsNone(self.successResultOf(memory.whenLoaded()))
        self.database.down = True
        service = self.service()
        loaded = service.whenLoaded()
        service.startService()
        self.assertNoResult(loaded)
        self.database.down = False
        self.clock.advance(5)
        self.successResultOf(loaded)
        self.successResultOf(service.whenLoaded())
        self.successResultOf(service.stopService())

    def test_sharedNotServingWhileDown(self) -> None:
        """Shared mode answers 503 until the database is reachable."""
        self.database.down = True
        service = self.service(SHARED)
        service.startService()
        self.assertFalse(service.serving)
        self.database.down = False
        self.clock.advance(5)
        self.assertTrue(service.serving)
        self.successResultOf(service.stopService())


class ChunkedFlushTests(SynchronousTestCase):
    """A flush writes in chunks, one transaction each."""

    def test_chunks(self) -> None:
        """2,500 changed rows go in three transactions of at most 1,000."""
        database = FakeDatabase()
        store = CachedStore(database)
        for i in range(2500):
            self.successResultOf(store.putPublication(publication(f"e{i}")))
        self.assertEqual(self.successResultOf(store.flush()), 2500)
        self.assertEqual([b.size for b in database.batches], [1000, 1000, 500])
        self.assertEqual(len(database.publications), 2500)

    def test_pendingUntilCommitted(self) -> None:
        """Rows a running flush has taken still count as pending until committed."""
        database = FakeDatabase()
        store = CachedStore(database)
        self.successResultOf(store.putPublication(publication()))
        real = database.applyBatch
        commit: defer.Deferred[None] = defer.Deferred()

        async def slow(batch: Batch) -> None:
            await commit
            await real(batch)

        database.applyBatch = slow  # type: ignore[method-assign]
        flushed = defer.Deferred.fromCoroutine(store.flush())
        self.assertNoResult(flushed)
        self.assertEqual(store.pending, 1)
        self.successResultOf(store.putPublication(publication("e2")))
        self.assertEqual(store.pending, 2)
        commit.callback(None)
        self.assertEqual(self.successResultOf(flushed), 1)
        self.assertEqual(store.pending, 1)
        self.assertEqual(self.successResultOf(store.flush()), 1)
        self.assertEqual(store.pending, 0)

    def test_pendingKeptAfterFailedCommit(self) -> None:
        """A flush failing while under way leaves its rows pending."""
        self.flushLoggedErrors()
        database = FakeDatabase()
        store = CachedStore(database)
        self.successResultOf(store.putPublication(publication()))
        commit: defer.Deferred[None] = defer.Deferred()

        async def failing(batch: Batch) -> None:
            await commit
            raise StorageError("gone")

        database.applyBatch = failing  # type: ignore[method-assign]
        flushed = defer.Deferred.fromCoroutine(store.flush())
        self.assertEqual(store.pending, 1)
        commit.callback(None)
        self.assertEqual(self.successResultOf(flushed), 0)
        self.assertEqual(store.pending, 1)

    def test_failureMidway(self) -> None:
        """A failure after the first chunk keeps the rest for the next flush."""
        self.flushLoggedErrors()
        database = FakeDatabase()
        store = CachedStore(database)
        for i in range(1500):
            self.successResultOf(store.putPublication(publication(f"e{i}")))
        real = database.applyBatch
        calls = []

        async def failSecond(batch: Batch) -> None:
            calls.append(batch)
            if len(calls) == 2:
                raise StorageError("gone")
            await real(batch)

        database.applyBatch = failSecond  # type: ignore[method-assign]
        self.assertEqual(self.successResultOf(store.flush()), 1000)
        self.assertEqual(store.pending, 500)
        self.assertEqual(self.successResultOf(store.flush()), 500)
        self.assertEqual(len(database.publications), 1500)


class SchemaRefusalTests(SynchronousTestCase):
    """An unknown schema version is not retried: the server refuses to start."""

    def test_refused(self) -> None:
        """An unknown schema version stops the server, and nothing is served.

        It is logged once as critical, and the database is not retried.
        """
        from presence.storage.errors import SchemaError

        clock = Clock()
        database = FakeDatabase()

        async def wrongVersion(create: bool) -> None:
            raise SchemaError("the database schema is version 99")

        database.ensureSchema = wrongVersion  # type: ignore[method-assign]
        service = StorageService(clock, CACHE, CachedStore(database), database)
        reasons: list[str] = []
        service.onRefused = reasons.append
        loaded = service.whenLoaded()
        service.startService()
        self.assertEqual(reasons, ["the database schema is version 99"])
        self.assertFalse(service.serving)
        self.failureResultOf(loaded, SchemaError)
        self.failureResultOf(service.whenLoaded(), SchemaError)
        clock.advance(60)
        self.assertEqual(database.started, 1)
        self.successResultOf(service.stopService())


class UncleanStopTests(SynchronousTestCase):
    """After a server died between flushes, NOTIFY CSeqs resume higher."""

    def test_uncleanRaisesCSeq(self) -> None:
        """RFC 3261 12.2.1.1: CSeqs only grow, even across a crash.

        A reload after a run that never stopped cleanly raises every
        subscription's CSeq by the margin; after a clean stop it does not.
        """
        from presence.storage.cached import CSEQ_MARGIN

        clock = Clock()
        database = FakeDatabase()
        first = StorageService(clock, CACHE, CachedStore(database), database)
        first.startService()
        self.successResultOf(first.store.putSubscription(subscription()))
        self.successResultOf(first.store.flush())
        # The first server dies: no stopService, no clean-stop marker.
        crashed = CachedStore(database)
        self.successResultOf(crashed.load())
        row = self.successResultOf(crashed.subscription(subscription().key))
        assert row is not None
        self.assertEqual(row.localCSeq, 1 + CSEQ_MARGIN)
        self.assertEqual(crashed.pending, 1)
        service = StorageService(clock, CACHE, crashed, database)
        service.loaded = True
        self.successResultOf(service.stopService())
        again = CachedStore(database)
        self.successResultOf(again.load())
        row = self.successResultOf(again.subscription(subscription().key))
        assert row is not None
        self.assertEqual(row.localCSeq, 1 + CSEQ_MARGIN)
        first._stopped = True
