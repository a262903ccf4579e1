"""The SQL stores' statements: the tables, the SQL text and its placeholders.

Statements are written once, with ``:name`` placeholders, and rendered in a
driver's paramstyle by `compileStatement`, the one place that does it. Values
are never formatted into SQL; only column and table names, which are
constants of this module, are joined into the statements built at import
time.

Both databases run the same statements: ``INSERT ... ON CONFLICT ... DO
UPDATE`` for puts and ``... RETURNING`` for removals, expiry sweeps and
`NEXT_CSEQ`, so that each of those is one statement, atomic on its own
(SQLite 3.35 and PostgreSQL 10 understand both). The tables are OpenSIPS's,
created by the files of ``presence/storage/schema``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Final, TypeVar

T = TypeVar("T")

#: Values for the ``:name`` placeholders of a statement.
Values = Mapping[str, object]

#: The version of the schema in ``schema/*.sql``, kept in the ``version`` table
#: under `SCHEMA_NAME`. Version 2 added the ``subscriber`` table.
SCHEMA_VERSION: Final = 2

#: The older versions a database may be upgraded from: running the schema
#: file creates what they lack, then the version row is raised.
UPGRADABLE_VERSIONS: Final = frozenset({1})

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
    "subscriber",
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


# -- the schema files --------------------------------------------------------


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


# -- the tables --------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A table's stored columns (all but ``id``) and its unique key.

    Attributes:
        name: the table's name.
        columns: the columns the store reads and writes, in the order of the
            rows that `select` and `returning` give.
        key: the columns of the table's unique key.
    """

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]

    @property
    def select(self) -> str:
        """A select of every stored column, with no condition yet."""
        return f"SELECT {', '.join(self.columns)} FROM {self.name}"

    @property
    def returning(self) -> str:
        """The ``RETURNING`` clause of every stored column."""
        return f"RETURNING {', '.join(self.columns)}"

    @property
    def keyMatch(self) -> str:
        """The condition of one key, with the key columns as placeholders."""
        return " AND ".join(f"{c} = :{c}" for c in self.key)

    def keyOf(self, row: Sequence[object]) -> tuple[object, ...]:
        """The key columns of a row read in `columns` order."""
        return tuple(row[self.columns.index(c)] for c in self.key)

    def upsert(self, rows: int | None = None) -> str:
        """An insert that updates the rows already there.

        Args:
            rows: ``None`` for one row whose placeholders are the column names;
                otherwise how many rows, with placeholders ``column_<row>``.

        Returns:
            The statement.
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
        """A delete of the rows with ``rows`` keys.

        Args:
            rows: how many keys, with placeholders ``column_<row>``.

        Returns:
            The statement.
        """
        tuples = ", ".join(
            "(" + ", ".join(f":{c}_{i}" for c in self.key) + ")" for i in range(rows)
        )
        return f"DELETE FROM {self.name} WHERE ({', '.join(self.key)}) IN ({tuples})"


PRESENTITY: Final = Table(
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

ACTIVE_WATCHERS: Final = Table(
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

WATCHERS: Final = Table(
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

LOCATION: Final = Table(
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


# -- the statements ----------------------------------------------------------

SELECT_PUBLICATIONS: Final = (
    f"{PRESENTITY.select} WHERE username = :username AND domain = :domain"
    " AND event = :event ORDER BY received_time, id"
)
SELECT_PUBLICATION: Final = f"{PRESENTITY.select} WHERE {PRESENTITY.keyMatch}"
UPSERT_PUBLICATION: Final = PRESENTITY.upsert()
#: The delete of the publication a new one replaces, without its row.
DELETE_REPLACED_PUBLICATION: Final = (
    f"DELETE FROM presentity WHERE {PRESENTITY.keyMatch}"
)
DELETE_PUBLICATION: Final = f"{DELETE_REPLACED_PUBLICATION} {PRESENTITY.returning}"
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

#: `NEXT_CSEQ`, the second statement returning the dialog's rows.
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


@cache
def pageQuery(table: Table, filters: tuple[str, ...], after: bool) -> str:
    """A page of a listing: keyset paging on the table's unique key.

    ``WHERE (key columns) > (:after_<column>, ...) ORDER BY key LIMIT
    :limit``: a range of the unique key's index, however far into the table
    the page is. Each filter column is a ``column = :column`` condition.

    Args:
        table: `PRESENTITY`, `ACTIVE_WATCHERS` or `WATCHERS`.
        filters: the columns to filter on.
        after: whether the page starts after a key.

    Returns:
        The statement.
    """
    conditions = [f"{column} = :{column}" for column in filters]
    if after:
        key = ", ".join(table.key)
        bound = ", ".join(f":after_{c}" for c in table.key)
        conditions.append(f"({key}) > ({bound})")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"{table.select}{where} ORDER BY {', '.join(table.key)} LIMIT :limit"


#: Rows by table and event, one round trip: ``(table, event, count)``.
COUNT_BY_EVENT: Final = " UNION ALL ".join(
    f"SELECT '{table}', event, COUNT(*) FROM {table} GROUP BY event"
    for table in ("presentity", "active_watchers", "watchers")
)

SELECT_MARKER: Final = "SELECT table_version FROM version WHERE table_name = :name"
UPSERT_MARKER: Final = (
    "INSERT INTO version (table_name, table_version) VALUES (:name, :value)"
    " ON CONFLICT (table_name) DO UPDATE SET table_version = excluded.table_version"
)

SELECT_SCHEMA_VERSION: Final = (
    "SELECT table_version FROM version WHERE table_name = :table_name"
)


# -- batches -----------------------------------------------------------------


def _chunks(rows: Sequence[T], size: int = BATCH_ROWS) -> Iterable[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _byRow(
    table: Table,
    rows: Iterable[Values],
    columns: tuple[str, ...],
    statement: Callable[[int], str],
) -> list[tuple[str, Values]]:
    """Multi-row statements of ``rows``, the last of each key winning.

    Args:
        table: the table of the rows.
        rows: values of the table's columns (at least ``columns``).
        columns: the columns each row gives a placeholder ``column_<row>``.
        statement: the statement for a number of rows.

    Returns:
        The statements, `BATCH_ROWS` rows each, and their values.
    """
    unique = list({tuple(r[c] for c in table.key): r for r in rows}.values())
    statements: list[tuple[str, Values]] = []
    for chunk in _chunks(unique):
        values = {
            f"{column}_{i}": row[column]
            for i, row in enumerate(chunk)
            for column in columns
        }
        statements.append((statement(len(chunk)), values))
    return statements


def batchUpserts(table: Table, rows: Iterable[Values]) -> list[tuple[str, Values]]:
    """Multi-row upserts of rows, the last of each key winning.

    Args:
        table: the table of the rows.
        rows: values of every stored column of ``table``.

    Returns:
        The statements, `BATCH_ROWS` rows each, and their values.
    """
    return _byRow(table, rows, table.columns, table.upsert)


def batchDeletes(table: Table, keys: Iterable[Values]) -> list[tuple[str, Values]]:
    """Multi-row deletes by key.

    Args:
        table: the table of the rows.
        keys: values of the key columns of ``table``.

    Returns:
        The statements, `BATCH_ROWS` keys each, and their values.
    """
    return _byRow(table, keys, table.key, table.deleteMany)


# -- shared mode: several servers on one PostgreSQL --------------------------
#
# Each subscription is owned by the server named in its ``sharing_tag`` (the
# one that received its last SUBSCRIBE); ``NULL`` (a row this server did not
# write) is anybody's. Only the owner claims a NOTIFY's CSeq and expires the
# row, so each NOTIFY and each expiry comes from one server. PostgreSQL only.

#: The rows a server may notify and expire.
_OWNED: Final = "(sharing_tag = :owner OR sharing_tag IS NULL)"


def _ifNewer(column: str, strictly: bool = False) -> str:
    """``column`` written only by the row of a SUBSCRIBE at least as new."""
    than = ">" if strictly else ">="
    return (
        f"{column} = CASE WHEN excluded.remote_cseq {than} active_watchers.remote_cseq"
        f" THEN excluded.{column} ELSE active_watchers.{column} END"
    )


#: `UPSERT_SUBSCRIPTION` that never lowers the CSeq or the body version: a
#: refresh read its row before the owner's last NOTIFY took the next CSeq.
#: And that never undoes a newer SUBSCRIBE: a row written back by someone who
#: read it before a refresh (a re-authorisation) keeps the refresh's expiry,
#: contact and socket; the ownership (``sharing_tag``) moves only with a
#: newer SUBSCRIBE (a higher ``remote_cseq``: what a refresh at another server
#: writes), so a write-back can undo neither a refresh's move nor a take-over.
UPSERT_SUBSCRIPTION_SHARED: Final = (
    UPSERT_SUBSCRIPTION.replace(
        "local_cseq = excluded.local_cseq",
        "local_cseq = GREATEST(active_watchers.local_cseq, excluded.local_cseq)",
    )
    .replace(
        " version = excluded.version",
        " version = GREATEST(active_watchers.version, excluded.version)",
    )
    .replace(
        "remote_cseq = excluded.remote_cseq",
        "remote_cseq = GREATEST(active_watchers.remote_cseq, excluded.remote_cseq)",
    )
    .replace("sharing_tag = excluded.sharing_tag", _ifNewer("sharing_tag", True))
    .replace(" contact = excluded.contact", " " + _ifNewer("contact"))
    .replace(" expires = excluded.expires", " " + _ifNewer("expires"))
    .replace("socket_info = excluded.socket_info", _ifNewer("socket_info"))
    .replace(" local_contact = excluded.local_contact", " " + _ifNewer("local_contact"))
)
assert UPSERT_SUBSCRIPTION_SHARED.count("GREATEST") == 3
assert UPSERT_SUBSCRIPTION_SHARED.count("CASE WHEN") == 5

#: The owner's claim of a NOTIFY's CSeq, one statement: the subscription's
#: CSeq becomes one more than the highest of its dialog, and its row is
#: returned, only when it is this server's (the fence that keeps a server
#: declared dead from sending for what was taken over). One UPDATE of one
#: row: a concurrent claim waits for the row lock, then adds one to the value
#: the first committed. (Two subscriptions of one dialog claimed at once by
#: two servers could read the same dialog maximum; the notifier queues a
#: dialog's NOTIFYs, so that takes two owners in one dialog.)
CLAIM_OWNED: Final = (
    f"UPDATE active_watchers SET local_cseq = GREATEST(local_cseq, {_DIALOG_MAX}) + 1"
    f" WHERE {ACTIVE_WATCHERS.keyMatch} AND {_OWNED}"
    f" {ACTIVE_WATCHERS.returning}"
)

#: How many subscriptions one `CLAIM_OWNED_MANY` claims: a fan-out to more
#: takes one statement per this many, and sends each batch's NOTIFYs while
#: the next is claimed.
CLAIM_ROWS: Final = 500

_CLAIM_KEY_ARRAYS: Final = ", ".join(
    f"CAST(:{c}s AS text[])" for c in ACTIVE_WATCHERS.key
)

#: `CLAIM_OWNED` of many subscriptions in one statement: the keys come as
#: one array per key column (``:callids``, ``:to_tags``, ``:from_tags``,
#: ``:events``, ``:event_ids``), and the rows claimed are returned; a key
#: that is gone or not this server's (the fence) returns nothing. Each row's
#: dialog maximum is read in the statement's snapshot, so the keys must be
#: of distinct dialogs (two of one dialog would get the same CSeq): the
#: notifier claims one subscription per dialog and only for a dialog with no
#: NOTIFY outstanding. A take-over committed meanwhile makes the statement
#: wait on the row and re-check the fence on its new version.
CLAIM_OWNED_MANY: Final = (
    "UPDATE active_watchers AS a SET local_cseq = GREATEST(a.local_cseq, ("
    "SELECT MAX(d.local_cseq) FROM active_watchers AS d WHERE d.callid = a.callid"
    " AND d.to_tag = a.to_tag AND d.from_tag = a.from_tag)) + 1"
    f" FROM unnest({_CLAIM_KEY_ARRAYS}) AS k ({', '.join(ACTIVE_WATCHERS.key)})"
    " WHERE "
    + " AND ".join(f"a.{c} = k.{c}" for c in ACTIVE_WATCHERS.key)
    + " AND (a.sharing_tag = :owner OR a.sharing_tag IS NULL)"
    " RETURNING " + ", ".join(f"a.{c}" for c in ACTIVE_WATCHERS.columns)
)

#: The owner's expiry sweep of subscriptions.
EXPIRE_OWNED_SUBSCRIPTIONS: Final = (
    f"DELETE FROM active_watchers WHERE expires <= :now AND {_OWNED}"
    f" {ACTIVE_WATCHERS.returning}"
)

#: The body version of one subscription, never lowered, nothing else touched.
UPDATE_VERSION: Final = (
    "UPDATE active_watchers SET version = GREATEST(version, :version)"
    f" WHERE {ACTIVE_WATCHERS.keyMatch}"
)

#: The subscriptions a server owns (after LISTEN is re-established).
SELECT_OWNED_SUBSCRIPTIONS: Final = (
    f"{ACTIVE_WATCHERS.select} WHERE sharing_tag = :owner ORDER BY id"
)

#: The cluster's members: one heartbeat row each.
CREATE_CLUSTER: Final = (
    "CREATE TABLE IF NOT EXISTS cluster ("
    " server_id VARCHAR(64) PRIMARY KEY,"
    " address VARCHAR(255) NOT NULL DEFAULT '',"
    " last_seen DOUBLE PRECISION NOT NULL,"
    " started DOUBLE PRECISION NOT NULL)"
)
CREATE_SHARING_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS active_watchers_sharing_tag"
    " ON active_watchers (sharing_tag)"
)

#: One heartbeat: the row written, the previous ``last_seen`` returned
#: (``NULL`` for a new row), so that a server knows it was silent too long,
#: and how many other members beat since ``:cutoff`` (alive).
HEARTBEAT: Final = (
    "WITH previous AS (SELECT last_seen FROM cluster WHERE server_id = :server_id)"
    " INSERT INTO cluster (server_id, address, last_seen, started)"
    " VALUES (:server_id, :address, :now, :now)"
    " ON CONFLICT (server_id) DO UPDATE SET address = excluded.address,"
    " last_seen = excluded.last_seen"
    " RETURNING (SELECT last_seen FROM previous),"
    " (SELECT count(*) FROM cluster WHERE last_seen >= :cutoff"
    " AND server_id <> :server_id)"
)

#: The members and when each was last seen.
SELECT_CLUSTER: Final = "SELECT server_id, address, last_seen FROM cluster ORDER BY 1"

#: A clean stop: the member leaves (its subscriptions are taken over at once).
LEAVE_CLUSTER: Final = "UPDATE cluster SET last_seen = 0 WHERE server_id = :server_id"

#: The take-over: every subscription of a member silent since ``:cutoff``
#: becomes ``:owner``'s. One statement: when two survivors run it at once,
#: PostgreSQL makes the second wait on each row the first updated and then
#: re-checks its condition, which no longer holds, so each row goes to one
#: survivor.
#:
#: A ``sharing_tag`` with no ``cluster`` row at all (a server that never beat:
#: a row written by another program or an older version, or the table
#: dropped) is given one, last seen ``:now``, by the same statement: it is
#: then dead ``node_timeout`` after a live server first saw it, and taken
#: over like any other (the row inserted is not seen by this statement's
#: update, which reads the snapshot before it).
#: The distinct tags are found by walking the ``sharing_tag`` index from
#: one tag to the next (a recursive query: one index probe per distinct
#: tag), not by reading every row at each heartbeat.
TAKE_OVER: Final = (
    "WITH RECURSIVE tags (tag) AS ("
    " SELECT min(sharing_tag) FROM active_watchers"
    " UNION ALL SELECT (SELECT min(sharing_tag) FROM active_watchers"
    " WHERE sharing_tag > tags.tag) FROM tags WHERE tags.tag IS NOT NULL),"
    " adopted AS (INSERT INTO cluster (server_id, address, last_seen, started)"
    " SELECT tag, '', :now, :now FROM tags WHERE tag IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM cluster WHERE cluster.server_id = tags.tag)"
    " ON CONFLICT (server_id) DO NOTHING RETURNING 1)"
    " UPDATE active_watchers SET sharing_tag = :owner WHERE sharing_tag IN ("
    " SELECT server_id FROM cluster WHERE last_seen < :cutoff"
    " AND server_id <> :owner)"
    f" {ACTIVE_WATCHERS.returning}"
)

#: A PostgreSQL NOTIFY on a member's channel.
SIGNAL: Final = "SELECT pg_notify(:channel, :payload)"

#: `CLAIM_OWNED` and the presentity's publications, in one statement and
#: one round trip: the subscription's row comes back once per publication
#: (with ``NULL`` publication columns when there is none).
CLAIM_WITH_PUBLICATIONS: Final = (
    f"WITH claimed AS ({CLAIM_OWNED})"
    f" SELECT claimed.*, {', '.join('p.' + c for c in PRESENTITY.columns)}"
    " FROM claimed LEFT JOIN presentity AS p ON p.username = :username"
    " AND p.domain = :domain AND p.event = claimed.event"
    " ORDER BY p.received_time, p.id"
)

_OTHER_SUBSCRIPTION: Final = (
    "SELECT 1 FROM active_watchers WHERE presentity_uri = :presentity_uri"
    " AND event = :event AND watcher_username = :watcher_username"
    " AND watcher_domain = :watcher_domain AND NOT (callid = :callid"
    " AND to_tag = :to_tag AND from_tag = :from_tag AND event_id = :event_id)"
)

_WATCHER_UPDATES: Final = ", ".join(
    f"{c} = excluded.{c}" for c in WATCHERS.columns if c not in WATCHERS.key
)

#: The subscriptions of the watcher-information package (``:winfo_event``)
#: to a presentity, ending the tracker's statements.
_WINFO_SUBSCRIPTIONS: Final = (
    f"{ACTIVE_WATCHERS.select} WHERE presentity_uri = :presentity_uri"
    " AND event = :winfo_event ORDER BY id"
)

#: The watcher tracker's work for a watcher that came or stays, in one round
#: trip: its ``watchers`` row written, and the winfo subscriptions read.
TRACK_WATCHER: Final = (
    f"WITH written AS ({WATCHERS.upsert()} RETURNING 1) {_WINFO_SUBSCRIPTIONS}"
)

#: For a watcher whose subscription ended: its row goes unless it has another
#: subscription to the presentity (then the row is written), and the winfo
#: subscriptions are read, in one round trip. ``:callid`` ... name the ended
#: subscription.
TRACK_ENDED_WATCHER: Final = (
    f"WITH other AS ({_OTHER_SUBSCRIPTION}),"
    f" gone AS (DELETE FROM watchers WHERE {WATCHERS.keyMatch}"
    " AND NOT EXISTS (SELECT 1 FROM other)),"
    f" kept AS (INSERT INTO watchers ({', '.join(WATCHERS.columns)})"
    f" SELECT {', '.join(':' + c for c in WATCHERS.columns)}"
    " WHERE EXISTS (SELECT 1 FROM other)"
    f" ON CONFLICT ({', '.join(WATCHERS.key)}) DO UPDATE SET {_WATCHER_UPDATES})"
    f" {_WINFO_SUBSCRIPTIONS}"
)

#: A subscription removed and the presentity's publications, in one round
#: trip (the final NOTIFY of an un-SUBSCRIBE carries the state).
REMOVE_WITH_PUBLICATIONS: Final = (
    "WITH removed AS ("
    f" DELETE FROM active_watchers WHERE {ACTIVE_WATCHERS.keyMatch}"
    f" {ACTIVE_WATCHERS.returning})"
    f" SELECT removed.*, {', '.join('p.' + c for c in PRESENTITY.columns)}"
    " FROM removed LEFT JOIN presentity AS p ON p.username = :username"
    " AND p.domain = :domain AND p.event = removed.event"
    " ORDER BY p.received_time, p.id"
)

#: A new subscription written and the presentity's publications read, in
#: one round trip: what an initial SUBSCRIBE and its first NOTIFY need (the
#: row is written with the first NOTIFY's CSeq already taken). The write is
#: committed before the read begins (``BEGIN; ...; COMMIT;`` inside the one
#: query): a PUBLISH at another server either sees the new subscription (and
#: signals this one) or committed before the read, which then sees it. Read
#: in the write's own snapshot, both could miss each other.
PUT_WITH_PUBLICATIONS: Final = (
    f"BEGIN; {UPSERT_SUBSCRIPTION_SHARED}; COMMIT;"
    f" SELECT {', '.join(PRESENTITY.columns)} FROM presentity"
    " WHERE username = :username AND domain = :domain AND event = :event"
    " ORDER BY received_time, id"
)
