"""The store in PostgreSQL, through txpostgres (no threads).

Several servers may share one database: every method is one statement (see
`presence.storage.sql`), so each is atomic, and the expiry sweeps use
``DELETE ... RETURNING`` so that an expired row goes to one server only.

A connection that breaks (the server restarts, the network drops) fails the
call that uses it with `StorageError` and turns `PostgresStore.ready`
False. The pool replaces a broken connection on its next use, and the store
probes the server with a growing delay until a call succeeds again, so it
recovers by itself. A transaction of several statements is sent as one
multi-statement query, which PostgreSQL runs as one transaction: one round
trip.

libpq resolves a host name synchronously, inside the connection attempt,
which would block the reactor: a ``host`` that is a name is resolved first
with the reactor's resolver (``reactor.resolve``, in a thread), at each
connection attempt, and the address given to libpq as ``hostaddr`` (``host``
stays, for TLS and ``.pgpass``). A DSN that sets ``hostaddr`` itself, names
several hosts, or a Unix socket directory is passed as written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, Final

import psycopg2
import psycopg2.extensions
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.main import CONNECTION_LOST
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import txpostgres

from presence._async import detach
from presence.storage.errors import StorageError
from presence.storage.records import Publication, Subscription, SubscriptionKey, Watcher
from presence.storage.rows import (
    Row,
    addressValues,
    publicationFromRow,
    subscriptionFromRow,
    subscriptionKeyValues,
    subscriptionRow,
    watcherRow,
)
from presence.storage.runner import SQLRunner
from presence.storage.sql import SQLStore
from presence.storage.statements import (
    ACTIVE_WATCHERS,
    CLAIM_OWNED_MANY,
    CLAIM_ROWS,
    CLAIM_WITH_PUBLICATIONS,
    PUT_WITH_PUBLICATIONS,
    REMOVE_WITH_PUBLICATIONS,
    SIGNAL,
    TRACK_ENDED_WATCHER,
    TRACK_WATCHER,
    compileStatement,
)
from presence.storage.statistics import StorageStatistics
from presence.storage.waiters import Waiters

_TABLES: Final = (
    "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = current_schema()"
)

#: libpq options added to the DSN unless it sets them: notice a dead peer
#: within about a minute even when the network drops silently.
KEEPALIVES: Final = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

_ERRORS: Final[tuple[type[BaseException], ...]] = (
    psycopg2.Error,
    # What txpostgres makes of a statement PostgreSQL cancelled (its
    # statement_timeout, db_statement_timeout): the database is stuck.
    CancelledError,
    # Text psycopg2 cannot encode (lone surrogates), or a NUL in a string.
    ValueError,
    ConnectionClosed,
    ConnectionError,
    txpostgres.RollbackFailed,
    txpostgres.AlreadyConnected,
    txpostgres.AlreadyPolling,
    txpostgres.UnexpectedPollResult,
)


def hostToResolve(given: dict[str, str]) -> str | None:
    """The host name of a parsed DSN that must be resolved, or ``None``.

    ``None`` for an IP address, a Unix socket directory (``/...``,
    ``@abstract``), several hosts (``a,b``: libpq tries each; resolve them
    yourself), no host at all (the default socket), or a ``hostaddr``
    already given.
    """
    host = given.get("host", "")
    if not host or "hostaddr" in given or "," in host or host[0] in "/@":
        return None
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    return None


async def hostOptions(
    reactor: Any, given: dict[str, str], seconds: float
) -> dict[str, str]:
    """``hostaddr`` for a DSN whose host is a name, resolved without blocking.

    Args:
        reactor: its ``resolve`` (Twisted's ``IReactorCore.resolve``) does
            the lookup.
        given: the parsed DSN.
        seconds: how long the lookup may take.

    Returns:
        ``{"hostaddr": address}``, or nothing when no lookup is needed.

    Raises:
        StorageError: the name does not resolve.
    """
    host = hostToResolve(given)
    if host is None:
        return {}
    try:
        address = await reactor.resolve(host, timeout=(max(1, round(seconds)),))
    except Exception as e:  # the resolver's DNSLookupError, TimeoutError...
        raise StorageError(f"postgres: cannot resolve {host!r}: {e}") from e
    return {"hostaddr": str(address)}


def isRejection(error: BaseException) -> bool:
    """Whether PostgreSQL or psycopg2 refused the values of a statement.

    Args:
        error: what a call raised.

    Returns:
        ``True`` for values that cannot be stored (text that is not valid
        Unicode or holds a NUL, a string longer than its column, a number out
        of range, a constraint violated): the same rows can never be written.
    """
    return isinstance(error, ValueError | psycopg2.DataError | psycopg2.IntegrityError)


def isDisconnection(error: BaseException) -> bool:
    """Whether an error means that the connection to the server is lost.

    Args:
        error: what a call raised.

    Returns:
        ``True`` for connection failures, ``False`` for errors of a statement
        (constraint violations, bad data, deadlocks, cancelled statements).
    """
    if isinstance(
        error,
        psycopg2.extensions.QueryCanceledError
        | psycopg2.extensions.TransactionRollbackError,
    ):
        return False
    return isinstance(
        error,
        psycopg2.OperationalError
        | psycopg2.InterfaceError
        | ConnectionClosed
        | ConnectionError
        | txpostgres.RollbackFailed,
    )


class _Connection(txpostgres.Connection):  # type: ignore[misc]  # txpostgres is untyped
    """A connection that notes, rather than logs, being cut while idle.

    txpostgres keeps each connection a reader of the reactor (for NOTIFY);
    when the server closes an idle connection, the read raises, and the
    reactor would log the error as a bug. After a failed connection attempt,
    libpq has closed the socket but psycopg2 does not say the connection is
    closed, and txpostgres fails to watch the socket again (``ValueError``).
    """

    broken = False

    def doRead(self) -> Any:
        """Read from the socket; a failure marks the connection broken."""
        try:
            txpostgres.Connection.doRead(self)
        except (psycopg2.Error, ValueError, OSError):
            self.broken = True
            return CONNECTION_LOST
        return None

    @property
    def alive(self) -> bool:
        """Whether the connection can run a statement."""
        raw = self.pollable()
        return (
            not self.broken and raw is not None and not raw.closed and raw.fileno() >= 0
        )

    def abandon(self) -> None:
        """Close the connection whatever its state, failing what waits on it."""
        self.broken = True
        raw = self.pollable()
        if raw is None:
            return
        if raw.closed:
            # psycopg2 leaves a broken connection's socket open until close().
            try:
                raw.close()
            except psycopg2.Error:
                pass
        try:
            self.close()
        except psycopg2.Error:
            pass


class _ConnectionPool(txpostgres.ConnectionPool):  # type: ignore[misc]  # untyped
    """txpostgres's pool, replacing a broken connection when it is next used."""

    connectionFactory = _Connection
    log = Logger()

    def __init__(
        self, reactor: Any, dsn: str, size: int, connectTimeout: float, **kw: str
    ) -> None:
        self.reactor = reactor
        self.connectTimeout = connectTimeout
        self.closed = False
        self.inFlight = 0
        self._idle = Waiters()
        self._given = psycopg2.extensions.parse_dsn(dsn)
        super().__init__(None, dsn, min=size, **kw)

    async def drain(self, seconds: float = 5.0) -> None:
        """Wait until no statement is under way, or ``seconds`` at most."""
        if not self.inFlight:
            return
        waiter = self._idle.wait()
        waiter.addTimeout(seconds, self.reactor)
        try:
            await waiter
        except DeferredTimeout:
            self.log.warn(
                "closing the PostgreSQL pool with {n} statements under way",
                n=self.inFlight,
            )

    async def connect(self, connection: _Connection) -> None:
        """Connect one connection, abandoning it after ``connectTimeout``.

        A host name is resolved first, at each attempt (`hostOptions`); a
        name that does not resolve fails as an unreachable server does.

        Raises:
            psycopg2.OperationalError: the host name does not resolve.
        """
        try:
            address = await hostOptions(self.reactor, self._given, self.connectTimeout)
        except StorageError as e:
            connection.broken = True
            raise psycopg2.OperationalError(str(e)) from e
        timeout = self.reactor.callLater(self.connectTimeout, connection.abandon)
        try:
            await connection.connect(*self.connargs, **{**self.connkw, **address})
        except BaseException:
            connection.broken = True
            raise
        finally:
            if timeout.active():
                timeout.cancel()

    async def connectAll(self) -> None:
        """Connect every connection; raise the first failure."""
        results = await DeferredList(
            [Deferred.fromCoroutine(self.connect(c)) for c in self.connections],
            consumeErrors=True,
        )
        for ok, result in results:
            if not ok:
                assert isinstance(result, Failure)
                result.raiseException()

    def closeAll(self) -> None:
        """Close every idle connection; those in use close when they return."""
        self.closed = True
        for connection in self.connections:
            connection.abandon()

    def _runQuery(self, *args: Any, **kw: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._use("runQuery", args, kw))

    def _runOperation(self, *args: Any, **kw: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._use("runOperation", args, kw))

    def _runInteraction(self, *args: Any, **kw: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._use("runInteraction", args, kw))

    async def _use(self, method: str, args: Any, kw: Any) -> Any:
        self.inFlight += 1
        try:
            return await self._useConnection(method, args, kw)
        finally:
            self.inFlight -= 1
            if not self.inFlight:
                self._idle.fire()

    async def _useConnection(self, method: str, args: Any, kw: Any) -> Any:
        connection: _Connection = self.connections.pop()
        try:
            if not connection.alive:
                connection.abandon()
                connection = self.connectionFactory(self.reactor, self.cooperator)
                await self.connect(connection)
                self.log.info("PostgreSQL connection re-established")
            try:
                return await getattr(connection, method)(*args, **kw)
            except BaseException as e:
                if isDisconnection(e):
                    connection.broken = True
                else:
                    await self._endTransaction(connection)
                raise
        finally:
            self.connections.add(connection)
            if self.closed:
                connection.abandon()

    async def _endTransaction(self, connection: _Connection) -> None:
        """Roll back what a failed query left open (an explicit ``BEGIN``).

        A query of several statements that begins a transaction itself
        (`PUT_WITH_PUBLICATIONS
        <presence.storage.statements.PUT_WITH_PUBLICATIONS>`) and fails
        inside it leaves the connection in an aborted transaction, which
        would refuse every later statement.
        """
        raw = connection.pollable()
        if raw is None or raw.closed:
            return
        try:
            status = raw.get_transaction_status()
        except psycopg2.Error:
            connection.broken = True
            return
        if status in (
            psycopg2.extensions.TRANSACTION_STATUS_INERROR,
            psycopg2.extensions.TRANSACTION_STATUS_INTRANS,
        ):
            try:
                await connection.runOperation("ROLLBACK")
            except _ERRORS:
                connection.broken = True


class PostgresStore(SQLStore):
    """`IPresenceStore` in a PostgreSQL database, shareable by several servers."""

    def __init__(
        self,
        dsn: str,
        *,
        reactor: Any,
        connections: int = 2,
        connectTimeout: float = 10.0,
        retryDelay: float = 1.0,
        maxRetryDelay: float = 30.0,
        stats: StorageStatistics | None = None,
        statementTimeout: float = 0.0,
    ) -> None:
        """Make a store of the database at ``dsn``; `start` connects.

        Args:
            dsn: a libpq connection string or URI.
            reactor: the reactor the connections read and write in, and whose
                clock times the connection attempts, the probes and the
                drain at stop.
            connections: how many connections the pool keeps.
            connectTimeout: how long a connection attempt may take.
            retryDelay: how long after losing the server the store first
                probes it again; the delay doubles up to ``maxRetryDelay``.
            maxRetryDelay: the longest delay between probes.
            stats: where failed statements are counted.
            statementTimeout: seconds any statement may run before
                PostgreSQL cancels it (its ``statement_timeout``, set on
                every connection), so that a stuck database fails the call
                (503) instead of holding the request; 0: no limit.
        """
        super().__init__("postgres", _TABLES, stats)
        self.statementTimeout = statementTimeout
        self._reactor = reactor
        self.dsn = dsn
        self._size = connections
        self._connectTimeout = connectTimeout
        self._retryDelay = retryDelay
        self._maxRetryDelay = maxRetryDelay
        self._delay = retryDelay
        self._pool: _ConnectionPool | None = None
        self._probeCall: IDelayedCall | None = None
        self._probing = False

    async def start(self) -> None:
        """Connect the pool.

        Raises:
            StorageError: the server cannot be reached, or refuses us.
        """
        if self._pool is not None:
            return
        try:
            given = psycopg2.extensions.parse_dsn(self.dsn)
        except psycopg2.Error as e:
            raise StorageError(f"postgres: bad connection string: {e}") from e
        extra = self._connectionOptions(given)
        pool = _ConnectionPool(
            self._reactor, self.dsn, self._size, self._connectTimeout, **extra
        )
        try:
            await pool.connectAll()
        except _ERRORS as e:
            pool.closeAll()
            raise StorageError(f"postgres: cannot connect: {e}") from e
        self._pool = pool
        # psycopg2's pyformat paramstyle; a transaction goes as one query.
        self.runner = SQLRunner(
            pool,
            paramstyle="pyformat",
            errors=_ERRORS,
            isDisconnection=isDisconnection,
            isRejection=isRejection,
            multiStatement=True,
        )
        self.ready = True
        self.log.info("PostgreSQL pool of {n} connections ready", n=self._size)

    def _connectionOptions(self, given: dict[str, str]) -> dict[str, str]:
        """The libpq options added to the DSN: keep-alives, the timeout."""
        extra = {k: v for k, v in KEEPALIVES.items() if k not in given}
        if self.statementTimeout > 0 and "options" not in given:
            milliseconds = max(1, round(self.statementTimeout * 1000))
            extra["options"] = f"-c statement_timeout={milliseconds}"
        return extra

    def listener(
        self, onNotify: Callable[[str, str], Any], onLost: Callable[[], Any]
    ) -> PostgresListener:
        """A connection of its own for ``LISTEN``, with this store's options.

        Args:
            onNotify: called with the channel and the payload of each
                notification.
            onLost: called once when the connection breaks.
        """
        given = psycopg2.extensions.parse_dsn(self.dsn)
        return PostgresListener(
            self._reactor,
            self.dsn,
            self._connectTimeout,
            onNotify,
            onLost,
            self._connectionOptions(given),
        )

    async def claimWithPublications(
        self, key: SubscriptionKey, presentity: str
    ) -> tuple[Subscription | None, list[Publication]]:
        """``claimNotify`` for the owner, and the publications, in one round trip.

        Shared mode only (an ``owner``): one statement, `CLAIM_WITH_PUBLICATIONS
        <presence.storage.statements.CLAIM_WITH_PUBLICATIONS>`.

        Args:
            key: the subscription.
            presentity: its presentity's address of record, ``user@domain``.

        Returns:
            The subscription with its new CSeq (``None`` if it is gone or not
            this server's), and the presentity's publications of its event.
        """
        assert self.owner is not None
        values = {
            **subscriptionKeyValues(key),
            **addressValues(presentity),
            "owner": self.owner,
        }
        return self._withPublications(
            await self._query(CLAIM_WITH_PUBLICATIONS, values)
        )

    async def claimOwnedMany(
        self, keys: Sequence[SubscriptionKey]
    ) -> list[Subscription]:
        """``claimNotify`` of many subscriptions for the owner, in one statement.

        Shared mode only (an ``owner``): `CLAIM_OWNED_MANY
        <presence.storage.statements.CLAIM_OWNED_MANY>`, one round trip for
        up to `CLAIM_ROWS <presence.storage.statements.CLAIM_ROWS>` keys (the
        caller batches more). The keys must be of distinct dialogs.

        Args:
            keys: the subscriptions, at most one per dialog.

        Returns:
            The subscriptions claimed, each with its new CSeq, in no
            particular order; those gone or not this server's are missing.
        """
        assert self.owner is not None
        assert len(keys) <= CLAIM_ROWS
        if not keys:
            return []
        values: dict[str, object] = {
            f"{column}s": [str(key[i]) for key in keys]
            for i, column in enumerate(ACTIVE_WATCHERS.key)
        }
        values["owner"] = self.owner
        rows = await self._query(CLAIM_OWNED_MANY, values)
        return [subscriptionFromRow(row) for row in rows]

    def _withPublications(
        self, rows: list[Row]
    ) -> tuple[Subscription | None, list[Publication]]:
        """A subscription's row repeated once per publication, split."""
        if not rows:
            return None, []
        width = len(ACTIVE_WATCHERS.columns)
        subscription = subscriptionFromRow(rows[0][:width])
        publications = [
            publicationFromRow(row[width:]) for row in rows if row[width] is not None
        ]
        return subscription, publications

    async def removeWithPublications(
        self, key: SubscriptionKey, presentity: str
    ) -> tuple[Subscription | None, list[Publication]]:
        """``removeSubscription``, and the publications, in one round trip.

        Args:
            key: the subscription.
            presentity: its presentity's address of record.

        Returns:
            The removed subscription (``None`` if there was none) and the
            presentity's publications of its event.
        """
        rows = await self._query(
            REMOVE_WITH_PUBLICATIONS,
            {**subscriptionKeyValues(key), **addressValues(presentity)},
        )
        return self._withPublications(rows)

    async def trackWatcher(
        self,
        watcher: Watcher,
        ended: SubscriptionKey | None,
        winfoEvent: str,
    ) -> list[Subscription]:
        """The watcher tracker's row, and the winfo subscriptions, in one trip.

        Args:
            watcher: the row to write.
            ended: the key of the subscription that ended, when the row must
                go unless the watcher has another subscription (then it is
                written); ``None``: the row is written.
            winfoEvent: the watcher-information package whose subscriptions
                to the presentity are returned (``""``: none).

        Returns:
            Those subscriptions.
        """
        values: dict[str, object] = {**watcherRow(watcher), "winfo_event": winfoEvent}
        statement = TRACK_WATCHER
        if ended is not None:
            statement = TRACK_ENDED_WATCHER
            values.update(subscriptionKeyValues(ended))
            values["event"] = watcher.event
        rows = await self._query(statement, values)
        return [subscriptionFromRow(row) for row in rows]

    async def putWithPublications(
        self, subscription: Subscription, presentity: str
    ) -> list[Publication]:
        """``putSubscription``, and the publications, in one round trip.

        Args:
            subscription: the new subscription, its ``localCSeq`` already
                the first NOTIFY's.
            presentity: its presentity's address of record.

        Returns:
            The presentity's publications of the subscription's event.
        """
        rows = await self._query(
            PUT_WITH_PUBLICATIONS,
            {**subscriptionRow(subscription), **addressValues(presentity)},
        )
        return [publicationFromRow(row) for row in rows]

    async def signal(self, channel: str, payload: str) -> None:
        """``NOTIFY`` a channel (``pg_notify``), through the pool.

        Raises:
            StorageError: the database could not be reached.
        """
        await self._query(SIGNAL, {"channel": channel, "payload": payload})

    async def stop(self) -> None:
        """Close the pool; calls made afterwards raise `StorageError`."""
        pool, self._pool = self._pool, None
        self.runner = None
        self.ready = False
        if self._probeCall is not None and self._probeCall.active():
            self._probeCall.cancel()
        self._probeCall = None
        if pool is not None:
            await pool.drain()
            pool.closeAll()

    def _disconnected(self, error: BaseException) -> None:
        super()._disconnected(error)
        self._scheduleProbe()

    def _scheduleProbe(self) -> None:
        if self._probeCall is not None or self._probing or self._pool is None:
            return
        self._probeCall = self._reactor.callLater(self._delay, self._probe)
        self._delay = min(self._delay * 2, self._maxRetryDelay)

    def _probe(self) -> None:
        self._probeCall = None
        self._probing = True
        detach(self._probeOnce(), self.log, "PostgreSQL probe")

    async def _probeOnce(self) -> None:
        try:
            await self._query("SELECT 1", {})
        except StorageError:
            pass
        finally:
            self._probing = False
        if self.ready:
            self._delay = self._retryDelay
        else:
            self._scheduleProbe()


class _ListenConnection(_Connection):
    """A connection that says when it breaks."""

    onLost: Callable[[], Any] | None = None

    def connectionLost(self, reason: Any) -> None:
        """The socket closed: tell the listener once."""
        self.broken = True
        try:
            txpostgres.Connection.connectionLost(self, reason)
        finally:
            onLost, self.onLost = self.onLost, None
            if onLost is not None:
                onLost()


class PostgresListener:
    """One connection of its own that listens, and runs a few statements.

    Notifications arrive only on the connection that listens, so it is not
    one of the pool's. It also runs the statements whose success must mean
    that notifications can arrive (the cluster's heartbeat): when it breaks,
    they fail, and `start` connects and listens again.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        dsn: str,
        connectTimeout: float,
        onNotify: Callable[[str, str], Any],
        onLost: Callable[[], Any],
        options: dict[str, str],
    ) -> None:
        """Listen on ``dsn``; `start` connects.

        Args:
            reactor: what the connection runs on.
            dsn: the database.
            connectTimeout: how long a connection attempt may take.
            onNotify: called with the channel and payload of a notification.
            onLost: called when an established connection breaks.
            options: libpq options added to the DSN.
        """
        self._reactor = reactor
        self._dsn = dsn
        self._connectTimeout = connectTimeout
        self._onNotify = onNotify
        self._onLost = onLost
        self._options = options
        self._connection: _ListenConnection | None = None

    @property
    def alive(self) -> bool:
        """Whether the connection is up (it may still break at any moment)."""
        return self._connection is not None and self._connection.alive

    async def start(self, channel: str, setup: list[str]) -> None:
        """Connect, run ``setup`` in one transaction, and listen on ``channel``.

        Raises:
            StorageError: the server cannot be reached.
        """
        self.close()
        given = psycopg2.extensions.parse_dsn(self._dsn)
        address = await hostOptions(self._reactor, given, self._connectTimeout)
        connection = _ListenConnection(self._reactor)
        timeout = self._reactor.callLater(self._connectTimeout, connection.abandon)
        try:
            await connection.connect(self._dsn, **{**self._options, **address})
            if setup:
                await connection.runOperation(";\n".join(setup))
            await connection.runOperation(f'LISTEN "{channel}"')
        except _ERRORS as e:
            connection.abandon()
            raise StorageError(f"postgres: cannot listen: {e}") from e
        finally:
            if timeout.active():
                timeout.cancel()
        connection.addNotifyObserver(self._notified)
        connection.onLost = self._lost
        self._connection = connection

    def _notified(self, notify: Any) -> None:
        self._onNotify(notify.channel, notify.payload)

    def _lost(self) -> None:
        self._onLost()

    async def query(self, sql: str, values: dict[str, object]) -> list[Any]:
        """Run one statement with ``:name`` placeholders; its rows.

        Raises:
            StorageError: the connection is down or broke.
        """
        connection = self._connection
        if connection is None or not connection.alive:
            raise StorageError("postgres: the listening connection is down")
        statement = compileStatement(sql, "pyformat")
        try:
            rows = await connection.runQuery(statement.text, statement.bind(values))
        except _ERRORS as e:
            if isDisconnection(e):
                connection.broken = True
            raise StorageError(f"postgres: {type(e).__name__}: {e}") from e
        return list(rows)

    def close(self) -> None:
        """Close the connection, if any; no `onLost` for it."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.onLost = None
            connection.abandon()
