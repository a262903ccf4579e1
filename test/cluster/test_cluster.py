"""Shared mode as a cluster: two and three servers on one real PostgreSQL.

Each server has its own fake clock and in-memory transport
(`test.cluster.harness`); only their database is real. Every wait is for a
condition the stack's events re-check, never for a length of time.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from presence.sip.message import SIPRequest
from presence.storage.postgres import PostgresStore
from presence.testing import pidf
from test.cluster.harness import Cluster, Node, Sent, Watcher
from test.support.postgres import PostgresPerClass

BOB = "sip:bob@example.com"


def state(sent: Sent) -> str:
    """The Subscription-State of a NOTIFY."""
    assert isinstance(sent.message, SIPRequest)
    return sent.message.header("subscription-state") or ""


def cseqs(notifies: list[Sent]) -> list[int]:
    """The CSeq numbers of NOTIFYs, in the order they were sent."""
    return [n.message.cseq.number for n in notifies]


class ClusterTestCase(PostgresPerClass, TestCase):
    """Nodes on the class's database, emptied before each test."""

    timeout = 60

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """An empty database and a cluster of no nodes yet."""
        self.db = await self.reader()
        assert self.db.runner is not None
        await self.db.ensureSchema(create=True)
        await self.db.runner.runInteraction(
            [
                (f"DELETE FROM {table}", {})
                for table in ("presentity", "active_watchers", "watchers", "location")
            ]
            + [("DROP TABLE IF EXISTS cluster", {})]
        )
        self.cluster = Cluster(self.pg.url)
        self.addCleanup(self.stopAll)

    async def reader(self) -> PostgresStore:
        """A store reading the class's database directly."""
        store = PostgresStore(self.pg.dsn, reactor=reactor)
        await store.start()
        self.addCleanup(store.stop)
        return store

    async def stopAll(self) -> None:
        """Stop every node still running."""
        for node in self.cluster.nodes.values():
            await node.stop()

    async def nodes(self, *names: str, **settings: Any) -> list[Node]:
        """Started nodes ``a``, ``b``..., at 192.0.2.1, 192.0.2.2..."""
        started = []
        for n, name in enumerate(names):
            node = self.cluster.node(name, f"192.0.2.{n + 1}", **settings)
            await node.start()
            started.append(node)
        return started

    async def subscribed(self, node: Node, watcher: Watcher) -> Sent:
        """``watcher`` subscribes to bob at ``node``; its first NOTIFY."""
        self.cluster.autoAnswer.add(watcher.address)
        response = await self.cluster.request(node, watcher, watcher.subscribeBytes())
        self.assertEqual(response.code, 200)
        watcher.toTag = response.toAddr.tag
        await self.cluster.until(lambda: len(self.cluster.to(watcher.address)) >= 1)
        return self.cluster.to(watcher.address)[0]

    async def owner(self, watcher: Watcher) -> str | None:
        """The ``sharing_tag`` of the watcher's subscription."""
        assert self.db.runner is not None
        rows = await self.db.runner.runQuery(
            "SELECT sharing_tag FROM active_watchers WHERE callid = :callid",
            {"callid": watcher.callId},
        )
        return rows[0][0] if rows else None


class OwnershipTests(ClusterTestCase):
    """One owner per subscription sends its NOTIFYs, one at a time, in order."""

    async def concurrentPublishes(self, names: tuple[str, ...]) -> None:
        """Alice watches bob at the first node; bob publishes at every other.

        RFC 6665 section 4.2.2 and RFC 3261 section 12.2.2 ("If the remote
        sequence number was not empty, but the sequence number of the
        request is lower than the remote sequence number, the request is out
        of order and MUST be rejected with a 500"): however many servers
        change bob's state at once, alice's NOTIFYs come from one server,
        one outstanding at a time, in strictly increasing CSeq, and the last
        carries the final state of every publication.
        """
        nodes = await self.nodes(*names)
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(nodes[0], alice)
        publishers = [
            (node, Watcher("bob", f"192.0.2.{30 + n}"))
            for n, node in enumerate(nodes[1:] if len(nodes) > 2 else nodes)
        ]
        etags: dict[int, str | None] = {}
        rounds = 5
        for round in range(rounds):
            pending = [
                defer.Deferred.fromCoroutine(
                    self.cluster.request(
                        node,
                        agent,
                        agent.publishBytes(
                            pidf("open", f"t{n}", f"r{round}"), etags.get(n)
                        ),
                    )
                )
                for n, (node, agent) in enumerate(publishers)
            ]
            for n, d in enumerate(pending):
                response = await d
                self.assertEqual(response.code, 200)
                etags[n] = response.header("sip-etag")
        final = f"<note>r{rounds - 1}</note>".encode()

        def isFinal(sent: Sent) -> bool:
            return sent.message.body.count(final) == len(publishers)

        await self.cluster.until(
            lambda: any(isFinal(s) for s in self.cluster.to(alice.address))
        )
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        numbers = cseqs(notifies)
        self.assertEqual(numbers, sorted(set(numbers)))
        self.assertTrue(isFinal(notifies[-1]))
        self.assertEqual({n.node for n in notifies}, {names[0]})
        self.assertEqual(self.cluster.mostUnanswered[alice.address], 1)
        # The other servers told the owner, which composed the NOTIFYs.
        self.assertGreater(nodes[0].member.stats.signalsReceived, 0)

    async def test_concurrentPublishesTwoServers(self) -> None:
        """Two servers: PUBLISHes at both, the watcher at the first."""
        await self.concurrentPublishes(("a", "b"))

    async def test_concurrentPublishesThreeServers(self) -> None:
        """Three servers: PUBLISHes at the two that do not own the watcher."""
        await self.concurrentPublishes(("a", "b", "c"))

    async def test_refreshMovesOwnership(self) -> None:
        """A refresh at another server makes it the owner and the sender.

        The phone talks to that server now; the NOTIFYs continue the CSeq.
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        first = await self.subscribed(a, alice)
        self.assertEqual(await self.owner(alice), "a")
        refreshed = await self.cluster.request(
            b, alice, alice.subscribeBytes(refresh=True)
        )
        self.assertEqual(refreshed.code, 200)
        self.assertEqual(await self.owner(alice), "b")
        bob = Watcher("bob", "192.0.2.30")
        self.assertEqual(
            (await self.cluster.request(a, bob, bob.publishBytes(pidf("open")))).code,
            200,
        )
        await self.cluster.until(
            lambda: any(
                b"<basic>open</basic>" in s.message.body
                for s in self.cluster.to(alice.address)
            )
        )
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "b", "b"])
        self.assertEqual(
            cseqs(notifies), [first.message.cseq.number + i for i in range(3)]
        )

    async def test_tcpWatcherOverItsConnection(self) -> None:
        """A watcher over TCP gets its NOTIFYs over its own connection.

        RFC 3261 section 18.2.2 and RFC 5626's reasoning: behind NAT, only
        the connection the SUBSCRIBE came on reaches the phone. A change
        made at the other server is composed from the database by the
        owner and sent over that connection, not a new one.
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20", 40000)
        alice.transport = "TCP"
        protocol, _connection = a.tcp(*alice.address)
        self.cluster.tcpAnswer[alice.address] = protocol
        response = await self.cluster.request(
            a, alice, alice.subscribeBytes(), transport=protocol
        )
        self.assertEqual(response.code, 200)
        bob = Watcher("bob", "192.0.2.30")
        publish = bob.publishBytes(pidf("open"))
        self.assertEqual((await self.cluster.request(b, bob, publish)).code, 200)
        await self.cluster.until(
            lambda: any(
                b"<basic>open</basic>" in s.message.body
                for s in self.cluster.to(alice.address)
            )
        )
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([(n.node, n.transport) for n in notifies], [("a", "TCP")] * 2)
        self.assertEqual(a.clock.tcpClients, [])
