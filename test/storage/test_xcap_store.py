"""Tests for presence.storage.xcap: the ``xcap`` table an XCAP server writes.

The same contract runs against memory, SQLite (a temporary file) and
PostgreSQL (a database of the class's own). The SQL stores also read rows
as OpenXCAP and Kamailio write them (OpenXCAP
3.2.0 stores pres-rules with ``doc_uri`` ``index.xml`` and ``source`` 0,
Kamailio with the whole HTTP path, OpenSIPS's client with a full URL).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from presence.storage.postgres import PostgresStore
from presence.storage.sqlite import SQLiteStore
from presence.storage.xcap import (
    OMA_PRES_RULES,
    PRES_RULES,
    RESOURCE_LISTS,
    IXCAPStore,
    MemoryXCAPStore,
    SQLXCAPStore,
    XCAPDocument,
)
from test.support.postgres import PostgresPerClass

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object

RULES = XCAPDocument("alice", "example.com", b"<ruleset/>", PRES_RULES, "e1")
#: The three shapes of doc_uri the writers use.
SHAPES = (
    "index.xml",
    "/xcap-root/pres-rules/users/sip:alice@example.com/index",
    "http://xcap.example.com:8080/xcap-root/pres-rules/users/sip:alice@example.com/index",
)


class XCAPStoreContract(_Base):
    """What every XCAP documents store promises."""

    store: Any

    async def test_interface(self) -> None:
        """The store provides IXCAPStore."""
        self.assertTrue(verifyObject(IXCAPStore, self.store))

    async def test_roundTrip(self) -> None:
        """A document put is read back, byte for byte, with its columns."""
        await self.store.put(RULES)
        self.assertEqual(
            await self.store.documents("alice", "example.com", [PRES_RULES]), [RULES]
        )

    async def test_none(self) -> None:
        """A user without documents, or of other types, has none."""
        await self.store.put(RULES)
        self.assertEqual(
            await self.store.documents("bob", "example.com", [PRES_RULES]), []
        )
        self.assertEqual(
            await self.store.documents("alice", "example.com", [RESOURCE_LISTS]), []
        )

    async def test_severalRowsCombine(self) -> None:
        """Every row of the types asked comes back, by type then doc_uri.

        doc_type 2 and 32 (OMA pres-rules, OpenXCAP) and several doc_uri
        shapes of one type (Kamailio keeps one row per path).
        """
        documents = [
            XCAPDocument("alice", "example.com", b"<a/>", PRES_RULES, "1", uri)
            for uri in SHAPES
        ]
        documents.append(
            XCAPDocument("alice", "example.com", b"<b/>", OMA_PRES_RULES, "2")
        )
        documents.append(
            XCAPDocument("alice", "example.com", b"<l/>", RESOURCE_LISTS, "3", "index")
        )
        for document in documents:
            await self.store.put(document)
        rules = await self.store.documents(
            "alice", "example.com", [PRES_RULES, OMA_PRES_RULES]
        )
        self.assertEqual(
            [(d.docType, d.docURI) for d in rules],
            sorted((d.docType, d.docURI) for d in documents[:4]),
        )
        both = await self.store.documents(
            "alice", "example.com", [PRES_RULES, OMA_PRES_RULES, RESOURCE_LISTS]
        )
        self.assertEqual(len(both), 5)

    async def test_replaceByKey(self) -> None:
        """A put with the same (username, domain, doc_type, doc_uri) replaces."""
        await self.store.put(RULES)
        newer = XCAPDocument("alice", "example.com", b"<ruleset></ruleset>", 2, "e2")
        await self.store.put(newer)
        self.assertEqual(
            await self.store.documents("alice", "example.com", [PRES_RULES]), [newer]
        )

    async def test_remove(self) -> None:
        """A removed document is gone; removing it again says there was none."""
        await self.store.put(RULES)
        self.assertTrue(
            await self.store.remove("alice", "example.com", PRES_RULES, "index.xml")
        )
        self.assertFalse(
            await self.store.remove("alice", "example.com", PRES_RULES, "index.xml")
        )
        self.assertEqual(
            await self.store.documents("alice", "example.com", [PRES_RULES]), []
        )

    async def test_domainCaseInsensitive(self) -> None:
        """Domains compare without case (RFC 3261 section 19.1.4)."""
        await self.store.put(RULES)
        [found] = await self.store.documents("alice", "EXAMPLE.com", [PRES_RULES])
        self.assertEqual(found.etag, "e1")


class MemoryXCAPStoreTests(XCAPStoreContract, TestCase):
    """The memory store keeps the contract."""

    def setUp(self) -> None:
        """An empty store."""
        self.store = MemoryXCAPStore()


class SQLXCAPTests(XCAPStoreContract):
    """What the SQL stores add: rows as the XCAP servers write them."""

    database: Any

    async def execute(self, sql: str, values: dict[str, object]) -> None:
        """Run one statement through the database's runner."""
        assert self.database.runner is not None
        await self.database.runner.runInteraction([(sql, values)])

    async def test_rowWrittenByOpenXCAP(self) -> None:
        """Rows as OpenXCAP and Kamailio write them read back.

        OpenXCAP 3.2.0: doc_uri index.xml, source and port 0, an md5 etag,
        OMA pres-rules as doc_type 32; Kamailio: the HTTP path as doc_uri.
        """
        for docType, etag, uri in [
            (OMA_PRES_RULES, "874739014a9855dee2cdd0a56eedcb63", "index.xml"),
            (PRES_RULES, "sr-1795770246-24136-1", SHAPES[1]),
        ]:
            await self.execute(
                "INSERT INTO xcap (username, domain, doc, doc_type, etag, source,"
                " doc_uri, port) VALUES (:u, :d, :doc, :t, :e, 0, :uri, 0)",
                {
                    "u": "alice",
                    "d": "example.com",
                    "doc": b"<ruleset/>",
                    "t": docType,
                    "e": etag,
                    "uri": uri,
                },
            )
        rows = await self.store.documents(
            "alice", "example.com", [PRES_RULES, OMA_PRES_RULES]
        )
        self.assertEqual(
            [(r.docType, r.etag, r.docURI, r.source, r.port, r.doc) for r in rows],
            [
                (PRES_RULES, "sr-1795770246-24136-1", SHAPES[1], 0, 0, b"<ruleset/>"),
                (
                    OMA_PRES_RULES,
                    "874739014a9855dee2cdd0a56eedcb63",
                    "index.xml",
                    0,
                    0,
                    b"<ruleset/>",
                ),
            ],
        )

    async def test_domainAsKamailioWroteIt(self) -> None:
        """A row whose domain another writer kept in capitals is found.

        Kamailio's xcap_server takes ``username`` and ``domain`` from the XUI
        of the path as it came: a PUT to
        ``/xcap-root/pres-rules/users/sip:dave@Example.COM/index`` wrote
        ``Example.COM``. Hosts compare without case (RFC 3261 section 19.1.4).
        """
        await self.execute(
            "INSERT INTO xcap (username, domain, doc, doc_type, etag, source,"
            " doc_uri, port) VALUES ('dave', 'Example.COM', :doc, 2,"
            " 'sr-1796589613-9665-1', 0,"
            " '/xcap-root/pres-rules/users/sip:dave@Example.COM/index', 0)",
            {"doc": b"<ruleset/>"},
        )
        [row] = await self.store.documents("dave", "example.com", [PRES_RULES])
        self.assertEqual(
            (row.domain, row.etag), ("Example.COM", "sr-1796589613-9665-1")
        )


class SQLiteXCAPTests(SQLXCAPTests, TestCase):
    """The xcap table in SQLite."""

    timeout = 10

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """A new database in a temporary file."""
        self.database = SQLiteStore(self.mktemp() + ".sqlite", reactor=reactor)
        await self.database.start()
        self.addCleanup(self.database.stop)
        await self.database.ensureSchema(create=True)
        self.store = SQLXCAPStore(self.database)


class PostgresXCAPTests(PostgresPerClass, SQLXCAPTests, TestCase):
    """The xcap table in PostgreSQL."""

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
