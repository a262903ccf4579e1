"""The store in an SQLite file, through twisted.enterprise.adbapi.

Every statement runs in adbapi's thread pool, never in the reactor thread.
The pool has one connection: SQLite serialises writes anyway, and one
connection makes each statement (and each `SQLStore.nextCSeq`) atomic
without retries on a busy database. The journal is in WAL mode, so that
readers in other processes (an operator's ``sqlite3`` shell) do not block the
server.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final, cast

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

from presence.storage.errors import StorageError
from presence.storage.sql import (
    Row,
    SQLStore,
    Values,
    compileStatement,
)

#: The oldest SQLite that runs our statements (RETURNING came in 3.35).
MINIMUM_VERSION: Final = (3, 35, 0)

_TABLES: Final = "SELECT name FROM sqlite_master WHERE type = 'table'"


def _prepareConnection(connection: sqlite3.Connection) -> None:
    """Set up a new connection, in the pool's thread."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def _runAll(
    cursor: Any, statements: Sequence[tuple[str, Any]], fetch: bool
) -> list[Row]:
    """Run statements on one cursor, in the pool's thread."""
    for text, parameters in statements:
        cursor.execute(text, parameters)
    return list(cursor.fetchall()) if fetch else []


class SQLiteRunner:
    """`SQLRunner` over an adbapi pool of sqlite3 connections."""

    errors: tuple[type[BaseException], ...] = (
        sqlite3.Error,
        adbapi.ConnectionLost,
        OverflowError,
    )

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        """Run statements in ``pool``."""
        self.pool = pool

    def runQuery(self, sql: str, values: Values) -> Deferred[list[Row]]:
        """See `SQLRunner.runQuery`."""
        statement = compileStatement(sql, "qmark")
        return cast(
            "Deferred[list[Row]]",
            self.pool.runQuery(statement.text, statement.bind(values)),
        )

    def runOperation(self, sql: str, values: Values) -> Deferred[None]:
        """See `SQLRunner.runOperation`."""
        statement = compileStatement(sql, "qmark")
        return cast(
            "Deferred[None]",
            self.pool.runOperation(statement.text, statement.bind(values)),
        )

    def runInteraction(
        self, statements: Sequence[tuple[str, Values]], fetch: bool = False
    ) -> Deferred[list[Row]]:
        """See `SQLRunner.runInteraction`."""
        compiled = []
        for sql, values in statements:
            statement = compileStatement(sql, "qmark")
            compiled.append((statement.text, statement.bind(values)))
        return cast(
            "Deferred[list[Row]]", self.pool.runInteraction(_runAll, compiled, fetch)
        )

    def isDisconnection(self, error: BaseException) -> bool:
        """See `SQLRunner.isDisconnection`: a file is never disconnected."""
        return False


class SQLiteStore(SQLStore):
    """`IPresenceStore` in an SQLite database file."""

    def __init__(self, path: str, *, reactor: Any = None) -> None:
        """Make a store of the database at ``path``; `start` opens it.

        Args:
            path: the database file, created if missing.
            reactor: the reactor whose thread pool runs the statements;
                ``None`` for the global reactor, which adbapi then imports.
        """
        super().__init__("sqlite", _TABLES)
        self._reactor = reactor
        self.path = path
        self._pool: adbapi.ConnectionPool | None = None

    async def start(self) -> None:
        """Open the database.

        Raises:
            StorageError: it cannot be opened, or SQLite is too old.
        """
        if self._pool is not None:
            return
        pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_prepareConnection,
            cp_reactor=self._reactor,
            cp_noisy=False,
        )
        self._pool = pool
        self.runner = SQLiteRunner(pool)
        try:
            rows = await self._query("SELECT sqlite_version()", {})
            version = tuple(int(part) for part in str(rows[0][0]).split("."))
            if version < MINIMUM_VERSION:
                raise StorageError(
                    f"SQLite {rows[0][0]} is too old: the store needs 3.35 or later"
                )
        except StorageError:
            await self.stop()
            raise
        self.log.info("SQLite database {path} open", path=self.path)

    async def stop(self) -> None:
        """Close the database; calls made afterwards raise `StorageError`."""
        pool, self._pool = self._pool, None
        self.runner = None
        self.ready = False
        if pool is not None:
            pool.close()
