"""A database host name is resolved without blocking the reactor.

libpq resolves ``host`` inside the connection attempt, synchronously; the
store resolves a name first with the reactor's resolver and gives libpq the
address as ``hostaddr`` (libpq's documentation: "If hostaddr is specified
without host, the value for hostaddr gives the server network address [...]
When both host and hostaddr are specified, hostaddr is used for the
connection, and host is used for authentication").
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import DNSLookupError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from presence.storage.errors import StorageError
from presence.storage.postgres import PostgresStore, hostOptions, hostToResolve
from test.support.postgres import PostgresPerClass, pgDSN

#: A name no real resolver knows (RFC 6761 section 6.2: ``.invalid``).
NAME = "db.presence.invalid"


class FakeResolvingReactor:
    """The real reactor, but names resolved from a table (no DNS at all)."""

    def __init__(self, names: dict[str, str], now: bool = False) -> None:
        """Resolve ``names``; any other name fails as DNS would.

        The answer comes in a later turn of the reactor, or at once if ``now``.
        """
        self.names = names
        self.now = now
        self.asked: list[str] = []

    def resolve(self, name: str, timeout: Any = (1,)) -> defer.Deferred[str]:
        """The address of ``name``, or `DNSLookupError`."""
        self.asked.append(name)
        d: defer.Deferred[str] = defer.Deferred()
        if self.now:
            if name in self.names:
                d.callback(self.names[name])
            else:
                d.errback(DNSLookupError(name))
        elif name in self.names:
            reactor.callLater(0, d.callback, self.names[name])
        else:
            reactor.callLater(0, d.errback, DNSLookupError(name))
        return d

    def __getattr__(self, name: str) -> Any:
        """Everything else is the real reactor's."""
        return getattr(reactor, name)


class HostToResolveTests(SynchronousTestCase):
    """Which hosts are names to resolve."""

    def test_kinds(self) -> None:
        """Names only; addresses, sockets, lists and hostaddr pass as written."""
        cases = {
            "db.example.com": "db.example.com",
            "localhost": "localhost",
            "127.0.0.1": None,
            "::1": None,
            "[::1]": None,
            "/var/run/postgresql": None,
            "@abstract": None,
            "a.example.com,b.example.com": None,
            "": None,
        }
        for host, expected in cases.items():
            self.assertEqual(hostToResolve({"host": host}), expected, host)
        self.assertIsNone(hostToResolve({}))
        self.assertIsNone(hostToResolve({"host": "db", "hostaddr": "192.0.2.1"}))

    def test_resolved(self) -> None:
        """A name becomes ``hostaddr``; an address asks nothing."""
        fake = FakeResolvingReactor({NAME: "192.0.2.7"}, now=True)
        d = defer.Deferred.fromCoroutine(hostOptions(fake, {"host": NAME}, 5))
        self.assertEqual(self.successResultOf(d), {"hostaddr": "192.0.2.7"})
        d = defer.Deferred.fromCoroutine(hostOptions(fake, {"host": "192.0.2.7"}, 5))
        self.assertEqual(self.successResultOf(d), {})
        self.assertEqual(fake.asked, [NAME])

    def test_failureIsStorageError(self) -> None:
        """A name that does not resolve: `StorageError`, saying which."""
        fake = FakeResolvingReactor({}, now=True)
        d = defer.Deferred.fromCoroutine(hostOptions(fake, {"host": NAME}, 5))
        failure = self.failureResultOf(d, StorageError)
        self.assertIn(NAME, str(failure.value))


class ResolvedConnectionTests(PostgresPerClass, TestCase):
    """The store and its listener reach a server named by a host name."""

    async def test_storeAndListenerByName(self) -> None:
        """Every connection, the listener's too, asks the resolver first."""
        fake = FakeResolvingReactor({NAME: "127.0.0.1"})
        store = PostgresStore(
            pgDSN(dbname=self.pg.name, host=NAME), reactor=fake, connections=2
        )
        await store.start()
        self.addCleanup(store.stop)
        assert store.runner is not None
        self.assertEqual(await store.runner.runQuery("SELECT 1", {}), [(1,)])
        self.assertEqual(fake.asked, [NAME, NAME])
        listener = store.listener(lambda c, p: None, lambda: None)
        await listener.start("presence_resolve_test", [])
        self.addCleanup(listener.close)
        self.assertEqual(await listener.query("SELECT 2", {}), [(2,)])
        self.assertEqual(fake.asked, [NAME] * 3)

    async def test_unresolvableName(self) -> None:
        """A name that does not resolve: start fails with `StorageError`."""
        fake = FakeResolvingReactor({})
        store = PostgresStore(pgDSN(dbname=self.pg.name, host=NAME), reactor=fake)
        with self.assertRaises(StorageError) as raised:
            await store.start()
        self.assertIn(NAME, str(raised.exception))

    async def test_addressNotResolved(self) -> None:
        """An IP address goes to libpq as written: no lookup."""
        fake = FakeResolvingReactor({})
        store = PostgresStore(
            pgDSN(dbname=self.pg.name, host="127.0.0.1"), reactor=fake
        )
        await store.start()
        self.addCleanup(store.stop)
        self.assertEqual(fake.asked, [])
