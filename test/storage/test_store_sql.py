"""The SQL stores' shared parts that need no database: statements and schema."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from presence.storage.errors import StorageError
from presence.storage.sql import (
    ACTIVE_WATCHERS,
    LOCATION,
    PRESENTITY,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    TABLES,
    WATCHERS,
    checkSchemaVersion,
    compileStatement,
    loadSchema,
    mergeStatements,
    methodBits,
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
