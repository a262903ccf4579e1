"""The hard state (RFC 4827) under change, failure and overlap.

What the review of the pidf-manipulation work found, each kept from coming
back: a hard state whose sphere changes re-decides the watchers; the store
failing never stops the periodic check nor loses a change; a published
sphere or person outranks the hard state's; a hard state that cannot be read
still lets the first NOTIFY out; the newest read is the one held; the
external mode in shared storage compares what it holds with the table; the
check reads each user once; an empty hard state is no hard state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from presence.admin.xmlrpc import AdminXMLRPC
from presence.config import Config
from presence.packages.presence import PresencePackage, offlineDocument
from presence.stack import buildStack
from presence.storage.errors import StorageError
from presence.storage.xcap import (
    PIDF_MANIPULATION,
    PRES_RULES,
    SQLXCAPStore,
    XCAPDocument,
)
from presence.testing import Server, Subscriber
from presence.xcap.integrated import HardStateReader, RulesWatch
from presence.xcap.policy import HardState
from test.support.records import aliceSubscription
from test.xcap.test_client import ROOT
from test.xcap.test_integrated import BOB, EVERYTHING, PIDF_NS, rule, ruleset, run
from test.xcap.test_pidf_manipulation import (
    DM_NS,
    HARD,
    HARD_ALONE,
    PHONE,
    RPID_NS,
    Fixed,
    IntegratedTestCase,
    bodyOf,
    publication,
    row,
)


def sphereDocument(sphere: str | None, person: str, tuple_: str) -> bytes:
    """A PIDF of bob's: one tuple, one person (in ``sphere``, when given)."""
    inner = "" if sphere is None else f"<rpid:sphere>{sphere}</rpid:sphere>"
    return (
        f'<presence xmlns="{PIDF_NS}" xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}"'
        f' entity="sip:bob@example.com"><tuple id="{tuple_}"><status><basic>open'
        f'</basic></status></tuple><dm:person id="{person}">{inner}</dm:person>'
        "</presence>"
    ).encode()


#: Alice is allowed while bob is at work, and waits for bob's approval else.
AT_WORK = ruleset(
    '<cr:rule id="w"><cr:conditions><cr:identity>'
    '<cr:one id="sip:alice@example.com"/></cr:identity>'
    '<cr:sphere value="work"/></cr:conditions>'
    "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>"
    f"<cr:transformations>{EVERYTHING}</cr:transformations></cr:rule>",
    rule("c", ["alice"], "confirm"),
)


class Logged:
    """The log events of one logger namespace, while a test runs."""

    def __init__(self, case: SynchronousTestCase, namespace: str) -> None:
        """Observe the global log publisher until the test ends."""
        self.events: list[LogEvent] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            if event.get("log_namespace", "").startswith(namespace):
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        case.addCleanup(globalLogPublisher.removeObserver, observe)

    def warnings(self) -> list[LogEvent]:
        """The warnings logged."""
        return [e for e in self.events if e["log_level"].name == "warn"]


class ReviewTestCase(IntegratedTestCase):
    """The integrated mode with pidf_manipulation, and helpers."""

    def states(self) -> list[str]:
        """The Subscription-State of each NOTIFY alice got, answered."""
        out = []
        for notify in self.alice.notifies():
            self.alice.answer(notify)
            out.append(str(notify.header("subscription-state")).split(";")[0])
        return out

    def reader(self) -> HardStateReader:
        """The presence package's hard state reader."""
        package = self.server.stack.packages.get("presence")
        assert isinstance(package, PresencePackage)
        assert isinstance(package.hardState, HardStateReader)
        return package.hardState

    def atWork(self) -> None:
        """Bob's rules: alice allowed at work only."""
        self.put(XCAPDocument("bob", "example.com", AT_WORK, PRES_RULES, "r2"))

    def refreshType1(self) -> dict[str, Any]:
        """XML-RPC ``refreshWatchers(bob, "presence", 1)``."""
        admin = self.server.stack.admin.resource.children[b"RPC2"]
        assert isinstance(admin, AdminXMLRPC)
        answer: dict[str, Any] = self.successResultOf(
            admin.xmlrpc_refreshWatchers(BOB, "presence", 1)
        )
        return answer

    def failing(self, types: Iterable[int] = (PIDF_MANIPULATION,)) -> dict[str, bool]:
        """Make reads of the ``xcap`` table asking for ``types`` fail while on."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        original = xcap.documents
        switch = {"on": True}
        wanted = frozenset(types)

        async def documents(
            username: str, domain: str, docTypes: Iterable[int]
        ) -> list[XCAPDocument]:
            docTypes = tuple(docTypes)
            if switch["on"] and wanted & frozenset(docTypes):
                raise StorageError("database unreachable")
            return await original(username, domain, docTypes)

        xcap.documents = documents  # type: ignore[method-assign]
        self.addCleanup(setattr, xcap, "documents", original)
        return switch


class RefreshSphereTests(ReviewTestCase):
    """``refreshWatchers`` type 1 decides again when the hard state changed."""

    def test_sphereChangeRedecides(self) -> None:
        """Bob's hard state leaves the sphere work: alice waits again.

        RFC 4745 section 7.2: a sphere condition holds only while the
        presentity's current sphere is the one it names; bob's sphere now is
        home, so the rule allowing alice no longer applies and the confirm
        rule does (RFC 5025 section 3.2.1: confirm is pending).
        """
        self.atWork()
        self.hardState(sphereDocument("work", "hp", "hs"))
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.states(), ["active"])
        self.hardState(sphereDocument("home", "hp", "hs"), "h2")
        self.assertEqual(self.refreshType1()["subscriptions"], 1)
        self.assertEqual(self.states(), ["pending"])
        # The periodic check finds nothing more to do.
        self.server.advance(100)
        self.assertEqual(self.states(), [])

    def test_unchangedResendsToEveryWatcher(self) -> None:
        """An unchanged hard state: type 1 re-sends the state as before."""
        self.hardState()
        self.alice.subscribe(BOB)
        self.assertEqual(self.states(), ["active"])
        self.refreshType1()
        self.assertEqual(self.states(), ["active"])

    def test_sphereNotedForTheNextPublish(self) -> None:
        """After the hard state moved bob to work, a PUBLISH of home counts.

        The sphere a PUBLISH is compared with is the one the watchers were
        last decided with; were it still the one before the hard state
        changed (home), bob publishing home would decide nothing again and
        alice would keep seeing bob outside the sphere that allows her.
        """
        self.atWork()
        self.hardState(sphereDocument("home", "hp", "hs"))
        self.alice.subscribe(BOB)
        self.assertEqual(self.states(), ["pending"])
        # A PUBLISH without a sphere: bob's sphere is the hard state's, home.
        self.assertEqual(self.bob.publish(PHONE).code, 200)
        self.assertNotIn("active", self.states())
        self.hardState(sphereDocument("work", "hp", "hs"), "h2")
        self.refreshType1()
        self.assertEqual(self.states(), ["active"])
        self.assertEqual(self.bob.publish(sphereDocument("home", "p1", "t2")).code, 200)
        self.assertEqual(self.states(), ["pending"])


class CheckFailureTests(ReviewTestCase):
    """The periodic check goes on through storage errors and loses nothing."""

    def setUp(self) -> None:
        """Alice watches bob, who has a hard state; the check's logs kept."""
        super().setUp()
        self.hardState()
        self.alice.subscribe(BOB)
        self.assertEqual(self.states(), ["active"])
        self.logged = Logged(self, "presence.xcap.integrated.RulesWatch")
        watch = self.server.stack.rulesWatch
        assert watch is not None
        self.watch = watch

    def test_reloadFailsWatchersStillDecided(self) -> None:
        """The rules deleted and the hard state changed, its reload failing.

        The watchers are decided all the same (the deleted rules revoke
        alice: RFC 5025 section 3.2.1, no rule is pending), the hard state
        held is kept, and the check goes on: once the store answers again,
        the change of the hard state is found and notified.
        """
        xcap = self.server.stack.xcap
        assert xcap is not None
        run(xcap.remove("bob", "example.com", PRES_RULES, "index.xml"))
        self.hardState(HARD.replace(b"9-17", b"7-15"), "h2")
        reader = self.reader()
        original = reader.reload

        async def failing(presentity: str) -> bool:
            raise StorageError("database unreachable")

        reader.reload = failing  # type: ignore[method-assign]
        self.server.advance(100)
        self.assertEqual(self.states(), ["pending"])
        self.assertTrue(self.watch._loop is not None and self.watch._loop.running)
        reader.reload = original  # type: ignore[method-assign]
        self.put(
            XCAPDocument(
                "bob",
                "example.com",
                ruleset(rule("a", ["alice"], "allow", EVERYTHING)),
                PRES_RULES,
                "r3",
            )
        )
        self.server.advance(100)
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertIn(b"Office hours 7-15", notify.body)

    def test_reauthoriseFailsUserQueued(self) -> None:
        """Re-authorising fails: the user is queued, and done at the next check.

        The rules that allowed alice are replaced by one for carol only; the
        first re-authorisations cannot decide (the policy's reads fail), the
        one after the outage does and ends alice's subscription (RFC 5025
        section 3.2.1: no rule matches, ``block``; RFC 6665 section 4.2.2,
        ``terminated;reason=rejected``); the outage is logged once.
        """
        self.put(
            XCAPDocument(
                "bob",
                "example.com",
                ruleset(rule("x", ["carol"], "allow")),
                PRES_RULES,
                "r9",
            )
        )
        switch = {"on": False}
        policy = self.server.stack.policy
        assert policy is not None
        original = policy.authorise

        async def authorise(*args: Any) -> Any:
            if switch["on"]:
                raise StorageError("database unreachable")
            return await original(*args)

        policy.authorise = authorise  # type: ignore[method-assign,assignment]
        switch["on"] = True
        self.server.advance(100)
        self.server.advance(100)
        self.assertEqual(self.states(), [])
        self.assertTrue(self.watch._loop is not None and self.watch._loop.running)
        self.assertEqual(len(self.logged.warnings()), 1)
        switch["on"] = False
        self.server.advance(100)
        self.assertEqual(self.states(), ["terminated"])
        self.server.advance(100)
        self.assertEqual(self.states(), [])

    def test_tableUnreadableCheckGoesOn(self) -> None:
        """The table cannot be read at all: logged once, checked again."""
        switch = self.failing((PRES_RULES, PIDF_MANIPULATION))
        self.server.advance(300)
        self.assertEqual(self.watch.checks, 3)
        self.assertEqual(len(self.logged.warnings()), 1)
        switch["on"] = False
        self.hardState(HARD.replace(b"9-17", b"6-14"), "h3")
        self.server.advance(100)
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertIn(b"Office hours 6-14", notify.body)


class FirstReadFailsTests(ReviewTestCase):
    """The hard state cannot be read for a new watcher: NOTIFY all the same."""

    def test_notifiedWithoutTheHardState(self) -> None:
        """SUBSCRIBE answered 200, then a NOTIFY at once, without the hard state.

        RFC 6665 section 4.2.1.2: notifiers "MUST send a NOTIFY request
        immediately"; nothing is held of the failed read, and the
        periodic check tells alice the hard state once it can be read.
        """
        self.hardState()
        logged = Logged(self, "presence.packages.presence")
        switch = self.failing()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertEqual(notify.body, offlineDocument(BOB))
        carol = self.bob.__class__(self.server, "carol", "192.0.2.22", 5072)
        carol.subscribe(BOB)
        self.assertEqual(len(logged.warnings()), 1)
        self.assertEqual(self.reader()._held, {})
        switch["on"] = False
        self.server.advance(100)
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertEqual(notify.body, HARD_ALONE)


class OverlapTests(SynchronousTestCase):
    """Reads of one user overlapping: the newest is what stays held."""

    def setUp(self) -> None:
        """A reader over a store whose reads answer when told."""
        self.pending: list[Deferred[list[XCAPDocument]]] = []
        test = self

        class Slow:
            async def documents(
                self, username: str, domain: str, docTypes: Iterable[int]
            ) -> list[XCAPDocument]:
                answer: Deferred[list[XCAPDocument]] = Deferred()
                test.pending.append(answer)
                return await answer

        self.reader = HardStateReader(Slow())  # type: ignore[arg-type]

    def test_olderReloadFinishingLast(self) -> None:
        """The later reload answers first: the earlier one changes nothing."""
        results: list[bool] = []
        Deferred.fromCoroutine(self.reader.reload(BOB)).addCallback(results.append)
        Deferred.fromCoroutine(self.reader.reload(BOB)).addCallback(results.append)
        self.pending[1].callback([row(b"<new/>", "index.xml", "e2")])
        self.pending[0].callback([row(b"<old/>", "index.xml", "e1")])
        self.assertEqual(results, [True, False])
        held = self.reader.current(BOB)
        assert isinstance(held, HardState)
        self.assertEqual(held.documents, (b"<new/>",))

    def test_firstReadOvertakenByReload(self) -> None:
        """A reload started after the first read and finished before it wins."""
        first = self.reader.current(BOB)
        assert isinstance(first, Deferred)
        Deferred.fromCoroutine(self.reader.reload(BOB))
        self.pending[1].callback([row(b"<new/>", "index.xml", "e2")])
        self.pending[0].callback([row(b"<old/>", "index.xml", "e1")])
        state = self.successResultOf(first)
        assert state is not None
        self.assertEqual(state.documents, (b"<new/>",))


class SpherePrecedenceTests(ReviewTestCase):
    """A published sphere outranks the hard state's (RFC 4479, RFC 4480)."""

    def test_publishedSphereWins(self) -> None:
        """The hard state says work, bob's phone says home: alice waits.

        RFC 4827's abstract: the hard state is "one of the inputs" of the
        composition; what a device publishes now is bob's current sphere.
        """
        self.atWork()
        self.hardState(sphereDocument("work", "hp", "hs"))
        self.alice.subscribe(BOB)
        self.assertEqual(self.states(), ["active"])
        self.assertEqual(self.bob.publish(sphereDocument("home", "p1", "t1")).code, 200)
        self.assertEqual(self.states(), ["pending"])

    def test_newestPublicationWins(self) -> None:
        """Two publications with persons of other ids: the newest sphere counts."""
        package = PresencePackage(hardState=Fixed(sphereDocument("lab", "hp", "hs")))
        older = publication(sphereDocument("work", "p1", "t1"), "e1")
        newer = publication(sphereDocument("home", "p2", "t2"), "e2")
        self.assertEqual(run(package.sphere(BOB, [older, newer])), "home")
        self.assertEqual(run(package.sphere(BOB, [newer, older])), "work")
        self.assertEqual(run(package.sphere(BOB, [])), "lab")
        plain = publication(PHONE, "e3")
        self.assertEqual(run(package.sphere(BOB, [plain])), "lab")


class PublishedSphereTests(SynchronousTestCase):
    """Without a hard state, the newest publication's sphere is bob's sphere."""

    def test_newestDeviceWins(self) -> None:
        """Bob's desk phone said work, later his mobile says home: alice waits.

        RFC 4480 section 3.2: the sphere is the current state and role of
        the person; two devices of bob's publish persons of other ids, and
        the one published last is his current sphere, not the first person
        of the aggregate (the oldest publication's).
        """
        server = Server(integratedXcapServer=True)
        self.addCleanup(server.close)
        xcap = server.stack.xcap
        assert xcap is not None
        run(xcap.put(XCAPDocument("bob", "example.com", AT_WORK, PRES_RULES, "r1")))
        desk = Subscriber(server, "bob", "192.0.2.21", 5071)
        mobile = Subscriber(server, "bob", "192.0.2.31", 5071)
        alice = Subscriber(server, "alice", "192.0.2.20", 5070)
        self.assertEqual(desk.publish(sphereDocument("work", "p1", "t1")).code, 200)
        alice.subscribe(BOB)
        [notify] = alice.notifies()
        alice.answer(notify)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        server.advance(1)
        self.assertEqual(mobile.publish(sphereDocument("home", "p2", "t2")).code, 200)
        states = []
        for notify in alice.notifies():
            alice.answer(notify)
            states.append(str(notify.header("subscription-state")).split(";")[0])
        self.assertEqual(states, ["pending"])


class PersonTests(SynchronousTestCase):
    """One person per presentity: a published person replaces the hard state's."""

    def test_publishedPersonReplacesHardPerson(self) -> None:
        """Persons of other ids: only the published one is in the document."""
        package = PresencePackage(hardState=Fixed(sphereDocument("work", "hp", "hs")))
        body = bodyOf(package, [publication(sphereDocument(None, "p1", "t1"))])
        self.assertNotIn(b'id="hp"', body)
        self.assertIn(b'id="p1"', body)
        # The hard state's tuple stays: a presentity has many services.
        self.assertIn(b'id="hs"', body)

    def test_hardPersonWithoutPublishedPerson(self) -> None:
        """No published person: the hard state's person stays."""
        package = PresencePackage(hardState=Fixed(sphereDocument("work", "hp", "hs")))
        body = bodyOf(package, [publication(PHONE)])
        self.assertIn(b'id="hp"', body)


class EmptyHardStateTests(SynchronousTestCase):
    """A hard state that says nothing is no hard state."""

    EMPTY = f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com"/>'.encode()

    def test_offlineBodyStays(self) -> None:
        """An empty hard state, nothing published: the offline body."""
        package = PresencePackage(hardState=Fixed(self.EMPTY))
        self.assertEqual(bodyOf(package, []), offlineDocument(BOB))

    def test_offlineEmptyStays(self) -> None:
        """With ``offline_body = "empty"``: a NOTIFY without a body."""
        package = PresencePackage(offline="empty", hardState=Fixed(self.EMPTY))
        self.assertIsNone(
            package.notifyBody(BOB, aliceSubscription(presentity=BOB), [])
        )

    def test_noteAloneCounts(self) -> None:
        """A note alone says something: it is the hard state."""
        note = (
            f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
            "<note>Office hours 9-17</note></presence>"
        ).encode()
        package = PresencePackage(hardState=Fixed(note))
        self.assertIn(b"Office hours", bodyOf(package, []))


class OneQueryTests(ReviewTestCase):
    """The periodic check reads each user's rows once, rules and hard state."""

    def test_oneQueryPerUser(self) -> None:
        """Bob's rules and hard state held: one read of the table per check."""
        self.hardState()
        self.alice.subscribe(BOB)
        self.states()
        xcap = self.server.stack.xcap
        assert xcap is not None
        original = xcap.documents
        calls: list[tuple[int, ...]] = []

        async def documents(
            username: str, domain: str, docTypes: Iterable[int]
        ) -> list[XCAPDocument]:
            calls.append(tuple(docTypes))
            return await original(username, domain, docTypes)

        xcap.documents = documents  # type: ignore[method-assign]
        self.addCleanup(setattr, xcap, "documents", original)
        self.server.advance(100)
        self.assertEqual(len(calls), 1)


class SharedExternalTests(SynchronousTestCase):
    """The external mode in shared storage compares what it holds with the table.

    Several servers share the ``xcap`` table; one's conditional fetch finds
    the entity tag another stored and gets 304 (RFC 7232 section 4.1), so
    it would never hear of the change: each compares what it holds with the
    table every ``query_period``.
    """

    def build(self, **settings: Any) -> Any:
        """A stack (never started: the database is not opened)."""
        config = Config(
            xcapServer=(ROOT,),
            pidfManipulation=True,
            database="sqlite:" + self.mktemp(),
            **settings,
        ).validate()
        return buildStack(config, Clock())

    def test_sharedChecksTheTable(self) -> None:
        """Shared: a check of the table itself, not through the client."""
        stack = self.build(fallback2db=True)
        watch = stack.rulesWatch
        assert isinstance(watch, RulesWatch)
        self.assertIsInstance(watch.documents, SQLXCAPStore)
        package = stack.packages.get("presence")
        assert isinstance(package, PresencePackage)
        self.assertIs(watch.hardState, package.hardState)

    def test_notSharedNoCheck(self) -> None:
        """Cache mode: one server, its fetches tell it every change."""
        self.assertIsNone(self.build().rulesWatch)
