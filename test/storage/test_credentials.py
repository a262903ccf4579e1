"""Tests for presence.storage.credentials and schema version 2 (the subscriber table).

The same contract runs against memory, SQLite (a temporary file) and
PostgreSQL (a database of the class's own); the stores the stack builds
read the database in cache and in shared mode; the cache in front of the
database lets a change through within 5 seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from presence.config import Config
from presence.stack import buildStack
from presence.storage.credentials import (
    CREDENTIALS_TTL,
    UNKNOWN,
    CachingCredentialStore,
    Credentials,
    ICredentialStore,
    MemoryCredentialStore,
    SQLCredentialStore,
)
from presence.storage.errors import SchemaError, StorageError
from presence.storage.postgres import PostgresStore
from presence.storage.sql import SCHEMA_VERSION
from presence.storage.sqlite import SQLiteStore
from test.support.postgres import NO_PG, PG_DSN, PostgresDatabase, PostgresPerClass

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object

ALICE = Credentials("alice", "example.com", ha1="a" * 32, ha1Sha256="b" * 64)


class CredentialStoreContract(_Base):
    """What every credential store promises; ``store`` provides put and remove."""

    store: Any

    async def put(self, credentials: Credentials) -> None:
        """Provision a user (synchronous for memory)."""
        result = self.store.put(credentials)
        if result is not None:
            await result

    async def remove(self, username: str, domain: str) -> bool:
        """Remove a user."""
        result = self.store.remove(username, domain)
        return bool(await result if not isinstance(result, bool) else result)

    async def test_interface(self) -> None:
        """The store provides ICredentialStore."""
        self.assertTrue(verifyObject(ICredentialStore, self.store))

    async def test_roundTrip(self) -> None:
        """Credentials put come back for the user and domain, every column kept."""
        stored = Credentials("alice", "example.com", "pw", "a" * 32, "b" * 64, "c" * 64)
        await self.put(stored)
        self.assertEqual(await self.store.credentials("alice", "example.com"), stored)

    async def test_unknown(self) -> None:
        """An unknown user, or a known one in another domain, is None."""
        await self.put(ALICE)
        self.assertIsNone(await self.store.credentials("bob", "example.com"))
        self.assertIsNone(await self.store.credentials("alice", "example.org"))
        self.assertIsNone(await self.store.credentials("Alice", "example.com"))

    async def test_domainCaseInsensitive(self) -> None:
        """Domains are compared lower case, as the server writes them."""
        await self.put(ALICE)
        self.assertEqual(await self.store.credentials("alice", "EXAMPLE.com"), ALICE)

    async def test_replaceAndRemove(self) -> None:
        """A put replaces the user's row; remove says whether there was one."""
        await self.put(ALICE)
        changed = Credentials("alice", "example.com", ha1="d" * 32)
        await self.put(changed)
        self.assertEqual(await self.store.credentials("alice", "example.com"), changed)
        self.assertTrue(await self.remove("alice", "example.com"))
        self.assertFalse(await self.remove("alice", "example.com"))
        self.assertIsNone(await self.store.credentials("alice", "example.com"))

    async def test_all(self) -> None:
        """Every user by domain then name (for presence-ctl user list)."""
        for user, domain in [("bob", "b.org"), ("carol", "a.org"), ("alice", "b.org")]:
            await self.put(Credentials(user, domain, ha1="a" * 32))
        result = self.store.all()
        rows = await result if not isinstance(result, list) else result
        self.assertEqual(
            [(c.domain, c.username) for c in rows],
            [("a.org", "carol"), ("b.org", "alice"), ("b.org", "bob")],
        )

    async def test_noSecretsInRepr(self) -> None:
        """Credentials show the user only, never a password or a hash."""
        self.assertEqual(
            repr(Credentials("alice", "example.com", "secret", "a" * 32)),
            "Credentials('alice', 'example.com')",
        )


class MemoryCredentialStoreTests(CredentialStoreContract, TestCase):
    """The memory store keeps the contract."""

    def setUp(self) -> None:
        """An empty store."""
        self.store = MemoryCredentialStore()


class SQLCredentialTests(CredentialStoreContract):
    """What the SQL stores add: OpenSIPS's rows, the schema upgrade, the cache."""

    database: Any

    async def rows(self, sql: str) -> list[Any]:
        """Run a statement through the database's runner."""
        assert self.database.runner is not None
        return list(await self.database.runner.runQuery(sql, {}))

    async def execute(self, *statements: str) -> None:
        """Run statements in one transaction."""
        assert self.database.runner is not None
        await self.database.runner.runInteraction([(s, {}) for s in statements])

    async def test_rowWrittenByOpenSIPS(self) -> None:
        """A row with only some columns (the others at their defaults) reads."""
        await self.execute(
            "INSERT INTO subscriber (username, domain, ha1)"
            f" VALUES ('bob', 'example.com', '{'e' * 32}')"
        )
        self.assertEqual(
            await self.store.credentials("bob", "example.com"),
            Credentials("bob", "example.com", ha1="e" * 32),
        )

    async def test_columns(self) -> None:
        """The row is OpenSIPS's: username, domain and the three hashes."""
        await self.put(Credentials("alice", "example.com", "", "a" * 32, "b" * 64))
        self.assertEqual(
            await self.rows(
                "SELECT username, domain, password, ha1, ha1_sha256, ha1_sha512t256"
                " FROM subscriber"
            ),
            [("alice", "example.com", "", "a" * 32, "b" * 64, "")],
        )

    async def test_upgradeFromVersion1(self) -> None:
        """A version 1 database gets the subscriber table, and version 2.

        Refused without leave to upgrade; upgraded by ``upgrade=True`` (what
        ``presence-ctl db upgrade`` asks) or by ``create`` (``create_tables =
        true``, the default), keeping every other row.
        """
        await self.execute(
            "DROP TABLE subscriber",
            "UPDATE version SET table_version = 1",
            "INSERT INTO location (username, domain, contact, expires, callid,"
            " cseq) VALUES ('alice', 'example.com', 'sip:a@h', 9, 'c', 1)",
        )
        e = await self.assertFailure(
            Deferred.fromCoroutine(self.database.ensureSchema(False)), SchemaError
        )
        self.assertIn("version 1", str(e))
        self.assertIn("presence-ctl db upgrade", str(e))
        self.assertEqual(await self.database.ensureSchema(False, upgrade=True), 1)
        self.assertEqual(await self.database.schemaVersion(), SCHEMA_VERSION)
        self.assertEqual(await self.rows("SELECT COUNT(*) FROM subscriber"), [(0,)])
        self.assertEqual(await self.rows("SELECT COUNT(*) FROM location"), [(1,)])
        self.assertEqual(await self.database.ensureSchema(False), SCHEMA_VERSION)
        await self.execute(
            "DROP TABLE subscriber", "UPDATE version SET table_version = 1"
        )
        self.assertEqual(await self.database.ensureSchema(True), 1)
        self.assertEqual(await self.database.schemaVersion(), SCHEMA_VERSION)

    async def test_cacheLetsChangesThroughWithin5Seconds(self) -> None:
        """A changed password or a removed user takes effect within 5 s.

        The cache keeps each answer CREDENTIALS_TTL seconds of its clock.
        """
        self.assertLess(CREDENTIALS_TTL, 5)
        clock = Clock()
        cached = CachingCredentialStore(self.store, clock)
        await self.put(ALICE)
        self.assertEqual(await cached.credentials("alice", "example.com"), ALICE)
        changed = Credentials("alice", "example.com", ha1="f" * 32)
        await self.put(changed)
        self.assertEqual(await cached.credentials("alice", "example.com"), ALICE)
        clock.advance(CREDENTIALS_TTL)
        self.assertEqual(await cached.credentials("alice", "example.com"), changed)
        await self.remove("alice", "example.com")
        clock.advance(4.99)
        self.assertIsNone(await cached.credentials("alice", "example.com"))

    async def test_unreachable(self) -> None:
        """A stopped database raises StorageError, which the cache does not keep."""
        cached = CachingCredentialStore(self.store, Clock())
        await self.database.stop()
        for _ in range(2):
            await self.assertFailure(
                Deferred.fromCoroutine(cached.credentials("alice", "example.com")),
                StorageError,
            )
        self.assertEqual(cached.misses, 2)


class SQLiteCredentialTests(SQLCredentialTests, TestCase):
    """The subscriber table in SQLite."""

    timeout = 10

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """A new database in a temporary file."""
        self.database = SQLiteStore(self.mktemp() + ".sqlite", reactor=reactor)
        await self.database.start()
        self.addCleanup(self.database.stop)
        await self.database.ensureSchema(create=True)
        self.store = SQLCredentialStore(self.database)


class PostgresCredentialTests(PostgresPerClass, SQLCredentialTests, TestCase):
    """The subscriber table in PostgreSQL."""

    timeout = 20

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """The class's database with the schema and no user."""
        self.database = PostgresStore(self.pg.dsn, reactor=reactor, connections=2)
        await self.database.start()
        self.addCleanup(self.database.stop)
        await self.database.ensureSchema(create=True)
        await self.execute("DELETE FROM subscriber", "DELETE FROM location")
        self.store = SQLCredentialStore(self.database)


class CachingCredentialStoreTests(SynchronousTestCase):
    """The cache in front of a credential store, on a fake clock."""

    def setUp(self) -> None:
        """A memory store behind a cache."""
        self.clock = Clock()
        self.backend = MemoryCredentialStore()
        self.cache = CachingCredentialStore(self.backend, self.clock, ttl=3, limit=3)

    def lookup(self, username: str) -> Credentials | None:
        """Ask the cache for a user of example.com."""
        result: Credentials | None = self.successResultOf(
            Deferred.fromCoroutine(self.cache.credentials(username, "example.com"))
        )
        return result

    def test_interface(self) -> None:
        """The cache provides ICredentialStore."""
        self.assertTrue(verifyObject(ICredentialStore, self.cache))

    def test_unknownKept(self) -> None:
        """An unknown user is remembered too: one backend read per TTL."""
        for _ in range(5):
            self.assertIsNone(self.lookup("nobody"))
        self.assertEqual((self.cache.misses, self.cache.hits), (1, 4))
        self.backend.put(Credentials("nobody", "example.com", ha1="a" * 32))
        self.assertIsNone(self.lookup("nobody"))
        self.clock.advance(3)
        self.assertIsNotNone(self.lookup("nobody"))

    def test_bounded(self) -> None:
        """At most ``limit`` answers; the oldest go first."""
        for user in ("a", "b", "c", "d"):
            self.lookup(user)
        self.assertEqual(len(self.cache._answers), 3)
        self.lookup("d")
        self.lookup("a")
        self.assertEqual(self.cache.misses, 5)

    def test_forget(self) -> None:
        """The cache forgets every answer when told to."""
        self.lookup("a")
        self.cache.forget()
        self.lookup("a")
        self.assertEqual(self.cache.misses, 2)

    def test_peek(self) -> None:
        """``peek`` answers at once what is kept and fresh, else UNKNOWN.

        It never reads the backend, and lets a change through exactly when
        `credentials` does: a kept answer is given until its TTL is over.
        """
        self.assertIs(self.cache.peek("alice", "example.com"), UNKNOWN)
        self.assertEqual(self.cache.misses, 0)
        self.backend.put(ALICE)
        self.assertEqual(self.lookup("alice"), ALICE)
        self.assertEqual(self.cache.peek("alice", "EXAMPLE.com"), ALICE)
        self.backend.remove("alice", "example.com")
        self.clock.advance(2.99)
        self.assertEqual(self.cache.peek("alice", "example.com"), ALICE)
        self.clock.advance(0.01)
        self.assertIs(self.cache.peek("alice", "example.com"), UNKNOWN)
        self.assertIsNone(self.lookup("alice"))
        # An unknown user is an answer too: None, not UNKNOWN.
        self.assertIsNone(self.cache.peek("alice", "example.com"))
        self.assertEqual((self.cache.misses, self.cache.hits), (2, 3))

    def test_memoryPeek(self) -> None:
        """The memory store's ``peek`` is its ``credentials``, at once."""
        self.backend.put(ALICE)
        self.assertEqual(self.backend.peek("alice", "Example.COM"), ALICE)
        self.assertIsNone(self.backend.peek("bob", "example.com"))


class StackCredentialsTests(TestCase):
    """The stack reads credentials where its storage mode keeps them."""

    timeout = 20

    def test_memory(self) -> None:
        """Memory mode: a memory store, provisioned by the tests."""
        stack = buildStack(Config(database="memory"), reactor)
        self.assertIsInstance(stack.credentials, MemoryCredentialStore)

    async def readsDatabase(self, config: Config) -> None:
        """The stack's credentials come from its database's subscriber table."""
        stack = buildStack(config, reactor)
        storage = stack.storage
        storage.startService()
        try:
            await storage.whenLoaded()
            credentials = stack.credentials
            assert isinstance(credentials, CachingCredentialStore)
            assert isinstance(credentials.backend, SQLCredentialStore)
            self.assertIs(credentials.backend.database, storage.database)
            await credentials.backend.put(ALICE)
            self.assertEqual(
                await credentials.credentials("alice", "example.com"), ALICE
            )
        finally:
            await storage.stopService()

    async def test_sqliteCache(self) -> None:
        """Cache mode on SQLite."""
        await self.readsDatabase(Config(database=f"sqlite:{self.mktemp()}.sqlite"))

    async def test_postgresCacheAndShared(self) -> None:
        """Cache and shared mode on PostgreSQL read the same table."""
        if PG_DSN is None:
            raise SkipTest(NO_PG)
        for shared in (False, True):
            pg = PostgresDatabase()
            try:
                await self.readsDatabase(Config(database=pg.url, fallback2db=shared))
            finally:
                pg.drop()
