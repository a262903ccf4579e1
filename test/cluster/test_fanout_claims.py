"""The owner's fan-out in shared mode claims its CSeqs in batches, on a real PostgreSQL.

One statement (``claimOwnedMany``) claims the CSeqs of many watchers of a
change; the guarantees of one claim per NOTIFY hold for each of them: the
claim is fenced by the owner (a server that lost a subscription gets nothing
back and sends nothing), each dialog's CSeq strictly increases, and one
NOTIFY is outstanding per dialog (RFC 6665 section 4.2.2: "the notifier
MUST NOT send a new NOTIFY request ... until it has received a final
response ... to the previous one"; a lower CSeq after a higher one is
answered 500, RFC 3261 section 12.2.2).
"""

from __future__ import annotations

from typing import Any

from presence.core import notify
from presence.sip.message import SIPRequest, responseTo
from presence.testing import pidf
from test.cluster.harness import Node, Sent, Watcher
from test.cluster.test_cluster import BOB, ClusterTestCase, cseqs
from test.cluster.test_roundtrips import Counting


def keyOf(watcher: Watcher) -> tuple[str, str, str, str, str]:
    """The subscription key of a watcher's subscription to bob's presence."""
    return (watcher.callId, watcher.toTag or "", watcher.tag, "presence", "")


class FanOutClaimTests(ClusterTestCase):
    """Batched claims: fenced, in order, one NOTIFY outstanding per dialog."""

    async def watched(self, node: Node, first: int, count: int) -> list[Watcher]:
        """``count`` watchers of bob subscribed at ``node``, their NOTIFYs done."""
        watchers = [
            Watcher(f"w{n}", f"192.0.2.{100 + n}") for n in range(first, first + count)
        ]
        for watcher in watchers:
            await self.subscribed(node, watcher)
        await self.cluster.settle()
        return watchers

    async def publish(self, node: Node, note: str) -> None:
        """Bob publishes a new document at ``node``."""
        bob = Watcher("bob", "192.0.2.30")
        response = await self.cluster.request(
            node, bob, bob.publishBytes(pidf("open", "t", note))
        )
        self.assertEqual(response.code, 200)

    async def test_claimFencedByOwner(self) -> None:
        """Only the rows the server owns come back, each one CSeq higher.

        The subscription another server owns is neither returned nor
        changed: its owner's next NOTIFY continues its own CSeq.
        """
        a, b = await self.nodes("a", "b")
        mine = await self.watched(a, 0, 2)
        [theirs] = await self.watched(b, 2, 1)
        store = a.stack.storage.database
        claimed = await store.claimOwnedMany([keyOf(w) for w in [*mine, theirs]])
        self.assertEqual(
            sorted((s.key, s.localCSeq, s.sharingTag) for s in claimed),
            sorted((keyOf(w), 2, a.member.serverId) for w in mine),
        )
        other = await store.subscription(keyOf(theirs))
        assert other is not None
        self.assertEqual(other.localCSeq, 1)

    async def test_lostWhileReadingSendsNothing(self) -> None:
        """A subscription moved after the fan-out read it: nothing sent for it.

        The fan-out read it as this server's; before the claim, it became
        another's (a take-over, a refresh elsewhere). The batch's claim
        refuses it, the others are notified.
        """
        [a] = await self.nodes("a")
        watchers = await self.watched(a, 0, 3)
        moved = watchers[1]
        store: Any = a.stack.notifier.store
        read = store.subscriptions
        assert self.db.runner is not None
        runner = self.db.runner

        async def subscriptions(presentity: str, event: str) -> Any:
            store.subscriptions = read
            rows = await read(presentity, event)
            await runner.runOperation(
                "UPDATE active_watchers SET sharing_tag = 'elsewhere'"
                " WHERE callid = :callid",
                {"callid": moved.callId},
            )
            return rows

        store.subscriptions = subscriptions
        await self.publish(a, "changed")
        await self.cluster.until(
            lambda: all(
                len(self.cluster.to(w.address)) == 2 for w in watchers if w is not moved
            )
        )
        await self.cluster.settle()
        self.assertEqual(len(self.cluster.to(moved.address)), 1)
        self.assertEqual(a.stack.notifier.stats.claimsRefused, 1)
        row = await self.db.subscription(keyOf(moved))
        assert row is not None
        self.assertEqual(row.localCSeq, 1)

    async def test_outstandingDialogWaits(self) -> None:
        """A dialog with a NOTIFY unanswered is not claimed with the batch.

        Its newer state queues behind the outstanding NOTIFY and takes its
        CSeq when that is answered, after the others went out: its NOTIFYs
        stay one at a time, in increasing CSeq, the last with the last state.
        """
        [a] = await self.nodes("a")
        watchers = await self.watched(a, 0, 3)
        slow = watchers[0]
        self.cluster.autoAnswer.discard(slow.address)
        await self.publish(a, "first")
        await self.cluster.until(
            lambda: all(len(self.cluster.to(w.address)) == 2 for w in watchers)
        )
        await self.cluster.until(
            lambda: self.cluster.unanswered.get(watchers[2].address) == 0
        )
        await self.publish(a, "second")
        await self.cluster.until(
            lambda: all(len(self.cluster.to(w.address)) == 3 for w in watchers[1:])
        )
        self.assertEqual(len(self.cluster.to(slow.address)), 2)
        self.assertEqual(a.stack.notifier.queued, 1)
        # The slow watcher answers its outstanding NOTIFY at last.
        self.cluster.autoAnswer.add(slow.address)
        outstanding: Sent = self.cluster.to(slow.address)[-1]
        assert isinstance(outstanding.message, SIPRequest)
        a.receive(
            responseTo(outstanding.message, 200, toTag=None).toBytes(), slow.address
        )
        await self.cluster.until(lambda: len(self.cluster.to(slow.address)) == 3)
        await self.cluster.settle()
        for watcher in watchers:
            notifies = self.cluster.to(watcher.address)
            self.assertEqual(cseqs(notifies), [1, 2, 3])
            self.assertIn(b"<note>second</note>", notifies[-1].message.body)
        self.assertEqual(self.cluster.mostUnanswered.get(slow.address), 1)

    async def test_batchesOfClaims(self) -> None:
        """More watchers than a batch: one claim statement per batch."""
        self.patch(notify, "CLAIM_BATCH", 3)
        [a] = await self.nodes("a")
        watchers = await self.watched(a, 0, 7)
        counting = Counting(a.stack.storage.database.runner.pool)
        await self.publish(a, "changed")
        await self.cluster.until(
            lambda: all(len(self.cluster.to(w.address)) == 2 for w in watchers)
        )
        await self.cluster.settle()
        claims = [c for c in counting.take() if c.startswith("UPDATE active_watchers")]
        self.assertEqual(len(claims), 3, claims)
        for watcher in watchers:
            self.assertEqual(cseqs(self.cluster.to(watcher.address)), [1, 2])
        rows = await self.db.subscriptions(BOB, "presence")
        self.assertEqual({row.localCSeq for row in rows}, {2})
