"""What the SQL stores share: statements, row mapping and the store itself.

Statements are written once, with ``:name`` placeholders, and converted to the
driver's paramstyle by `compileStatement`, the one place that does it. Values
are never formatted into SQL; only column and table names, which are constants
of this module, are joined into the statements built at import time.

`SQLStore` implements `IPresenceStore` over an `SQLRunner`, a tiny
asynchronous interface to a connection pool. The SQLite and PostgreSQL
backends provide only the runner (and their start and stop).

Both databases run the same statements: ``INSERT ... ON CONFLICT ... DO
UPDATE`` for puts and ``... RETURNING`` for removals, expiry sweeps and
`SQLStore.nextCSeq`, so that each of those is one statement, atomic on its
own (SQLite 3.35 and PostgreSQL 10 understand both).

Times are kept to the second, as in OpenSIPS: expiry times are rounded up (a
row never expires early), the other times down.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from presence.storage.errors import SchemaError, StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import (
    Batch,
    Binding,
    DialogKey,
    Publication,
    Subscription,
    SubscriptionKey,
    Watcher,
)

T = TypeVar("T")

#: A row as the driver returns it.
Row = Sequence[Any]

#: Values for the ``:name`` placeholders of a statement.
Values = Mapping[str, object]

#: The version of the schema in ``schema/*.sql``, kept in the ``version`` table
#: under `SCHEMA_NAME`.
SCHEMA_VERSION: Final = 1

#: The ``version.table_name`` of our schema as a whole.
SCHEMA_NAME: Final = "presence_schema"

#: The tables of the schema.
TABLES: Final = (
    "version",
    "presentity",
    "active_watchers",
    "watchers",
    "xcap",
    "location",
)

#: How many rows one statement of a batch writes or deletes.
BATCH_ROWS: Final = 200


# -- placeholders ------------------------------------------------------------

_TOKENS = re.compile(r"'(?:[^']|'')*'|(?<![:\w]):([A-Za-z_]\w*)|%")


@dataclass(frozen=True)
class CompiledStatement:
    """A statement in a driver's paramstyle.

    Attributes:
        text: the SQL the driver executes.
        names: the placeholder names, in the order they appear.
        paramstyle: the DB-API paramstyle of ``text``.
    """

    text: str
    names: tuple[str, ...]
    paramstyle: str

    def bind(self, values: Values) -> Sequence[object] | dict[str, object]:
        """The parameters to pass with ``text`` for these values.

        Args:
            values: a value for each placeholder name.

        Returns:
            A sequence for positional paramstyles, a dict for named ones.
        """
        if self.paramstyle in ("qmark", "format"):
            return tuple(values[name] for name in self.names)
        return {name: values[name] for name in self.names}


@cache
def compileStatement(sql: str, paramstyle: str) -> CompiledStatement:
    """Convert a statement's ``:name`` placeholders to a driver's paramstyle.

    This is the one function that knows paramstyles. String literals are left
    alone; a literal ``%`` is doubled for the ``format`` styles.

    Args:
        sql: a statement with ``:name`` placeholders.
        paramstyle: ``qmark`` (sqlite3), ``named``, ``format`` or ``pyformat``
            (psycopg2).

    Returns:
        The converted statement.

    Raises:
        ValueError: for another paramstyle.
    """
    if paramstyle not in ("qmark", "named", "format", "pyformat"):
        raise ValueError(f"unsupported paramstyle {paramstyle!r}")
    percent = paramstyle in ("format", "pyformat")
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        name = match.group(1)
        if name is None:
            return token.replace("%", "%%") if percent else token
        names.append(name)
        if paramstyle == "qmark":
            return "?"
        if paramstyle == "format":
            return "%s"
        if paramstyle == "pyformat":
            return f"%({name})s"
        return token

    return CompiledStatement(_TOKENS.sub(replace, sql), tuple(names), paramstyle)


def mergeStatements(statements: Sequence[tuple[str, Values]]) -> tuple[str, Values]:
    """Join statements into one text, for drivers that run several at once.

    Placeholder names get a suffix per statement so that they stay distinct.

    Args:
        statements: statements with ``:name`` placeholders, and their values.

    Returns:
        One text with the statements separated by semicolons, and its values.
    """
    texts: list[str] = []
    merged: dict[str, object] = {}
    for index, (sql, values) in enumerate(statements):
        suffix = f"__s{index}"

        def rename(match: re.Match[str], suffix: str = suffix) -> str:
            name = match.group(1)
            if name is None:
                return match.group(0)
            return f":{name}{suffix}"

        texts.append(_TOKENS.sub(rename, sql))
        for name, value in values.items():
            merged[name + suffix] = value
    return ";\n".join(texts), merged


def splitScript(script: str) -> list[str]:
    """The statements of a schema file, without comments.

    Args:
        script: SQL statements ending with semicolons, with ``--`` comments and
            no semicolon inside a statement.

    Returns:
        Each statement, stripped.
    """
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def loadSchema(dialect: str) -> str:
    """The schema file of a database, shipped in ``presence/storage/schema``.

    Args:
        dialect: ``sqlite`` or ``postgres``.

    Returns:
        The file's text.
    """
    resource = files("presence.storage").joinpath("schema", f"{dialect}.sql")
    return resource.read_text(encoding="utf-8")


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
    if found != SCHEMA_VERSION:
        raise SchemaError(
            f"the database schema is version {found}, this server knows only "
            f"version {SCHEMA_VERSION}: upgrade the server or migrate the database"
        )


# -- tables and row mapping --------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A table's stored columns (all but ``id``) and its unique key."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]

    @property
    def select(self) -> str:
        return f"SELECT {', '.join(self.columns)} FROM {self.name}"

    @property
    def returning(self) -> str:
        return f"RETURNING {', '.join(self.columns)}"

    @property
    def keyMatch(self) -> str:
        return " AND ".join(f"{c} = :{c}" for c in self.key)

    def upsert(self, rows: int | None = None) -> str:
        """An insert that updates the rows already there.

        Args:
            rows: ``None`` for one row whose placeholders are the column names;
                otherwise how many rows, with placeholders ``column_<row>``.
        """
        groups = []
        for i in range(rows or 1):
            suffix = "" if rows is None else f"_{i}"
            groups.append("(" + ", ".join(f":{c}{suffix}" for c in self.columns) + ")")
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in self.columns if c not in self.key
        )
        return (
            f"INSERT INTO {self.name} ({', '.join(self.columns)}) "
            f"VALUES {', '.join(groups)} "
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {updates}"
        )

    def deleteMany(self, rows: int) -> str:
        """A delete of the rows with ``rows`` keys."""
        tuples = ", ".join(
            "(" + ", ".join(f":{c}_{i}" for c in self.key) + ")" for i in range(rows)
        )
        return f"DELETE FROM {self.name} WHERE ({', '.join(self.key)}) IN ({tuples})"


PRESENTITY: Final = _Table(
    "presentity",
    (
        "username",
        "domain",
        "event",
        "etag",
        "expires",
        "received_time",
        "body",
        "extra_hdrs",
        "sender",
        "content_type",
    ),
    ("username", "domain", "event", "etag"),
)

ACTIVE_WATCHERS: Final = _Table(
    "active_watchers",
    (
        "presentity_uri",
        "watcher_username",
        "watcher_domain",
        "to_user",
        "to_domain",
        "event",
        "event_id",
        "to_tag",
        "from_tag",
        "callid",
        "local_cseq",
        "remote_cseq",
        "contact",
        "record_route",
        "expires",
        "status",
        "reason",
        "version",
        "socket_info",
        "local_contact",
        "sharing_tag",
        "watcher_uri",
        "watcher_display_name",
        "from_header",
        "to_header",
        "created_time",
    ),
    ("callid", "to_tag", "from_tag", "event", "event_id"),
)

WATCHERS: Final = _Table(
    "watchers",
    (
        "presentity_uri",
        "watcher_username",
        "watcher_domain",
        "event",
        "status",
        "reason",
        "inserted_time",
    ),
    ("presentity_uri", "watcher_username", "watcher_domain", "event"),
)

LOCATION: Final = _Table(
    "location",
    (
        "username",
        "domain",
        "contact",
        "received",
        "path",
        "expires",
        "q",
        "callid",
        "cseq",
        "user_agent",
        "methods",
        "method_names",
        "contact_params",
    ),
    ("username", "domain", "contact"),
)

#: OpenSIPS's bits for ``location.methods`` (parser/msg_parser.h).
METHOD_BITS: Final = {
    "INVITE": 1,
    "CANCEL": 2,
    "ACK": 4,
    "BYE": 8,
    "INFO": 16,
    "OPTIONS": 32,
    "UPDATE": 64,
    "REGISTER": 128,
    "MESSAGE": 256,
    "SUBSCRIBE": 512,
    "NOTIFY": 1024,
    "PRACK": 2048,
    "REFER": 4096,
    "PUBLISH": 8192,
}
_OTHER_METHOD: Final = 16384


def methodBits(methods: str) -> int | None:
    """OpenSIPS's bit mask for a list of methods, ``None`` when it is empty.

    Args:
        methods: method names separated by commas (an Allow header's value).

    Returns:
        The mask, with OpenSIPS's "other" bit for unknown methods.
    """
    names = [m.strip().upper() for m in methods.split(",") if m.strip()]
    if not names:
        return None
    mask = 0
    for name in names:
        mask |= METHOD_BITS.get(name, _OTHER_METHOD)
    return mask


def _expiry(when: float) -> int:
    """An expiry time in whole seconds, rounded up."""
    return math.ceil(when)


def _instant(when: float) -> int:
    """Another time in whole seconds, rounded down."""
    return math.floor(when)


def _split(address: str) -> tuple[str, str]:
    user, _, domain = address.rpartition("@")
    return user, domain


def _join(user: str | None, domain: str | None) -> str:
    return f"{user}@{domain or ''}" if user else domain or ""


def _bytes(value: Any) -> bytes:
    return b"" if value is None else bytes(value)


def publicationRow(publication: Publication) -> dict[str, object]:
    """The ``presentity`` columns of a publication."""
    username, domain = _split(publication.presentity)
    return {
        "username": username,
        "domain": domain,
        "event": publication.event,
        "etag": publication.etag,
        "expires": _expiry(publication.expires),
        "received_time": _instant(publication.receivedTime),
        "body": publication.body,
        "extra_hdrs": publication.extraHeaders,
        "sender": publication.sender,
        "content_type": publication.contentType,
    }


def publicationFromRow(row: Row) -> Publication:
    """A publication from a ``presentity`` row, in `PRESENTITY` column order."""
    (username, domain, event, etag, expires, received, body, extra, sender, ctype) = row
    return Publication(
        presentity=_join(username, domain),
        event=event,
        etag=etag,
        expires=float(expires),
        receivedTime=float(received),
        body=_bytes(body),
        contentType=ctype or "",
        sender=sender,
        extraHeaders=_bytes(extra),
    )


def subscriptionRow(subscription: Subscription) -> dict[str, object]:
    """The ``active_watchers`` columns of a subscription."""
    s = subscription
    return {
        "presentity_uri": s.presentity,
        "watcher_username": s.watcherUsername,
        "watcher_domain": s.watcherDomain,
        "to_user": s.toUser,
        "to_domain": s.toDomain,
        "event": s.event,
        "event_id": s.eventId,
        "to_tag": s.toTag,
        "from_tag": s.fromTag,
        "callid": s.callId,
        "local_cseq": s.localCSeq,
        "remote_cseq": s.remoteCSeq,
        "contact": s.contact,
        "record_route": s.recordRoute,
        "expires": _expiry(s.expires),
        "status": s.status,
        "reason": s.reason,
        "version": s.version,
        "socket_info": s.socketInfo,
        "local_contact": s.localContact,
        "sharing_tag": s.sharingTag,
        "watcher_uri": s.watcherURI,
        "watcher_display_name": s.watcherDisplayName,
        "from_header": s.fromHeader,
        "to_header": s.toHeader,
        "created_time": _instant(s.createdTime),
    }


def subscriptionFromRow(row: Row) -> Subscription:
    """A subscription from an ``active_watchers`` row, in column order."""
    v = dict(zip(ACTIVE_WATCHERS.columns, row, strict=True))
    return Subscription(
        presentity=v["presentity_uri"],
        event=v["event"],
        eventId=v["event_id"] or "",
        callId=v["callid"],
        toTag=v["to_tag"],
        fromTag=v["from_tag"],
        watcherUsername=v["watcher_username"],
        watcherDomain=v["watcher_domain"],
        toUser=v["to_user"],
        toDomain=v["to_domain"],
        localCSeq=v["local_cseq"],
        remoteCSeq=v["remote_cseq"],
        contact=v["contact"],
        recordRoute=v["record_route"] or "",
        expires=float(v["expires"]),
        status=v["status"],
        reason=v["reason"],
        version=v["version"],
        socketInfo=v["socket_info"] or "",
        localContact=v["local_contact"] or "",
        watcherURI=v["watcher_uri"] or "",
        watcherDisplayName=v["watcher_display_name"],
        fromHeader=v["from_header"] or "",
        toHeader=v["to_header"] or "",
        sharingTag=v["sharing_tag"],
        createdTime=float(v["created_time"] or 0),
    )


def subscriptionKeyValues(key: SubscriptionKey) -> dict[str, object]:
    """The key columns of a subscription."""
    callId, toTag, fromTag, event, eventId = key
    return {
        "callid": callId,
        "to_tag": toTag,
        "from_tag": fromTag,
        "event": event,
        "event_id": eventId,
    }


def watcherRow(watcher: Watcher) -> dict[str, object]:
    """The ``watchers`` columns of a watcher."""
    return {
        "presentity_uri": watcher.presentity,
        "watcher_username": watcher.watcherUsername,
        "watcher_domain": watcher.watcherDomain,
        "event": watcher.event,
        "status": watcher.status,
        "reason": watcher.reason,
        "inserted_time": _instant(watcher.insertedTime),
    }


def watcherFromRow(row: Row) -> Watcher:
    """A watcher from a ``watchers`` row, in column order."""
    presentity, username, domain, event, status, reason, inserted = row
    return Watcher(
        presentity=presentity,
        watcherUsername=username,
        watcherDomain=domain,
        event=event,
        status=status,
        reason=reason,
        insertedTime=float(inserted),
    )


def watcherKeyValues(key: tuple[str, str, str, str]) -> dict[str, object]:
    """The key columns of a watcher."""
    return dict(zip(WATCHERS.key, key, strict=True))


def bindingRow(binding: Binding) -> dict[str, object]:
    """The ``location`` columns of a binding."""
    username, domain = _split(binding.aor)
    return {
        "username": username,
        "domain": domain,
        "contact": binding.contact,
        "received": binding.received,
        "path": binding.path,
        "expires": _expiry(binding.expires),
        "q": binding.q,
        "callid": binding.callId,
        "cseq": binding.cseq,
        "user_agent": binding.userAgent,
        "methods": methodBits(binding.methods),
        "method_names": binding.methods,
        "contact_params": binding.params,
    }


def bindingFromRow(row: Row) -> Binding:
    """A binding from a ``location`` row, in column order."""
    v = dict(zip(LOCATION.columns, row, strict=True))
    return Binding(
        aor=_join(v["username"], v["domain"]),
        contact=v["contact"],
        expires=float(v["expires"]),
        q=None if v["q"] is None else float(v["q"]),
        callId=v["callid"],
        cseq=v["cseq"],
        received=v["received"] or "",
        path=v["path"] or "",
        userAgent=v["user_agent"] or "",
        methods=v["method_names"] or "",
        params=v["contact_params"] or "",
    )


def bindingKeyValues(aor: str, contact: str) -> dict[str, object]:
    """The key columns of a binding."""
    username, domain = _split(aor)
    return {"username": username, "domain": domain, "contact": contact}


# -- statements --------------------------------------------------------------

SELECT_PUBLICATIONS: Final = (
    f"{PRESENTITY.select} WHERE username = :username AND domain = :domain"
    " AND event = :event ORDER BY received_time, id"
)
SELECT_PUBLICATION: Final = f"{PRESENTITY.select} WHERE {PRESENTITY.keyMatch}"
UPSERT_PUBLICATION: Final = PRESENTITY.upsert()
DELETE_PUBLICATION: Final = (
    f"DELETE FROM presentity WHERE {PRESENTITY.keyMatch} {PRESENTITY.returning}"
)
EXPIRE_PUBLICATIONS: Final = (
    f"DELETE FROM presentity WHERE expires <= :now {PRESENTITY.returning}"
)

SELECT_SUBSCRIPTION: Final = (
    f"{ACTIVE_WATCHERS.select} WHERE {ACTIVE_WATCHERS.keyMatch}"
)
SELECT_DIALOG: Final = (
    f"{ACTIVE_WATCHERS.select} WHERE callid = :callid AND to_tag = :to_tag"
    " AND from_tag = :from_tag ORDER BY id"
)
SELECT_SUBSCRIPTIONS: Final = (
    f"{ACTIVE_WATCHERS.select} WHERE presentity_uri = :presentity_uri"
    " AND event = :event ORDER BY id"
)
UPSERT_SUBSCRIPTION: Final = ACTIVE_WATCHERS.upsert()
DELETE_SUBSCRIPTION: Final = (
    f"DELETE FROM active_watchers WHERE {ACTIVE_WATCHERS.keyMatch}"
    f" {ACTIVE_WATCHERS.returning}"
)
EXPIRE_SUBSCRIPTIONS: Final = (
    f"DELETE FROM active_watchers WHERE expires <= :now {ACTIVE_WATCHERS.returning}"
)

_DIALOG_ROWS: Final = """
WHERE callid = :callid AND to_tag = :to_tag AND from_tag = :from_tag
    AND EXISTS (
        SELECT 1 FROM active_watchers AS k
        WHERE k.callid = :callid AND k.to_tag = :to_tag AND k.from_tag = :from_tag
            AND k.event = :event AND k.event_id = :event_id
    )
"""

_DIALOG_MAX: Final = """(
    SELECT MAX(d.local_cseq) FROM active_watchers AS d
    WHERE d.callid = :callid AND d.to_tag = :to_tag AND d.from_tag = :from_tag
)"""

#: Two statements in one transaction take the next CSeq of a dialog: the
#: first raises every row of the dialog to the dialog's highest CSeq, the
#: second adds one to each and returns the new values. Each is right however
#: the database evaluates the subquery (SQLite evaluates it again for each
#: row). On PostgreSQL, the first statement locks the rows until the end of
#: the transaction; a concurrent call waits for the lock and then keeps each
#: row's newer value (its subquery may be older, hence the CASE), and its
#: second statement sees the committed values: two calls never return the
#: same CSeq.
NEXT_CSEQ: Final = (
    f"UPDATE active_watchers SET local_cseq = CASE"
    f" WHEN local_cseq >= {_DIALOG_MAX} THEN local_cseq ELSE {_DIALOG_MAX} END"
    f" {_DIALOG_ROWS}",
    f"UPDATE active_watchers SET local_cseq = local_cseq + 1 {_DIALOG_ROWS}"
    " RETURNING local_cseq",
)

CLAIM_NOTIFY: Final = (
    NEXT_CSEQ[0],
    f"UPDATE active_watchers SET local_cseq = local_cseq + 1 {_DIALOG_ROWS}"
    f" {ACTIVE_WATCHERS.returning}",
)

SELECT_WATCHERS: Final = (
    f"{WATCHERS.select} WHERE presentity_uri = :presentity_uri AND event = :event"
    " ORDER BY id"
)
UPSERT_WATCHER: Final = WATCHERS.upsert()
DELETE_WATCHER: Final = f"DELETE FROM watchers WHERE {WATCHERS.keyMatch}"

SELECT_BINDINGS: Final = (
    f"{LOCATION.select} WHERE username = :username AND domain = :domain ORDER BY id"
)
UPSERT_BINDING: Final = LOCATION.upsert()
DELETE_BINDING: Final = f"DELETE FROM location WHERE {LOCATION.keyMatch}"
EXPIRE_BINDINGS: Final = (
    f"DELETE FROM location WHERE expires <= :now {LOCATION.returning}"
)

SELECT_ALL_PUBLICATIONS: Final = f"{PRESENTITY.select} ORDER BY received_time, id"
SELECT_ALL_SUBSCRIPTIONS: Final = f"{ACTIVE_WATCHERS.select} ORDER BY id"
SELECT_ALL_WATCHERS: Final = f"{WATCHERS.select} ORDER BY id"
SELECT_ALL_BINDINGS: Final = f"{LOCATION.select} ORDER BY id"

SELECT_MARKER: Final = "SELECT table_version FROM version WHERE table_name = :name"
UPSERT_MARKER: Final = (
    "INSERT INTO version (table_name, table_version) VALUES (:name, :value)"
    " ON CONFLICT (table_name) DO UPDATE SET table_version = excluded.table_version"
)

SELECT_SCHEMA_VERSION: Final = (
    "SELECT table_version FROM version WHERE table_name = :table_name"
)


# -- the runner --------------------------------------------------------------


class SQLRunner(Protocol):
    """A connection pool, as the SQL store uses it.

    Statements come with ``:name`` placeholders; the runner converts them with
    `compileStatement` to its driver's paramstyle.
    """

    #: The exceptions of the driver and pool that mean a statement failed;
    #: the store turns them into `StorageError`.
    errors: tuple[type[BaseException], ...]

    def runQuery(self, sql: str, values: Values) -> Deferred[list[Row]]:
        """Run one statement, in a transaction of its own, and fetch its rows."""

    def runOperation(self, sql: str, values: Values) -> Deferred[None]:
        """Run one statement that returns no rows, in a transaction of its own."""

    def runInteraction(
        self, statements: Sequence[tuple[str, Values]], fetch: bool = False
    ) -> Deferred[list[Row]]:
        """Run statements in one transaction.

        Returns:
            The rows of the last statement when ``fetch`` is true (it must
            return rows then), otherwise an empty list.
        """

    def isDisconnection(self, error: BaseException) -> bool:
        """Whether an error means that the database is out of reach."""


class Snapshot(NamedTuple):
    """Every row of the store."""

    publications: list[Publication]
    subscriptions: list[Subscription]
    watchers: list[Watcher]
    bindings: list[Binding]


def _chunks(rows: Sequence[T], size: int = BATCH_ROWS) -> Iterable[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _upserts(
    table: _Table, rows: Iterable[dict[str, object]]
) -> list[tuple[str, Values]]:
    """Multi-row upserts of rows, the last of each key winning."""
    unique = list({tuple(r[c] for c in table.key): r for r in rows}.values())
    statements: list[tuple[str, Values]] = []
    for chunk in _chunks(unique):
        values = {
            f"{column}_{i}": row[column]
            for i, row in enumerate(chunk)
            for column in table.columns
        }
        statements.append((table.upsert(len(chunk)), values))
    return statements


def _deletes(
    table: _Table, keys: Iterable[dict[str, object]]
) -> list[tuple[str, Values]]:
    """Multi-row deletes by key."""
    unique = list({tuple(k[c] for c in table.key): k for k in keys}.values())
    statements: list[tuple[str, Values]] = []
    for chunk in _chunks(unique):
        values = {
            f"{column}_{i}": key[column]
            for i, key in enumerate(chunk)
            for column in table.key
        }
        statements.append((table.deleteMany(len(chunk)), values))
    return statements


# -- the store ---------------------------------------------------------------


@implementer(IPresenceStore)
class SQLStore:
    """`IPresenceStore` over an SQL database.

    Each method is one statement, so one round trip to the database, except
    ``putPublication`` with ``replacing`` (a delete and an insert) and
    ``nextCSeq`` (two updates), each in one transaction, and the bulk
    `applyBatch` (one transaction) and `loadAll` (four queries).

    Attributes:
        runner: the connection pool; ``None`` while the store is stopped.
        ready: whether the last call reached the database.
    """

    log = Logger()

    def __init__(self, dialect: str, tablesQuery: str) -> None:
        """Make a store that is not started yet.

        Args:
            dialect: the name of the schema file, ``sqlite`` or ``postgres``.
            tablesQuery: a statement listing the names of the tables there are.
        """
        self.dialect = dialect
        self._tablesQuery = tablesQuery
        self.runner: SQLRunner | None = None
        self.ready = False

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
            if runner.isDisconnection(e):
                self._disconnected(e)
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

    async def ensureSchema(self, create: bool) -> None:
        """Check the database's schema, creating what is missing if allowed.

        Args:
            create: whether to create missing tables (and the version row).

        Raises:
            StorageError: the schema is of an unknown version, or is missing
                and may not be created.
        """
        tables = {row[0] for row in await self._query(self._tablesQuery, {})}
        version = None
        if "version" in tables:
            rows = await self._query(SELECT_SCHEMA_VERSION, {"table_name": SCHEMA_NAME})
            version = int(rows[0][0]) if rows else None
        if version is not None:
            checkSchemaVersion(version)
        missing = [t for t in TABLES if t not in tables]
        if version is not None and not missing:
            return
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

    # -- publications ---------------------------------------------------------

    async def publications(self, presentity: str, event: str) -> list[Publication]:
        """See `IPresenceStore.publications`."""
        username, domain = _split(presentity)
        rows = await self._query(
            SELECT_PUBLICATIONS,
            {"username": username, "domain": domain, "event": event},
        )
        return [publicationFromRow(row) for row in rows]

    async def publication(
        self, presentity: str, event: str, etag: str
    ) -> Publication | None:
        """See `IPresenceStore.publication`."""
        rows = await self._query(
            SELECT_PUBLICATION, _publicationKey(presentity, event, etag)
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
        old = _publicationKey(publication.presentity, publication.event, replacing)
        await self._transaction(
            [
                (f"DELETE FROM presentity WHERE {PRESENTITY.keyMatch}", old),
                (UPSERT_PUBLICATION, row),
            ]
        )

    async def removePublication(
        self, presentity: str, event: str, etag: str
    ) -> Publication | None:
        """See `IPresenceStore.removePublication`."""
        rows = await self._query(
            DELETE_PUBLICATION, _publicationKey(presentity, event, etag)
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
        callId, toTag, fromTag = dialog
        rows = await self._query(
            SELECT_DIALOG, {"callid": callId, "to_tag": toTag, "from_tag": fromTag}
        )
        return [subscriptionFromRow(row) for row in rows]

    async def subscriptions(self, presentity: str, event: str) -> list[Subscription]:
        """See `IPresenceStore.subscriptions`."""
        rows = await self._query(
            SELECT_SUBSCRIPTIONS, {"presentity_uri": presentity, "event": event}
        )
        return [subscriptionFromRow(row) for row in rows]

    async def putSubscription(self, subscription: Subscription) -> None:
        """See `IPresenceStore.putSubscription`."""
        await self._execute(UPSERT_SUBSCRIPTION, subscriptionRow(subscription))

    async def removeSubscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.removeSubscription`."""
        rows = await self._query(DELETE_SUBSCRIPTION, subscriptionKeyValues(key))
        return subscriptionFromRow(rows[0]) if rows else None

    async def expiredSubscriptions(self, now: float) -> list[Subscription]:
        """See `IPresenceStore.expiredSubscriptions`.

        One ``DELETE ... RETURNING``, as for publications.
        """
        rows = await self._query(EXPIRE_SUBSCRIPTIONS, {"now": now})
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
        values = subscriptionKeyValues(key)
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
        username, domain = _split(aor)
        rows = await self._query(
            SELECT_BINDINGS, {"username": username, "domain": domain}
        )
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
            *_deletes(
                PRESENTITY,
                (_publicationKey(*key) for key in batch.publicationDeletes),
            ),
            *_deletes(
                ACTIVE_WATCHERS,
                (subscriptionKeyValues(key) for key in batch.subscriptionDeletes),
            ),
            *_deletes(WATCHERS, (watcherKeyValues(k) for k in batch.watcherDeletes)),
            *_deletes(
                LOCATION, (bindingKeyValues(*key) for key in batch.bindingDeletes)
            ),
            *_upserts(PRESENTITY, map(publicationRow, batch.publications)),
            *_upserts(ACTIVE_WATCHERS, map(subscriptionRow, batch.subscriptions)),
            *_upserts(WATCHERS, map(watcherRow, batch.watchers)),
            *_upserts(LOCATION, map(bindingRow, batch.bindings)),
        ]
        await self._transaction(statements)


def _publicationKey(presentity: str, event: str, etag: str) -> dict[str, object]:
    username, domain = _split(presentity)
    return {"username": username, "domain": domain, "event": event, "etag": etag}
