"""The one place the SQL stores' statements run, on SQLite and PostgreSQL alike.

`SQLRunner` renders each statement's ``:name`` placeholders in its driver's
paramstyle (`presence.storage.statements.compileStatement`) and hands it to a
connection pool: twisted.enterprise.adbapi's for SQLite, txpostgres's for
PostgreSQL. Both pools take ``runQuery`` and ``runOperation`` with a text and
its parameters; what else differs between the drivers is a parameter of the
runner: the paramstyle, the driver's exceptions, which of them mean the
database is out of reach, and how a transaction of several statements goes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred

from presence.storage.rows import Row
from presence.storage.statements import Values, compileStatement, mergeStatements


class ConnectionPool(Protocol):
    """What the runner uses of a connection pool, adbapi's or txpostgres's."""

    def runQuery(self, *args: Any, **kw: Any) -> Deferred[Any]:
        """Run a statement, in a transaction of its own, and fetch its rows."""

    def runOperation(self, *args: Any, **kw: Any) -> Deferred[Any]:
        """Run a statement that returns no rows, in a transaction of its own."""

    def runInteraction(
        self, interaction: Callable[..., Any], *args: Any, **kw: Any
    ) -> Deferred[Any]:
        """Call ``interaction`` with a cursor, in one transaction."""


def _runAll(
    cursor: Any, statements: Sequence[tuple[str, Any]], fetch: bool
) -> list[Row]:
    """Run statements on one cursor, in the pool's thread."""
    for text, parameters in statements:
        cursor.execute(text, parameters)
    return list(cursor.fetchall()) if fetch else []


def _never(error: BaseException) -> bool:
    """No error means that the database is out of reach (a file)."""
    return False


def _badValue(error: BaseException) -> bool:
    """Only a value Python could not hand to the driver is refused data."""
    return isinstance(error, ValueError)


class SQLRunner:
    """Runs statements with ``:name`` placeholders on a connection pool.

    Attributes:
        pool: the connection pool.
        paramstyle: the DB-API paramstyle of the driver.
        errors: the exceptions of the driver and pool that mean a statement
            failed; the store turns them into `StorageError
            <presence.storage.errors.StorageError>`.
        isDisconnection: whether one of ``errors`` means that the database is
            out of reach.
        isRejection: whether one of ``errors`` means that the database (or
            the driver) refused the values given, not the statement: the same
            rows cannot be written, other rows still can.
        multiStatement: whether a transaction goes as one query of several
            statements, one round trip, which the server runs as one
            transaction (PostgreSQL); otherwise its statements run one after
            the other on one cursor of the pool's ``runInteraction`` (adbapi).
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        paramstyle: str,
        errors: tuple[type[BaseException], ...],
        isDisconnection: Callable[[BaseException], bool] = _never,
        isRejection: Callable[[BaseException], bool] = _badValue,
        multiStatement: bool = False,
    ) -> None:
        """Run statements in ``pool``, rendered in ``paramstyle``.

        Args:
            pool: the connection pool.
            paramstyle: ``qmark`` (sqlite3) or ``pyformat`` (psycopg2), or
                another style `compileStatement
                <presence.storage.statements.compileStatement>` knows.
            errors: the exceptions that mean a statement failed.
            isDisconnection: whether such an exception means that the
                database is out of reach; by default none does.
            isRejection: whether such an exception means that the values were
                refused; by default a ``ValueError`` (a ``UnicodeEncodeError``
                for text that is not valid Unicode) does.
            multiStatement: whether to send a transaction as one query.
        """
        self.pool = pool
        self.paramstyle = paramstyle
        self.errors = errors
        self.isDisconnection = isDisconnection
        self.isRejection = isRejection
        self.multiStatement = multiStatement

    def _render(self, sql: str, values: Values) -> tuple[str, object]:
        statement = compileStatement(sql, self.paramstyle)
        return statement.text, statement.bind(values)

    def runQuery(self, sql: str, values: Values) -> Deferred[list[Row]]:
        """Run one statement, in a transaction of its own, and fetch its rows.

        Args:
            sql: the statement, with ``:name`` placeholders.
            values: a value for each placeholder.

        Returns:
            The rows.
        """
        return cast(
            "Deferred[list[Row]]", self.pool.runQuery(*self._render(sql, values))
        )

    def runOperation(self, sql: str, values: Values) -> Deferred[None]:
        """Run one statement that returns no rows, in a transaction of its own.

        Args:
            sql: the statement, with ``:name`` placeholders.
            values: a value for each placeholder.

        Returns:
            A Deferred that fires when the statement ran.
        """
        return cast(
            "Deferred[None]", self.pool.runOperation(*self._render(sql, values))
        )

    def runInteraction(
        self, statements: Sequence[tuple[str, Values]], fetch: bool = False
    ) -> Deferred[list[Row]]:
        """Run statements in one transaction.

        With `multiStatement`, they go as one query: the server runs the
        statements of one query in one transaction, and psycopg2 returns the
        rows of the last.

        Args:
            statements: the statements, with ``:name`` placeholders, and their
                values.
            fetch: whether to fetch the rows of the last statement (it must
                return rows then).

        Returns:
            The rows of the last statement when ``fetch`` is true, otherwise an
            empty list.
        """
        if self.multiStatement:
            sql, values = mergeStatements(statements)
            if fetch:
                return self.runQuery(sql, values)
            d = self.runOperation(sql, values)
            return cast("Deferred[list[Row]]", d.addCallback(lambda _: []))
        rendered = [self._render(sql, values) for sql, values in statements]
        return cast(
            "Deferred[list[Row]]", self.pool.runInteraction(_runAll, rendered, fetch)
        )
