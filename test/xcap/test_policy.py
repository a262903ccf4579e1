"""The privacy policy seam: `IPrivacyPolicy`, `Decision` and `AllowAll`."""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from presence.packages.mwi import MWI_TYPE
from presence.status import ACTIVE, PENDING, TERMINATED
from presence.testing import Server, Subscriber
from presence.xcap.policy import (
    ALLOW,
    FULL_PERMISSIONS,
    AllowAll,
    Decision,
    IPrivacyPolicy,
)

BOB = "sip:bob@example.com"


@implementer(IPrivacyPolicy)
class RecordingPolicy:
    """Gives one decision to every watcher and records what it was asked."""

    def __init__(self, decision: Decision = ALLOW) -> None:
        """Decide ``decision`` for everybody."""
        self.decision = decision
        self.asked: list[tuple[str, str, str, str]] = []

    async def authorise(
        self, presentity: str, watcherUsername: str, watcherDomain: str, event: str
    ) -> Decision:
        """Record the question; give the decision."""
        self.asked.append((presentity, watcherUsername, watcherDomain, event))
        return self.decision

    def forget(self, presentity: str) -> None:
        """Nothing is kept."""


class DecisionTests(SynchronousTestCase):
    """What a policy decides."""

    def test_defaults(self) -> None:
        """A decision is a status; no reason, full permissions, no polite block."""
        decision = Decision(PENDING)
        self.assertEqual(
            (
                decision.status,
                decision.reason,
                decision.permissions,
                decision.politeBlock,
            ),
            (PENDING, None, FULL_PERMISSIONS, False),
        )

    def test_hashable(self) -> None:
        """Decisions are hashable and equal by value, so they key caches."""
        self.assertEqual(hash(Decision(ACTIVE)), hash(ALLOW))
        self.assertEqual({Decision(ACTIVE): 1}[ALLOW], 1)

    def test_frozen(self) -> None:
        """A decision cannot be changed once made (``ALLOW`` is shared)."""
        self.assertRaises(
            dataclasses.FrozenInstanceError, setattr, ALLOW, "status", TERMINATED
        )


class AllowAllTests(SynchronousTestCase):
    """``force_active``: the policy that allows everybody."""

    def test_interface(self) -> None:
        """AllowAll provides IPrivacyPolicy."""
        self.assertTrue(verifyObject(IPrivacyPolicy, AllowAll()))

    def test_allows(self) -> None:
        """Every watcher is active, whoever and whatever it watches."""
        for args in [
            (BOB, "alice", "example.com", "presence"),
            (BOB, "", "example.net", "dialog"),
        ]:
            decision = self.successResultOf(AllowAll().authorise(*args))
            self.assertIs(decision, ALLOW)
        self.assertEqual((ALLOW.status, ALLOW.reason), (ACTIVE, None))
        self.assertIs(ALLOW.permissions, FULL_PERMISSIONS)
        self.assertFalse(ALLOW.politeBlock)


class PolicySeamTests(SynchronousTestCase):
    """The core asks the policy about each new watcher, and obeys it.

    Bob is watched by alice on a server whose policy is a `RecordingPolicy`.
    """

    def setUp(self) -> None:
        """Start the server with a recording policy, and alice."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.policy = RecordingPolicy()
        self.server.stack.subscribe.policy = self.policy
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)

    def test_askedOncePerWatcher(self) -> None:
        """A new subscription asks the policy; a refresh keeps its answer."""
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.alice.subscribe(refresh=True, expires=1200).code, 200)
        self.assertEqual(self.policy.asked, [(BOB, "alice", "example.com", "presence")])

    def test_notAskedWithoutAuthorisation(self) -> None:
        """A package that needs no authorisation never asks the policy.

        message-summary is owner-only instead (RFC 3842 section 3.7).
        """
        bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        response = bob.subscribe(BOB, event="message-summary")
        self.assertEqual(response.code, 200)
        [notify] = bob.notifies()
        self.assertEqual(notify.header("content-type"), MWI_TYPE)
        self.assertEqual(self.policy.asked, [])

    def test_rejected(self) -> None:
        """A terminated decision refuses the SUBSCRIBE with 403, storing nothing.

        RFC 6665 section 4.2.1.1: a notifier that can tell at once that the
        subscriber is not authorised answers 403 (Forbidden). Rules that
        must not reveal a refusal say polite-block instead (RFC 5025
        section 3.2.1).
        """
        self.policy.decision = Decision(TERMINATED, "rejected")
        response = self.alice.subscribe(BOB)
        self.assertEqual(response.code, 403)
        self.assertEqual(self.alice.notifies(), [])
        self.assertEqual(self.server.store.counts()["subscriptions"], 0)
        self.assertEqual(self.server.stack.subscribe.refused, 1)
