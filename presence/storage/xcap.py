"""XCAP documents: OpenSIPS's ``xcap`` table, which an XCAP server writes.

In the integrated XCAP mode the privacy rules are not this server's: an XCAP
server (OpenXCAP, Kamailio's xcap_server) stores each user's documents in
the ``xcap`` table and this server only reads them. `IXCAPStore` is that
reading, plus the writes that tests (and the external mode's client, later)
need. Two stores answer it:

- `MemoryXCAPStore`, for the memory mode and tests;
- `SQLXCAPStore`, the ``xcap`` table of an SQL store (SQLite or PostgreSQL),
  read at every call whatever the storage mode: the table is written by
  another process, so the cache of presence state never holds it.

Rows are found by ``(username, domain, doc_type)``, the one key every writer
agrees on; ``doc_uri`` is whatever the writer put there (a bare ``index.xml``
from OpenXCAP, a path with the XCAP root from Kamailio, a full URL from
OpenSIPS's xcap_client), and a user may have several rows of one type. The
table's unique key is OpenSIPS's ``(username, domain, doc_type, doc_uri)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from zope.interface import Interface, implementer

from presence.storage.statements import Table

#: ``doc_type`` of a pres-rules document (RFC 5025), and of OMA pres-rules as
#: Kamailio stores them.
PRES_RULES: Final = 2
#: ``doc_type`` of a resource-lists document (RFC 4826).
RESOURCE_LISTS: Final = 4
#: ``doc_type`` of an rls-services document (RFC 4826).
RLS_SERVICES: Final = 8
#: ``doc_type`` of a pidf-manipulation document (RFC 4827).
PIDF_MANIPULATION: Final = 16
#: ``doc_type`` of OMA pres-rules as OpenXCAP and OpenSIPS store them.
OMA_PRES_RULES: Final = 32

#: The document types that hold presence authorization rules.
RULES_TYPES: Final = (PRES_RULES, OMA_PRES_RULES)

#: The ``xcap`` table as this server reads and writes it.
XCAP: Final = Table(
    "xcap",
    ("username", "domain", "doc", "doc_type", "etag", "source", "doc_uri", "port"),
    ("username", "domain", "doc_type", "doc_uri"),
)

UPSERT_DOCUMENT: Final = XCAP.upsert()
DELETE_DOCUMENT: Final = f"DELETE FROM xcap WHERE {XCAP.keyMatch} RETURNING doc_uri"
#: A user's rows; the domain compared without case (RFC 3261 section
#: 19.1.4), since another writer keeps it as the XUI had it (Kamailio's
#: xcap_server wrote ``Example.COM`` for ``users/sip:dave@Example.COM``).
#: The indexes of both layouts start with ``username``.
SELECT_DOCUMENTS: Final = (
    f"{XCAP.select} WHERE username = :username AND lower(domain) = :domain"
    " ORDER BY doc_type, doc_uri"
)


@dataclass(frozen=True)
class XCAPDocument:
    """One row of ``xcap``.

    Attributes:
        username: the user part of the owner's SIP URI.
        domain: the owner's domain.
        doc: the document, byte for byte as the XCAP server stored it.
        docType: the ``doc_type`` bit (`PRES_RULES`, `RESOURCE_LISTS`...).
        etag: the document's entity tag, opaque (writers quote differently).
        docURI: the writer's name for the document, in any of its shapes.
        source: 0 when an XCAP server wrote it, 1 when OpenSIPS's client did.
        port: the XCAP server's port (external mode), else 0.
    """

    username: str
    domain: str
    doc: bytes
    docType: int
    etag: str
    docURI: str = "index.xml"
    source: int = 0
    port: int = 0

    @property
    def key(self) -> tuple[str, str, int, str]:
        """The table's unique key."""
        return (self.username, self.domain, self.docType, self.docURI)


def documentRow(document: XCAPDocument) -> dict[str, object]:
    """The ``xcap`` row of a document."""
    return {
        "username": document.username,
        "domain": document.domain,
        "doc": document.doc,
        "doc_type": document.docType,
        "etag": document.etag,
        "source": document.source,
        "doc_uri": document.docURI,
        "port": document.port,
    }


def documentFromRow(row: Any) -> XCAPDocument:
    """A document from a row of `XCAP.columns <XCAP>`.

    The document may come back as ``bytes``, ``memoryview`` (psycopg2's
    BYTEA) or ``str`` (a writer that stored text in SQLite).
    """
    username, domain, doc, docType, etag, source, docURI, port = row
    if isinstance(doc, str):
        doc = doc.encode("utf-8")
    return XCAPDocument(
        username=username,
        domain=domain,
        doc=bytes(doc),
        docType=int(docType),
        etag=etag or "",
        docURI=docURI or "",
        source=int(source or 0),
        port=int(port or 0),
    )


class IXCAPStore(Interface):
    """Where a user's XCAP documents are read (and written, by tests)."""

    async def documents(
        username: str, domain: str, docTypes: Iterable[int]
    ) -> list[XCAPDocument]:
        """Every document of a user of these types, by type then ``doc_uri``.

        Raises:
            presence.storage.errors.StorageError: the store cannot be read.
        """

    async def put(document: XCAPDocument) -> None:
        """Insert a document, or replace the one with the same key."""

    async def remove(username: str, domain: str, docType: int, docURI: str) -> bool:
        """Remove one document; whether there was one."""


def _selected(
    rows: Iterable[XCAPDocument], docTypes: Iterable[int]
) -> list[XCAPDocument]:
    wanted = frozenset(docTypes)
    return sorted(
        (row for row in rows if row.docType in wanted),
        key=lambda row: (row.docType, row.docURI),
    )


@implementer(IXCAPStore)
class MemoryXCAPStore:
    """Documents in a dictionary: the memory mode's, and the tests'."""

    def __init__(self) -> None:
        """Start with no document."""
        self._rows: dict[tuple[str, str], dict[tuple[int, str], XCAPDocument]] = {}

    async def documents(
        self, username: str, domain: str, docTypes: Iterable[int]
    ) -> list[XCAPDocument]:
        """See `IXCAPStore.documents`."""
        rows = self._rows.get((username, domain.lower()), {})
        return _selected(rows.values(), docTypes)

    async def put(self, document: XCAPDocument) -> None:
        """See `IXCAPStore.put`."""
        user = self._rows.setdefault((document.username, document.domain.lower()), {})
        user[(document.docType, document.docURI)] = document

    async def remove(
        self, username: str, domain: str, docType: int, docURI: str
    ) -> bool:
        """See `IXCAPStore.remove`."""
        user = self._rows.get((username, domain.lower()), {})
        return user.pop((docType, docURI), None) is not None


@implementer(IXCAPStore)
class SQLXCAPStore:
    """The ``xcap`` table of an SQL store, read at every call.

    Statements run through the store's own runner and error handling, so a
    database out of reach raises `StorageError
    <presence.storage.errors.StorageError>` as any other call would.
    """

    def __init__(self, database: Any) -> None:
        """Read the table through ``database``.

        Args:
            database: a started `presence.storage.sql.SQLStore`.
        """
        self.database = database

    async def documents(
        self, username: str, domain: str, docTypes: Iterable[int]
    ) -> list[XCAPDocument]:
        """See `IXCAPStore.documents`.

        One query for all of the user's rows; the types are picked here, so
        that the statement is the same whichever types are asked for.
        """
        rows = await self.database._query(
            SELECT_DOCUMENTS, {"username": username, "domain": domain.lower()}
        )
        return _selected((documentFromRow(row) for row in rows), docTypes)

    async def put(self, document: XCAPDocument) -> None:
        """See `IXCAPStore.put`."""
        row = documentRow(document)
        row["domain"] = document.domain.lower()
        await self.database._execute(UPSERT_DOCUMENT, row)

    async def remove(
        self, username: str, domain: str, docType: int, docURI: str
    ) -> bool:
        """See `IXCAPStore.remove`."""
        rows = await self.database._query(
            DELETE_DOCUMENT,
            {
                "username": username,
                "domain": domain.lower(),
                "doc_type": docType,
                "doc_uri": docURI,
            },
        )
        return bool(rows)
