"""Cache mode: every read and write in memory, the database behind it.

Rows changed in memory are written to the database every
``db_update_period`` seconds and on a clean stop, in one transaction per
flush; at start every row is loaded back, so a restart loses nothing and a
kill loses at most one flush period. While the database is unreachable the
server keeps serving from memory, keeps the changes, and writes them when it
is back.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from presence.storage.errors import RowsRejected, StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.memory import MemoryStore
from presence.storage.records import (
    Batch,
    Binding,
    DialogKey,
    EventCounts,
    Page,
    Publication,
    Subscription,
    SubscriptionKey,
    Watcher,
)
from presence.storage.waiters import Waiters

#: The marker that says a server runs on the database (1), or stopped after
#: its last flush (0).
RUNNING: Final = "presence_running"

#: How far NOTIFY CSeqs are raised after a server died between flushes: more
#: than any dialog sends in one flush period.
CSEQ_MARGIN: Final = 1000


@implementer(IPresenceStore)
class CachedStore:
    """A `MemoryStore` whose changes are flushed to a database.

    Attributes:
        memory: the rows, all of them.
        database: the database the changes go to (an ``SQLStore``).
    """

    log = Logger()

    def __init__(self, database: Any) -> None:
        """Cache the rows of ``database``."""
        self.memory = MemoryStore()
        self.database = database
        self.ready = True
        self._dirty = _Dirty()
        self._flushing: defer.Deferred[None] | None = None
        #: Keys taken by the running flush and not yet committed.
        self._unwritten = 0
        self._flushedWaiters = Waiters()
        #: Rows written per transaction.
        self.chunkSize = 1000
        self._failing = False
        self.flushes = 0
        self.rowsWritten = 0
        #: Rows the database refused (left out of a flush, logged).
        self.rowsRefused = 0

    # -- the database side --------------------------------------------------

    async def load(self) -> int:
        """Load every row from the database into memory.

        Returns:
            How many rows were loaded.

        Raises:
            StorageError: the database cannot be read.
        """
        unclean = await self.database.marker(RUNNING) == 1
        publications, subscriptions, watchers, bindings = await self.database.loadAll()
        if unclean and subscriptions:
            # The last server died between flushes: NOTIFYs it sent after its
            # last flush had CSeqs the database never saw, and a phone rejects
            # a NOTIFY whose CSeq is not above the last it got.
            for subscription in subscriptions:
                subscription.localCSeq += CSEQ_MARGIN
            self.log.warn(
                "the last run did not stop cleanly: the NOTIFY CSeq of"
                " {count} subscriptions raised by {margin}",
                count=len(subscriptions),
                margin=CSEQ_MARGIN,
            )
        # Rows already in memory (made while the database was unreachable)
        # are newer than the database's: keep them.
        memory = self.memory
        for publication in publications:
            if (
                await memory.publication(
                    publication.presentity, publication.event, publication.etag
                )
                is None
            ):
                await memory.putPublication(publication)
        for subscription in subscriptions:
            if subscription.key not in memory._subscriptions:
                await memory.putSubscription(subscription)
                if unclean:
                    self._dirty.subscriptions[subscription.key] = None
        for watcher in watchers:
            if memory.watcherRow(watcher) is None:
                await memory.putWatcher(watcher)
        for binding in bindings:
            if binding.contact not in memory._bindings.get(binding.aor, {}):
                await memory.putBinding(binding)
        await self.database.setMarker(RUNNING, 1)
        count = len(publications) + len(subscriptions) + len(watchers) + len(bindings)
        self.log.info(
            "loaded {count} rows from the database: {publications} publications,"
            " {subscriptions} subscriptions, {watchers} watchers, {bindings} bindings",
            count=count,
            publications=len(publications),
            subscriptions=len(subscriptions),
            watchers=len(watchers),
            bindings=len(bindings),
        )
        return count

    async def stopped(self) -> None:
        """Record that everything was flushed at a clean stop."""
        await self.database.setMarker(RUNNING, 0)

    @property
    def failing(self) -> bool:
        """Whether the last flush could not write every row."""
        return self._failing

    @property
    def pending(self) -> int:
        """How many changed rows wait to be written.

        Rows a running flush has taken but not yet committed count: zero means
        the database has every change.
        """
        return self._dirty.size + self._unwritten

    def whenFlushed(self) -> defer.Deferred[None]:
        """A Deferred that fires when every changed row is written.

        At once when no row waits and no flush is under way; otherwise at the
        end of the flush that leaves none waiting (a flush that fails keeps
        its rows: then the next one that writes them all).
        """
        if not self._dirty.size and self._flushing is None:
            return defer.succeed(None)
        return self._flushedWaiters.wait()

    async def flush(self) -> int:
        """Write the changed rows in one transaction.

        A failure keeps the changes for the next flush and is logged once
        until a flush succeeds again.

        The rows go in chunks of `chunkSize`, one transaction each. A flush
        asked for while another runs waits for it, then writes what is left.

        Returns:
            How many rows were written before any failure.
        """
        while self._flushing is not None:
            await self._flushing
        if not self._dirty.size:
            return 0
        self._flushing = defer.Deferred()
        chunks = self._dirty.chunks(self.chunkSize)
        self._dirty = _Dirty()
        self._unwritten = sum(chunk.size for chunk in chunks)
        written = 0
        try:
            for n, chunk in enumerate(chunks):
                # One transaction per chunk: building and sending a period's
                # rows at once would hold the reactor for hundreds of
                # milliseconds (half a second for 15,000 rows on PostgreSQL).
                try:
                    written += await self._write(chunk)
                except StorageError as e:
                    self._keep(chunks[n:], str(e))
                    return written
                self._unwritten -= chunk.size
        finally:
            self._unwritten = 0
            done, self._flushing = self._flushing, None
            done.callback(None)
        if self._failing:
            self._failing = False
            self.log.info("database reachable again; changes written")
        self.flushes += 1
        self.rowsWritten += written
        if not self._dirty.size and self._flushing is None:
            self._flushedWaiters.fire()
        return written

    async def _write(self, chunk: _Dirty) -> int:
        """Write one chunk in one transaction; leave out the rows refused.

        When the database refuses the data of the transaction
        (`RowsRejected`: a value it cannot store), the chunk is split in two
        and each half written on its own, down to the single rows that are
        refused. Those are logged and left out: they stay in memory, and are
        written again if they change, but one bad row never costs the others
        theirs.

        Returns:
            How many rows were written.

        Raises:
            StorageError: the database failed for another reason (it is out
                of reach); nothing of the chunk is known to be written.
        """
        batch = chunk.batch(self.memory)
        try:
            await self.database.applyBatch(batch)
        except RowsRejected as e:
            if chunk.size > 1:
                written = 0
                for half in chunk.chunks((chunk.size + 1) // 2):
                    written += await self._write(half)
                return written
            self.rowsRefused += 1
            self.log.error(
                "the database refused a row, which is kept in memory but not"
                " written: {row} ({error})",
                row=chunk.describe(),
                error=str(e),
            )
            return 0
        return batch.size

    def _keep(self, chunks: list[_Dirty], error: str) -> None:
        """Keep the keys of ``chunks`` for the next flush; log the outage once."""
        kept = _Dirty()
        for chunk in chunks:
            kept.merge(chunk)
        kept.merge(self._dirty)
        self._dirty = kept
        if not self._failing:
            self._failing = True
            self.log.error(
                "cannot write to the database ({error}); serving from memory"
                " and keeping {count} changed rows until it is back: check"
                " that the database server runs and is reachable",
                error=error,
                count=kept.size,
            )

    # -- publications -------------------------------------------------------------

    async def publications(self, presentity: str, event: str) -> list[Publication]:
        """See `IPresenceStore.publications`."""
        return await self.memory.publications(presentity, event)

    async def publication(
        self, presentity: str, event: str, etag: str
    ) -> Publication | None:
        """See `IPresenceStore.publication`."""
        return await self.memory.publication(presentity, event, etag)

    async def putPublication(
        self, publication: Publication, replacing: str | None = None
    ) -> None:
        """See `IPresenceStore.putPublication`."""
        await self.memory.putPublication(publication, replacing)
        if replacing is not None and replacing != publication.etag:
            self._dirty.publications[
                (publication.presentity, publication.event, replacing)
            ] = None
        self._dirty.publications[
            (publication.presentity, publication.event, publication.etag)
        ] = None

    async def removePublication(
        self, presentity: str, event: str, etag: str
    ) -> Publication | None:
        """See `IPresenceStore.removePublication`."""
        self._dirty.publications[(presentity, event, etag)] = None
        return await self.memory.removePublication(presentity, event, etag)

    async def expiredPublications(self, now: float) -> list[Publication]:
        """See `IPresenceStore.expiredPublications`."""
        rows = await self.memory.expiredPublications(now)
        for row in rows:
            self._dirty.publications[(row.presentity, row.event, row.etag)] = None
        return rows

    # -- subscriptions ----------------------------------------------------------------

    async def subscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.subscription`."""
        return await self.memory.subscription(key)

    async def dialogSubscriptions(self, dialog: DialogKey) -> list[Subscription]:
        """See `IPresenceStore.dialogSubscriptions`."""
        return await self.memory.dialogSubscriptions(dialog)

    async def subscriptions(self, presentity: str, event: str) -> list[Subscription]:
        """See `IPresenceStore.subscriptions`."""
        return await self.memory.subscriptions(presentity, event)

    async def putSubscription(self, subscription: Subscription) -> None:
        """See `IPresenceStore.putSubscription`."""
        await self.memory.putSubscription(subscription)
        self._dirty.subscriptions[subscription.key] = None

    async def removeSubscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.removeSubscription`."""
        self._dirty.subscriptions[key] = None
        return await self.memory.removeSubscription(key)

    async def expiredSubscriptions(self, now: float) -> list[Subscription]:
        """See `IPresenceStore.expiredSubscriptions`."""
        rows = await self.memory.expiredSubscriptions(now)
        for row in rows:
            self._dirty.subscriptions[row.key] = None
        return rows

    async def nextCSeq(self, key: SubscriptionKey) -> int | None:
        """See `IPresenceStore.nextCSeq`; every sibling in the dialog is saved."""
        cseq = await self.memory.nextCSeq(key)
        if cseq is not None:
            row = self.memory._subscriptions[key]
            for sibling in self.memory.dialogRows(row.dialogKey):
                self._dirty.subscriptions[sibling.key] = None
        return cseq

    async def claimNotify(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.claimNotify`; every sibling in the dialog is saved."""
        if await self.nextCSeq(key) is None:
            return None
        return self.memory._subscriptions[key].copy()

    # -- watchers -------------------------------------------------------------------

    async def watchers(self, presentity: str, event: str) -> list[Watcher]:
        """See `IPresenceStore.watchers`."""
        return await self.memory.watchers(presentity, event)

    async def putWatcher(self, watcher: Watcher) -> None:
        """See `IPresenceStore.putWatcher`."""
        await self.memory.putWatcher(watcher)
        self._dirty.watchers[watcher.key] = dataclasses.replace(watcher)

    async def removeWatcher(self, watcher: Watcher) -> None:
        """See `IPresenceStore.removeWatcher`."""
        await self.memory.removeWatcher(watcher)
        self._dirty.watchers[watcher.key] = None

    # -- bindings -------------------------------------------------------------------

    async def bindings(self, aor: str) -> list[Binding]:
        """See `IPresenceStore.bindings`."""
        return await self.memory.bindings(aor)

    async def putBinding(self, binding: Binding) -> None:
        """See `IPresenceStore.putBinding`."""
        await self.memory.putBinding(binding)
        self._dirty.bindings[(binding.aor, binding.contact)] = None

    async def removeBinding(self, aor: str, contact: str) -> None:
        """See `IPresenceStore.removeBinding`."""
        await self.memory.removeBinding(aor, contact)
        self._dirty.bindings[(aor, contact)] = None

    async def expiredBindings(self, now: float) -> list[Binding]:
        """See `IPresenceStore.expiredBindings`."""
        rows = await self.memory.expiredBindings(now)
        for row in rows:
            self._dirty.bindings[(row.aor, row.contact)] = None
        return rows

    # -- listings, from memory -----------------------------------------------------

    async def listPublications(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Publication]:
        """See `IPresenceStore.listPublications`."""
        return await self.memory.listPublications(presentity, event, after, limit)

    async def listSubscriptions(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Subscription]:
        """See `IPresenceStore.listSubscriptions`."""
        return await self.memory.listSubscriptions(presentity, event, after, limit)

    async def listWatchers(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Watcher]:
        """See `IPresenceStore.listWatchers`."""
        return await self.memory.listWatchers(presentity, event, after, limit)

    async def eventCounts(self) -> EventCounts:
        """See `IPresenceStore.eventCounts`."""
        return await self.memory.eventCounts()

    def counts(self) -> dict[str, int]:
        """How many rows of each kind are kept."""
        return self.memory.counts()


class _Dirty:
    """The keys changed since the last flush (dicts used as ordered sets).

    Rows are read from memory when the batch is made, so a key changed ten
    times is written once, as it is then; a key no longer in memory is
    deleted. Watchers carry their row (``None``: delete), since the memory
    store keeps no index to look them up by key alone.
    """

    def __init__(self) -> None:
        self.publications: dict[tuple[str, str, str], None] = {}
        self.subscriptions: dict[SubscriptionKey, None] = {}
        self.watchers: dict[tuple[str, str, str, str], Watcher | None] = {}
        self.bindings: dict[tuple[str, str], None] = {}

    @property
    def size(self) -> int:
        return (
            len(self.publications)
            + len(self.subscriptions)
            + len(self.watchers)
            + len(self.bindings)
        )

    def chunks(self, size: int) -> list[_Dirty]:
        """Split into parts of at most ``size`` keys, in order."""
        out: list[_Dirty] = []
        current = _Dirty()
        for table in ("publications", "subscriptions", "watchers", "bindings"):
            for key, value in getattr(self, table).items():
                if current.size >= size:
                    out.append(current)
                    current = _Dirty()
                getattr(current, table)[key] = value
        if current.size:
            out.append(current)
        return out

    def describe(self) -> str:
        """The keys, for a log line: table and key of each."""
        parts: list[str] = []
        for table in ("publications", "subscriptions", "watchers", "bindings"):
            parts.extend(f"{table} {key!r}" for key in getattr(self, table))
        return ", ".join(parts)

    def merge(self, newer: _Dirty) -> None:
        """Add the keys of ``newer``; its watcher rows win."""
        self.publications.update(newer.publications)
        self.subscriptions.update(newer.subscriptions)
        self.watchers.update(newer.watchers)
        self.bindings.update(newer.bindings)

    def batch(self, memory: MemoryStore) -> Batch:
        """The batch that makes the database match memory for these keys."""
        batch = Batch()
        for pkey in self.publications:
            presentity, event, etag = pkey
            publication = memory._publications.get((presentity, event), {}).get(etag)
            if publication is None:
                batch.publicationDeletes.append(pkey)
            else:
                batch.publications.append(publication.copy())
        for skey in self.subscriptions:
            subscription = memory._subscriptions.get(skey)
            if subscription is None:
                batch.subscriptionDeletes.append(skey)
            else:
                batch.subscriptions.append(subscription.copy())
        for wkey, watcher in self.watchers.items():
            if watcher is None:
                batch.watcherDeletes.append(wkey)
            else:
                batch.watchers.append(watcher)
        for bkey in self.bindings:
            aor, contact = bkey
            binding = memory._bindings.get(aor, {}).get(contact)
            if binding is None:
                batch.bindingDeletes.append(bkey)
            else:
                batch.bindings.append(dataclasses.replace(binding))
        return batch
