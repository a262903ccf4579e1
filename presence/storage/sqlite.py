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
from typing import Any, Final

from twisted.enterprise import adbapi

from presence.storage.errors import StorageError
from presence.storage.runner import SQLRunner
from presence.storage.sql import SQLStore
from presence.storage.statistics import StorageStatistics

#: The oldest SQLite that runs our statements (RETURNING came in 3.35).
MINIMUM_VERSION: Final = (3, 35, 0)

_TABLES: Final = "SELECT name FROM sqlite_master WHERE type = 'table'"

#: What sqlite3 and adbapi raise when a statement fails.
_ERRORS: Final[tuple[type[BaseException], ...]] = (
    sqlite3.Error,
    adbapi.ConnectionLost,
    OverflowError,
    # Binding text that is not valid Unicode (lone surrogates).
    ValueError,
)


def isRejection(error: BaseException) -> bool:
    """Whether sqlite3 refused the values of a statement, not its run.

    Args:
        error: what a statement raised.

    Returns:
        ``True`` for values it cannot bind or store (text that is not valid
        Unicode, an integer out of range, a constraint violated), ``False``
        for the database file's trouble (locked, full, unreadable).
    """
    return isinstance(
        error,
        ValueError
        | OverflowError
        | sqlite3.IntegrityError
        | sqlite3.DataError
        | sqlite3.InterfaceError,
    )


def _prepareConnection(connection: sqlite3.Connection) -> None:
    """Set up a new connection, in the pool's thread."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


class SQLiteStore(SQLStore):
    """`IPresenceStore` in an SQLite database file."""

    def __init__(
        self, path: str, *, reactor: Any, stats: StorageStatistics | None = None
    ) -> None:
        """Make a store of the database at ``path``; `start` opens it.

        Args:
            path: the database file, created if missing.
            reactor: the reactor whose thread pool runs the statements.
            stats: where failed statements are counted.
        """
        super().__init__("sqlite", _TABLES, stats)
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
        # sqlite3's qmark paramstyle; a file is never out of reach, and its
        # statements run one by one in a transaction of adbapi's.
        self.runner = SQLRunner(
            pool, paramstyle="qmark", errors=_ERRORS, isRejection=isRejection
        )
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
