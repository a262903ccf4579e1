"""NOTIFY (RFC 6665 section 4.2.2) through the whole server.

Over in-memory transports: how NOTIFYs are built in the dialog, when they are
sent, and what their responses do to the subscription.
"""

from __future__ import annotations

import gc
import math

from zope.interface import implementer

from presence.core.notify import ENDING_CODES, aorOf
from presence.sip.message import SIPRequest
from presence.status import PENDING
from presence.storage.records import Subscription
from presence.testing import Subscriber, pidf
from presence.xcap.policy import Decision, IPrivacyPolicy
from test.support.cases import BobAndAliceTestCase

BOB = "sip:bob@example.com"


@implementer(IPrivacyPolicy)
class PendingPolicy:
    """Leaves every watcher pending, as pres-rules do for an unknown one."""

    async def authorise(
        self, presentity: str, watcherUsername: str, watcherDomain: str, event: str
    ) -> Decision:
        """Pending."""
        return Decision(PENDING)

    def forget(self, presentity: str) -> None:
        """Nothing is kept."""


class NotifyTestCase(BobAndAliceTestCase):
    """A server, a publisher (bob) and a watcher (alice)."""

    def subscriptions(self) -> int:
        """How many subscriptions the server keeps."""
        return self.server.store.counts()["subscriptions"]


class NotifyTests(NotifyTestCase):
    """NOTIFY in the dialog, one outstanding, and what its response does."""

    def test_cseqIncreases(self) -> None:
        """RFC 3261 12.2.1.1: each NOTIFY in the dialog has a higher CSeq."""
        first = self.subscribed()
        self.bob.publish(pidf())
        [second] = self.alice.notifies()
        self.assertEqual(second.cseq.number, first.cseq.number + 1)

    def test_notify481Drops(self) -> None:
        """RFC 6665 4.2.2: a NOTIFY answered 481 removes the subscription."""
        self.alice.subscribe()
        [notify] = self.alice.notifies()
        self.alice.answer(notify, 481)
        self.bob.publish(pidf())
        self.assertEqual(self.alice.notifies(), [])
        self.assertEqual(self.server.store.counts()["subscriptions"], 0)

    def test_notifyTimeoutDrops(self) -> None:
        """RFC 6665 4.2.2.

        A NOTIFY that times out (Timer F) removes the subscription.
        """
        self.alice.subscribe()
        self.server.advance(33)
        self.alice.notifies()
        self.assertEqual(self.server.store.counts()["subscriptions"], 0)

    def test_oneNotifyOutstanding(self) -> None:
        """RFC 6665 4.2.2.

        One NOTIFY in flight per dialog; newer states wait and only the newest
        is sent.
        """
        self.alice.subscribe()
        [first] = self.alice.notifies()
        etag = self.bob.publish(pidf("open", note="one")).header("sip-etag")
        self.bob.publish(pidf("open", note="two"), etag=etag)
        self.assertEqual(self.alice.notifies(), [])
        self.alice.answer(first)
        [second] = self.alice.notifies()
        self.assertIn(b"two", second.body)
        self.assertEqual(second.cseq.number, first.cseq.number + 1)

    def test_recordRoute(self) -> None:
        """RFC 3261 12.1.1.

        The route set comes from Record-Route and NOTIFYs carry it as Route,
        sent to the first hop.
        """
        self.alice.subscribe(
            extra=[("Record-Route", "<sip:192.0.2.99:5080;lr>, <sip:198.51.100.1;lr>")]
        )
        sent = self.server.sent()
        notifies = [(m, a) for m, a in sent if isinstance(m, SIPRequest)]
        [(notify, addr)] = notifies
        self.assertEqual(
            notify.headerValues("route"),
            ["<sip:192.0.2.99:5080;lr>", "<sip:198.51.100.1;lr>"],
        )
        self.assertEqual(addr, ("192.0.2.99", 5080))

    def test_endingResponsesRemove(self) -> None:
        """RFC 6665 4.2.2: a response that ends the dialog usage ends it here.

        "If the NOTIFY transaction fails due to the receipt of a 404, 405,
        410, 416, 480-485, 489, 501, or 604 response to the NOTIFY request,
        the notifier MUST remove the corresponding subscription. See
        [RFC5057] for further details and notes about the effect of error
        codes on dialogs." The server ends it on 408 and 503 too, after RFC
        5057 section 5.1.
        """
        listed = {404, 405, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604}
        self.assertEqual(ENDING_CODES, listed | {408, 503})
        for code in sorted(ENDING_CODES):
            self.alice.subscribe()
            [notify] = self.alice.notifies()
            self.alice.answer(notify, code)
            self.assertEqual(self.subscriptions(), 0, code)

    def test_otherFailureKeeps(self) -> None:
        """RFC 6665 4.2.2: other failures leave the subscription in place.

        A 500 is not one of the codes that end the subscription; the watcher
        is notified of the next change as before.
        """
        self.alice.subscribe()
        [notify] = self.alice.notifies()
        self.alice.answer(notify, 500)
        self.assertEqual(self.server.stack.notifier.stats.failed, 1)
        self.assertEqual(self.subscriptions(), 1)
        self.bob.publish(pidf())
        [notify] = self.alice.notifies()
        self.assertEqual(notify.header("subscription-state"), "active;expires=600")

    def test_pendingWithoutState(self) -> None:
        """RFC 6665 4.1.3: a pending subscription is told so, without the state.

        "If the "Subscription-State" header field value is "pending", the
        subscription has been received by the notifier, but there is
        insufficient policy information to grant or deny the subscription
        yet." Until it is granted, the watcher sees nothing of bob's state,
        not even after he publishes.
        """
        self.server.stack.subscribe.policy = PendingPolicy()
        self.alice.subscribe()
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertEqual(notify.header("subscription-state"), "pending;expires=600")
        self.assertEqual(notify.body, b"")
        self.assertIsNone(notify.header("content-type"))
        self.bob.publish(pidf())
        [notify] = self.alice.notifies()
        self.assertEqual(notify.header("subscription-state"), "pending;expires=600")
        self.assertEqual(notify.body, b"")

    def test_finalNotifyNotReplaced(self) -> None:
        """RFC 6665 4.2.2: a final NOTIFY waiting for its turn is not replaced.

        A subscription that ended while a NOTIFY was in flight is told so
        next, even if a newer state is asked for meanwhile; nothing follows.
        """
        self.alice.subscribe()
        [first] = self.alice.notifies()
        [row] = self.successResultOf(self.server.store.subscriptions(BOB, "presence"))
        notifier = self.server.stack.notifier
        self.assertEqual(notifier.outstanding, 1)
        notifier.send(row, terminated="deactivated")
        notifier.send(row)
        self.assertEqual(notifier.stats.coalesced, 1)
        self.assertEqual(self.alice.notifies(), [])
        self.alice.answer(first)
        [final] = self.alice.notifies()
        self.assertEqual(
            final.header("subscription-state"), "terminated;reason=deactivated"
        )
        self.assertEqual(final.cseq.number, first.cseq.number + 1)
        self.alice.answer(final)
        self.assertEqual(self.alice.notifies(), [])
        self.assertEqual(notifier.outstanding, 0)

    def test_aorOf(self) -> None:
        """The store keys publications by address of record, without the scheme."""
        self.assertEqual(aorOf(BOB), "bob@example.com")
        self.assertEqual(aorOf("bob@example.com"), "bob@example.com")


class FanOutCollectorTests(NotifyTestCase):
    """The cyclic garbage collector waits while a fan-out's NOTIFYs are sent."""

    def setUp(self) -> None:
        """Alice and carol watch bob; each send notes whether gc was on."""
        super().setUp()
        self.carol = Subscriber(self.server, "carol", "192.0.2.22", 5072)
        for watcher in (self.alice, self.carol):
            self.subscribed(watcher)
        notifier = self.server.stack.notifier
        self.collecting: list[bool] = []
        send = notifier.send

        def noting(subscription: Subscription, *args: object, **kw: object) -> None:
            self.collecting.append(gc.isenabled())
            send(subscription, *args, **kw)  # type: ignore[arg-type]

        notifier.send = noting  # type: ignore[method-assign]
        self.addCleanup(gc.enable)

    def published(self) -> None:
        """Bob publishes; both watchers are notified."""
        self.bob.publish(pidf())
        for watcher in (self.alice, self.carol):
            [notify] = watcher.notifies()
            watcher.answer(notify)

    def test_offDuringFanOutThenOn(self) -> None:
        """Off while the NOTIFYs go out, on again once they are on their way."""
        self.published()
        self.assertEqual(self.collecting, [False, False])
        self.assertTrue(gc.isenabled())

    def test_leftOffIfOff(self) -> None:
        """A collector someone else turned off is not turned on."""
        gc.disable()
        self.published()
        self.assertEqual(self.collecting, [False, False])
        self.assertFalse(gc.isenabled())


class RemainingTimeTests(NotifyTestCase):
    """Subscription-State carries the time remaining, never more than granted.

    RFC 6665 section 4.2.2: the "expires" parameter of an active or pending
    Subscription-State "indicates the time remaining"; after a 2xx that
    granted 600 seconds no NOTIFY may say more.
    """

    def test_storedInWholeSeconds(self) -> None:
        """Expiry kept in whole seconds rounded down (as the database keeps it).

        A subscription made at a fractional time, its expiry rounded down to
        the second as a store does: the NOTIFYs say less than was granted,
        never more (600 granted at 1000.3 is 599.95 remaining at 1000.35).
        """
        self.server.advance(1000.3)
        response = self.alice.subscribe(expires=600)
        self.assertEqual(response.header("expires"), "600")
        [notify] = self.alice.notifies()
        self.assertEqual(notify.header("subscription-state"), "active;expires=600")
        self.alice.answer(notify)
        store = self.server.store
        [subscription] = self.successResultOf(
            store.subscriptions("sip:bob@example.com", "presence")
        )
        subscription.expires = float(math.floor(subscription.expires))
        self.successResultOf(store.putSubscription(subscription))
        self.server.advance(0.05)
        self.assertEqual(self.bob.publish(pidf()).code, 200)
        [notify] = self.alice.notifies()
        self.assertEqual(notify.header("subscription-state"), "active;expires=599")
        self.alice.answer(notify)
        self.server.advance(100)
        self.assertEqual(self.bob.publish(pidf("closed")).code, 200)
        [notify] = self.alice.notifies()
        self.assertEqual(notify.header("subscription-state"), "active;expires=499")


class TCPTests(NotifyTestCase):
    """NOTIFYs over TCP go back over the SUBSCRIBE's connection."""

    def test_notifyOverSameConnection(self) -> None:
        """The NOTIFY reuses the connection the SUBSCRIBE came on.

        Whatever the Contact's port says.
        """
        alice = Subscriber(self.server, "alice", "192.0.2.30", 40000, transport="TCP")
        response = alice.subscribe()
        self.assertEqual(response.code, 200)
        [notify] = alice.notifies()
        self.assertEqual(notify.method, "NOTIFY")
        self.assertEqual(notify.topVia.transport, "TCP")
        alice.answer(notify)
        self.assertEqual(self.server.stack.notifier.stats.accepted, 1)
