"""What of the SQL stores needs no database: statements, rows, runner, schema."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import psycopg2
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from presence.storage import rows, runner, sql, statements
from presence.storage.errors import StorageError
from presence.storage.postgres import PostgresStore
from presence.storage.rows import methodBits
from presence.storage.runner import SQLRunner
from presence.storage.sql import checkSchemaVersion
from presence.storage.statements import (
    ACTIVE_WATCHERS,
    BATCH_ROWS,
    LOCATION,
    PRESENTITY,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    TABLES,
    WATCHERS,
    Table,
    batchDeletes,
    batchUpserts,
    compileStatement,
    loadSchema,
    mergeStatements,
    splitScript,
)


class CompileStatementTests(SynchronousTestCase):
    """Placeholders are converted to each driver's paramstyle in one place."""

    sql = "SELECT a FROM t WHERE b = :b AND c = 'x:y 5%' AND d = :dd AND e = :b"

    def test_qmark(self) -> None:
        """The qmark style gives question marks and positional values, in order."""
        statement = compileStatement(self.sql, "qmark")
        self.assertEqual(
            statement.text,
            "SELECT a FROM t WHERE b = ? AND c = 'x:y 5%' AND d = ? AND e = ?",
        )
        self.assertEqual(statement.bind({"b": 1, "dd": 2}), (1, 2, 1))

    def test_pyformat(self) -> None:
        """The pyformat style names each value and doubles a literal percent sign."""
        statement = compileStatement(self.sql, "pyformat")
        self.assertEqual(
            statement.text,
            "SELECT a FROM t WHERE b = %(b)s AND c = 'x:y 5%%' AND d = %(dd)s"
            " AND e = %(b)s",
        )
        self.assertEqual(statement.bind({"b": 1, "dd": 2, "z": 3}), {"b": 1, "dd": 2})

    def test_namedAndFormat(self) -> None:
        """The named style leaves the text alone; format gives positional %s."""
        self.assertEqual(compileStatement(self.sql, "named").text, self.sql)
        statement = compileStatement("SELECT :a, x::text, 100 % 7", "format")
        self.assertEqual(statement.text, "SELECT %s, x::text, 100 %% 7")

    def test_unknownStyle(self) -> None:
        """An unknown paramstyle is refused."""
        self.assertRaises(ValueError, compileStatement, "SELECT 1", "numeric")

    def test_merge(self) -> None:
        """Merged statements keep their placeholders apart."""
        sql, values = mergeStatements(
            [("DELETE FROM t WHERE a = :a", {"a": 1}), ("SELECT :a", {"a": 2})]
        )
        self.assertEqual(sql, "DELETE FROM t WHERE a = :a__s0;\nSELECT :a__s1")
        self.assertEqual(values, {"a__s0": 1, "a__s1": 2})

    def test_upsertStatement(self) -> None:
        """An upsert names every column and updates all but the key."""
        sql = WATCHERS.upsert()
        self.assertTrue(sql.startswith("INSERT INTO watchers (presentity_uri,"))
        self.assertIn(
            "ON CONFLICT (presentity_uri, watcher_username, watcher_domain, event)",
            sql,
        )
        self.assertIn("status = excluded.status", sql)
        self.assertNotIn("event = excluded.event", sql)
        self.assertIn(":status_1", WATCHERS.upsert(2))


class BatchStatementTests(SynchronousTestCase):
    """A batch's rows go in multi-row statements of at most BATCH_ROWS rows."""

    table = Table("t", ("k", "v"), ("k",))

    def test_upserts(self) -> None:
        """Rows are chunked; the last row of a key wins, in its first place."""
        batch: list[dict[str, object]] = [
            {"k": i, "v": i} for i in range(BATCH_ROWS + 1)
        ]
        batch.append({"k": 0, "v": "last"})
        first, second = batchUpserts(self.table, batch)
        self.assertEqual(first[0], self.table.upsert(BATCH_ROWS))
        self.assertEqual((first[1]["k_0"], first[1]["v_0"]), (0, "last"))
        self.assertEqual(len(first[1]), 2 * BATCH_ROWS)
        last = {"k_0": BATCH_ROWS, "v_0": BATCH_ROWS}
        self.assertEqual(second, (self.table.upsert(1), last))

    def test_deletes(self) -> None:
        """Deletes bind the key columns only, each key once."""
        keys = [{"k": 1, "v": "x"}, {"k": 2, "v": "y"}, {"k": 1, "v": "z"}]
        self.assertEqual(
            batchDeletes(self.table, keys),
            [(self.table.deleteMany(2), {"k_0": 1, "k_1": 2})],
        )
        self.assertEqual(batchDeletes(self.table, []), [])


class _Cursor:
    """A DB-API cursor that notes what it executes."""

    def __init__(self) -> None:
        self.executed: list[tuple[str, object]] = []

    def execute(self, text: str, parameters: object) -> None:
        self.executed.append((text, parameters))

    def fetchall(self) -> list[tuple[int]]:
        return [(len(self.executed),)]


class _Pool:
    """A connection pool that runs nothing, noting what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []
        self.cursor = _Cursor()
        #: What queries fail with, if anything.
        self.error: BaseException | None = None

    def runQuery(self, text: str, parameters: object) -> Deferred[list[tuple[int]]]:
        self.calls.append(("query", text, parameters))
        if self.error is not None:
            return fail(self.error)
        return succeed([(1,)])

    def runOperation(self, text: str, parameters: object) -> Deferred[None]:
        self.calls.append(("operation", text, parameters))
        return succeed(None)

    def runInteraction(
        self, interaction: Callable[..., Any], *args: Any
    ) -> Deferred[Any]:
        return succeed(interaction(self.cursor, *args))


#: Two statements of one transaction, the last returning rows.
TRANSACTION: Final = (
    ("DELETE FROM t WHERE a = :a", {"a": 1}),
    ("SELECT :b", {"b": 2}),
)


class RunnerTests(SynchronousTestCase):
    """One runner for both drivers: the paramstyle and transactions vary."""

    def test_qmark(self) -> None:
        """Statements are rendered in the runner's paramstyle."""
        pool = _Pool()
        qmark = SQLRunner(pool, paramstyle="qmark", errors=())
        rows = self.successResultOf(qmark.runQuery("SELECT :a", {"a": 1}))
        self.assertEqual(rows, [(1,)])
        self.successResultOf(qmark.runOperation("DELETE FROM t WHERE a = :a", {"a": 2}))
        self.assertEqual(
            pool.calls,
            [
                ("query", "SELECT ?", (1,)),
                ("operation", "DELETE FROM t WHERE a = ?", (2,)),
            ],
        )
        self.assertFalse(qmark.isDisconnection(ValueError()))

    def test_oneByOne(self) -> None:
        """Without multiStatement, a transaction runs its statements on a cursor."""
        pool = _Pool()
        qmark = SQLRunner(pool, paramstyle="qmark", errors=())
        rows = self.successResultOf(qmark.runInteraction(TRANSACTION, True))
        self.assertEqual(rows, [(2,)])
        self.assertEqual(
            pool.cursor.executed,
            [("DELETE FROM t WHERE a = ?", (1,)), ("SELECT ?", (2,))],
        )
        self.assertEqual(self.successResultOf(qmark.runInteraction([])), [])
        self.assertEqual(pool.calls, [])

    def test_multiStatement(self) -> None:
        """With multiStatement, a transaction is one query of all its statements."""
        pool = _Pool()
        pyformat = SQLRunner(
            pool, paramstyle="pyformat", errors=(), multiStatement=True
        )
        rows = self.successResultOf(pyformat.runInteraction(TRANSACTION, True))
        self.assertEqual(rows, [(1,)])
        rows = self.successResultOf(pyformat.runInteraction(TRANSACTION))
        self.assertEqual(rows, [])
        text = "DELETE FROM t WHERE a = %(a__s0)s;\nSELECT %(b__s1)s"
        values = {"a__s0": 1, "b__s1": 2}
        self.assertEqual(
            pool.calls, [("query", text, values), ("operation", text, values)]
        )
        self.assertEqual(pool.cursor.executed, [])


class PostgresProbeTests(SynchronousTestCase):
    """A PostgreSQL store probes a lost server on the clock it was given."""

    def test_probesOnGivenClock(self) -> None:
        """The probe delay doubles up to its maximum and resets on success.

        whenReady fires when a probe reaches the database.
        """
        clock = Clock()
        store = PostgresStore(
            "dbname=x", reactor=clock, retryDelay=1.0, maxRetryDelay=3.0
        )
        pool = _Pool()
        pool.error = psycopg2.OperationalError("server closed the connection")
        store._pool = pool  # type: ignore[assignment]  # as if started
        store.runner = SQLRunner(
            pool,
            paramstyle="pyformat",
            errors=(psycopg2.Error,),
            isDisconnection=lambda e: isinstance(e, psycopg2.OperationalError),
            multiStatement=True,
        )
        store.ready = True
        self.failureResultOf(
            Deferred.fromCoroutine(store.publications("a@b", "presence")),
            StorageError,
        )
        self.assertFalse(store.ready)
        ready = store.whenReady()
        for delay in (1.0, 2.0, 3.0, 3.0):
            (call,) = clock.getDelayedCalls()
            self.assertEqual(call.getTime() - clock.seconds(), delay)
            clock.advance(delay)
            self.assertNoResult(ready)
        pool.error = None
        (call,) = clock.getDelayedCalls()
        clock.advance(call.getTime() - clock.seconds())
        self.successResultOf(ready)
        self.assertTrue(store.ready)
        self.successResultOf(store.whenReady())
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(pool.calls[-1], ("query", "SELECT 1", {}))
        pool.error = psycopg2.OperationalError("server closed the connection")
        self.failureResultOf(
            Deferred.fromCoroutine(store.publications("a@b", "presence")),
            StorageError,
        )
        (call,) = clock.getDelayedCalls()
        self.assertEqual(call.getTime() - clock.seconds(), 1.0)
        call.cancel()


class ReExportTests(SynchronousTestCase):
    """What other modules imported from ``sql`` before the split still is there."""

    def test_sameObjects(self) -> None:
        """The names of ``sql`` are the objects of their new modules."""
        for module, names in [
            (
                statements,
                "ACTIVE_WATCHERS LOCATION PRESENTITY SCHEMA_NAME SCHEMA_VERSION"
                " TABLES WATCHERS Values compileStatement loadSchema"
                " mergeStatements splitScript",
            ),
            (rows, "Row methodBits"),
            (runner, "SQLRunner"),
        ]:
            for name in names.split():
                self.assertIs(getattr(sql, name), getattr(module, name), name)


class MethodBitsTests(SynchronousTestCase):
    """Methods are stored as OpenSIPS's bit mask."""

    def test_bits(self) -> None:
        """Known methods set their bits, unknown ones the 'other' bit."""
        self.assertEqual(methodBits("INVITE, ack,BYE"), 1 + 4 + 8)
        self.assertEqual(methodBits("FOO"), 16384)
        self.assertIsNone(methodBits(""))


class SchemaFileTests(SynchronousTestCase):
    """The schema files agree with each other and with the statements."""

    def columns(self, dialect: str) -> dict[str, list[str]]:
        """The columns of each table a schema file creates."""
        tables = {}
        for statement in splitScript(loadSchema(dialect)):
            match = re.match(
                r"CREATE TABLE IF NOT EXISTS (\w+) \((.*)\)$", statement, re.S
            )
            if match:
                tables[match.group(1)] = [
                    line.split()[0]
                    for line in match.group(2).splitlines()
                    if line.strip()
                    and not line.strip().startswith(("CONSTRAINT", "UNIQUE"))
                ]
        return tables

    def test_sameTables(self) -> None:
        """Both files create the same tables with the same columns."""
        sqlite, postgres = self.columns("sqlite"), self.columns("postgres")
        self.assertEqual(sorted(sqlite), sorted(TABLES))
        self.assertEqual(sqlite, postgres)

    def test_statementsMatchSchema(self) -> None:
        """Every column the statements use exists; only id and socket are unused."""
        columns = self.columns("sqlite")
        unused = {"location": ["id", "socket"]}
        for table in (PRESENTITY, ACTIVE_WATCHERS, WATCHERS, LOCATION):
            self.assertEqual(
                sorted([*unused.get(table.name, ["id"]), *table.columns]),
                sorted(columns[table.name]),
            )

    def test_versionRow(self) -> None:
        """The files insert the version this code knows."""
        for dialect in ("sqlite", "postgres"):
            script = loadSchema(dialect)
            self.assertIn(f"VALUES ('{SCHEMA_NAME}', {SCHEMA_VERSION})", script)

    def test_splitScript(self) -> None:
        """Comments go and statements are split at semicolons."""
        self.assertEqual(
            splitScript("-- a\nSELECT 1; -- b\n\nSELECT 2 -- c\n;\n"),
            ["SELECT 1", "SELECT 2"],
        )

    def test_checkSchemaVersion(self) -> None:
        """Only the known version passes; the error says what to do."""
        checkSchemaVersion(SCHEMA_VERSION)
        e = self.assertRaises(StorageError, checkSchemaVersion, SCHEMA_VERSION + 1)
        self.assertIn(f"version {SCHEMA_VERSION + 1}", str(e))
        e = self.assertRaises(StorageError, checkSchemaVersion, None)
        self.assertIn("create the schema", str(e))
