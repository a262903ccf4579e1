"""The storage service: opens the database, loads the cache, flushes, closes.

Three modes, chosen by the configuration:

- memory: no database at all;
- cache (the default): a `CachedStore` in front of the database, loaded at
  start, flushed every ``db_update_period`` seconds and on stop;
- shared (``fallback2db``): every read and write goes to the database, so
  several servers can share one PostgreSQL.

twistd does not wait for ``startService``; until the store can serve, the
dispatcher answers 503 (`StorageService.serving`). A database that cannot be
reached at start is retried; cache mode serves from memory meanwhile and
merges what it loads later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from presence._async import detach
from presence.storage.cached import CachedStore
from presence.storage.errors import SchemaError, StorageError
from presence.storage.statistics import StorageStatistics
from presence.storage.waiters import Waiters

MEMORY: Final = "memory"
CACHE: Final = "cache"
SHARED: Final = "shared"

#: Seconds between attempts to reach a database that could not be reached.
RETRY_DELAY: Final = 5.0


class StorageService(Service):
    """Owns the database connection for the life of the server."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        mode: str,
        store: Any,
        database: Any = None,
        flushPeriod: float = 5.0,
        createTables: bool = True,
        description: str = "",
        stats: StorageStatistics | None = None,
    ) -> None:
        """Run the ``mode`` store ``store`` over ``database``.

        Args:
            clock: the reactor's clock.
            mode: `MEMORY`, `CACHE` or `SHARED`.
            store: the store the server uses (a `CachedStore` in cache mode,
                the database's own store in shared mode).
            database: the SQL store (``None`` in memory mode).
            flushPeriod: seconds between flushes in cache mode.
            createTables: create missing tables at start.
            description: the database, for log lines (no password).
            stats: where the flushes are counted and timed (a new
                `StorageStatistics` when not given).
        """
        self.clock = clock
        self.mode = mode
        self.store = store
        self.database = database
        self.flushPeriod = flushPeriod
        self.createTables = createTables
        self.description = description
        self.stats = stats if stats is not None else StorageStatistics()
        self.loaded = mode == MEMORY
        self._loadedWaiters = Waiters()
        self._degraded = False
        self._flushLoop: LoopingCall | None = None
        self._retry: IDelayedCall | None = None
        self._starting: defer.Deferred[None] | None = None
        self._stopped = False
        #: Why the server refused to start (an unknown schema), or None.
        self.refused: str | None = None
        #: Called with the reason when the database cannot be used at all;
        #: ``tap`` stops the reactor.
        self.onRefused: Callable[[str], Any] | None = None
        #: Awaited once the database is open and its schema checked, before
        #: the store serves (shared mode: the cluster member listens first,
        #: so that no signal to it is lost); a `StorageError` is retried.
        self.onOpen: Callable[[], Awaitable[Any]] | None = None

    @property
    def serving(self) -> bool:
        """Whether requests can be served now (else 503)."""
        if self.refused is not None:
            return False
        if self.mode == SHARED:
            return self.loaded and bool(getattr(self.database, "ready", True))
        return self.loaded or self._degraded

    def whenLoaded(self) -> defer.Deferred[None]:
        """A Deferred that fires once the store serves from the database.

        That is when the database is open, its schema checked and (in cache
        mode) every row loaded: at once in memory mode or if that is done
        already; after the retries if the database could not be reached at
        first. It fails with `SchemaError` if the server refuses the
        database.
        """
        if self.loaded:
            return defer.succeed(None)
        if self.refused is not None:
            return defer.fail(SchemaError(self.refused))
        return self._loadedWaiters.wait()

    def startService(self) -> None:
        """Open the database in the background."""
        super().startService()
        self._stopped = False
        if self.mode == MEMORY:
            return
        self._starting = detach(self._open(), self.log, "opening the database")
        if self.mode == CACHE:
            self._flushLoop = LoopingCall(self._flushNow)
            self._flushLoop.clock = self.clock
            self._flushLoop.start(self.flushPeriod, now=False)

    async def _open(self) -> None:
        try:
            await self.database.start()
            await self.database.ensureSchema(self.createTables)
            if self.onOpen is not None:
                await self.onOpen()
            if isinstance(self.store, CachedStore):
                await self.store.load()
        except SchemaError as e:
            self.log.critical(
                "refusing to start: {error} ({database})",
                error=str(e),
                database=self.description,
            )
            await self._closeQuietly()
            self.refused = str(e)
            self._loadedWaiters.fail(e)
            if self.onRefused is not None:
                self.onRefused(str(e))
            return
        except StorageError as e:
            if self._stopped:
                return
            if self.mode == CACHE and not self._degraded:
                self._degraded = True
                self.log.error(
                    "cannot open the database {database} ({error}); serving from"
                    " memory and retrying every {delay} seconds: check that it runs"
                    " and that the database setting is right",
                    database=self.description,
                    error=str(e),
                    delay=RETRY_DELAY,
                )
            elif not self._degraded:
                self._degraded = True
                self.log.error(
                    "cannot open the database {database} ({error}); answering 503"
                    " and retrying every {delay} seconds",
                    database=self.description,
                    error=str(e),
                    delay=RETRY_DELAY,
                )
            await self._closeQuietly()
            self._retry = self.clock.callLater(RETRY_DELAY, self._reopen)
            return
        if self._degraded:
            self.log.info(
                "database {database} reachable again", database=self.description
            )
        self._degraded = False
        self.loaded = True
        self.log.info(
            "database {database} open, {mode} mode",
            database=self.description,
            mode=self.mode,
        )
        self._loadedWaiters.fire()

    def _reopen(self) -> None:
        self._retry = None
        if not self._stopped:
            self._starting = detach(self._open(), self.log, "opening the database")

    async def _closeQuietly(self) -> None:
        try:
            await self.database.stop()
        except Exception:  # closing a broken pool may fail too
            pass

    def _flushNow(self) -> defer.Deferred[Any]:
        return detach(self.flush(), self.log, "flushing to the database")

    async def flush(self) -> int:
        """Flush the cache now (cache mode); how many rows were written."""
        if not isinstance(self.store, CachedStore) or not self.loaded:
            return 0
        if not self.store.pending:
            return await self.store.flush()
        started = self.clock.seconds()
        written = await self.store.flush()
        self.stats.flushed(self.clock.seconds() - started, written, self.store.failing)
        return written

    def stopService(self) -> defer.Deferred[None]:
        """Flush what is left and close the database; twistd waits for it."""
        super().stopService()
        self._stopTimers()
        return defer.Deferred.fromCoroutine(self._close())

    async def abort(self) -> None:
        """Stop at once without flushing, as a crash would; close the database."""
        self.running = False
        self._stopTimers()
        if self.mode != MEMORY:
            await self._closeQuietly()

    def _stopTimers(self) -> None:
        """No more retries to open the database, no more periodic flushes."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._flushLoop is not None and self._flushLoop.running:
            self._flushLoop.stop()
        self._flushLoop = None

    async def _close(self) -> None:
        if self.mode == MEMORY:
            return
        if isinstance(self.store, CachedStore) and self.loaded:
            written = await self.flush()
            if self.store.pending:
                self.log.error(
                    "stopping with {count} changed rows not written: the database"
                    " is unreachable",
                    count=self.store.pending,
                )
            else:
                self.log.info("flushed {count} rows at stop", count=written)
                try:
                    await self.store.stopped()
                except StorageError:
                    pass
        await self._closeQuietly()
