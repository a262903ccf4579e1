"""A PUBLISH's fan-out and a SUBSCRIBE that arrives while it reads the store.

Seen as a new subscription's second NOTIFY with the same state as its first
(CSeq 1 and 2, both ``active`` with the same document): the fan-out read the
subscriptions after the new one was stored, and the new one's first NOTIFY
had already read the state the fan-out notifies. RFC 6665 section 4.2.2
asks for a NOTIFY when the state changes; that one changed nothing. A
subscription whose handling began after the fan-out began is skipped by it:
its authorisation and state were read after what the fan-out notifies was
written. One whose handling began earlier is still notified.

In memory and cache mode the store answers at once, so the window opens
only when the fan-out waits (here: its read of the subscriptions is held);
in shared mode every read is a round trip, and the window is that trip.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from presence.testing import UA, Server, Subscriber, pidf

BOB = "sip:bob@example.com"


class FanOutRaceTests(SynchronousTestCase):
    """One server in memory; the fan-out's read of the subscriptions held."""

    def setUp(self) -> None:
        """A server, bob the publisher, alice and carol the watchers."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.bob = UA(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.22", 5072)
        self.carol = Subscriber(self.server, "carol", "192.0.2.23", 5073)
        self.notifier = self.server.stack.notifier

    def held(self) -> Deferred[None]:
        """Hold the notifier's next read of the subscriptions until fired."""
        store: Any = self.notifier.store
        read = store.subscriptions
        gate: Deferred[None] = Deferred()

        async def subscriptions(presentity: str, event: str) -> Any:
            store.subscriptions = read
            await gate
            return await read(presentity, event)

        store.subscriptions = subscriptions
        return gate

    def answerAll(self, ua: Subscriber) -> list[Any]:
        """Answer every NOTIFY ``ua`` has; them."""
        notifies = ua.notifies()
        for notify in notifies:
            ua.answer(notify)
        return notifies

    def test_newSubscriptionSkipped(self) -> None:
        """Subscribed while the fan-out reads: one NOTIFY, not two alike."""
        self.assertEqual(self.carol.subscribe(BOB).code, 200)
        self.answerAll(self.carol)
        self.assertEqual(self.bob.publish(pidf("open")).code, 200)
        self.answerAll(self.carol)
        # A second change whose fan-out is held while alice subscribes.
        gate = self.held()
        fanOut = Deferred.fromCoroutine(
            self.notifier.presentityChanged(BOB, "presence")
        )
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        [first] = self.answerAll(self.alice)
        self.assertIn(b"<basic>open</basic>", first.body)
        gate.callback(None)
        self.assertEqual(self.successResultOf(fanOut), 1)
        self.assertEqual(self.answerAll(self.alice), [])
        # Carol, subscribed before the fan-out began, is notified by it.
        [again] = self.answerAll(self.carol)
        self.assertEqual(again.cseq.number, 3)
        self.assertEqual(self.notifier._begun, {})  # nothing kept

    def test_laterFanOutNotifiesIt(self) -> None:
        """A fan-out begun after the subscription notifies it as any other."""
        gate = self.held()
        fanOut = Deferred.fromCoroutine(
            self.notifier.presentityChanged(BOB, "presence")
        )
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.answerAll(self.alice)
        gate.callback(None)
        self.successResultOf(fanOut)
        self.assertEqual(self.bob.publish(pidf("open")).code, 200)
        [notify] = self.answerAll(self.alice)
        self.assertEqual(notify.cseq.number, 2)
        self.assertIn(b"<basic>open</basic>", notify.body)
