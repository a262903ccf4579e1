"""The ``xcap`` table's unique key, in every backend.

OpenSIPS's key is ``(username, domain, doc_type, doc_uri)``; Kamailio's
``UNIQUE(doc_uri)`` is never used, because OpenXCAP 3.2.0 writes every
user's pres-rules under the bare ``doc_uri`` ``index.xml``, which would
collide between users. The rows are written the way the XCAP servers write
them (plain INSERTs from another writer) and through `IXCAPStore.put`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from presence.storage.postgres import PostgresStore
from presence.storage.sqlite import SQLiteStore
from presence.storage.xcap import (
    OMA_PRES_RULES,
    PRES_RULES,
    MemoryXCAPStore,
    SQLXCAPStore,
    XCAPDocument,
)
from test.support.postgres import PostgresPerClass

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object

INSERT = (
    "INSERT INTO xcap (username, domain, doc, doc_type, etag, source, doc_uri,"
    " port) VALUES (:u, 'example.com', :doc, :t, :e, 0, :uri, 0)"
)


def document(user: str, docType: int = OMA_PRES_RULES, etag: str = "e") -> XCAPDocument:
    """A user's rules under OpenXCAP's bare ``index.xml``."""
    return XCAPDocument(user, "example.com", f"<{user}/>".encode(), docType, etag)


class KeyContract(_Base):
    """What every store keeps apart and what it replaces."""

    store: Any

    async def test_sameDocURIForEveryUser(self) -> None:
        """Alice's and bob's ``index.xml`` are two rows, each its user's."""
        await self.store.put(document("alice"))
        await self.store.put(document("bob"))
        for user in ("alice", "bob"):
            [row] = await self.store.documents(user, "example.com", [OMA_PRES_RULES])
            self.assertEqual(row.doc, f"<{user}/>".encode())

    async def test_sameDocURIOtherType(self) -> None:
        """One user's ``index.xml`` of two document types: two rows."""
        await self.store.put(document("alice", PRES_RULES))
        await self.store.put(document("alice", OMA_PRES_RULES))
        rows = await self.store.documents(
            "alice", "example.com", [PRES_RULES, OMA_PRES_RULES]
        )
        self.assertEqual(len(rows), 2)

    async def test_sameKeyReplaces(self) -> None:
        """The same four columns: the newer row replaces the older."""
        await self.store.put(document("alice", etag="1"))
        await self.store.put(document("alice", etag="2"))
        [row] = await self.store.documents("alice", "example.com", [OMA_PRES_RULES])
        self.assertEqual(row.etag, "2")


class MemoryKeyTests(KeyContract, TestCase):
    """The memory store."""

    def setUp(self) -> None:
        """An empty store."""
        self.store = MemoryXCAPStore()


class SQLKeyTests(KeyContract):
    """What the schema itself refuses and accepts, written as XCAP servers do."""

    database: Any

    async def insert(self, user: str, docType: int, uri: str, etag: str) -> None:
        """A plain INSERT, as OpenXCAP and Kamailio write the table."""
        assert self.database.runner is not None
        await self.database.runner.runInteraction(
            [(INSERT, {"u": user, "doc": b"<r/>", "t": docType, "e": etag, "uri": uri})]
        )

    async def test_schemaKeepsUsersApart(self) -> None:
        """INSERTs of ``index.xml`` for two users and two types all succeed."""
        await self.insert("alice", OMA_PRES_RULES, "index.xml", "1")
        await self.insert("bob", OMA_PRES_RULES, "index.xml", "2")
        await self.insert("alice", PRES_RULES, "index.xml", "3")
        rows = [
            row
            for user in ("alice", "bob")
            for row in await self.store.documents(
                user, "example.com", [PRES_RULES, OMA_PRES_RULES]
            )
        ]
        self.assertEqual(
            sorted((r.username, r.docType, r.etag) for r in rows),
            [("alice", 2, "3"), ("alice", 32, "1"), ("bob", 32, "2")],
        )

    async def test_schemaRefusesADuplicateKey(self) -> None:
        """A second INSERT of the same four columns is refused by the table."""
        await self.insert("alice", OMA_PRES_RULES, "index.xml", "1")
        try:
            await self.insert("alice", OMA_PRES_RULES, "index.xml", "2")
        except Exception as e:
            # The driver's integrity error, as the runner passes it on.
            self.assertIn("unique", str(e).lower())
        else:
            self.fail("a duplicate (username, domain, doc_type, doc_uri) was stored")
        [row] = await self.store.documents("alice", "example.com", [OMA_PRES_RULES])
        self.assertEqual(row.etag, "1")


class SQLiteKeyTests(SQLKeyTests, TestCase):
    """SQLite."""

    timeout = 10

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """A new database in a temporary file."""
        self.database = SQLiteStore(self.mktemp() + ".sqlite", reactor=reactor)
        await self.database.start()
        self.addCleanup(self.database.stop)
        await self.database.ensureSchema(create=True)
        self.store = SQLXCAPStore(self.database)


class PostgresKeyTests(PostgresPerClass, SQLKeyTests, TestCase):
    """PostgreSQL."""

    timeout = 20

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """The class's database with the schema and no document."""
        self.database = PostgresStore(self.pg.dsn, reactor=reactor, connections=2)
        await self.database.start()
        self.addCleanup(self.database.stop)
        await self.database.ensureSchema(create=True)
        assert self.database.runner is not None
        await self.database.runner.runInteraction([("DELETE FROM xcap", {})])
        self.store = SQLXCAPStore(self.database)
