"""The credentials digest authentication checks: OpenSIPS's ``subscriber`` table.

`ICredentialStore` is the one question authentication asks of storage: the
credentials of a user in a domain. Three stores answer it:

- `MemoryCredentialStore`, for the memory mode and tests, provisioned by
  `MemoryCredentialStore.put`;
- `SQLCredentialStore`, which reads the ``subscriber`` table of an SQL store
  (SQLite or PostgreSQL) at each call, and provisions it for
  ``presence-ctl user``;
- `CachingCredentialStore`, a few seconds' memory in front of another: the
  server reads credentials from the database directly, in cache and in
  shared mode alike (the cache of presence state never holds them), and a
  removed user or a changed password takes effect when the entry expires.

The memory store and the cache also answer ``peek(username, domain)`` at
once, without a coroutine: the credentials, ``None`` for an unknown user,
or (the cache, for an answer not kept or expired) `UNKNOWN`, which sends
the authenticator to `ICredentialStore.credentials`. It is not part of the
interface: a store without it is asked through its coroutine.

Rows are OpenSIPS's (``username``, ``domain``, ``password``, ``ha1``,
``ha1_sha256``, ``ha1_sha512t256``), so that a table provisioned by
OpenSIPS's tools serves here, and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from presence.storage.statements import Table

#: The ``subscriber`` table as this server reads and writes it.
SUBSCRIBER: Final = Table(
    "subscriber",
    ("username", "domain", "password", "ha1", "ha1_sha256", "ha1_sha512t256"),
    ("username", "domain"),
)

SELECT_CREDENTIALS: Final = f"{SUBSCRIBER.select} WHERE {SUBSCRIBER.keyMatch}"
UPSERT_CREDENTIALS: Final = SUBSCRIBER.upsert()
DELETE_CREDENTIALS: Final = (
    f"DELETE FROM subscriber WHERE {SUBSCRIBER.keyMatch} RETURNING username"
)
SELECT_ALL_CREDENTIALS: Final = f"{SUBSCRIBER.select} ORDER BY domain, username"
SELECT_DOMAIN_CREDENTIALS: Final = (
    f"{SUBSCRIBER.select} WHERE domain = :domain ORDER BY username"
)

#: Seconds `CachingCredentialStore` keeps an answer by default: a removed
#: user or a changed password takes effect within this (under 5 s).
CREDENTIALS_TTL: Final = 3.0

#: How many answers `CachingCredentialStore` keeps by default.
CREDENTIALS_CACHE_LIMIT: Final = 10_000


class _Unknown:
    """The type of `UNKNOWN`."""

    def __repr__(self) -> str:
        return "UNKNOWN"


#: What a store's ``peek`` answers when it cannot say at once: ask
#: `ICredentialStore.credentials`.
UNKNOWN: Final = _Unknown()


@dataclass(frozen=True)
class Credentials:
    """One row of ``subscriber``: what a user's digest responses are checked with.

    Attributes:
        username: the user, as the ``username`` of the Authorization header.
        domain: the domain of the user's address of record.
        password: the clear password, ``""`` when only hashes are kept; used
            for an algorithm only when its hash is empty.
        ha1: MD5(username:realm:password), hexadecimal, or ``""``.
        ha1Sha256: SHA-256(username:realm:password), or ``""``.
        ha1Sha512t256: SHA-512/256(username:realm:password), or ``""``.
    """

    username: str
    domain: str
    password: str = ""
    ha1: str = ""
    ha1Sha256: str = ""
    ha1Sha512t256: str = ""

    def __repr__(self) -> str:
        """Name the user, never the password or the hashes."""
        return f"Credentials({self.username!r}, {self.domain!r})"


def credentialsRow(credentials: Credentials) -> dict[str, object]:
    """The ``subscriber`` row of some credentials."""
    return {
        "username": credentials.username,
        "domain": credentials.domain,
        "password": credentials.password,
        "ha1": credentials.ha1,
        "ha1_sha256": credentials.ha1Sha256,
        "ha1_sha512t256": credentials.ha1Sha512t256,
    }


def credentialsFromRow(row: Any) -> Credentials:
    """Credentials from a row of `SUBSCRIBER.columns <SUBSCRIBER>`.

    A column OpenSIPS left NULL reads as ``""``.
    """
    username, domain, password, ha1, ha1Sha256, ha1Sha512t256 = row
    return Credentials(
        username=username,
        domain=domain,
        password=password or "",
        ha1=ha1 or "",
        ha1Sha256=ha1Sha256 or "",
        ha1Sha512t256=ha1Sha512t256 or "",
    )


class ICredentialStore(Interface):
    """Where digest authentication finds a user's credentials."""

    async def credentials(username: str, domain: str) -> Credentials | None:
        """The credentials of ``username`` in ``domain``, or ``None``.

        Raises:
            presence.storage.errors.StorageError: the store cannot be read.
        """


@implementer(ICredentialStore)
class MemoryCredentialStore:
    """Credentials in a dictionary: the memory mode's, and the tests'."""

    def __init__(self) -> None:
        """Start with no user."""
        self._rows: dict[tuple[str, str], Credentials] = {}

    async def credentials(self, username: str, domain: str) -> Credentials | None:
        """See `ICredentialStore.credentials`."""
        return self._rows.get((username, domain.lower()))

    def peek(self, username: str, domain: str) -> Credentials | None:
        """`credentials`, at once: the authenticator's way in, without a coroutine."""
        return self._rows.get((username, domain.lower()))

    def put(self, credentials: Credentials) -> None:
        """Add a user, or replace its credentials."""
        self._rows[(credentials.username, credentials.domain.lower())] = credentials

    def remove(self, username: str, domain: str) -> bool:
        """Remove a user; whether there was one."""
        return self._rows.pop((username, domain.lower()), None) is not None

    def all(self) -> list[Credentials]:
        """Every user, by domain and name."""
        return sorted(self._rows.values(), key=lambda c: (c.domain, c.username))


@implementer(ICredentialStore)
class SQLCredentialStore:
    """The ``subscriber`` table of an SQL store, read at every call.

    Statements run through the store's own runner and error handling, so a
    database out of reach raises `StorageError
    <presence.storage.errors.StorageError>` and marks the store not ready,
    as any other call would.
    """

    def __init__(self, database: Any) -> None:
        """Read the table through ``database``.

        Args:
            database: a started `presence.storage.sql.SQLStore`.
        """
        self.database = database

    async def credentials(self, username: str, domain: str) -> Credentials | None:
        """See `ICredentialStore.credentials`."""
        rows = await self.database._query(
            SELECT_CREDENTIALS, {"username": username, "domain": domain.lower()}
        )
        return credentialsFromRow(rows[0]) if rows else None

    async def put(self, credentials: Credentials) -> None:
        """Add a user, or replace its credentials."""
        await self.database._execute(UPSERT_CREDENTIALS, credentialsRow(credentials))

    async def remove(self, username: str, domain: str) -> bool:
        """Remove a user; whether there was one."""
        rows = await self.database._query(
            DELETE_CREDENTIALS, {"username": username, "domain": domain.lower()}
        )
        return bool(rows)

    async def all(self, domain: str | None = None) -> list[Credentials]:
        """Every user, or those of one domain, by domain and name."""
        if domain is None:
            rows = await self.database._query(SELECT_ALL_CREDENTIALS, {})
        else:
            rows = await self.database._query(
                SELECT_DOMAIN_CREDENTIALS, {"domain": domain.lower()}
            )
        return [credentialsFromRow(row) for row in rows]


@implementer(ICredentialStore)
class CachingCredentialStore:
    """Answers of another credential store, kept for a few seconds.

    Unknown users are kept too (as ``None``), so that requests naming a user
    who does not exist do not each cost a database query. Answers are kept
    `ttl` seconds on the injected clock, and at most `limit` of them (the
    oldest go first). A failed read is not kept: it raises again next time.

    Attributes:
        backend: the store asked when the answer is not kept.
        ttl: seconds an answer is kept.
        limit: how many answers are kept at most.
        hits: answers given from memory.
        misses: answers asked of the backend.
    """

    def __init__(
        self,
        backend: ICredentialStore,
        clock: IReactorTime,
        ttl: float = CREDENTIALS_TTL,
        limit: int = CREDENTIALS_CACHE_LIMIT,
    ) -> None:
        """Keep the answers of ``backend`` for ``ttl`` seconds of ``clock``."""
        self.backend = backend
        self.clock = clock
        self.ttl = ttl
        self.limit = limit
        self._answers: dict[tuple[str, str], tuple[float, Credentials | None]] = {}
        self.hits = 0
        self.misses = 0

    async def credentials(self, username: str, domain: str) -> Credentials | None:
        """See `ICredentialStore.credentials`."""
        key = (username, domain.lower())
        now = self.clock.seconds()
        kept = self._answers.get(key)
        if kept is not None and kept[0] > now:
            self.hits += 1
            return kept[1]
        self.misses += 1
        answer = await self.backend.credentials(username, domain)
        answers = self._answers
        answers.pop(key, None)
        while len(answers) >= self.limit:
            del answers[next(iter(answers))]
        answers[key] = (self.clock.seconds() + self.ttl, answer)
        return answer

    def peek(self, username: str, domain: str) -> Credentials | _Unknown | None:
        """The answer kept and not expired, at once; `UNKNOWN` when none is.

        What `credentials` answers from memory, without a coroutine, for
        the authenticator; on `UNKNOWN` it asks `credentials`, which reads
        the backend.
        """
        kept = self._answers.get((username, domain.lower()))
        if kept is not None and kept[0] > self.clock.seconds():
            self.hits += 1
            return kept[1]
        return UNKNOWN

    def forget(self) -> None:
        """Drop every answer kept."""
        self._answers.clear()
