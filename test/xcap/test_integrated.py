"""The integrated XCAP mode end to end, through the in-memory server.

The server runs with ``integrated_xcap_server = true``; bob's rules are put
in its XCAP documents store as OpenXCAP would (``doc_uri`` ``index.xml``,
``source`` 0), alice and carol watch him, and bob watches his watchers
(``presence.winfo``). `presence.stack.Stack.reauthorise` is what
refreshWatchers, xcap-diff and the periodic check call.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from lxml import etree
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from presence.config import Config, ConfigError
from presence.core.authorise import ReauthoriseResult
from presence.packages.presence import PresencePackage, offlineDocument
from presence.packages.winfo import WINFO_NS
from presence.sip.message import SIPRequest
from presence.status import ACTIVE, PENDING, TERMINATED
from presence.storage.xcap import (
    OMA_PRES_RULES,
    PRES_RULES,
    RESOURCE_LISTS,
    XCAPDocument,
)
from presence.testing import UA, Server, Subscriber
from presence.xcap.integrated import RULES_TTL, RulesPolicy
from presence.xcap.policy import AllowAll

T = TypeVar("T")

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
OCP = "urn:oma:xml:xdm:common-policy"
RL = "urn:ietf:params:xml:ns:resource-lists"
PIDF_NS = "urn:ietf:params:xml:ns:pidf"
BOB = "sip:bob@example.com"


def ruleset(*rules: str) -> bytes:
    """A pres-rules document with these rules."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}" xmlns:ocp="{OCP}">'
        + "".join(rules)
        + "</cr:ruleset>"
    ).encode()


def rule(
    ident: str, who: list[str] | None, handling: str, transformations: str = ""
) -> str:
    """One rule for the watchers ``who`` (everybody when ``None``)."""
    conditions = ""
    if who is not None:
        conditions = (
            "<cr:identity>"
            + "".join(f'<cr:one id="sip:{w}@example.com"/>' for w in who)
            + "</cr:identity>"
        )
    out = (
        f'<cr:rule id="{ident}"><cr:conditions>{conditions}</cr:conditions>'
        f"<cr:actions><pr:sub-handling>{handling}</pr:sub-handling></cr:actions>"
    )
    if transformations:
        out += f"<cr:transformations>{transformations}</cr:transformations>"
    return out + "</cr:rule>"


#: Everything a watcher may see.
EVERYTHING = (
    "<pr:provide-services><pr:all-services/></pr:provide-services>"
    "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
    "<pr:provide-devices><pr:all-devices/></pr:provide-devices>"
    "<pr:provide-all-attributes/>"
)

#: A PIDF with a tuple (its own note) and a note of the presence itself.
RICH = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="{PIDF_NS}"'
    ' entity="sip:bob@example.com"><tuple id="t1"><status><basic>open</basic>'
    "</status><contact>sip:bob@192.0.2.21</contact><note>at the desk</note>"
    "</tuple><note>Gone fishing</note></presence>"
).encode()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that finishes at once (the memory stores)."""
    results: list[T] = []
    Deferred.fromCoroutine(coroutine).addCallback(results.append)
    assert results, "the coroutine did not finish"
    return results[0]


def winfoEntries(notify: SIPRequest) -> list[tuple[str, str, str]]:
    """(watcher URI, status, event) of each watcher of a winfo NOTIFY."""
    root = etree.fromstring(notify.body)
    return [
        (w.text or "", w.get("status") or "", w.get("event") or "")
        for w in root.iter(f"{{{WINFO_NS}}}watcher")
    ]


class IntegratedModeTestCase(SynchronousTestCase):
    """A server in the integrated XCAP mode; bob publishes, alice watches."""

    def setUp(self) -> None:
        """Start the server, bob, alice and carol."""
        self.server = Server(integratedXcapServer=True)
        self.addCleanup(self.server.close)
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.carol = Subscriber(self.server, "carol", "192.0.2.22", 5072)

    def rules(self, *rules: str, docType: int = PRES_RULES, etag: str = "") -> None:
        """Bob's pres-rules, as OpenXCAP stores them."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        etag = etag or f"etag-{len(rules)}-{hash(rules) & 0xFFFF:x}"
        run(
            xcap.put(XCAPDocument("bob", "example.com", ruleset(*rules), docType, etag))
        )

    def reauthorise(self) -> ReauthoriseResult:
        """What refreshWatchers does for bob's presence."""
        return run(self.server.stack.reauthorise(BOB, "presence"))

    def only(self, watcher: UA) -> SIPRequest:
        """The one NOTIFY ``watcher`` got, answered."""
        [notify] = watcher.notifies()
        watcher.answer(notify)
        return notify

    def watchWatchers(self) -> SIPRequest:
        """Bob subscribes to his watcher information; the first NOTIFY."""
        self.assertEqual(self.bob.subscribe(BOB, event="presence.winfo").code, 200)
        return self.only(self.bob)

    def watcherRow(self, user: str) -> tuple[int, str | None]:
        """(status, reason) of a watcher's row in ``watchers``."""
        rows = run(self.server.store.watchers(BOB, "presence"))
        [row] = [r for r in rows if r.watcherUsername == user]
        return row.status, row.reason


class SettingsTests(SynchronousTestCase):
    """The settings choose the policy, and a mix of modes is refused."""

    def test_forceActiveByDefault(self) -> None:
        """No XCAP mode: force_active, every watcher allowed, no documents."""
        server = Server()
        self.addCleanup(server.close)
        self.assertTrue(server.config.forceActiveInEffect)
        self.assertIsInstance(server.stack.policy, AllowAll)
        self.assertIsNone(server.stack.xcap)

    def test_integrated(self) -> None:
        """integrated_xcap_server: rules read, force_active off by default."""
        server = Server(integratedXcapServer=True)
        self.addCleanup(server.close)
        self.assertFalse(server.config.forceActiveInEffect)
        self.assertIsInstance(server.stack.policy, RulesPolicy)
        self.assertIsNotNone(server.stack.xcap)

    def test_mixesRefused(self) -> None:
        """Two modes at once are refused with a message that says why."""
        cases: list[tuple[dict[str, Any], str]] = [
            (
                {"integratedXcapServer": True, "xcapServer": ("http://x/xcap-root",)},
                "choose one",
            ),
            (
                {"integratedXcapServer": True, "forceActive": True},
                "the rules would never count",
            ),
            (
                {"xcapServer": ("http://x/xcap-root",), "forceActive": True},
                "the rules would never count",
            ),
        ]
        for settings, words in cases:
            e = self.assertRaises(ConfigError, Config(**settings).validate)
            self.assertIn(words, str(e))

    def test_external(self) -> None:
        """xcap_server alone is the external mode; a bad URL or period is refused."""
        config = Config(xcapServer=("http://x/xcap-root",)).validate()
        self.assertFalse(config.forceActiveInEffect)
        e = self.assertRaises(ConfigError, Config(xcapServer=("ftp://x",)).validate)
        self.assertIn("not an http(s) URL", str(e))
        e = self.assertRaises(
            ConfigError,
            Config(integratedXcapServer=True, queryPeriod=0).validate,
        )
        self.assertIn("query_period", str(e))

    def test_toml(self) -> None:
        """The TOML names."""
        from presence.config import fromMapping

        config = fromMapping(
            {
                "integrated_xcap_server": True,
                "force_active": False,
                "periodical_query": False,
                "query_period": 30,
            }
        ).validate()
        self.assertEqual(
            (
                config.integratedXcapServer,
                config.forceActive,
                config.periodicalQuery,
                config.queryPeriod,
            ),
            (True, False, False, 30),
        )


class OutcomeTests(IntegratedModeTestCase):
    """What each sub-handling does to a new watcher (RFC 5025 section 3.2.1)."""

    def test_noDocumentPending(self) -> None:
        """Without any rules document, a watcher waits: pending, no state.

        RFC 6665 section 4.2.2: a pending subscription's NOTIFY carries
        "pending" and no state is sent until the subscription is active.
        """
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.assertEqual(notify.body, b"")
        self.assertEqual(self.watcherRow("alice"), (PENDING, None))

    def test_allow(self) -> None:
        """allow: active, with bob's whole state when the rule shows it all."""
        self.rules(rule("a", ["alice"], "allow", EVERYTHING))
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertIn(b"Gone fishing", notify.body)
        self.assertIn(b"at the desk", notify.body)
        self.assertEqual(self.watcherRow("alice"), (ACTIVE, None))

    def test_block(self) -> None:
        """block: the initial SUBSCRIBE gets 403 (RFC 6665 section 4.2.1.1)."""
        self.rules(rule("b", ["alice"], "block"))
        self.assertEqual(self.alice.subscribe(BOB).code, 403)
        self.assertEqual(self.alice.notifies(), [])
        self.assertEqual(self.server.store.counts()["subscriptions"], 0)

    def test_noRuleMatches(self) -> None:
        """A document in which no rule matches the watcher blocks it."""
        self.rules(rule("a", ["carol"], "allow", EVERYTHING))
        self.assertEqual(self.alice.subscribe(BOB).code, 403)

    def test_politeBlock(self) -> None:
        """polite-block: active, and only ever the offline document.

        RFC 5025 section 3.2.1: "polite-block" places the subscription in
        the "active" state, and the watcher is sent a document saying the
        presentity is unavailable, exactly what an offline presentity gives.
        """
        self.rules(rule("p", ["alice"], "polite-block", EVERYTHING))
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertEqual(notify.body, offlineDocument(BOB))
        self.bob.publish(RICH.replace(b"Gone fishing", b"Back"))
        self.assertEqual(self.only(self.alice).body, offlineDocument(BOB))

    def test_politeBlockEmptyOffline(self) -> None:
        """With offline_body = "empty", the polite block sends no body."""
        server = Server(integratedXcapServer=True, offlineBody="empty")
        self.addCleanup(server.close)
        xcap = server.stack.xcap
        assert xcap is not None
        run(
            xcap.put(
                XCAPDocument(
                    "bob",
                    "example.com",
                    ruleset(rule("p", None, "polite-block")),
                    2,
                    "1",
                )
            )
        )
        UA(server, "bob", "192.0.2.21", 5071).publish(RICH)
        alice = Subscriber(server, "alice", "192.0.2.20", 5070)
        self.assertEqual(alice.subscribe(BOB).code, 200)
        [notify] = alice.notifies()
        self.assertEqual(notify.body, b"")

    def test_rulesCombineAcrossRows(self) -> None:
        """pres-rules (2) and OMA pres-rules (32) rows are one rule set.

        RFC 5025 section 9.7: the server uses all documents found beneath
        the user's directory.
        """
        self.rules(rule("a", ["alice"], "allow"), docType=PRES_RULES)
        self.rules(rule("c", ["carol"], "allow"), docType=OMA_PRES_RULES)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.carol.subscribe(BOB).code, 200)

    def test_externalList(self) -> None:
        """An external-list condition reads the user's resource lists (4)."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        lists = (
            f'<resource-lists xmlns="{RL}"><list name="friends">'
            '<entry uri="sip:alice@example.com"/></list></resource-lists>'
        ).encode()
        run(
            xcap.put(
                XCAPDocument("bob", "example.com", lists, RESOURCE_LISTS, "l", "index")
            )
        )
        anchor = (
            "http://xcap.example.com/xcap-root/resource-lists/users/"
            "sip:bob@example.com/index/~~/resource-lists/list%5b@name=%22friends%22%5d"
        )
        self.rules(
            '<cr:rule id="f"><cr:conditions><ocp:external-list>'
            f'<ocp:entry anc="{anchor}"/></ocp:external-list></cr:conditions>'
            "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>"
            "</cr:rule>"
        )
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.carol.subscribe(BOB).code, 403)

    def test_unreadableBlocksAll(self) -> None:
        """A document that cannot be read blocks everybody, logged once."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        run(xcap.put(XCAPDocument("bob", "example.com", b"<not-closed", 2, "x")))
        policy = self.server.stack.policy
        assert isinstance(policy, RulesPolicy)
        self.assertEqual(self.alice.subscribe(BOB).code, 403)
        self.server.advance(RULES_TTL + 1)
        self.assertEqual(self.carol.subscribe(BOB).code, 403)
        self.assertEqual(policy.parsed, 1)
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class TransformationTests(IntegratedModeTestCase):
    """What the rules let a watcher see reaches its NOTIFY (RFC 5025 3.3)."""

    def test_onlyNotes(self) -> None:
        """A watcher allowed only provide-note sees only notes.

        RFC 5025 section 3.3: transformations grant visibility; with no
        provide-services, no tuple is shown.
        """
        self.rules(
            rule("n", ["alice"], "allow", "<pr:provide-note>true</pr:provide-note>"),
            rule("c", ["carol"], "allow", EVERYTHING),
        )
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        root = etree.fromstring(self.only(self.alice).body)
        self.assertEqual([etree.QName(c).localname for c in root], ["note"], root)
        self.assertEqual(root[0].text, "Gone fishing")
        self.assertEqual(self.carol.subscribe(BOB).code, 200)
        self.assertIn(b"at the desk", self.only(self.carol).body)

    def test_oncePerPermissionSet(self) -> None:
        """Watchers with the same permissions share one transformed body."""
        package = self.server.stack.packages.get("presence")
        assert isinstance(package, PresencePackage)
        self.rules(
            rule(
                "n",
                ["alice", "carol"],
                "allow",
                "<pr:provide-note>true</pr:provide-note>",
            )
        )
        self.bob.publish(RICH)
        for watcher in (self.alice, self.carol):
            self.assertEqual(watcher.subscribe(BOB).code, 200)
            self.only(watcher)
        self.assertEqual(package.transformed, 1)

    def test_forceActiveCostsNothing(self) -> None:
        """force_active: every body goes untransformed."""
        server = Server()
        self.addCleanup(server.close)
        package = server.stack.packages.get("presence")
        assert isinstance(package, PresencePackage)
        UA(server, "bob", "192.0.2.21", 5071).publish(RICH)
        alice = Subscriber(server, "alice", "192.0.2.20", 5070)
        self.assertEqual(alice.subscribe(BOB).code, 200)
        [notify] = alice.notifies()
        self.assertIn(b"at the desk", notify.body)
        self.assertEqual(package.transformed, 0)


class ReauthoriseTests(IntegratedModeTestCase):
    """Rules change; `reauthorise` tells the watchers whose status changed."""

    def test_confirmThenApproved(self) -> None:
        """confirm, then approved by a rules change: the first full NOTIFY.

        And the winfo watcher sees the change.

        RFC 3857 section 4.3: the winfo subscribers are notified when a
        watcher's subscription changes state; RFC 3857 section 3.2: the
        "approved" event moves a subscription from pending to active.
        """
        self.rules(rule("c", ["alice"], "confirm"))
        self.bob.publish(RICH)
        winfo = self.watchWatchers()
        self.assertEqual(winfoEntries(winfo), [])
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.assertEqual(notify.body, b"")
        [(uri, status, _)] = winfoEntries(self.only(self.bob))
        self.assertEqual((uri, status), ("sip:alice@example.com", "pending"))
        self.rules(rule("c", ["alice"], "allow", EVERYTHING), etag="approved")
        result = self.reauthorise()
        self.assertEqual((result.changed, result.rejected), (1, 0))
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertIn(b"Gone fishing", notify.body)
        self.assertEqual(
            winfoEntries(self.only(self.bob)),
            [("sip:alice@example.com", "active", "approved")],
        )
        self.assertEqual(self.watcherRow("alice"), (ACTIVE, None))

    def test_refreshWatchersType0(self) -> None:
        """XML-RPC refreshWatchers type 0 (rules changed) re-authorises.

        What OpenXCAP 2.x calls after writing a pres-rules document:
        ``refreshWatchers('sip:bob@example.com', 'presence', 0)``. The
        pending watcher becomes active and gets the state; type 1 (or "1")
        only re-sends what each watcher may already see.
        """
        self.rules(rule("c", ["alice"], "confirm"))
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        rpc: Any = self.server.stack.admin.resource.children[b"RPC2"]
        self.rules(rule("c", ["alice"], "allow", EVERYTHING), etag="approved")
        answer = self.successResultOf(rpc.xmlrpc_refreshWatchers(BOB, "presence", "0"))
        self.assertEqual((answer["subscriptions"], answer["changed"]), (1, 1))
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertIn(b"Gone fishing", notify.body)
        answer = self.successResultOf(rpc.xmlrpc_refreshWatchers(BOB, "presence", 1))
        self.assertEqual((answer["subscriptions"], answer["changed"]), (1, 0))
        self.assertIn(b"Gone fishing", self.only(self.alice).body)

    def test_allowThenBlock(self) -> None:
        """allow, then block: NOTIFY terminated;reason=rejected.

        RFC 6665 section 4.2.2: "rejected" means the subscription has been
        terminated due to change in authorization policy.
        """
        self.rules(rule("a", ["alice"], "allow", EVERYTHING))
        winfo = self.watchWatchers()
        del winfo
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        self.only(self.bob)
        self.rules(rule("a", ["alice"], "block"), etag="blocked")
        result = self.reauthorise()
        self.assertEqual((result.changed, result.rejected), (1, 1))
        notify = self.only(self.alice)
        self.assertEqual(
            notify.header("subscription-state"), "terminated;reason=rejected"
        )
        self.assertEqual(self.server.store.counts()["subscriptions"], 1)  # bob's winfo
        self.assertEqual(
            winfoEntries(self.only(self.bob)),
            [("sip:alice@example.com", "terminated", "rejected")],
        )
        self.assertEqual(self.watcherRow("alice"), (TERMINATED, "rejected"))

    def test_rulesDeletedRevokes(self) -> None:
        """The rules deleted: on reauthorise, watchers become pending.

        No document is the no-rules default, confirm (pending): a pending
        subscription gets a NOTIFY without state.
        """
        self.rules(rule("a", None, "allow", EVERYTHING))
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        xcap = self.server.stack.xcap
        assert xcap is not None
        self.assertTrue(run(xcap.remove("bob", "example.com", 2, "index.xml")))
        self.reauthorise()
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.assertEqual(notify.body, b"")
        self.assertEqual(self.watcherRow("alice"), (PENDING, None))

    def test_permissionsChange(self) -> None:
        """Same status, fewer permissions: a NOTIFY with less in it."""
        self.rules(rule("a", ["alice"], "allow", EVERYTHING))
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertIn(b"at the desk", self.only(self.alice).body)
        self.rules(
            rule("a", ["alice"], "allow", "<pr:provide-note>true</pr:provide-note>"),
            etag="fewer",
        )
        result = self.reauthorise()
        self.assertEqual((result.changed, result.renotified), (0, 1))
        self.assertNotIn(b"at the desk", self.only(self.alice).body)

    def test_nothingChanged(self) -> None:
        """Rules that decide the same send nothing."""
        self.rules(rule("a", ["alice"], "allow", EVERYTHING))
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        result = self.reauthorise()
        self.assertEqual(
            (result.subscriptions, result.changed, result.renotified), (1, 0, 0)
        )
        self.assertEqual(self.alice.notifies(), [])

    def test_cacheUntilReauthorise(self) -> None:
        """Rows read are used for RULES_TTL seconds; reauthorise reads at once."""
        policy = self.server.stack.policy
        assert isinstance(policy, RulesPolicy)
        self.rules(rule("a", ["alice"], "allow"))
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.rules(rule("a", ["alice", "carol"], "allow"), etag="carol")
        self.assertEqual(self.carol.subscribe(BOB).code, 403)
        self.reauthorise()
        self.assertEqual(self.carol.subscribe(BOB).code, 200)
        reads = policy.reads
        self.server.advance(RULES_TTL + 1)
        self.assertEqual(self.bob.subscribe(BOB).code, 403)
        self.assertEqual(policy.reads, reads + 1)


def xcapDiff(*sels: str, root: str = "http://127.0.0.1:8089/xcap-root") -> bytes:
    """An RFC 5874 body, as OpenXCAP 3.2.0 sends it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="{root}">'
        + "".join(
            f'<document new-etag="874739014a9855dee2cdd0a56eedcb63" sel="{sel}"/>'
            for sel in sels
        )
        + "</xcap-diff>"
    ).encode()


class XCAPDiffTests(IntegratedModeTestCase):
    """OpenXCAP 3.x's PUBLISH Event: xcap-diff re-authorises at once."""

    def diff(self, body: bytes, sender: UA | None = None) -> Any:
        """PUBLISH xcap-diff for bob with Expires: 0, as OpenXCAP does."""
        sender = sender or UA(self.server, "bob", "192.0.2.40", 35060, "TCP")
        return sender.publish(
            body,
            expires=0,
            event="xcap-diff",
            contentType="application/xcap-diff+xml",
            presentity=BOB,
        )

    def test_absoluteSel(self) -> None:
        """An absolute sel: bob's pending watcher becomes active at once.

        200 with Expires 0, and nothing is published (RFC 3903 section 6:
        Expires 0 removes).
        """
        self.rules(rule("c", ["alice"], "confirm"))
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        self.rules(rule("c", ["alice"], "allow", EVERYTHING), etag="now")
        publications = self.server.store.counts()["publications"]
        response = self.diff(
            xcapDiff(
                "http://127.0.0.1:8089/xcap-root/pres-rules/users/"
                "sip:bob@example.com/index"
            )
        )
        self.assertEqual((response.code, response.header("expires")), (200, "0"))
        self.assertIsNone(response.header("sip-etag"))
        self.assertEqual(self.server.store.counts()["publications"], publications)
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertIn(b"Gone fishing", notify.body)

    def test_relativeSel(self) -> None:
        """A sel relative to the XCAP root (RFC 5874 section 4's examples)."""
        self.rules(rule("a", ["alice"], "allow"))
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        self.rules(rule("a", ["alice"], "block"), etag="blocked")
        response = self.diff(
            xcapDiff("org.openmobilealliance.pres-rules/users/bob@example.com/index")
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            self.only(self.alice).header("subscription-state"),
            "terminated;reason=rejected",
        )

    def test_malformed(self) -> None:
        """A body that is not an xcap-diff document gets 400, another type 415."""
        self.assertEqual(self.diff(b"<nope").code, 400)
        bob = UA(self.server, "bob", "192.0.2.41", 35061)
        response = bob.publish(
            xcapDiff("pres-rules/users/sip:bob@example.com/index"),
            expires=0,
            event="xcap-diff",
            contentType="application/xml",
        )
        self.assertEqual(response.code, 415)

    def test_ownerParsing(self) -> None:
        """The owner is the XUI after users/, with or without sip:."""
        from presence.core.xcapdiff import documentOwner

        for sel, owner in [
            (
                "http://h/xcap-root/pres-rules/users/sip:bob@Example.com/index",
                "bob@example.com",
            ),
            (
                "/xcap-root/pres-rules/users/sip%3Abob%40example.com/index",
                "bob@example.com",
            ),
            ("resource-lists/users/bob@example.com/index", "bob@example.com"),
            ("xcap-caps/global/index", None),
            ("pres-rules/users/nobody/index", None),
        ]:
            self.assertEqual(documentOwner(sel), owner, sel)


RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"


def inSphere(sphere: str) -> bytes:
    """Bob's PIDF with his person in ``sphere``."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="{PIDF_NS}"'
        f' xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}" entity="sip:bob@example.com">'
        '<tuple id="t1"><status><basic>open</basic></status></tuple>'
        f'<dm:person id="p1"><rpid:sphere>{sphere}</rpid:sphere></dm:person>'
        "</presence>"
    ).encode()


class SphereTests(IntegratedModeTestCase):
    """A PUBLISH that changes bob's sphere re-authorises his watchers."""

    def test_sphereChange(self) -> None:
        """Alice is allowed while bob is at work, pending otherwise.

        RFC 4745 section 7.2: the sphere condition holds when the
        presentity's current state is in the sphere it names.
        """
        self.rules(
            '<cr:rule id="w"><cr:conditions><cr:identity>'
            '<cr:one id="sip:alice@example.com"/></cr:identity>'
            '<cr:sphere value="work"/></cr:conditions>'
            "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>"
            "<cr:transformations><pr:provide-services><pr:all-services/>"
            "</pr:provide-services></cr:transformations></cr:rule>",
            rule("c", ["alice"], "confirm"),
        )
        response = self.bob.publish(inSphere("home"))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        etag = response.header("sip-etag")
        self.bob.publish(inSphere("work"), etag=etag)
        notify = self.only(self.alice)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertIn(b"open", notify.body)


#: Five rules, each for a fifth of the watchers, each showing something else.
FIVE_GRANTS = (
    "<pr:provide-note>true</pr:provide-note>",
    "<pr:provide-services><pr:all-services/></pr:provide-services>",
    "<pr:provide-services><pr:all-services/></pr:provide-services>"
    "<pr:provide-note>true</pr:provide-note>",
    EVERYTHING,
    "<pr:provide-persons><pr:all-persons/></pr:provide-persons>",
)


def fanOutRules(watchers: int) -> bytes:
    """Bob's rules: watcher ``w<n>`` is allowed by rule ``n % 5``."""
    rules = []
    for k, grant in enumerate(FIVE_GRANTS):
        who = [f"w{n}" for n in range(k, watchers, len(FIVE_GRANTS))]
        rules.append(rule(f"r{k}", who, "allow", grant))
    return ruleset(*rules)


def answerEverything(server: Server) -> int:
    """Answer every request the server sent with 200; how many."""
    from presence.sip.message import responseTo
    from presence.sip.parser import parseDatagram

    answered = 0
    while server.udp.written:
        written = list(server.udp.written)
        server.udp.written.clear()
        for data, addr in written:
            message = parseDatagram(data)
            if isinstance(message, SIPRequest):
                server.receive(responseTo(message, 200, toTag=None).toBytes(), addr)
                answered += 1
    return answered


class FanOutTests(SynchronousTestCase):
    """1,000 watchers under five rules: at most five transformed documents."""

    def test_fiveDocumentsPerChange(self) -> None:
        """A PUBLISH to 1,000 watchers with five permission sets: five documents.

        The aggregate is transformed once per set (the body cache is keyed
        by the permissions), and every watcher gets its NOTIFY.
        """
        count = 1000
        server = Server(integratedXcapServer=True)
        self.addCleanup(server.close)
        xcap = server.stack.xcap
        assert xcap is not None
        run(xcap.put(XCAPDocument("bob", "example.com", fanOutRules(count), 2, "5")))
        package = server.stack.packages.get("presence")
        assert isinstance(package, PresencePackage)
        for n in range(count):
            watcher = Subscriber(server, f"w{n}", f"198.51.{n // 250}.{n % 250 + 1}")
            self.assertEqual(watcher.subscribe(BOB).code, 200)
            [notify] = watcher.notifies()
            watcher.answer(notify)
        before = package.transformed
        self.assertLessEqual(before, len(FIVE_GRANTS))
        UA(server, "bob", "192.0.2.21", 5071).publish(RICH)
        self.assertEqual(answerEverything(server), count)
        self.assertEqual(package.transformed - before, len(FIVE_GRANTS))


class ReadmeExampleTests(IntegratedModeTestCase):
    """The rules document of the README's "Privacy rules" does what it says."""

    def test_example(self) -> None:
        """Alice sees status and notes, dave waits, carol sees bob offline."""
        with open("README.md", encoding="utf-8") as f:
            readme = f.read()
        section = readme[readme.index("## Privacy rules") :]
        start = section.index("```xml\n") + len("```xml\n")
        document = section[start : section.index("```", start)].encode()
        xcap = self.server.stack.xcap
        assert xcap is not None
        run(xcap.put(XCAPDocument("bob", "example.com", document, 2, "readme")))
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        body = self.only(self.alice).body
        self.assertIn(b"Gone fishing", body)
        self.assertIn(b"<basic>open</basic>", body)
        dave = Subscriber(self.server, "dave", "192.0.2.23", 5073)
        self.assertEqual(dave.subscribe(BOB).code, 200)
        notify = self.only(dave)
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.assertEqual(self.carol.subscribe(BOB).code, 200)
        self.assertEqual(self.only(self.carol).body, offlineDocument(BOB))


class MoreOutcomeTests(IntegratedModeTestCase):
    """The policy decides every new subscription, and logs a bad document once."""

    def test_newSubscriptionInDialog(self) -> None:
        """A new subscription in an existing dialog goes through the policy.

        RFC 6665 section 4.5.2: a SUBSCRIBE in a dialog with a new Event
        id creates a new subscription, which the notifier authorises anew.
        """
        self.rules(rule("a", ["alice"], "allow"))
        self.assertEqual(self.alice.subscribe(BOB, event="presence;id=1").code, 200)
        self.only(self.alice)
        self.rules(rule("a", ["alice"], "block"), etag="blocked")
        self.server.advance(RULES_TTL + 1)
        response = self.alice.subscribe(refresh=True, event="presence;id=2")
        self.assertEqual(response.code, 403)
        self.assertEqual(self.server.store.counts()["subscriptions"], 1)

    def test_unreadableLoggedOnce(self) -> None:
        """A document that cannot be read is logged once, not per watcher."""
        from twisted.logger import Logger

        events: list[dict[str, Any]] = []
        policy = self.server.stack.policy
        assert isinstance(policy, RulesPolicy)
        policy.log = Logger(observer=events.append)
        xcap = self.server.stack.xcap
        assert xcap is not None
        run(xcap.put(XCAPDocument("bob", "example.com", b"<ruleset", 2, "x")))
        for watcher in (self.alice, self.carol):
            self.assertEqual(watcher.subscribe(BOB).code, 403)
            self.server.advance(RULES_TTL + 1)
        self.assertEqual(len(events), 1)
        self.assertIn("cannot be read", events[0]["log_format"])

    def test_forceActiveFalseWithoutMode(self) -> None:
        """force_active = false without an XCAP mode: every watcher pending."""
        server = Server(forceActive=False)
        self.addCleanup(server.close)
        self.assertIsInstance(server.stack.policy, RulesPolicy)
        alice = Subscriber(server, "alice", "192.0.2.20", 5070)
        self.assertEqual(alice.subscribe(BOB).code, 200)
        [notify] = alice.notifies()
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))


class UndecidedRowTests(IntegratedModeTestCase):
    """A row without the decision (read from a database) is decided again."""

    def forgetDecisions(self) -> None:
        """What a restart in cache mode, or shared mode, leaves: no decisions."""
        for subscription in self.server.store._subscriptions.values():
            subscription.decision = None

    def test_politeBlockSurvives(self) -> None:
        """A politely blocked watcher still sees only the offline body."""
        self.rules(rule("p", ["alice"], "polite-block", EVERYTHING))
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        self.forgetDecisions()
        self.bob.publish(RICH)
        self.assertEqual(self.only(self.alice).body, offlineDocument(BOB))

    def test_transformationsSurvive(self) -> None:
        """A watcher allowed only notes still sees only notes."""
        self.rules(
            rule("n", ["alice"], "allow", "<pr:provide-note>true</pr:provide-note>")
        )
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        self.forgetDecisions()
        self.bob.publish(RICH)
        self.assertNotIn(b"at the desk", self.only(self.alice).body)

    def test_blockedBeforeReauthorise(self) -> None:
        """Rules that now block an active row show nothing until reauthorise."""
        self.rules(rule("a", ["alice"], "allow", EVERYTHING))
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.only(self.alice)
        self.rules(rule("a", ["alice"], "confirm", EVERYTHING), etag="confirm")
        self.server.advance(RULES_TTL + 1)
        self.forgetDecisions()
        self.bob.publish(RICH)
        self.assertEqual(self.only(self.alice).body, offlineDocument(BOB))
