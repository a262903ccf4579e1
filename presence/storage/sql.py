"""The SQL store: `IPresenceStore` over SQLite or PostgreSQL.

`SQLStore` implements `IPresenceStore` over an `SQLRunner`, which runs
statements on a connection pool. The SQLite and PostgreSQL backends provide
only the pool and the runner's parameters (and their start and stop). The store runs
the statements of `presence.storage.statements` on the rows of
`presence.storage.rows`. The names imported ``as`` themselves are re-exported:
other modules imported them from here before those two modules were split off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from presence.storage.errors import RowsRejected, SchemaError, StorageError
from presence.storage.interfaces import IPresenceStore
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
    checkPage,
)
from presence.storage.rows import Row as Row
from presence.storage.rows import (
    addressValues,
    bindingFromRow,
    bindingKeyValues,
    bindingRow,
    dialogValues,
    publicationFromRow,
    publicationKeyValues,
    publicationRow,
    subscriptionFromRow,
    subscriptionKeyValues,
    subscriptionRow,
    watcherFromRow,
    watcherKeyValues,
    watcherRow,
)
from presence.storage.rows import methodBits as methodBits
from presence.storage.runner import SQLRunner as SQLRunner
from presence.storage.statements import ACTIVE_WATCHERS as ACTIVE_WATCHERS
from presence.storage.statements import (
    CLAIM_NOTIFY,
    CLAIM_OWNED,
    COUNT_BY_EVENT,
    DELETE_BINDING,
    DELETE_PUBLICATION,
    DELETE_REPLACED_PUBLICATION,
    DELETE_SUBSCRIPTION,
    DELETE_WATCHER,
    EXPIRE_BINDINGS,
    EXPIRE_OWNED_SUBSCRIPTIONS,
    EXPIRE_PUBLICATIONS,
    EXPIRE_SUBSCRIPTIONS,
    NEXT_CSEQ,
    SELECT_ALL_BINDINGS,
    SELECT_ALL_PUBLICATIONS,
    SELECT_ALL_SUBSCRIPTIONS,
    SELECT_ALL_WATCHERS,
    SELECT_BINDINGS,
    SELECT_DIALOG,
    SELECT_MARKER,
    SELECT_OWNED_SUBSCRIPTIONS,
    SELECT_PUBLICATION,
    SELECT_PUBLICATIONS,
    SELECT_SCHEMA_VERSION,
    SELECT_SUBSCRIPTION,
    SELECT_SUBSCRIPTIONS,
    SELECT_WATCHERS,
    TAKE_OVER,
    UPDATE_VERSION,
    UPGRADABLE_VERSIONS,
    UPSERT_BINDING,
    UPSERT_MARKER,
    UPSERT_PUBLICATION,
    UPSERT_SUBSCRIPTION,
    UPSERT_SUBSCRIPTION_SHARED,
    UPSERT_WATCHER,
    Table,
    batchDeletes,
    batchUpserts,
    pageQuery,
)
from presence.storage.statements import LOCATION as LOCATION
from presence.storage.statements import PRESENTITY as PRESENTITY
from presence.storage.statements import SCHEMA_NAME as SCHEMA_NAME
from presence.storage.statements import SCHEMA_VERSION as SCHEMA_VERSION
from presence.storage.statements import TABLES as TABLES
from presence.storage.statements import WATCHERS as WATCHERS
from presence.storage.statements import Values as Values
from presence.storage.statements import compileStatement as compileStatement
from presence.storage.statements import loadSchema as loadSchema
from presence.storage.statements import mergeStatements as mergeStatements
from presence.storage.statements import splitScript as splitScript
from presence.storage.statistics import StorageStatistics
from presence.storage.waiters import Waiters

T = TypeVar("T")
R = TypeVar("R")


def checkSchemaVersion(found: int | None) -> None:
    """Check that a database holds the schema this server knows.

    Args:
        found: the ``table_version`` of `SCHEMA_NAME`, or ``None`` if there is
            no such row.

    Raises:
        SchemaError: the version is missing or is not `SCHEMA_VERSION`.
    """
    if found is None:
        raise SchemaError(
            f"the database has no {SCHEMA_NAME!r} row in its version table: "
            "create the schema (create_tables = true, or presence-ctl db init)"
        )
    if found in UPGRADABLE_VERSIONS:
        raise SchemaError(
            f"the database schema is version {found}, older than this server's"
            f" {SCHEMA_VERSION}: upgrade it (presence-ctl db upgrade, or"
            " create_tables = true)"
        )
    if found != SCHEMA_VERSION:
        raise SchemaError(
            f"the database schema is version {found}, this server knows only "
            f"version {SCHEMA_VERSION}: upgrade the server or migrate the database"
        )


class Snapshot(NamedTuple):
    """Every row of the store."""

    publications: list[Publication]
    subscriptions: list[Subscription]
    watchers: list[Watcher]
    bindings: list[Binding]


# -- the store ---------------------------------------------------------------


@implementer(IPresenceStore)
class SQLStore:
    """`IPresenceStore` over an SQL database.

    Each method is one statement, so one round trip to the database, except
    ``putPublication`` with ``replacing`` (a delete and an insert) and
    ``nextCSeq`` (two updates), each in one transaction, and the bulk
    `applyBatch` (one transaction) and `loadAll` (four queries).

    Attributes:
        runner: the runner of the statements; ``None`` while the store is
            stopped.
        stats: the counters of the database (its errors).
    """

    log = Logger()

    def __init__(
        self, dialect: str, tablesQuery: str, stats: StorageStatistics | None = None
    ) -> None:
        """Make a store that is not started yet.

        Args:
            dialect: the name of the schema file, ``sqlite`` or ``postgres``.
            tablesQuery: a statement listing the names of the tables there are.
            stats: where failed statements are counted (a new
                `StorageStatistics` when not given).
        """
        self.stats = stats if stats is not None else StorageStatistics()
        self.dialect = dialect
        self._tablesQuery = tablesQuery
        self.runner: SQLRunner | None = None
        #: The server id of this server in shared mode (the ``sharing_tag``
        #: it writes), or ``None``: then every row is this server's.
        self.owner: str | None = None
        self._ready = False
        self._readyWaiters = Waiters()

    @property
    def ready(self) -> bool:
        """Whether the last call reached the database."""
        return self._ready

    @ready.setter
    def ready(self, ready: bool) -> None:
        self._ready = ready
        if ready:
            self._readyWaiters.fire()

    def whenReady(self) -> Deferred[None]:
        """A Deferred that fires when the store is `ready`: at once if it is.

        After an outage, that is when a call (the probe's, or another)
        reached the database again.
        """
        if self.ready:
            return succeed(None)
        return self._readyWaiters.wait()

    # -- running statements ---------------------------------------------------

    def _started(self) -> SQLRunner:
        if self.runner is None:
            raise StorageError("the store is not started")
        return self.runner

    async def _guard(self, runner: SQLRunner, d: Deferred[T]) -> T:
        """Await ``d``, turning database errors into `StorageError`."""
        try:
            result = await d
        except runner.errors as e:
            self.stats.errors += 1
            if runner.isDisconnection(e):
                self._disconnected(e)
            elif runner.isRejection(e):
                raise RowsRejected(f"{self.dialect}: {type(e).__name__}: {e}") from e
            raise StorageError(f"{self.dialect}: {type(e).__name__}: {e}") from e
        if not self.ready and self.runner is not None:
            self.log.info("{dialect} store ready", dialect=self.dialect)
            self.ready = True
        return result

    def _disconnected(self, error: BaseException) -> None:
        """Called when a call failed because the database is out of reach."""
        if self.ready:
            self.log.error(
                "{dialect} database unreachable: {error}",
                dialect=self.dialect,
                error=error,
            )
        self.ready = False

    async def _query(self, sql: str, values: Values) -> list[Row]:
        runner = self._started()
        return await self._guard(runner, runner.runQuery(sql, values))

    async def _execute(self, sql: str, values: Values) -> None:
        runner = self._started()
        await self._guard(runner, runner.runOperation(sql, values))

    async def _transaction(
        self, statements: Sequence[tuple[str, Values]], fetch: bool = False
    ) -> list[Row]:
        if not statements:
            return []
        runner = self._started()
        return await self._guard(runner, runner.runInteraction(statements, fetch))

    # -- schema ---------------------------------------------------------------

    async def schemaVersion(self) -> int | None:
        """The schema version the database holds, ``None`` if there is none."""
        tables = {row[0] for row in await self._query(self._tablesQuery, {})}
        if "version" not in tables:
            return None
        rows = await self._query(SELECT_SCHEMA_VERSION, {"table_name": SCHEMA_NAME})
        return int(rows[0][0]) if rows else None

    async def marker(self, name: str) -> int | None:
        """A named integer kept in the ``version`` table, or ``None``."""
        rows = await self._query(SELECT_MARKER, {"name": name})
        return int(rows[0][0]) if rows else None

    async def setMarker(self, name: str, value: int) -> None:
        """Keep a named integer in the ``version`` table."""
        await self._execute(UPSERT_MARKER, {"name": name, "value": value})

    async def ensureSchema(
        self, create: bool, upgrade: bool | None = None
    ) -> int | None:
        """Check the database's schema, creating what is missing if allowed.

        Args:
            create: whether to create missing tables (and the version row).
            upgrade: whether to upgrade a schema of an older version this
                server knows (`UPGRADABLE_VERSIONS
                <presence.storage.statements.UPGRADABLE_VERSIONS>`): the
                schema file creates what it lacks, then the version row is
                raised. By default, as ``create``.

        Returns:
            The version the database held before, ``None`` if it had none.

        Raises:
            StorageError: the schema is of an unknown version, or is missing
                or older and may not be created or upgraded.
        """
        tables = {row[0] for row in await self._query(self._tablesQuery, {})}
        version = None
        if "version" in tables:
            rows = await self._query(SELECT_SCHEMA_VERSION, {"table_name": SCHEMA_NAME})
            version = int(rows[0][0]) if rows else None
        if version in UPGRADABLE_VERSIONS and (create if upgrade is None else upgrade):
            await self._upgrade(version)
            return version
        if version is not None:
            checkSchemaVersion(version)
        missing = [t for t in TABLES if t not in tables]
        if version is not None and not missing:
            return version
        if not create:
            if version is None:
                checkSchemaVersion(version)
            raise StorageError(
                f"the database lacks the tables {', '.join(missing)}: create them "
                f"(storage create option, or presence/storage/schema/{self.dialect}"
                ".sql)"
            )
        script = splitScript(loadSchema(self.dialect))
        await self._transaction([(statement, {}) for statement in script])
        self.log.info(
            "{dialect} schema created: {tables}",
            dialect=self.dialect,
            tables=", ".join(missing),
        )
        checkSchemaVersion(await self.schemaVersion())
        return version

    async def _upgrade(self, version: int | None) -> None:
        """Bring an older schema to `SCHEMA_VERSION`, in one transaction."""
        script = splitScript(loadSchema(self.dialect))
        await self._transaction(
            [
                *((statement, {}) for statement in script),
                (
                    UPSERT_MARKER,
                    {"name": SCHEMA_NAME, "value": SCHEMA_VERSION},
                ),
            ]
        )
        self.log.info(
            "{dialect} schema upgraded from version {old} to {new}",
            dialect=self.dialect,
            old=version,
            new=SCHEMA_VERSION,
        )
        checkSchemaVersion(await self.schemaVersion())

    # -- publications ---------------------------------------------------------

    async def publications(self, presentity: str, event: str) -> list[Publication]:
        """See `IPresenceStore.publications`."""
        rows = await self._query(
            SELECT_PUBLICATIONS, {**addressValues(presentity), "event": event}
        )
        return [publicationFromRow(row) for row in rows]

    async def publication(
        self, presentity: str, event: str, etag: str
    ) -> Publication | None:
        """See `IPresenceStore.publication`."""
        rows = await self._query(
            SELECT_PUBLICATION, publicationKeyValues(presentity, event, etag)
        )
        return publicationFromRow(rows[0]) if rows else None

    async def putPublication(
        self, publication: Publication, replacing: str | None = None
    ) -> None:
        """See `IPresenceStore.putPublication`."""
        row = publicationRow(publication)
        if replacing is None or replacing == publication.etag:
            await self._execute(UPSERT_PUBLICATION, row)
            return
        old = publicationKeyValues(publication.presentity, publication.event, replacing)
        await self._transaction(
            [(DELETE_REPLACED_PUBLICATION, old), (UPSERT_PUBLICATION, row)]
        )

    async def removePublication(
        self, presentity: str, event: str, etag: str
    ) -> Publication | None:
        """See `IPresenceStore.removePublication`."""
        rows = await self._query(
            DELETE_PUBLICATION, publicationKeyValues(presentity, event, etag)
        )
        return publicationFromRow(rows[0]) if rows else None

    async def expiredPublications(self, now: float) -> list[Publication]:
        """See `IPresenceStore.expiredPublications`.

        One ``DELETE ... RETURNING``: with several servers on one database, each
        expired row goes to exactly one of them.
        """
        rows = await self._query(EXPIRE_PUBLICATIONS, {"now": now})
        return sorted(
            (publicationFromRow(row) for row in rows), key=lambda p: p.expires
        )

    # -- subscriptions --------------------------------------------------------

    async def subscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.subscription`."""
        rows = await self._query(SELECT_SUBSCRIPTION, subscriptionKeyValues(key))
        return subscriptionFromRow(rows[0]) if rows else None

    async def dialogSubscriptions(self, dialog: DialogKey) -> list[Subscription]:
        """See `IPresenceStore.dialogSubscriptions`."""
        rows = await self._query(SELECT_DIALOG, dialogValues(*dialog))
        return [subscriptionFromRow(row) for row in rows]

    async def subscriptions(self, presentity: str, event: str) -> list[Subscription]:
        """See `IPresenceStore.subscriptions`."""
        rows = await self._query(
            SELECT_SUBSCRIPTIONS, {"presentity_uri": presentity, "event": event}
        )
        return [subscriptionFromRow(row) for row in rows]

    async def putSubscription(self, subscription: Subscription) -> None:
        """See `IPresenceStore.putSubscription`.

        In shared mode (an `owner`), the CSeq and the body version are never
        lowered: the row put may have been read before the owner's last
        NOTIFY.
        """
        statement = (
            UPSERT_SUBSCRIPTION if self.owner is None else UPSERT_SUBSCRIPTION_SHARED
        )
        await self._execute(statement, subscriptionRow(subscription))

    async def putVersion(self, key: SubscriptionKey, version: int) -> None:
        """Raise one subscription's body version, touching nothing else.

        What the notifier writes after a body that counts versions (winfo,
        dialog), so that it never overwrites a refresh made meanwhile.
        """
        await self._execute(
            UPDATE_VERSION, {**subscriptionKeyValues(key), "version": version}
        )

    async def ownedSubscriptions(self) -> list[Subscription]:
        """Every subscription whose ``sharing_tag`` is `owner` (shared mode)."""
        rows = await self._query(SELECT_OWNED_SUBSCRIPTIONS, {"owner": self.owner})
        return [subscriptionFromRow(row) for row in rows]

    async def takeOver(self, cutoff: float, now: float) -> list[Subscription]:
        """Make `owner` the owner of every subscription of a silent member.

        One ``UPDATE ... RETURNING`` (`TAKE_OVER
        <presence.storage.statements.TAKE_OVER>`): with several survivors
        running it at once, each subscription goes to exactly one of them.

        Args:
            cutoff: a member whose heartbeat is older than this is dead.
            now: the time a ``sharing_tag`` with no ``cluster`` row (a
                server that never beat) is first seen: it is dead from
                ``node_timeout`` later.

        Returns:
            The subscriptions taken over, as they are now.
        """
        assert self.owner is not None
        rows = await self._query(
            TAKE_OVER, {"owner": self.owner, "cutoff": cutoff, "now": now}
        )
        return [subscriptionFromRow(row) for row in rows]

    async def removeSubscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.removeSubscription`."""
        rows = await self._query(DELETE_SUBSCRIPTION, subscriptionKeyValues(key))
        return subscriptionFromRow(rows[0]) if rows else None

    async def expiredSubscriptions(self, now: float) -> list[Subscription]:
        """See `IPresenceStore.expiredSubscriptions`.

        One ``DELETE ... RETURNING``, as for publications.
        """
        if self.owner is None:
            rows = await self._query(EXPIRE_SUBSCRIPTIONS, {"now": now})
        else:
            # Shared mode: the owner's rows only, so that each expiry's final
            # NOTIFY comes from the server that sends the others.
            rows = await self._query(
                EXPIRE_OWNED_SUBSCRIPTIONS, {"now": now, "owner": self.owner}
            )
        return sorted(
            (subscriptionFromRow(row) for row in rows), key=lambda s: s.expires
        )

    async def nextCSeq(self, key: SubscriptionKey) -> int | None:
        """See `IPresenceStore.nextCSeq`.

        Two updates of every row of the dialog, in one transaction.
        """
        values = subscriptionKeyValues(key)
        rows = await self._transaction(
            [(statement, values) for statement in NEXT_CSEQ], fetch=True
        )
        if not rows:
            return None
        return max(int(row[0]) for row in rows)

    async def claimNotify(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.claimNotify`.

        The two updates of `nextCSeq`, the second returning the dialog's
        rows: one transaction, one round trip on PostgreSQL.
        """
        values: dict[str, object] = subscriptionKeyValues(key)
        if self.owner is not None:
            # Shared mode: one statement, nothing unless the subscription is
            # this server's.
            rows = await self._query(CLAIM_OWNED, {**values, "owner": self.owner})
            return subscriptionFromRow(rows[0]) if rows else None
        rows = await self._transaction(
            [(statement, values) for statement in CLAIM_NOTIFY], fetch=True
        )
        for row in rows:
            subscription = subscriptionFromRow(row)
            if subscription.key == key:
                return subscription
        return None

    # -- watchers -------------------------------------------------------------

    async def watchers(self, presentity: str, event: str) -> list[Watcher]:
        """See `IPresenceStore.watchers`."""
        rows = await self._query(
            SELECT_WATCHERS, {"presentity_uri": presentity, "event": event}
        )
        return [watcherFromRow(row) for row in rows]

    async def putWatcher(self, watcher: Watcher) -> None:
        """See `IPresenceStore.putWatcher`."""
        await self._execute(UPSERT_WATCHER, watcherRow(watcher))

    async def removeWatcher(self, watcher: Watcher) -> None:
        """See `IPresenceStore.removeWatcher`."""
        await self._execute(DELETE_WATCHER, watcherKeyValues(watcher.key))

    # -- bindings -------------------------------------------------------------

    async def bindings(self, aor: str) -> list[Binding]:
        """See `IPresenceStore.bindings`."""
        rows = await self._query(SELECT_BINDINGS, addressValues(aor))
        return [bindingFromRow(row) for row in rows]

    async def putBinding(self, binding: Binding) -> None:
        """See `IPresenceStore.putBinding`."""
        await self._execute(UPSERT_BINDING, bindingRow(binding))

    async def removeBinding(self, aor: str, contact: str) -> None:
        """See `IPresenceStore.removeBinding`."""
        await self._execute(DELETE_BINDING, bindingKeyValues(aor, contact))

    async def expiredBindings(self, now: float) -> list[Binding]:
        """See `IPresenceStore.expiredBindings`."""
        rows = await self._query(EXPIRE_BINDINGS, {"now": now})
        return sorted((bindingFromRow(row) for row in rows), key=lambda b: b.expires)

    # -- listings -------------------------------------------------------------

    async def _page(
        self,
        table: Table,
        filters: dict[str, object],
        after: tuple[str, ...] | None,
        limit: int,
        fromRow: Callable[[Row], R],
    ) -> Page[R]:
        """One page of a listing: one statement, ``limit + 1`` rows at most.

        The row past the page is read only to know whether there is one.
        """
        checkPage(after, len(table.key), limit)
        values: dict[str, object] = {**filters, "limit": limit + 1}
        if after is not None:
            values.update(
                (f"after_{c}", part) for c, part in zip(table.key, after, strict=True)
            )
        query = pageQuery(table, tuple(filters), after is not None)
        rows = await self._query(query, values)
        page = rows[:limit]
        more = len(rows) > limit
        return Page(
            [fromRow(row) for row in page],
            tuple(str(c) for c in table.keyOf(page[-1])) if more else None,
        )

    async def listPublications(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Publication]:
        """See `IPresenceStore.listPublications`."""
        filters: dict[str, object] = {}
        if presentity is not None:
            filters.update(addressValues(presentity))
        if event is not None:
            filters["event"] = event
        return await self._page(PRESENTITY, filters, after, limit, publicationFromRow)

    async def listSubscriptions(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Subscription]:
        """See `IPresenceStore.listSubscriptions`."""
        filters: dict[str, object] = {}
        if presentity is not None:
            filters["presentity_uri"] = presentity
        if event is not None:
            filters["event"] = event
        return await self._page(
            ACTIVE_WATCHERS, filters, after, limit, subscriptionFromRow
        )

    async def listWatchers(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Watcher]:
        """See `IPresenceStore.listWatchers`."""
        filters: dict[str, object] = {}
        if presentity is not None:
            filters["presentity_uri"] = presentity
        if event is not None:
            filters["event"] = event
        return await self._page(WATCHERS, filters, after, limit, watcherFromRow)

    async def eventCounts(self) -> EventCounts:
        """See `IPresenceStore.eventCounts`: one ``GROUP BY`` per table."""
        counts = EventCounts()
        tables = {
            "presentity": counts.publications,
            "active_watchers": counts.subscriptions,
            "watchers": counts.watchers,
        }
        for table, event, count in await self._query(COUNT_BY_EVENT, {}):
            tables[table][event] = int(count)
        return counts

    # -- bulk, for the cache --------------------------------------------------

    async def loadAll(self) -> Snapshot:
        """Every row, for the cache to load at start.

        Four queries, not in one transaction: the cache loads before it serves.
        """
        publications = await self._query(SELECT_ALL_PUBLICATIONS, {})
        subscriptions = await self._query(SELECT_ALL_SUBSCRIPTIONS, {})
        watchers = await self._query(SELECT_ALL_WATCHERS, {})
        bindings = await self._query(SELECT_ALL_BINDINGS, {})
        return Snapshot(
            [publicationFromRow(row) for row in publications],
            [subscriptionFromRow(row) for row in subscriptions],
            [watcherFromRow(row) for row in watchers],
            [bindingFromRow(row) for row in bindings],
        )

    async def applyBatch(self, batch: Batch) -> None:
        """Write and delete rows in one transaction, for the cache's flush.

        Puts are upserts by each table's unique key; deletes go first (a key
        should be in only one of a table's two lists; if it is put twice, the
        last wins). Rows are written ``BATCH_ROWS`` to a statement.

        Args:
            batch: what to write and delete.
        """
        statements = [
            *batchDeletes(
                PRESENTITY,
                (publicationKeyValues(*key) for key in batch.publicationDeletes),
            ),
            *batchDeletes(
                ACTIVE_WATCHERS,
                (subscriptionKeyValues(key) for key in batch.subscriptionDeletes),
            ),
            *batchDeletes(
                WATCHERS, (watcherKeyValues(k) for k in batch.watcherDeletes)
            ),
            *batchDeletes(
                LOCATION, (bindingKeyValues(*key) for key in batch.bindingDeletes)
            ),
            *batchUpserts(PRESENTITY, map(publicationRow, batch.publications)),
            *batchUpserts(ACTIVE_WATCHERS, map(subscriptionRow, batch.subscriptions)),
            *batchUpserts(WATCHERS, map(watcherRow, batch.watchers)),
            *batchUpserts(LOCATION, map(bindingRow, batch.bindings)),
        ]
        await self._transaction(statements)
