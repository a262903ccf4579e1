"""Database round trips per operation in shared mode, counted on a real PostgreSQL.

A round trip is one call of the store's runner (one query, which may hold
several statements run as one transaction). The heartbeat's, on the
member's own connection, is not counted: it is not per operation.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from txpostgres import txpostgres

from presence.status import ACTIVE
from presence.testing import pidf
from test.cluster.harness import Node, Watcher
from test.cluster.test_cluster import BOB, ClusterTestCase, cseqs


class Counting:
    """Counts the calls made through a runner, and their statements."""

    def __init__(self, pool: Any) -> None:
        """Count the queries sent through ``pool`` from now on."""
        self.calls: list[str] = []
        for name in ("runQuery", "runOperation", "runInteraction"):
            setattr(pool, name, self._wrap(getattr(pool, name)))

    def _wrap(self, method: Any) -> Any:
        def counted(statements: Any, *args: Any) -> Any:
            self.calls.append(" ".join(str(statements).split())[:60])
            return method(statements, *args)

        return counted

    def take(self) -> list[str]:
        """The calls since the last take."""
        calls, self.calls = self.calls, []
        return calls


class RoundTripTests(ClusterTestCase):
    """The subscribe cycle and a PUBLISH cost the fewest round trips."""

    async def counted(self) -> tuple[Node, Counting]:
        """One node, its round trips counted."""
        [a] = await self.nodes("a")
        counting = Counting(a.stack.storage.database.runner.pool)
        return a, counting

    async def test_subscribeCycle(self) -> None:
        """SUBSCRIBE, its NOTIFY, un-SUBSCRIBE, its NOTIFY; then a PUBLISH.

        Before: 5 round trips for the SUBSCRIBE and its NOTIFY, 6 for the
        un-SUBSCRIBE and its NOTIFY (a cycle of 11), 5 for a PUBLISH with
        one watcher. Now: the row written with the first NOTIFY's CSeq and
        the state read (1), the watcher row and the winfo subscribers (1);
        the dialog read (1), the row removed with the state read (1), the
        watcher row and the winfo subscribers (1); the PUBLISH's limit read,
        its write, its watchers, and their claim with the state (4).
        """
        a, counting = await self.counted()
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        await self.cluster.settle()
        subscribe = counting.take()
        response = await self.cluster.request(
            a, alice, alice.subscribeBytes(expires=0, refresh=True)
        )
        self.assertEqual(response.code, 200)
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        await self.cluster.settle()
        unsubscribe = counting.take()
        # RFC 3857: a watcher whose last subscription ended is gone.
        self.assertEqual(await a.stack.store.watchers(BOB, "presence"), [])
        carol = Watcher("carol", "192.0.2.21")
        await self.subscribed(a, carol)
        await self.cluster.settle()
        counting.take()
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(a, bob, bob.publishBytes(pidf("open")))
        await self.cluster.until(lambda: len(self.cluster.to(carol.address)) == 2)
        await self.cluster.settle()
        publish = counting.take()
        [row] = await a.stack.store.watchers(BOB, "presence")
        self.assertEqual((row.watcherUsername, row.status), ("carol", ACTIVE))
        self.assertEqual(
            (len(subscribe), len(unsubscribe), len(publish)),
            (2, 3, 4),
            (subscribe, unsubscribe, publish),
        )

    async def watched(self, node: Node, count: int) -> list[Watcher]:
        """``count`` watchers of bob subscribed at ``node``, their NOTIFYs done."""
        watchers = [Watcher(f"w{n}", f"192.0.2.{100 + n}") for n in range(count)]
        for watcher in watchers:
            await self.subscribed(node, watcher)
        await self.cluster.settle()
        return watchers

    async def test_publishTenWatchers(self) -> None:
        """A PUBLISH with 10 watchers: their CSeqs claimed in one statement.

        Before: the limit's read, the write, the watchers, the publications,
        and one claim per NOTIFY (4 + N: 14). Now the claims of all the
        watchers are one statement (5, whatever N up to the batch of 500).
        Each watcher still gets one NOTIFY, CSeq 2 after its first.
        """
        a, counting = await self.counted()
        watchers = await self.watched(a, 10)
        counting.take()
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(a, bob, bob.publishBytes(pidf("open")))
        self.assertEqual(response.code, 200)
        await self.cluster.until(
            lambda: all(len(self.cluster.to(w.address)) == 2 for w in watchers)
        )
        await self.cluster.settle()
        publish = counting.take()
        for watcher in watchers:
            notifies = self.cluster.to(watcher.address)
            self.assertEqual(cseqs(notifies), [1, 2])
            self.assertIn(b"<basic>open</basic>", notifies[1].message.body)
        self.assertEqual(len(publish), 5, publish)
        self.assertEqual(a.stack.notifier.stats.claimsRefused, 0)

    async def test_signalledChangeTenWatchers(self) -> None:
        """The owner's NOTIFYs of a change another server made, 10 watchers.

        Before: the watchers, the publications, a CSeq each (2 + N: 12).
        Now: the watchers, the publications, one claim of all (3).
        """
        a, b = await self.nodes("a", "b")
        counting = Counting(a.stack.storage.database.runner.pool)
        watchers = await self.watched(a, 10)
        counting.take()
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(b, bob, bob.publishBytes(pidf("open")))
        self.assertEqual(response.code, 200)
        await self.cluster.until(
            lambda: all(len(self.cluster.to(w.address)) == 2 for w in watchers)
        )
        await self.cluster.settle()
        owner = counting.take()
        for watcher in watchers:
            notifies = self.cluster.to(watcher.address)
            self.assertEqual(cseqs(notifies), [1, 2])
            self.assertEqual({n.node for n in notifies}, {"a"})
        self.assertEqual(len(owner), 3, owner)


class StatementTimeoutTests(ClusterTestCase):
    """db_statement_timeout: a stuck database answers 503, not silence."""

    async def test_lockedTableGets503(self) -> None:
        """A table locked by another session: the PUBLISH waits, then 503.

        PostgreSQL cancels the statement after ``statement_timeout``; the
        dispatcher answers a storage error with 503 and Retry-After (RFC
        3261 section 21.5.4), and the server serves again once the lock goes.
        """
        [a] = await self.nodes("a", dbStatementTimeout=0.2)
        locker = txpostgres.Connection(reactor=reactor)
        await locker.connect(self.pg.dsn)
        self.addCleanup(locker.close)
        await locker.runOperation("BEGIN")
        await locker.runOperation("LOCK TABLE presentity IN ACCESS EXCLUSIVE MODE")
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(a, bob, bob.publishBytes(pidf("open")))
        self.assertEqual(response.code, 503)
        self.assertIsNotNone(response.header("retry-after"))
        await locker.runOperation("ROLLBACK")
        response = await self.cluster.request(a, bob, bob.publishBytes(pidf("open")))
        self.assertEqual(response.code, 200)

    async def test_watcherRowKeptWhileAnotherSubscription(self) -> None:
        """The tracker's one statement keeps the row of a watcher still watching.

        Alice has two subscriptions to bob (two phones); one ends: her row in
        ``watchers`` stays, as the tracker's separate statements kept it.
        """
        [a] = await self.nodes("a")
        desk = Watcher("alice", "192.0.2.20")
        phone = Watcher("alice", "192.0.2.22")
        await self.subscribed(a, desk)
        await self.subscribed(a, phone)
        response = await self.cluster.request(
            a, desk, desk.subscribeBytes(expires=0, refresh=True)
        )
        self.assertEqual(response.code, 200)
        await self.cluster.settle()
        [row] = await a.stack.store.watchers(BOB, "presence")
        self.assertEqual(row.watcherUsername, "alice")
        await self.cluster.request(
            a, phone, phone.subscribeBytes(expires=0, refresh=True)
        )
        await self.cluster.settle()
        self.assertEqual(await a.stack.store.watchers(BOB, "presence"), [])

    async def test_failedSubscribeLeavesNoTransaction(self) -> None:
        """An initial SUBSCRIBE whose write is cancelled leaves nothing open.

        Its one query begins and commits a transaction of its own; cancelled
        inside it (the table locked, db_statement_timeout), the connection
        is rolled back, and the next request on it is served.
        """
        [a] = await self.nodes("a", dbStatementTimeout=0.2, dbConnections=1)
        locker = txpostgres.Connection(reactor=reactor)
        await locker.connect(self.pg.dsn)
        self.addCleanup(locker.close)
        await locker.runOperation("BEGIN")
        await locker.runOperation("LOCK TABLE active_watchers IN ACCESS EXCLUSIVE MODE")
        alice = Watcher("alice", "192.0.2.20")
        self.cluster.autoAnswer.add(alice.address)
        # The 200 goes first (RFC 6665 section 4.2.1.1); the write fails.
        response = await self.cluster.request(a, alice, alice.subscribeBytes())
        self.assertEqual(response.code, 200)
        await self.cluster.settle()
        await locker.runOperation("ROLLBACK")
        await self.subscribed(a, Watcher("carol", "192.0.2.21"))
        [carol] = await a.stack.store.subscriptions(BOB, "presence")
        self.assertEqual(carol.watcherUsername, "carol")
