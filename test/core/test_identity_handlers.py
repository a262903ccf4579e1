"""The handlers act on the identity the request checks established.

A check stands in for authentication here (test/auth tests the real one):
it names whoever ``self.sender`` is, whatever the request's From says.
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from twisted.trial.unittest import SynchronousTestCase

from presence.auth.identity import ASSERTED, Identity
from presence.packages.winfo import WINFO_NS
from presence.sip.message import SIPRequest
from presence.testing import UA, Server, Subscriber, pidf

BOB = Identity("bob", "example.com")


class IdentityTestCase(SynchronousTestCase):
    """A server whose last request check names ``self.sender``."""

    def setUp(self) -> None:
        """Start the server; alice, bob and carol's user agents."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.sender: Identity | None = None
        self.checked: list[str] = []
        self.server.stack.dispatcher.checks.append(self.check)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        self.carol = Subscriber(self.server, "carol", "192.0.2.22", 5072)

    def check(self, request: SIPRequest, transaction: Any) -> Identity | None:
        """Name ``self.sender`` as the sender of every request."""
        self.checked.append(request.method)
        return self.sender

    def watch(self, watcher: Subscriber, presentity: str, **kw: Any) -> None:
        """Subscribe and answer the NOTIFYs that come."""
        self.assertEqual(watcher.subscribe(presentity, **kw).code, 200)
        for notify in watcher.notifies():
            watcher.answer(notify)


class PublishIdentityTests(IdentityTestCase):
    """Only the presentity publishes its state."""

    def test_otherAddressOfRecord(self) -> None:
        """Bob's identity on a PUBLISH for alice gets 403; for himself, 200.

        Only the presentity publishes its own state (a trusted peer may
        assert another identity for a PUBLISH it relays).
        """
        self.sender = BOB
        response = self.alice.publish(pidf(user="alice"))
        self.assertEqual(response.code, 403)
        self.assertIn("bob@example.com", response.phrase)
        self.assertEqual(self.bob.publish(pidf()).code, 200)

    def test_noIdentity(self) -> None:
        """Without an identity (authentication off) From is not checked."""
        response = self.alice.publish(
            pidf(user="bob"), presentity="sip:bob@example.com"
        )
        self.assertEqual(response.code, 200)


class RegisterIdentityTests(IdentityTestCase):
    """Only the owner of an address of record changes its bindings."""

    def test_otherAddressOfRecord(self) -> None:
        """RFC 3261 section 10.3 step 4: another user's REGISTER gets 403.

        "If the authenticated user is not authorized to modify bindings, the
        registrar MUST return a 403 (Forbidden) and skip the remaining
        steps."
        """
        self.sender = BOB
        self.alice.send(
            self.alice.request(
                "REGISTER", "sip:example.com", to="<sip:alice@example.com>"
            )
        )
        self.assertEqual(self.alice.response().code, 403)
        rows = self.successResultOf(self.server.store.bindings("alice@example.com"))
        self.assertEqual(rows, [])
        self.bob.send(
            self.bob.request("REGISTER", "sip:example.com", to="<sip:bob@example.com>")
        )
        self.assertEqual(self.bob.response().code, 200)


class SubscribeIdentityTests(IdentityTestCase):
    """The watcher is the identity, whatever From says."""

    def test_watcherIsIdentity(self) -> None:
        """Authenticated as bob with From alice: the watcher is bob everywhere.

        In active_watchers and watchers, as the policy and winfo see it.
        """
        self.sender = BOB
        self.watch(self.alice, "sip:carol@example.com")
        [subscription] = self.successResultOf(
            self.server.store.subscriptions("sip:carol@example.com", "presence")
        )
        self.assertEqual(
            (
                subscription.watcherUsername,
                subscription.watcherDomain,
                subscription.watcherURI,
            ),
            ("bob", "example.com", "sip:bob@example.com"),
        )
        rows = self.successResultOf(
            self.server.store.watchers("sip:carol@example.com", "presence")
        )
        self.assertEqual(
            [(r.watcherUsername, r.watcherDomain) for r in rows],
            [("bob", "example.com")],
        )

    def test_winfoNamesIdentity(self) -> None:
        """Carol's watcher information lists bob, not the From's alice."""
        self.sender = Identity("carol", "example.com")
        self.watch(self.carol, "sip:carol@example.com", event="presence.winfo")
        self.sender = BOB
        self.assertEqual(self.alice.subscribe("sip:carol@example.com").code, 200)
        [notify] = [n for n in self.carol.notifies() if n.callId == self.carol.callId]
        root = etree.fromstring(notify.body)
        uris = [e.text for e in root.iter(f"{{{WINFO_NS}}}watcher")]
        self.assertEqual(uris, ["sip:bob@example.com"])

    def test_winfoOwnerIsIdentity(self) -> None:
        """RFC 3857 section 5: only the presentity watches its watchers.

        Alice's From with bob's identity may not watch alice's watchers.
        """
        self.sender = BOB
        response = self.alice.subscribe("sip:alice@example.com", event="presence.winfo")
        self.assertEqual(response.code, 403)
        self.sender = Identity("alice", "example.com")
        response = self.alice.subscribe("sip:alice@example.com", event="presence.winfo")
        self.assertEqual(response.code, 200)

    def test_assertedDisplayName(self) -> None:
        """An asserted identity's display name is the watcher's display name."""
        self.sender = Identity("bob", "example.com", ASSERTED, "Bob B.")
        self.watch(self.alice, "sip:carol@example.com")
        [subscription] = self.successResultOf(
            self.server.store.subscriptions("sip:carol@example.com", "presence")
        )
        self.assertEqual(subscription.watcherDisplayName, "Bob B.")

    def test_refreshByAnother(self) -> None:
        """A request in bob's dialog from anybody but bob gets 403.

        Knowing the Call-ID and the tags of bob's dialog does not make one
        bob: the refresh must come from the dialog's watcher.
        """
        self.sender = BOB
        self.watch(self.bob, "sip:carol@example.com")
        self.sender = Identity("mallory", "example.com")
        self.assertEqual(self.bob.subscribe(refresh=True).code, 403)
        self.sender = BOB
        self.assertEqual(self.bob.subscribe(refresh=True).code, 200)


class ChecksSeeRequestsOnlyTests(IdentityTestCase):
    """Responses to the server's own NOTIFYs never reach the request checks."""

    def test_notifyResponsesNotChecked(self) -> None:
        """The 200s to the NOTIFYs go to client transactions, not the checks."""
        self.watch(self.alice, "sip:carol@example.com")
        UA(self.server, "carol", "192.0.2.22", 5072).publish(pidf(user="carol"))
        for notify in self.alice.notifies():
            self.alice.answer(notify)
        self.assertEqual(self.checked, ["SUBSCRIBE", "PUBLISH"])
        self.assertGreaterEqual(
            self.server.stack.transactions.stats.clientTransactions, 2
        )
