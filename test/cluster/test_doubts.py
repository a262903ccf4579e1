"""The cluster's doubtful points: an un-SUBSCRIBE at a non-owner, write-backs, ghosts.

Two servers on one real PostgreSQL (`test.cluster.harness`), and the shared
store's statements directly.
"""

from __future__ import annotations

from typing import Any

from presence.storage.postgres import PostgresStore
from presence.storage.records import Subscription
from presence.testing import pidf
from test.cluster.harness import Watcher
from test.cluster.test_cluster import ClusterTestCase, cseqs, state
from test.support.records import aliceSubscription


class UnsubscribeAtNonOwnerTests(ClusterTestCase):
    """An un-SUBSCRIBE (Expires: 0) received by a server that does not own it."""

    def finals(self, watcher: Watcher) -> list[Any]:
        """The final NOTIFYs sent to ``watcher``."""
        return [
            s
            for s in self.cluster.to(watcher.address)
            if state(s).startswith("terminated")
        ]

    async def test_finalNotifyContinuesTheCSeq(self) -> None:
        """The receiving server sends the final NOTIFY, the CSeq continuing.

        RFC 6665 section 4.2.1.4 (an un-SUBSCRIBE is answered, then a NOTIFY
        ends the subscription) and RFC 3261 section 12.2.1.1 ("the CSeq
        number MUST be incremented by one"): the row is removed by one
        ``DELETE ... RETURNING``, whose CSeq is the latest the owner claimed,
        so the final NOTIFY's CSeq is above every NOTIFY the owner sent.
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        bob = Watcher("bob", "192.0.2.30")
        publish = bob.publishBytes(pidf("open"))
        self.assertEqual((await self.cluster.request(a, bob, publish)).code, 200)
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        response = await self.cluster.request(
            b, alice, alice.subscribeBytes(expires=0, refresh=True)
        )
        self.assertEqual(response.code, 200)
        await self.cluster.until(lambda: len(self.finals(alice)) == 1)
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "a", "b"])
        self.assertEqual(cseqs(notifies), [1, 2, 3])
        self.assertIsNone(await self.owner(alice))

    async def test_ownersNotifyInFlight(self) -> None:
        """The owner's NOTIFY still unanswered: the final one follows it in CSeq.

        What is not prevented: the owner's NOTIFY in flight and the final one
        of the server the phone now talks to are both outstanding for a
        moment (as after a refresh that moves the ownership), since no
        server knows what another has in flight. Their CSeqs are in order,
        so the phone answers both (RFC 3261 section 12.2.2 refuses only a
        lower one).
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        await self.cluster.settle()
        self.cluster.autoAnswer.discard(alice.address)
        bob = Watcher("bob", "192.0.2.30")
        publish = bob.publishBytes(pidf("open"))
        self.assertEqual((await self.cluster.request(a, bob, publish)).code, 200)
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        response = await self.cluster.request(
            b, alice, alice.subscribeBytes(expires=0, refresh=True)
        )
        self.assertEqual(response.code, 200)
        await self.cluster.until(lambda: len(self.finals(alice)) == 1)
        notifies = self.cluster.to(alice.address)
        self.assertEqual([n.node for n in notifies], ["a", "a", "b"])
        self.assertEqual(cseqs(notifies), [1, 2, 3])
        self.assertEqual(a.stack.notifier.outstanding, 1)

    async def test_removedMeanwhileNoSecondFinal(self) -> None:
        """Removed by its owner between the read and the delete: one final NOTIFY.

        The owner's expiry (or a 481) removed the row and sent the final
        NOTIFY with the next CSeq; the un-SUBSCRIBE at the other server, which
        read the row before, must not send a second final NOTIFY with that
        same CSeq (a phone would see two requests of one CSeq, RFC 3261
        section 12.2.2).
        """
        a, b = await self.nodes("a", "b")
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        await self.cluster.settle()
        store: Any = b.stack.subscribe.store
        remove = store.removeWithPublications

        async def ownerRemovesFirst(key: Any, presentity: str) -> Any:
            removed = await a.stack.store.removeSubscription(key)
            assert removed is not None
            a.stack.notifier.send(removed, terminated="timeout")
            return await remove(key, presentity)

        store.removeWithPublications = ownerRemovesFirst
        self.addCleanup(setattr, store, "removeWithPublications", remove)
        response = await self.cluster.request(
            b, alice, alice.subscribeBytes(expires=0, refresh=True)
        )
        self.assertEqual(response.code, 200)
        await self.cluster.until(lambda: len(self.finals(alice)) == 1)
        await self.cluster.settle()
        notifies = self.cluster.to(alice.address)
        self.assertEqual(
            [(n.node, n.message.cseq.number) for n in notifies][1:], [("a", 2)]
        )
        self.assertEqual(len(self.finals(alice)), 1)


class WriteBackTests(ClusterTestCase):
    """A row read, then written back (a re-authorisation), undoes no move."""

    async def shared(self, owner: str) -> PostgresStore:
        """A shared store of the class's database, as server ``owner``."""
        store = await self.reader()
        store.owner = owner
        return store

    async def test_writeBackKeepsRefreshMove(self) -> None:
        """A refresh at b moved the row; a's write-back of its old read keeps it b's.

        Also the refresh's expiry, contact and remote CSeq stay: the write
        back carries an older SUBSCRIBE's (a lower ``remote_cseq``).
        """
        a, b = await self.shared("a"), await self.shared("b")
        await a.putSubscription(aliceSubscription(sharingTag="a", expires=2_000_000))
        read = await a.subscription(aliceSubscription().key)
        assert read is not None
        refreshed = read.copy(
            sharingTag="b",
            remoteCSeq=read.remoteCSeq + 1,
            expires=2_000_600,
            contact="sip:alice@192.0.2.99:5070",
        )
        await b.putSubscription(refreshed)
        # The re-authorisation at a writes back what it read, status changed.
        await a.putSubscription(read.copy(status=2, reason=None))
        now = await a.subscription(read.key)
        assert now is not None
        self.assertEqual(
            (now.sharingTag, now.remoteCSeq, now.expires, now.contact, now.status),
            ("b", read.remoteCSeq + 1, 2_000_600, "sip:alice@192.0.2.99:5070", 2),
        )

    async def test_writeBackKeepsTakeOver(self) -> None:
        """A row taken over from a dead a stays the survivor's after a write-back."""
        c = await self.shared("c")
        await c.ensureSchema(create=True)
        assert c.runner is not None
        await c.runner.runInteraction(
            [
                (
                    "CREATE TABLE IF NOT EXISTS cluster (server_id VARCHAR(64)"
                    " PRIMARY KEY, address VARCHAR(255) NOT NULL DEFAULT '',"
                    " last_seen DOUBLE PRECISION NOT NULL, started DOUBLE"
                    " PRECISION NOT NULL)",
                    {},
                ),
                ("INSERT INTO cluster VALUES ('a', '', 1, 1)", {}),
            ]
        )
        await c.putSubscription(aliceSubscription(sharingTag="a"))
        read = await c.subscription(aliceSubscription().key)
        assert read is not None
        taken = await c.takeOver(100.0, 200.0)
        self.assertEqual([s.sharingTag for s in taken], ["c"])
        await c.putSubscription(read)
        now = await c.subscription(read.key)
        assert now is not None
        self.assertEqual(now.sharingTag, "c")


class GhostOwnerTests(ClusterTestCase):
    """Rows tagged with a server id that never beat (no cluster row at all)."""

    async def test_takenOverAfterNodeTimeout(self) -> None:
        """Taken over node_timeout after a live server first saw the tag.

        Not at once (the tag might be a server about to beat), not never
        (nobody else would ever notify or expire them). The survivor
        notifies the subscription, the CSeq continuing.
        """
        (b,) = await self.nodes("b")
        ghost: Subscription = aliceSubscription(
            sharingTag="ghost",
            localCSeq=4,
            expires=b.clock.seconds() + 600,
            contact="sip:alice@192.0.2.20:5070",
            toHeader="<sip:bob@example.com>;tag=to-1",
            fromHeader="<sip:alice@example.com>;tag=from-1",
            localContact="sip:192.0.2.2:5060",
            status=1,
        )
        await self.db.putSubscription(ghost)
        self.cluster.autoAnswer.add(("192.0.2.20", 5070))
        await b.beat()
        self.assertEqual(await self._owner(), "ghost")
        for _ in range(3):
            await b.beat()
        self.assertEqual(await self._owner(), "ghost")
        await b.beat()
        self.assertEqual(await self._owner(), "b")
        self.assertEqual(b.member.stats.takenOver, 1)
        await self.cluster.until(
            lambda: len(self.cluster.to(("192.0.2.20", 5070))) == 1
        )
        await self.cluster.settle()
        [notify] = self.cluster.to(("192.0.2.20", 5070))
        self.assertEqual((notify.node, notify.message.cseq.number), ("b", 5))

    async def _owner(self) -> str | None:
        assert self.db.runner is not None
        rows = await self.db.runner.runQuery(
            "SELECT sharing_tag FROM active_watchers", {}
        )
        return rows[0][0] if rows else None
