"""The external XCAP mode: the XCAP client over ``treq.testing.StubTreq``.

The server runs with ``xcap_server = ["http://xcap.example.com:8080/xcap-root"]``;
its client's HTTP requests go to `FakeXCAPServer`, a twisted.web resource,
through StubTreq (no sockets). The documents land in the server's XCAP
store as OpenSIPS's xcap_client stores them.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.xmlrpc import Fault

from presence.admin.xmlrpc import AdminXMLRPC
from presence.storage.xcap import (
    PRES_RULES,
    RESOURCE_LISTS,
    MemoryXCAPStore,
    XCAPDocument,
)
from presence.testing import Server, Subscriber
from presence.xcap.client import XCAPClient, unquoteETag
from test.xcap.test_integrated import BOB, EVERYTHING, RICH, rule, ruleset

T = TypeVar("T")

ROOT = "http://xcap.example.com:8080/xcap-root"
RULES_URL = f"{ROOT}/pres-rules/users/sip:bob@example.com/index"
LISTS_URL = f"{ROOT}/resource-lists/users/sip:bob@example.com/index"
RL = "urn:ietf:params:xml:ns:resource-lists"


def path(url: str) -> str:
    """The path of a URL, as the XCAP server sees it."""
    return urlsplit(url).path


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that finishes at once."""
    results: list[T] = []
    Deferred.fromCoroutine(coroutine).addCallback(results.append)
    assert results, "the coroutine did not finish"
    return results[0]


class FakeXCAPServer(Resource):
    """Documents by URL path, with entity tags; conditional GETs answered.

    Attributes:
        documents: path -> (body, entity tag).
        requests: (path, If-None-Match) of every GET.
        status: when set, every GET gets this status.
        hold: when true, GETs wait in ``held`` until `release`.
    """

    isLeaf = True

    def __init__(self) -> None:
        """No document yet."""
        super().__init__()
        self.documents: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.status: int | None = None
        self.hold = False
        self.held: list[Request] = []

    def put(self, url: str, body: bytes, etag: str) -> None:
        """Hold a document at the path of ``url``."""
        self.documents[path(url)] = (body, etag)

    def render_GET(self, request: Request) -> bytes | int:
        """Answer a GET, or hold it."""
        path = request.path.decode()
        self.requests.append((path, self.ifNoneMatch(request)))
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        return self.answer(request)

    @staticmethod
    def ifNoneMatch(request: Request) -> str | None:
        """The request's If-None-Match."""
        value = request.requestHeaders.getRawHeaders(b"if-none-match")
        return value[0].decode() if value else None

    def answer(self, request: Request) -> bytes:
        """200 with the document, 304 for its entity tag, or 404."""
        path = request.path.decode()
        if self.status is not None:
            request.setResponseCode(self.status)
            return b"broken"
        if path not in self.documents:
            request.setResponseCode(404)
            return b""
        body, etag = self.documents[path]
        request.setHeader(b"etag", f'"{etag}"'.encode())
        if self.ifNoneMatch(request) == f'"{etag}"':
            request.setResponseCode(304)
            return b""
        request.setHeader(b"content-type", b"application/auth-policy+xml")
        return body

    def release(self) -> None:
        """Answer the GETs held."""
        for request in self.held:
            body = self.answer(request)
            # A length, not chunks (Twisted names that header in text).
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()
        self.held = []


class ExternalModeTests(SynchronousTestCase):
    """bob's rules come from the XCAP server; alice watches him."""

    def setUp(self) -> None:
        """The server in the external mode, its client on the fake server."""
        self.server = Server(xcapServer=(ROOT,), queryPeriod=100)
        self.addCleanup(self.server.close)
        self.xcapServer = FakeXCAPServer()
        self.stub = StubTreq(self.xcapServer)
        client = self.server.stack.xcapClient
        assert client is not None
        self.client: XCAPClient = client
        self.client.http = self.stub
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.logged: list[LogEvent] = []
        self.client.log = Logger(observer=cast(ILogObserver, self.logged.append))

    def allowAlice(self, etag: str = "e1") -> None:
        """Bob's rules on the XCAP server allow alice."""
        self.xcapServer.put(
            RULES_URL, ruleset(rule("a", ["alice"], "allow", EVERYTHING)), etag
        )

    def held(self, docType: int = PRES_RULES) -> list[XCAPDocument]:
        """Bob's documents of a type in the server's table."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        return run(xcap.documents("bob", "example.com", (docType,)))

    def state(self) -> str:
        """The Subscription-State of the one NOTIFY alice got, answered."""
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        return str(notify.header("subscription-state")).split(";")[0]

    def aliceWatches(self) -> None:
        """Alice subscribes before bob's rules are held: pending at first."""
        self.xcapServer.hold = True
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.state(), "pending")
        self.xcapServer.hold = False
        self.xcapServer.release()
        self.stub.flush()

    def failures(self) -> list[LogEvent]:
        """The log lines of XCAP server failures."""
        return [e for e in self.logged if "XCAP server" in e.get("log_format", "")]

    def test_firstSubscribeFetches(self) -> None:
        """The first SUBSCRIBE fetches the rules: pending, then active.

        The document is stored as OpenSIPS's xcap_client stores it: source
        1, the full URL, the server's port, the entity tag unquoted.
        """
        self.allowAlice()
        self.aliceWatches()
        self.assertEqual(self.xcapServer.requests, [(path(RULES_URL), None)])
        self.assertEqual(self.state(), "active")
        [row] = self.held()
        self.assertEqual(
            (row.source, row.docURI, row.port, row.etag), (1, RULES_URL, 8080, "e1")
        )
        self.assertEqual(self.client.fetches, 1)
        stats = run(self.server.stack.statistics.snapshot())
        self.assertEqual(stats.xcapFetches, 1)
        # Read again, the user is known: no other fetch.
        self.server.advance(5)
        self.assertEqual(
            Subscriber(self.server, "carol", "192.0.2.22", 5072).subscribe(BOB).code,
            403,
        )
        self.assertEqual(self.client.fetches, 1)

    def test_noDocumentStaysPending(self) -> None:
        """The XCAP server has no rules for bob (404): alice stays pending."""
        self.aliceWatches()
        self.assertEqual(self.alice.notifies(), [])
        self.assertEqual(self.held(), [])
        self.assertEqual(self.failures(), [])

    def test_periodicConditional(self) -> None:
        """Every period: If-None-Match; 304 changes nothing, 200 re-authorises."""
        self.allowAlice()
        self.aliceWatches()
        self.assertEqual(self.state(), "active")
        runs = self.server.stack.reauthoriser.runs  # type: ignore[union-attr]
        self.server.advance(100)
        self.stub.flush()
        self.assertEqual(self.xcapServer.requests[-1][1], '"e1"')
        self.assertEqual(self.client.fetches, 2)
        self.assertEqual(self.server.stack.reauthoriser.runs, runs)  # type: ignore[union-attr]
        self.assertEqual(self.alice.notifies(), [])
        # bob now blocks alice: a new document, a new entity tag.
        self.xcapServer.put(RULES_URL, ruleset(rule("b", ["alice"], "block")), "e2")
        self.server.advance(100)
        self.stub.flush()
        self.assertEqual(self.held()[0].etag, "e2")
        self.assertEqual(self.state(), "terminated")

    def test_deletedDocument(self) -> None:
        """404 for a held document: the row goes, alice is pending again."""
        self.allowAlice()
        self.aliceWatches()
        self.assertEqual(self.state(), "active")
        del self.xcapServer.documents[path(RULES_URL)]
        self.server.advance(100)
        self.stub.flush()
        self.assertEqual(self.held(), [])
        self.assertEqual(self.state(), "pending")

    def test_serverDownFailsClosed(self) -> None:
        """Errors keep the last document, are logged once, retried each period."""
        self.allowAlice()
        self.aliceWatches()
        self.assertEqual(self.state(), "active")
        self.xcapServer.status = 503
        for _ in range(3):
            self.server.advance(100)
            self.stub.flush()
        self.assertEqual(len(self.failures()), 1)
        self.assertEqual(self.client.failures, 3)
        self.assertEqual(len(self.held()), 1)
        self.assertEqual(self.alice.notifies(), [])
        # Unreachable: the same.
        self.client.http = _Refused()
        self.server.advance(100)
        self.assertEqual(len(self.failures()), 1)
        self.client.http = self.stub
        self.xcapServer.status = None
        self.server.advance(100)
        self.stub.flush()
        self.assertIn("answers again", self.logged[-1]["log_format"])

    def test_downBeforeAnyDocument(self) -> None:
        """Never fetched, the server down: the watcher stays pending."""
        self.client.http = _Refused()
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.state(), "pending")
        self.server.advance(100)
        self.assertEqual(self.alice.notifies(), [])
        self.assertEqual(len(self.failures()), 1)

    def test_timeout(self) -> None:
        """A fetch that takes longer than the timeout fails; the row is kept."""
        self.allowAlice()
        self.aliceWatches()
        self.assertEqual(self.state(), "active")
        self.xcapServer.hold = True
        self.server.advance(100)
        self.assertEqual(len(self.xcapServer.held), 1)
        self.server.advance(self.client.timeout)
        self.assertEqual(len(self.failures()), 1)
        self.assertEqual(len(self.held()), 1)
        self.assertEqual(self.alice.notifies(), [])

    def test_redirectIsAnError(self) -> None:
        """A redirect is not followed: an error, nothing stored."""
        self.xcapServer.status = 302
        self.aliceWatches()
        self.assertEqual(self.held(), [])
        self.assertEqual(len(self.failures()), 1)

    def test_sizeCap(self) -> None:
        """A document over the cap is an error: nothing stored."""
        self.client.maxSize = 100
        self.allowAlice()
        self.aliceWatches()
        self.assertEqual(self.alice.notifies(), [])
        self.assertEqual(self.held(), [])
        self.assertEqual(len(self.failures()), 1)

    def test_malformedDocument(self) -> None:
        """A body that is not XML (or declares a DTD) is an error."""
        self.xcapServer.put(RULES_URL, b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", "1")
        self.aliceWatches()
        self.assertEqual(self.held(), [])
        self.assertEqual(len(self.failures()), 1)

    def test_oneFetchInFlight(self) -> None:
        """Two fetches of one document at once: one request."""
        self.allowAlice()
        self.xcapServer.hold = True
        first = Deferred.fromCoroutine(self.client.fetch("bob", "example.com", 2))
        second = Deferred.fromCoroutine(self.client.fetch("bob", "example.com", 2))
        self.assertEqual(len(self.xcapServer.requests), 1)
        self.xcapServer.release()
        self.stub.flush()
        self.assertTrue(self.successResultOf(first))
        self.assertTrue(self.successResultOf(second))
        self.assertEqual(self.client.fetches, 1)

    def test_externalLists(self) -> None:
        """Rules with an external-list: the resource lists are fetched too."""
        lists = (
            f'<?xml version="1.0"?><resource-lists xmlns="{RL}"><list name="friends">'
            '<entry uri="sip:alice@example.com"/></list></resource-lists>'
        ).encode()
        anchor = f"{LISTS_URL}/~~/resource-lists/list%5b@name=%22friends%22%5d"
        self.xcapServer.put(
            RULES_URL,
            ruleset(
                '<cr:rule id="f"><cr:conditions><ocp:external-list>'
                f'<ocp:entry anc="{anchor}"/></ocp:external-list></cr:conditions>'
                "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>"
                f"<cr:transformations>{EVERYTHING}</cr:transformations></cr:rule>"
            ),
            "r1",
        )
        self.xcapServer.put(LISTS_URL, lists, "l1")
        self.aliceWatches()
        self.assertEqual([r.docURI for r in self.held(RESOURCE_LISTS)], [LISTS_URL])
        self.assertEqual(self.state(), "active")

    def test_refreshXcapDoc(self) -> None:
        """refreshXcapDoc: with and without port; an unknown doc_uri is 404."""
        self.allowAlice()
        self.aliceWatches()
        self.assertEqual(self.state(), "active")
        self.xcapServer.put(RULES_URL, ruleset(rule("b", ["alice"], "block")), "e2")
        admin = self.server.stack.admin.resource.children[b"RPC2"]
        assert isinstance(admin, AdminXMLRPC)
        answer = self.successResultOf(admin.xmlrpc_refreshXcapDoc(RULES_URL))
        self.assertEqual(answer, {"doc_uri": RULES_URL, "changed": 1})
        self.assertEqual(self.state(), "terminated")
        answer = self.successResultOf(
            admin.xmlrpc_refreshXcapDoc({"doc_uri": RULES_URL, "port": 8080})
        )
        self.assertEqual(answer["changed"], 0)
        for args in (
            (RULES_URL, 8081),
            (LISTS_URL,),
            ("http://elsewhere/xcap-root/pres-rules/users/sip:a@b/index",),
        ):
            fault = self.failureResultOf(
                admin.xmlrpc_refreshXcapDoc(*args), Fault
            ).value
            self.assertEqual(fault.faultCode, 404, args)


class _Refused:
    """An HTTP client whose every connection is refused."""

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError())


class HelpersTests(SynchronousTestCase):
    """Entity tags and URLs."""

    def test_unquote(self) -> None:
        """Quotes and W/ go."""
        self.assertEqual(unquoteETag('"abc"'), "abc")
        self.assertEqual(unquoteETag('W/"abc"'), "abc")
        self.assertEqual(unquoteETag("abc"), "abc")

    def test_url(self) -> None:
        """The XUI's URL under the root, its trailing slash dropped."""
        self.assertEqual(self.client().url(PRES_RULES, "bob", "example.com"), RULES_URL)

    def client(self) -> XCAPClient:
        """A client that never fetches."""
        return XCAPClient(Clock(), None, MemoryXCAPStore(), (ROOT + "/",))


class RefreshWithoutExternalModeTests(SynchronousTestCase):
    """refreshXcapDoc outside the external mode, and bad arguments."""

    def test_faults(self) -> None:
        """No xcap_server: 404; an empty doc_uri or a bad port: 400."""
        server = Server()
        self.addCleanup(server.close)
        admin = server.stack.admin.resource.children[b"RPC2"]
        assert isinstance(admin, AdminXMLRPC)
        fault = self.assertRaises(Fault, admin.xmlrpc_refreshXcapDoc, RULES_URL)
        self.assertEqual(fault.faultCode, 404)
        for args in (("",), (RULES_URL, "eighty")):
            self.assertEqual(
                self.assertRaises(Fault, admin.xmlrpc_refreshXcapDoc, *args).faultCode,
                400,
            )
