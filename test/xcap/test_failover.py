"""The external XCAP mode with several XCAP roots: fail-over.

``xcap_server = [A, B]`` names replicas of one XCAP service. A fetch goes to
the root that answered last (A to begin with); when it is unreachable, times
out or answers 5xx, the next root is tried. Each root is its own
`FakeXCAPServer` behind its own ``StubTreq``, or refuses every connection;
the clock is the in-memory server's.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.trial.unittest import SynchronousTestCase

from presence.admin.xmlrpc import AdminXMLRPC
from presence.storage.xcap import PRES_RULES, XCAPDocument
from presence.testing import Server, Subscriber
from presence.xcap.client import XCAPClient
from test.xcap.test_client import FakeXCAPServer, _Refused, run
from test.xcap.test_integrated import BOB, EVERYTHING, RICH, rule, ruleset

ROOT_A = "http://xcap-a.example.com:8080/xcap-root"
ROOT_B = "http://xcap-b.example.com:8081/xcap-root"
DOC = "/pres-rules/users/sip:bob@example.com/index"
URL_A = ROOT_A + DOC
URL_B = ROOT_B + DOC

ALLOW = ruleset(rule("a", ["alice"], "allow", EVERYTHING))
BLOCK = ruleset(rule("b", ["alice"], "block"))


class _ByHost:
    """An HTTP client sending each request to the client of its host."""

    def __init__(self, hosts: dict[str, Any]) -> None:
        self.hosts = hosts

    def get(self, url: str, **kwargs: Any) -> Deferred[Any]:
        return cast(Deferred[Any], self.hosts[urlsplit(url).netloc].get(url, **kwargs))


class FailoverTests(SynchronousTestCase):
    """bob's rules on two replicas, A and B; alice watches bob."""

    def setUp(self) -> None:
        """The server with roots A and B, both up and holding bob's rules."""
        self.server = Server(xcapServer=(ROOT_A, ROOT_B), queryPeriod=100)
        self.addCleanup(self.server.close)
        self.a = FakeXCAPServer()
        self.b = FakeXCAPServer()
        for replica in (self.a, self.b):
            replica.put(URL_A, ALLOW, "e1")
        self.stubA = StubTreq(self.a)
        self.stubB = StubTreq(self.b)
        self.hosts: dict[str, Any] = {
            "xcap-a.example.com:8080": self.stubA,
            "xcap-b.example.com:8081": self.stubB,
        }
        client = self.server.stack.xcapClient
        assert client is not None
        self.client: XCAPClient = client
        self.client.http = _ByHost(self.hosts)
        self.logged: list[LogEvent] = []
        self.client.log = Logger(observer=cast(ILogObserver, self.logged.append))
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)

    def down(self, host: str) -> None:
        """Every connection to ``host`` (``a`` or ``b``) is refused."""
        key = next(k for k in self.hosts if k.startswith(f"xcap-{host}."))
        self.hosts[key] = _Refused()

    def flush(self) -> None:
        """Answer what either replica holds."""
        self.stubA.flush()
        self.stubB.flush()

    def held(self) -> list[XCAPDocument]:
        """The pres-rules rows of bob in the server's table."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        return run(xcap.documents("bob", "example.com", (PRES_RULES,)))

    def state(self) -> str:
        """The state of the one NOTIFY alice got, answered."""
        [notify] = self.alice.notifies()
        self.alice.answer(notify)
        return str(notify.header("subscription-state")).split(";")[0]

    def watch(self) -> None:
        """Bob publishes (his rules are fetched then), alice subscribes."""
        self.bob.publish(RICH)
        self.flush()
        self.assertEqual(self.alice.subscribe(BOB).code, 200)

    def warnings(self) -> list[str]:
        """The servers named by the failure lines logged."""
        return [
            str(e["server"])
            for e in self.logged
            if "failed" in e.get("log_format", "") and "server" in e
        ]

    def period(self) -> None:
        """One periodic check."""
        self.server.advance(100)
        self.flush()

    def test_firstRootUsed(self) -> None:
        """Both up: only A is asked, and the row is A's URL and port."""
        self.watch()
        self.assertEqual(self.state(), "active")
        self.assertEqual(self.a.requests, [("/xcap-root" + DOC, None)])
        self.assertEqual(self.b.requests, [])
        [row] = self.held()
        self.assertEqual((row.docURI, row.port), (URL_A, 8080))

    def test_unreachableFailsOver(self) -> None:
        """A refuses connections: B is asked at once, its URL and port kept.

        The failure of A is logged once; the fetch itself did not fail.
        """
        self.down("a")
        self.watch()
        self.assertEqual(self.state(), "active")
        [row] = self.held()
        self.assertEqual((row.docURI, row.port, row.etag), (URL_B, 8081, "e1"))
        self.assertEqual(self.b.requests, [("/xcap-root" + DOC, None)])
        self.assertEqual(self.warnings(), ["xcap-a.example.com:8080"])
        self.assertEqual((self.client.fetches, self.client.failures), (2, 0))
        # B answered last: the periodic check goes to B first, conditionally.
        self.period()
        self.assertEqual(self.b.requests[-1], ("/xcap-root" + DOC, '"e1"'))
        self.assertEqual(self.client.fetches, 3)
        self.assertEqual(self.alice.notifies(), [])
        self.assertEqual(self.warnings(), ["xcap-a.example.com:8080"])

    def test_serverErrorFailsOver(self) -> None:
        """A answers 503 (or 500): B is asked."""
        self.a.status = 503
        self.watch()
        self.assertEqual(self.state(), "active")
        self.assertEqual(len(self.a.requests), 1)
        self.assertEqual([r.docURI for r in self.held()], [URL_B])
        self.b.put(URL_A, BLOCK, "e2")
        self.a.status = 500
        self.period()
        self.assertEqual(self.state(), "terminated")
        self.assertEqual(len(self.a.requests), 1)

    def test_timeoutFailsOver(self) -> None:
        """A does not answer within the timeout: then B is asked."""
        self.a.hold = True
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.state(), "pending")
        self.assertEqual((len(self.a.held), self.b.requests), (1, []))
        self.server.advance(self.client.timeout)
        self.stubB.flush()
        self.assertEqual(len(self.b.requests), 1)
        self.assertEqual(self.state(), "active")
        self.assertEqual([r.docURI for r in self.held()], [URL_B])

    def test_clientErrorDoesNotFailOver(self) -> None:
        """A answers 404 or 403: the service's answer, B is not asked."""
        del self.a.documents["/xcap-root" + DOC]
        self.watch()
        self.assertEqual(self.b.requests, [])
        self.assertEqual(self.held(), [])
        self.a.status = 403
        self.period()
        self.assertEqual(self.b.requests, [])
        self.assertEqual(self.client.failures, 1)

    def test_everyRootDownFailsClosed(self) -> None:
        """A and B down: the document held is kept, each logged once."""
        self.watch()
        self.assertEqual(self.state(), "active")
        self.down("a")
        self.b.status = 502
        for _ in range(3):
            self.period()
        self.assertEqual(
            self.warnings(), ["xcap-a.example.com:8080", "xcap-b.example.com:8081"]
        )
        self.assertEqual(self.client.failures, 3)
        self.assertEqual([r.docURI for r in self.held()], [URL_A])
        self.assertEqual(self.alice.notifies(), [])

    def test_backToTheFirst(self) -> None:
        """B, in use, goes down: A is asked again; one row, under A's URL."""
        self.down("a")
        self.watch()
        self.assertEqual(self.state(), "active")
        self.hosts["xcap-a.example.com:8080"] = self.stubA
        self.a.put(URL_A, BLOCK, "e2")
        self.down("b")
        self.period()
        self.assertEqual(self.state(), "terminated")
        [row] = self.held()
        self.assertEqual((row.docURI, row.port, row.etag), (URL_A, 8080, "e2"))
        self.assertIn(
            "answers again",
            [e["log_format"] for e in self.logged][-1],
        )

    def test_sameDocumentFromTheOtherRoot(self) -> None:
        """The same document and tag from B: moved to B's URL, nobody told.

        (B answers 200 however its tag is asked for, as a server without
        conditional GET would.)
        """
        self.watch()
        self.assertEqual(self.state(), "active")
        runs = self.server.stack.reauthoriser.runs  # type: ignore[union-attr]
        self.down("a")
        self.b.ifNoneMatch = lambda request: None  # type: ignore[method-assign]
        self.period()
        [row] = self.held()
        self.assertEqual((row.docURI, row.port, row.etag), (URL_B, 8081, "e1"))
        self.assertEqual(self.server.stack.reauthoriser.runs, runs)  # type: ignore[union-attr]
        self.assertEqual(self.alice.notifies(), [])

    def test_refreshXcapDocEitherRoot(self) -> None:
        """The XML-RPC refreshXcapDoc: the row's URL, or the document under A or B."""
        self.down("a")
        self.watch()
        self.assertEqual(self.state(), "active")
        admin = self.server.stack.admin.resource.children[b"RPC2"]
        assert isinstance(admin, AdminXMLRPC)
        self.b.put(URL_A, BLOCK, "e2")
        answer = self.successResultOf(admin.xmlrpc_refreshXcapDoc(URL_A))
        self.assertEqual(answer, {"doc_uri": URL_A, "changed": 1})
        self.assertEqual(self.state(), "terminated")
        answer = self.successResultOf(admin.xmlrpc_refreshXcapDoc(URL_B, 8081))
        self.assertEqual(answer["changed"], 0)
