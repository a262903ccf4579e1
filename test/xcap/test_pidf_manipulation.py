"""The hard state: pidf-manipulation documents (RFC 4827) in the aggregate.

RFC 4827's abstract: the usage "is intended to be used in Session Initiation
Protocol (SIP) based presence systems, where the Event State Compositor can
use the XCAP-manipulated presence document as one of the inputs on which it
builds the overall presence state for the presentity." Section 4: the AUID is
``pidf-manipulation``; section 5: the document is ``application/pidf+xml``.

As OpenSIPS's presence_xml (``pidf_manipulation = 1``) does, the hard state is
the first, oldest, source of the aggregate: a published element with the same
``id`` replaces it, everything else of it stays, and with nothing published
the hard state alone is the presentity's document. It is read from the
``xcap`` table (``doc_type`` 16, any ``doc_uri``) in the integrated mode.
"""

from __future__ import annotations

from typing import Any, cast

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from presence.admin.xmlrpc import AdminXMLRPC
from presence.config import Config, ConfigError, fromMapping
from presence.packages.interfaces import Body
from presence.packages.presence import PIDF_TYPE, PresencePackage, offlineDocument
from presence.storage.records import Publication, Subscription
from presence.storage.xcap import (
    PIDF_MANIPULATION,
    PRES_RULES,
    MemoryXCAPStore,
    XCAPDocument,
)
from presence.testing import UA, Server, Subscriber
from presence.xcap.integrated import HardStateReader, hardStateOf
from presence.xcap.policy import Decision, HardState, IHardState
from presence.xcap.rules import Permissions
from test.support.records import aliceSubscription
from test.xcap.test_client import ROOT, RULES_URL, FakeXCAPServer, path
from test.xcap.test_integrated import (
    BOB,
    EVERYTHING,
    PIDF_NS,
    inSphere,
    rule,
    ruleset,
    run,
    xcapDiff,
)

RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"

#: Bob's hard state: a voicemail service always there, and a note.
HARD = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="{PIDF_NS}"'
    ' entity="sip:bob@example.com"><tuple id="voicemail"><status><basic>open'
    "</basic></status><contact>sip:bob-vm@example.com</contact></tuple>"
    "<note>Office hours 9-17</note></presence>"
).encode()

#: What bob's phone publishes: its own tuple.
PHONE = (
    f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com"><tuple id="t1">'
    "<status><basic>open</basic></status><contact>sip:bob@192.0.2.21</contact>"
    "</tuple></presence>"
).encode()

#: The hard state alone, as every watcher gets it.
HARD_ALONE = (
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
    '<tuple id="voicemail"><status><basic>open</basic></status>'
    "<contact>sip:bob-vm@example.com</contact></tuple>"
    "<note>Office hours 9-17</note></presence>"
).encode()

#: The hard state and the phone's publication aggregated: tuples first.
HARD_AND_PHONE = (
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
    '<tuple id="voicemail"><status><basic>open</basic></status>'
    "<contact>sip:bob-vm@example.com</contact></tuple>"
    '<tuple id="t1"><status><basic>open</basic></status>'
    "<contact>sip:bob@192.0.2.21</contact></tuple>"
    "<note>Office hours 9-17</note></presence>"
).encode()


def publication(body: bytes, etag: str = "e1") -> Publication:
    """One of bob's publications."""
    return Publication(
        presentity="bob@example.com",
        event="presence",
        etag=etag,
        expires=2_000_000,
        receivedTime=1_000_000,
        body=body,
        contentType=PIDF_TYPE,
    )


@implementer(IHardState)
class Fixed:
    """An `IHardState` holding one hard state for bob, given at once."""

    def __init__(self, *documents: bytes, tag: str = "h1") -> None:
        """Hold these documents (none: no hard state)."""
        self.state = HardState(tag, documents) if documents else None

    def current(self, presentity: str) -> HardState | None:
        """Bob's hard state."""
        return self.state if presentity == BOB else None

    async def reload(self, presentity: str) -> bool:
        """Nothing to read."""
        return False


def bodyOf(
    package: PresencePackage,
    publications: list[Publication],
    subscription: Subscription | None = None,
) -> bytes:
    """The NOTIFY body the package composes for alice (synchronously)."""
    body = package.notifyBody(
        BOB, subscription or aliceSubscription(presentity=BOB), publications
    )
    assert isinstance(body, Body), body
    return body.data


class PackageTests(SynchronousTestCase):
    """The presence package aggregates the hard state before publications."""

    def test_hardStateAlone(self) -> None:
        """Nothing published: the hard state alone is the document.

        OpenSIPS's presence_xml documents it: with pidf_manipulation "it is
        also possible to have information notified even if not issuing any
        Publish".
        """
        package = PresencePackage(hardState=Fixed(HARD))
        self.assertEqual(bodyOf(package, []), HARD_ALONE)

    def test_aggregatedWithPublication(self) -> None:
        """Hard state and publication: both tuples, PIDF order (tuples first)."""
        package = PresencePackage(hardState=Fixed(HARD))
        self.assertEqual(bodyOf(package, [publication(PHONE)]), HARD_AND_PHONE)

    def test_publishedReplacesSameId(self) -> None:
        """A published tuple with the hard state's id replaces it (newer wins)."""
        closedVoicemail = (
            f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
            '<tuple id="voicemail"><status><basic>closed</basic></status></tuple>'
            "</presence>"
        ).encode()
        package = PresencePackage(hardState=Fixed(HARD))
        self.assertEqual(
            bodyOf(package, [publication(closedVoicemail)]),
            (
                "<?xml version='1.0' encoding='UTF-8'?>\n"
                f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
                '<tuple id="voicemail"><status><basic>closed</basic></status>'
                "</tuple><note>Office hours 9-17</note></presence>"
            ).encode(),
        )

    def test_noHardState(self) -> None:
        """A source without a document for bob: what is published, or offline."""
        package = PresencePackage(hardState=Fixed())
        self.assertEqual(bodyOf(package, []), offlineDocument(BOB))
        self.assertEqual(
            bodyOf(package, [publication(PHONE)]),
            bodyOf(PresencePackage(), [publication(PHONE)]),
        )

    def test_notPIDFLeftOutAndLoggedOnce(self) -> None:
        """A doc_type 16 row that is not PIDF counts for nothing, logged once.

        RFC 4827 section 5: the MIME type of the documents is
        application/pidf+xml.
        """
        rules = b'<ruleset xmlns="urn:ietf:params:xml:ns:common-policy"/>'
        package = PresencePackage(hardState=Fixed(rules))
        logged: list[LogEvent] = []
        package.log = Logger(observer=cast(ILogObserver, logged.append))
        self.assertEqual(bodyOf(package, []), offlineDocument(BOB))
        self.assertEqual(
            bodyOf(package, [publication(PHONE, "e2")]),
            bodyOf(PresencePackage(), [publication(PHONE, "e2")]),
        )
        self.assertEqual(len(logged), 1)

    def test_badDocumentsNeverCrash(self) -> None:
        """Malformed XML, a DTD with entities, a PIDF without entity: left out.

        The hard state goes through the hardened parser and the checks of a
        PUBLISH body; bad input changes nothing of what is published.
        """
        bad = [
            b"<presence",
            b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e "x">]>'
            + f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'.encode()
            + b"<note>&e;</note></presence>",
            f'<presence xmlns="{PIDF_NS}"><note>x</note></presence>'.encode(),
            f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
            "<tuple><status/></tuple></presence>".encode(),
            b"\xff\xfe",
        ]
        package = PresencePackage(hardState=Fixed(*bad, HARD))
        package.log = Logger(observer=cast(ILogObserver, [].append))
        self.assertEqual(bodyOf(package, [publication(PHONE)]), HARD_AND_PHONE)

    def test_hardStateTagKeysTheBody(self) -> None:
        """Another version of the hard state: another body, same publications."""
        source = Fixed(HARD, tag="h1")
        package = PresencePackage(hardState=source)
        published = [publication(PHONE)]
        first = package.notifyBody(BOB, aliceSubscription(presentity=BOB), published)
        self.assertIs(
            package.notifyBody(BOB, aliceSubscription(presentity=BOB), published),
            first,
        )
        source.state = HardState("h2", (PHONE,))
        self.assertEqual(
            bodyOf(package, published),
            bodyOf(PresencePackage(), published),
        )

    def test_transformationsApply(self) -> None:
        """RFC 5025 section 3.3 applies to the hard state like to the rest.

        A watcher given only provide-note sees the hard state's note and
        none of its tuples.
        """
        package = PresencePackage(hardState=Fixed(HARD))
        onlyNotes = aliceSubscription(presentity=BOB)
        onlyNotes.decision = Decision(
            1, permissions=Permissions(attributes=frozenset({"note"}))
        )
        self.assertEqual(
            bodyOf(package, [publication(PHONE)], onlyNotes),
            (
                "<?xml version='1.0' encoding='UTF-8'?>\n"
                f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
                "<note>Office hours 9-17</note></presence>"
            ).encode(),
        )
        self.assertEqual(package.transformed, 1)

    def test_politeBlockSeesOffline(self) -> None:
        """A politely blocked watcher sees the offline body, hard state or not."""
        package = PresencePackage(hardState=Fixed(HARD))
        blocked = aliceSubscription(presentity=BOB)
        blocked.decision = Decision(1, politeBlock=True)
        self.assertEqual(bodyOf(package, [], blocked), offlineDocument(BOB))

    def test_readOnceThenHeld(self) -> None:
        """The first body waits for the read; later ones are composed at once."""
        documents = MemoryXCAPStore()
        run(
            documents.put(
                XCAPDocument("bob", "example.com", HARD, PIDF_MANIPULATION, "h")
            )
        )
        reader = HardStateReader(documents)
        package = PresencePackage(hardState=reader)
        first = package.notifyBody(BOB, aliceSubscription(presentity=BOB), [])
        self.assertNotIsInstance(first, Body)

        async def composed() -> Body | None:
            assert not isinstance(first, Body) and first is not None
            return await first

        body = run(composed())
        assert body is not None
        self.assertEqual(body.data, HARD_ALONE)
        self.assertEqual(bodyOf(package, []), HARD_ALONE)
        self.assertEqual(reader.reads, 1)


def row(doc: bytes, docURI: str, etag: str = "e") -> XCAPDocument:
    """A doc_type 16 row of bob's."""
    return XCAPDocument("bob", "example.com", doc, PIDF_MANIPULATION, etag, docURI)


class ReaderTests(SynchronousTestCase):
    """`HardStateReader`: bob's doc_type 16 rows, whatever their doc_uri."""

    def setUp(self) -> None:
        """An empty table and a reader over it."""
        self.documents = MemoryXCAPStore()
        self.reader = HardStateReader(self.documents)

    def put(self, document: XCAPDocument) -> None:
        """Write a row."""
        run(self.documents.put(document))

    def test_interface(self) -> None:
        """The reader provides IHardState."""
        self.assertTrue(verifyObject(IHardState, self.reader))

    def test_everyDocURIShape(self) -> None:
        """Rows with any doc_uri count, in doc_uri order; other types do not.

        The three shapes writers use: OpenXCAP's ``index.xml``, Kamailio's
        path with the XCAP root, the external mode's full URL.
        """
        self.put(row(b"<a/>", "index.xml"))
        self.put(
            row(b"<b/>", "/xcap-root/pidf-manipulation/users/sip:bob@example.com/index")
        )
        self.put(
            row(
                b"<c/>",
                "http://xcap.example.com/xcap-root/pidf-manipulation/users/"
                "sip:bob@example.com/index",
            )
        )
        self.put(XCAPDocument("bob", "example.com", b"<r/>", PRES_RULES, "r"))
        self.put(XCAPDocument("carol", "example.com", b"<x/>", PIDF_MANIPULATION, "x"))
        state = run(self.reader._first(("bob", "example.com")))
        assert state is not None
        self.assertEqual(state.documents, (b"<b/>", b"<c/>", b"<a/>"))

    def test_tag(self) -> None:
        """The tag changes with the content, even under the same entity tag."""
        one = hardStateOf([row(b"<a/>", "index.xml", "e")])
        same = hardStateOf([row(b"<a/>", "index.xml", "e")])
        other = hardStateOf([row(b"<b/>", "index.xml", "e")])
        assert one is not None and same is not None and other is not None
        self.assertEqual(one.tag, same.tag)
        self.assertNotEqual(one.tag, other.tag)
        self.assertIsNone(hardStateOf([]))

    def test_heldUntilReload(self) -> None:
        """Held once read; `reload` reads again and says whether it changed."""
        self.put(row(HARD, "index.xml", "e1"))
        first = self.reader.current(BOB)
        assert isinstance(first, Deferred)
        self.put(row(PHONE, "index.xml", "e2"))
        held = self.reader.current(BOB)
        assert isinstance(held, HardState)
        self.assertEqual(held.documents, (HARD,))
        self.assertEqual(run(self.reader.changedUsers()), [BOB])
        # changedUsers keeps what is held: reload says it changed.
        self.assertTrue(run(self.reader.reload(BOB)))
        self.assertFalse(run(self.reader.reload(BOB)))
        self.assertEqual(run(self.reader.changedUsers()), [])
        run(self.documents.remove("bob", "example.com", PIDF_MANIPULATION, "index.xml"))
        self.assertTrue(run(self.reader.reload(BOB)))
        self.assertIsNone(self.reader.current(BOB))

    def test_reloadNotHeld(self) -> None:
        """A reload of a user never read: changed when there is a document."""
        self.assertFalse(run(self.reader.reload(BOB)))
        self.put(row(HARD, "index.xml"))
        self.assertTrue(run(self.reader.reload("sip:bob@EXAMPLE.com")))

    def test_bounded(self) -> None:
        """At most ``limit`` users are held."""
        reader = HardStateReader(self.documents, limit=2)
        for user in ("a", "b", "c"):
            run(reader.reload(f"sip:{user}@example.com"))
        self.assertEqual(len(reader._held), 2)


class SettingTests(SynchronousTestCase):
    """``pidf_manipulation``: OpenSIPS's presence_xml switch, off by default."""

    def test_offByDefault(self) -> None:
        """Off by default, as OpenSIPS's (default 0): no source, no reads."""
        server = Server(integratedXcapServer=True)
        self.addCleanup(server.close)
        package = server.stack.packages.get("presence")
        assert isinstance(package, PresencePackage)
        self.assertIsNone(package.hardState)

    def test_needsAnXCAPMode(self) -> None:
        """Without an XCAP mode there is no hard state to read: refused."""
        with self.assertRaises(ConfigError) as raised:
            Config(pidfManipulation=True).validate()
        self.assertIn("pidf_manipulation", str(raised.exception))

    def test_toml(self) -> None:
        """The TOML name is OpenSIPS's."""
        config = fromMapping(
            {"integrated_xcap_server": True, "pidf_manipulation": True}
        ).validate()
        self.assertTrue(config.pidfManipulation)


class IntegratedTestCase(SynchronousTestCase):
    """A server in the integrated mode with pidf_manipulation; alice watches bob."""

    def setUp(self) -> None:
        """Start the server; bob allows alice everything."""
        self.server = Server(integratedXcapServer=True, pidfManipulation=True)
        self.addCleanup(self.server.close)
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.put(
            XCAPDocument(
                "bob",
                "example.com",
                ruleset(rule("a", ["alice"], "allow", EVERYTHING)),
                PRES_RULES,
                "r1",
            )
        )

    def put(self, document: XCAPDocument) -> None:
        """Write a row of the xcap table, as an XCAP server does."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        run(xcap.put(document))

    def hardState(self, doc: bytes = HARD, etag: str = "h1") -> None:
        """Bob's pidf-manipulation row, as OpenXCAP writes it."""
        self.put(row(doc, "index.xml", etag))

    def body(self) -> bytes:
        """The body of the one NOTIFY alice got, answered; it is active."""
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        return notify.body


class IntegratedTests(IntegratedTestCase):
    """The hard state from the xcap table reaches the watchers."""

    def test_hardStateWithoutPublish(self) -> None:
        """No PUBLISH at all: alice sees the hard state."""
        self.hardState()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.body(), HARD_ALONE)

    def test_aggregatedWithPublish(self) -> None:
        """Hard state and bob's PUBLISH: one aggregated document."""
        self.hardState()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.body()
        self.assertEqual(self.bob.publish(PHONE).code, 200)
        self.assertEqual(self.body(), HARD_AND_PHONE)

    def test_rowWrittenThenRefreshType1(self) -> None:
        """XML-RPC refreshWatchers type 1: the hard state read again, notified.

        OpenSIPS's type 1 says the state changed (not the rules): every
        watcher gets a NOTIFY with the state composed again, the new
        pidf-manipulation row in it; "1" as a string is the same.
        """
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.body(), offlineDocument(BOB))
        self.hardState()
        rpc: Any = self.server.stack.admin.resource.children[b"RPC2"]
        answer = self.successResultOf(rpc.xmlrpc_refreshWatchers(BOB, "presence", 1))
        self.assertEqual((answer["subscriptions"], answer["changed"]), (1, 0))
        self.assertEqual(self.body(), HARD_ALONE)
        self.hardState(HARD.replace(b"9-17", b"8-12"), "h2")
        answer = self.successResultOf(rpc.xmlrpc_refresh_watchers(BOB, "presence", "1"))
        self.assertEqual(answer["subscriptions"], 1)
        self.assertIn(b"Office hours 8-12", self.body())

    def test_reauthoriseNotifiesAChange(self) -> None:
        """Type 0 (the re-authorise operation): the new hard state is notified.

        alice's status is unchanged, but her state changed: she gets it.
        """
        self.hardState()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.body()
        self.hardState(PHONE, "h2")
        result = run(self.server.stack.reauthorise(BOB))
        self.assertEqual((result.stateChanged, result.renotified), (True, 1))
        self.assertEqual(
            self.body(),
            (
                "<?xml version='1.0' encoding='UTF-8'?>\n"
                f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
                '<tuple id="t1"><status><basic>open</basic></status>'
                "<contact>sip:bob@192.0.2.21</contact></tuple></presence>"
            ).encode(),
        )
        result = run(self.server.stack.reauthorise(BOB))
        self.assertEqual((result.stateChanged, result.renotified), (False, 0))
        self.assertEqual(self.alice.notifies(), [])

    def test_pendingWatcherToldNothing(self) -> None:
        """A pending watcher gets no state, so a new hard state is not sent.

        RFC 6665 section 4.2.2: a pending subscription is not sent state.
        """
        self.put(
            XCAPDocument(
                "bob",
                "example.com",
                ruleset(rule("c", ["alice"], "confirm")),
                PRES_RULES,
                "r3",
            )
        )
        self.hardState()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.hardState(PHONE, "h2")
        result = run(self.server.stack.reauthorise(BOB))
        self.assertEqual((result.stateChanged, result.renotified), (True, 0))
        self.assertEqual(self.alice.notifies(), [])

    def test_unchangedCheckTellsNothing(self) -> None:
        """The periodic check of an unchanged hard state notifies nobody."""
        self.hardState()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.body()
        watch = self.server.stack.rulesWatch
        assert watch is not None
        checks = watch.checks
        self.server.advance(300)
        self.assertEqual(watch.checks, checks + 3)
        self.assertEqual(self.alice.notifies(), [])

    def test_changedNoticedWithoutSignal(self) -> None:
        """A changed doc_type 16 row is noticed within ``query_period``."""
        self.hardState()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.body()
        self.hardState(HARD.replace(b"9-17", b"10-16"), "h2")
        self.server.advance(99)
        self.assertEqual(self.alice.notifies(), [])
        self.server.advance(1)
        self.assertIn(b"Office hours 10-16", self.body())

    def test_deletedNoticedWithoutSignal(self) -> None:
        """A deleted doc_type 16 row: within ``query_period``, state without it."""
        self.hardState()
        self.assertEqual(self.bob.publish(PHONE).code, 200)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.body(), HARD_AND_PHONE)
        xcap = self.server.stack.xcap
        assert xcap is not None
        run(xcap.remove("bob", "example.com", PIDF_MANIPULATION, "index.xml"))
        self.server.advance(100)
        self.assertEqual(
            self.body(),
            (
                "<?xml version='1.0' encoding='UTF-8'?>\n"
                f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
                '<tuple id="t1"><status><basic>open</basic></status>'
                "<contact>sip:bob@192.0.2.21</contact></tuple></presence>"
            ).encode(),
        )

    def test_xcapDiffNamingPidfManipulation(self) -> None:
        """An xcap-diff PUBLISH naming bob's pidf-manipulation document."""
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.body(), offlineDocument(BOB))
        self.hardState()
        sender = UA(self.server, "bob", "192.0.2.40", 35060, "TCP")
        response = sender.publish(
            xcapDiff(
                "http://127.0.0.1:8089/xcap-root/pidf-manipulation/users/"
                "sip:bob@example.com/index"
            ),
            expires=0,
            event="xcap-diff",
            contentType="application/xcap-diff+xml",
            presentity=BOB,
        )
        self.assertEqual((response.code, response.header("expires")), (200, "0"))
        self.assertEqual(self.body(), HARD_ALONE)

    def test_transformedForTheWatcher(self) -> None:
        """The rules' transformations apply to the hard state."""
        self.put(
            XCAPDocument(
                "bob",
                "example.com",
                ruleset(
                    rule(
                        "n",
                        ["alice"],
                        "allow",
                        "<pr:provide-note>true</pr:provide-note>",
                    )
                ),
                PRES_RULES,
                "r2",
            )
        )
        self.hardState()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(
            self.body(),
            (
                "<?xml version='1.0' encoding='UTF-8'?>\n"
                f'<presence xmlns="{PIDF_NS}" entity="sip:bob@example.com">'
                "<note>Office hours 9-17</note></presence>"
            ).encode(),
        )


PIDF_URL = f"{ROOT}/pidf-manipulation/users/sip:bob@example.com/index"


class ExternalTests(SynchronousTestCase):
    """The external mode: the XCAP client fetches bob's pidf-manipulation too.

    RFC 4827 section 4: the AUID is ``pidf-manipulation``; the document is
    ``<root>/pidf-manipulation/users/sip:bob@example.com/index`` (RFC 4825
    section 6's XUI and document name).
    """

    def setUp(self) -> None:
        """The server in the external mode with pidf_manipulation."""
        self.server = Server(xcapServer=(ROOT,), queryPeriod=100, pidfManipulation=True)
        self.addCleanup(self.server.close)
        self.xcapServer = FakeXCAPServer()
        self.stub = StubTreq(self.xcapServer)
        client = self.server.stack.xcapClient
        assert client is not None
        client.http = self.stub
        self.client = client
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.xcapServer.put(
            RULES_URL, ruleset(rule("a", ["alice"], "allow", EVERYTHING)), "r1"
        )
        self.xcapServer.put(PIDF_URL, HARD, "h1")

    def body(self) -> bytes:
        """The body of alice's one NOTIFY, answered; it is active."""
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        return notify.body

    def aliceWatches(self) -> None:
        """Alice subscribes, pending until both documents are fetched."""
        self.xcapServer.hold = True
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.xcapServer.hold = False
        for _ in range(2):
            self.xcapServer.release()
            self.stub.flush()

    def test_fetchedAndNotified(self) -> None:
        """Both documents fetched and stored; alice sees the hard state."""
        self.aliceWatches()
        self.assertEqual(
            self.xcapServer.requests,
            [(path(RULES_URL), None), (path(PIDF_URL), None)],
        )
        self.assertEqual(self.body(), HARD_ALONE)
        xcap = self.server.stack.xcap
        assert xcap is not None
        [stored] = run(xcap.documents("bob", "example.com", (PIDF_MANIPULATION,)))
        self.assertEqual(
            (stored.source, stored.docURI, stored.port, stored.etag, stored.doc),
            (1, PIDF_URL, 8080, "h1", HARD),
        )

    def test_periodicRefetch(self) -> None:
        """Re-fetched every period with If-None-Match; a change is notified."""
        self.aliceWatches()
        self.body()
        self.server.advance(100)
        self.stub.flush()
        self.assertEqual(self.xcapServer.requests[-1], (path(PIDF_URL), '"h1"'))
        self.assertEqual(self.alice.notifies(), [])
        self.xcapServer.put(PIDF_URL, HARD.replace(b"9-17", b"10-16"), "h2")
        self.server.advance(100)
        self.stub.flush()
        self.assertIn(b"Office hours 10-16", self.body())
        del self.xcapServer.documents[path(PIDF_URL)]
        self.server.advance(100)
        self.stub.flush()
        self.assertEqual(self.body(), offlineDocument(BOB))

    def test_refreshXcapDoc(self) -> None:
        """The refreshXcapDoc of the pidf-manipulation URL: fetched, notified."""
        self.aliceWatches()
        self.body()
        self.xcapServer.put(PIDF_URL, HARD.replace(b"9-17", b"8-12"), "h3")
        admin = self.server.stack.admin.resource.children[b"RPC2"]
        assert isinstance(admin, AdminXMLRPC)
        answer = self.successResultOf(admin.xmlrpc_refreshXcapDoc(PIDF_URL, 8080))
        self.assertEqual(answer, {"doc_uri": PIDF_URL, "changed": 1})
        self.assertIn(b"Office hours 8-12", self.body())

    def test_serverDownKeepsTheHardState(self) -> None:
        """An XCAP server that fails: the hard state held is kept."""
        self.aliceWatches()
        self.body()
        self.xcapServer.status = 500
        self.server.advance(100)
        self.stub.flush()
        self.assertEqual(self.alice.notifies(), [])
        xcap = self.server.stack.xcap
        assert xcap is not None
        [stored] = run(xcap.documents("bob", "example.com", (PIDF_MANIPULATION,)))
        self.assertEqual(stored.doc, HARD)


class HardSphereTests(IntegratedTestCase):
    """A sphere set in the hard state counts for the rules' sphere conditions."""

    def test_sphereInTheHardState(self) -> None:
        """Bob's hard state says he is at work: alice is allowed.

        RFC 4745 section 7.2: the sphere condition holds when the
        presentity's current state is in the sphere it names; with the hard
        state part of bob's document, its ``<rpid:sphere>`` is his sphere
        while he publishes none.
        """
        self.put(
            XCAPDocument(
                "bob",
                "example.com",
                ruleset(
                    '<cr:rule id="w"><cr:conditions><cr:identity>'
                    '<cr:one id="sip:alice@example.com"/></cr:identity>'
                    '<cr:sphere value="work"/></cr:conditions>'
                    "<cr:actions><pr:sub-handling>allow</pr:sub-handling>"
                    "</cr:actions><cr:transformations><pr:provide-services>"
                    "<pr:all-services/></pr:provide-services></cr:transformations>"
                    "</cr:rule>",
                    rule("c", ["alice"], "confirm"),
                ),
                PRES_RULES,
                "r4",
            )
        )
        self.hardState(inSphere("work"))
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertIn(b"<basic>open</basic>", self.body())
        # Bob's hard state now says home: alice waits again.
        self.hardState(inSphere("home"), "h2")
        run(self.server.stack.reauthorise(BOB))
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
