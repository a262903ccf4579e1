"""Shared mode as a cluster: two and three servers on one real PostgreSQL.

Each server has its own fake clock and in-memory transport
(`test.cluster.harness`); only their database is real. Every wait is for a
condition the stack's events re-check, never for a length of time.
"""

from __future__ import annotations

import re
from typing import Any, cast

from twisted.internet import defer, reactor
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.trial.unittest import TestCase

from presence.sip.message import SIPRequest
from presence.storage.postgres import PostgresStore
from presence.testing import pidf
from test.cluster.harness import Cluster, Node, Sent, Watcher
from test.support.postgres import PostgresPerClass, pgAddress, pgURL
from test.support.proxy import CuttableProxy

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
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 1)
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


class TakeOverTests(ClusterTestCase):
    """A member silent for node_timeout is dead; a survivor takes over."""

    async def publish(
        self, node: Node, body: bytes, etag: str | None = None
    ) -> str | None:
        """Bob publishes at ``node``; the new entity tag."""
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(node, bob, bob.publishBytes(body, etag))
        self.assertEqual(response.code, 200)
        return response.header("sip-etag")

    async def beatPastTimeout(self, node: Node) -> None:
        """Heartbeats of ``node`` until more than node_timeout has passed."""
        for _ in range(4):
            await node.beat()

    def terminated(self, watcher: Watcher) -> list[Sent]:
        """The final NOTIFYs sent to ``watcher``."""
        return [
            s
            for s in self.cluster.to(watcher.address)
            if state(s).startswith("terminated")
        ]

    async def test_crashedOwnerTakenOver(self) -> None:
        """The owner dies without a goodbye: the survivor carries on.

        Its heartbeat ends; after node_timeout the survivor owns the
        subscription, sends the state the dead owner never sent with the
        next CSeq (RFC 3261 section 12.2.1.1: "the CSeq number MUST be
        incremented by one"), and ends it once at expiry (RFC 6665 section
        4.2.2: ``terminated;reason=timeout``).
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        etag = await self.publish(a, pidf("open"))
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        await self.cluster.settle()
        await a.crash()
        # Told to the dead owner: nobody hears it.
        await self.publish(b, pidf("closed"), etag)
        self.assertEqual(len(self.cluster.to(alice.address)), 2)
        await self.beatPastTimeout(b)
        self.assertEqual(await self.owner(alice), "b")
        self.assertEqual(b.member.stats.takenOver, 1)
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 3)
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "a", "b"])
        self.assertEqual(cseqs(notifies), [1, 2, 3])
        self.assertIn(b"<basic>closed</basic>", notifies[-1].message.body)
        b.advance(601)
        await self.cluster.until(lambda: len(self.terminated(alice)) == 1)
        await self.cluster.settle()
        b.advance(10)
        await self.cluster.settle()
        [final] = self.terminated(alice)
        self.assertEqual((final.node, final.message.cseq.number), ("b", 4))
        self.assertEqual(state(final), "terminated;reason=timeout")
        self.assertIsNone(await self.owner(alice))

    async def test_stalledOwnerSendsNothingItLost(self) -> None:
        """A member declared dead that comes back does not send what it lost.

        Its heartbeat stalls past node_timeout while it keeps running; the
        survivor takes the subscription over. Back, it claims no CSeq for
        it (the claim is fenced by the owner), signals the new owner of a
        PUBLISH it receives, and does not expire it: the final NOTIFY is
        sent once, by the survivor.
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        first = await self.subscribed(a, alice)
        await self.cluster.settle()
        stale = await a.stack.store.subscription(
            (alice.callId, alice.toTag or "", alice.tag, "presence", "")
        )
        assert stale is not None
        a.pause()
        a.advance(15)
        await self.beatPastTimeout(b)
        self.assertEqual(await self.owner(alice), "b")
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        a.resume()
        await a.beat()
        # What a still held: nothing goes out for it.
        a.stack.notifier.send(stale)
        await self.cluster.settle()
        self.assertEqual(a.stack.notifier.stats.sent, 1)
        await self.publish(a, pidf("open"))
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 3)
        await self.cluster.settle()
        # Both past the expiry, b's heartbeat written before a judges it:
        # a's clock is ahead (it stalled), and one jump of 601 seconds
        # without a beat between would make b look dead to a.
        for node in (b, a):
            beaten = node.member.whenBeaten()
            node.advance(601)
            await beaten
        await self.cluster.until(lambda: len(self.terminated(alice)) == 1)
        await self.cluster.settle()
        for node in (b, a):
            await node.beat()
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "b", "b", "b"])
        self.assertEqual(
            cseqs(notifies), [first.message.cseq.number + i for i in range(4)]
        )
        self.assertEqual(len(self.terminated(alice)), 1)
        self.assertEqual(a.stack.sweeper.expired["subscriptions"], 0)
        self.assertEqual(b.stack.sweeper.expired["subscriptions"], 1)

    async def test_restartedWithinTimeoutResends(self) -> None:
        """A server restarted under its id before node_timeout keeps its own.

        Nobody took its subscriptions over; what was signalled to it while it
        was down is lost, so once it serves again it notifies each with its
        state now, the CSeq continuing (RFC 3261 section 12.2.1.1).
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        await self.cluster.settle()
        await a.crash()
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(b, bob, bob.publishBytes(pidf("open")))
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.cluster.to(alice.address)), 1)
        await self.cluster.until(
            lambda: b.handling == 0 and b.member.stats.inFlight == 0
        )
        # That signal went to the dead process: the new one never hears it.
        self.assertEqual(b.member.stats.delivered.pop("a"), 1)
        again = self.cluster.node("a", "192.0.2.1")
        await again.start()
        await again.beat()
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "a"])
        self.assertEqual(cseqs(notifies), [1, 2])
        self.assertIn(b"<basic>open</basic>", notifies[-1].message.body)
        self.assertEqual(await self.owner(alice), "a")

    async def test_cleanStopThenJoinAgain(self) -> None:
        """A server stopped cleanly and started again under its id says so.

        Its clean stop marked it gone (``last_seen`` 0) so that the others
        took its subscriptions at once; its return is logged as that, not as
        a silence as long as the Unix time.
        """
        (a,) = await self.nodes("a")
        await a.stop()
        again = self.cluster.node("a", "192.0.2.1")
        events: list[dict[str, Any]] = []
        again.member.log = Logger(observer=cast(ILogObserver, events.append))
        await again.start()
        messages = [formatEvent(e) for e in events]
        self.assertTrue(
            any("joins again after a clean stop" in m for m in messages), messages
        )
        self.assertFalse(any("was silent for" in m for m in messages), messages)

    async def test_threeServersOneSurvivorWins(self) -> None:
        """Two survivors take over at once: each subscription goes to one.

        The take-over is one UPDATE; PostgreSQL re-checks the condition of a
        row another survivor updated first, so no subscription is taken
        twice and the watcher gets one NOTIFY from its new owner.
        """
        a, b, c = await self.nodes("a", "b", "c")
        watchers = [Watcher(f"w{n}", f"192.0.2.{40 + n}") for n in range(6)]
        for watcher in watchers:
            await self.subscribed(a, watcher)
        await self.cluster.settle()
        await a.crash()
        for _ in range(4):
            await defer.gatherResults(
                [defer.Deferred.fromCoroutine(n.beat()) for n in (b, c)]
            )
        self.assertEqual(b.member.stats.takenOver + c.member.stats.takenOver, 6)
        for watcher in watchers:
            await self.cluster.until(
                lambda w=watcher: len(self.cluster.to(w.address)) == 2  # type: ignore[misc]
            )
        await self.cluster.settle()
        for watcher in watchers:
            notifies = self.cluster.to(watcher.address)
            self.assertEqual(cseqs(notifies), [1, 2])
            self.assertIn(notifies[1].node, ("b", "c"))
            self.assertEqual(await self.owner(watcher), notifies[1].node)


class ListenOutageTests(ClusterTestCase):
    """The database cut from one server (the cuttable proxy)."""

    async def proxied(self) -> tuple[CuttableProxy, str]:
        """A cuttable proxy in front of the class's database, and its URL."""
        proxy = CuttableProxy(*pgAddress())
        tcp: Any = reactor
        port: Any = tcp.listenTCP(0, proxy, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(proxy.cut)
        url = pgURL(
            dbname=self.pg.name, host="127.0.0.1", port=str(port.getHost().port)
        )
        return proxy, url

    async def test_cutServerAnswers503AndIsTakenOver(self) -> None:
        """One server cut from the database: it answers 503, the other takes over.

        RFC 3261 section 21.5.4: 503 with Retry-After while it cannot serve.
        Its heartbeat stops with the database; after node_timeout the other
        server owns its subscriptions and notifies them.
        """
        proxy, url = await self.proxied()
        a = self.cluster.node("a", "192.0.2.1", database=url, dbConnections=2)
        await a.start()
        [b] = await self.nodes("b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        await self.cluster.settle()
        proxy.cut()
        a.deaf = True
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(a, bob, bob.publishBytes(pidf("open")))
        self.assertEqual(response.code, 503)
        self.assertIsNotNone(response.header("retry-after"))
        response = await self.cluster.request(b, bob, bob.publishBytes(pidf("open")))
        self.assertEqual(response.code, 200)
        for _ in range(4):
            await b.beat()
        self.assertEqual(await self.owner(alice), "b")
        await self.cluster.until(
            lambda: any(
                b"<basic>open</basic>" in s.message.body
                for s in self.cluster.to(alice.address)
            )
        )
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "b"])
        self.assertEqual(cseqs(notifies), [1, 2])

    async def test_listenCutThenRelistened(self) -> None:
        """PostgreSQL's connections cut (the cuttable proxy) while listening.

        The member notices, listens again at its next heartbeat once the
        database is reachable, notifies what it owns (signals sent
        meanwhile are lost), and hears the next signal: a PUBLISH at the
        other server reaches the watcher through it.
        """
        proxy, url = await self.proxied()
        a = self.cluster.node("a", "192.0.2.1", database=url, dbConnections=2)
        await a.start()
        [b] = await self.nodes("b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        await self.cluster.settle()
        lost = a.member.whenLost()
        proxy.cut()
        await lost
        self.assertFalse(a.member.listening)
        proxy.refusing = False
        listening = a.member.whenListening()
        await a.beat()
        await listening
        self.assertTrue(a.member.listening)
        self.assertEqual(a.member.stats.relistened, 1)
        # The catch-up NOTIFY of what a owns.
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(b, bob, bob.publishBytes(pidf("open")))
        self.assertEqual(response.code, 200)
        await self.cluster.until(
            lambda: any(
                b"<basic>open</basic>" in s.message.body
                for s in self.cluster.to(alice.address)
            )
        )
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual({n.node for n in notifies}, {"a"})
        self.assertEqual(cseqs(notifies), list(range(1, len(notifies) + 1)))


class WatcherInfoTests(ClusterTestCase):
    """presence.winfo documents come from the winfo subscription's owner."""

    async def test_versionsFromTheOwnerOnly(self) -> None:
        """A watcher arriving at another server: the owner sends full state.

        RFC 3858 section 4: the version counts up by one per document sent
        to a subscriber, and a partial document holds the changes since the
        last. The server that saw alice arrive is not the owner of bob's
        winfo subscription: it tells the owner, which cannot know what
        changed since its last document and sends full state; a watcher
        arriving at the owner itself is a partial document. One sender,
        versions 0, 1, 2 without a gap.
        """
        a, b = await self.nodes("a", "b")
        bob = Watcher("bob", "192.0.2.30")
        self.cluster.autoAnswer.add(bob.address)
        response = await self.cluster.request(
            a, bob, bob.subscribeBytes(event="presence.winfo")
        )
        self.assertEqual(response.code, 200)
        await self.cluster.until(lambda: len(self.cluster.to(bob.address)) == 1)
        await self.subscribed(b, Watcher("alice", "192.0.2.20"))
        await self.cluster.until(lambda: len(self.cluster.to(bob.address)) == 2)
        await self.subscribed(a, Watcher("carol", "192.0.2.21"))
        await self.cluster.until(lambda: len(self.cluster.to(bob.address)) == 3)
        await self.cluster.settle()
        documents = self.cluster.to(bob.address)
        self.assertEqual({d.node for d in documents}, {"a"})
        bodies = [d.message.body for d in documents]
        self.assertEqual(
            [re.search(rb'version="(\d+)"', body)[1] for body in bodies],  # type: ignore[index]
            [b"0", b"1", b"2"],
        )
        self.assertEqual(
            [re.search(rb'state="(\w+)"', body)[1] for body in bodies],  # type: ignore[index]
            [b"full", b"full", b"partial"],
        )
        self.assertIn(b"alice@example.com", bodies[1])
        self.assertIn(b"carol@example.com", bodies[2])
        self.assertNotIn(b"alice@example.com", bodies[2])


class ChangesElsewhereTests(ClusterTestCase):
    """Every change made at a server that does not own the watcher reaches it."""

    async def test_publicationExpiredElsewhere(self) -> None:
        """A publication expired by another server's sweep: the owner notifies.

        RFC 3903 section 6 (an expired publication is removed) and RFC 6665
        section 4.2.2 (the watchers are told the new state): the sweep that
        deleted the row is not the owner's, so it signals the owner.
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(
            b, bob, bob.publishBytes(pidf("open"), expires=60)
        )
        self.assertEqual(response.code, 200)
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        await self.cluster.settle()
        # a's time passes too (its heartbeat stays fresh to b), not yet to
        # the publication's expiry: b's sweep is the one that removes it.
        beaten = a.member.whenBeaten()
        a.advance(55)
        await beaten
        b.advance(61)
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 3)
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "a", "a"])
        self.assertEqual(b.stack.sweeper.expired["publications"], 1)
        self.assertNotIn(b"<basic>open</basic>", notifies[-1].message.body)

    async def test_subscriptionNotifiedElsewhere(self) -> None:
        """A re-authorisation elsewhere: the subscription's key to its owner.

        What the re-authoriser, refreshWatchers and the watcher tracker do
        at any server, ``notifier.send`` of a subscription read from the
        database, is a signal when another server owns it; the owner reads
        the row and sends.
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        await self.cluster.settle()
        [subscription] = await b.stack.store.subscriptions(BOB, "presence")
        b.stack.notifier.send(subscription)
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "a"])
        self.assertEqual(b.stack.notifier.stats.forwarded, 1)
        self.assertEqual(b.stack.notifier.stats.sent, 0)
