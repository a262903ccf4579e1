"""Kamailio 5.6's xcap_server, as it answered and wrote in the by-hand run.

docs/interop-kamailio-xcap.md records the run: Kamailio 5.6.3 (Debian's
packages) with xcap_server on xhttp as the XCAP server of the external mode,
and as the writer of this server's ``xcap`` table in the integrated mode.
These tests replay what it did, byte for byte where it matters:

- `KamailioXCAP` answers GETs as Kamailio did: ``ETag`` quoted
  (``"sr-<start time>-<pid>-<counter>"``), ``Content-Type:
  application/auth-policy+xml``, an ``Sia`` header (its xhttp module's
  renamed Via); 304 without an ``ETag`` only for an ``If-None-Match`` with
  the quoted tag (or ``W/`` and the quoted tag), 200 for the bare tag;
  ``404 Not found`` with an empty body for a missing document; the path
  percent-decoded before the document is looked up.
- The rows are those Kamailio wrote into the table (doc_type 2 for
  pres-rules and OMA pres-rules, ``doc_uri`` the decoded HTTP path with
  the XCAP root, ``source`` and ``port`` 0, one row per path).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast
from urllib.parse import unquote

from treq.testing import StubTreq
from twisted.logger import ILogObserver, LogEvent, Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from presence.packages.presence import offlineDocument
from presence.storage.xcap import PRES_RULES, XCAPDocument
from presence.testing import Server, Subscriber
from presence.xcap.client import XCAPClient
from test.xcap.test_client import run
from test.xcap.test_integrated import BOB, RICH

ROOT = "http://127.0.0.1:18000/xcap-root"

#: The documents of the run, as they were PUT to Kamailio.
INTEROP = Path(__file__).resolve().parents[2] / "etc" / "interop"
ALLOW = (INTEROP / "pres-rules-allow.xml").read_bytes()
BLOCK = (INTEROP / "pres-rules-block.xml").read_bytes()
#: PUT as ``.../index.xml``.
CAROL_CONFIRM = (INTEROP / "pres-rules-carol-confirm.xml").read_bytes()
#: PUT under the OMA AUID, ``org.openmobilealliance.pres-rules``.
DAVE_POLITE = (INTEROP / "oma-pres-rules-dave-polite.xml").read_bytes()


class KamailioXCAP(Resource):
    """GETs answered as Kamailio 5.6.3's xcap_server answered them.

    Attributes:
        documents: decoded path -> (body, entity tag without quotes).
        requests: (raw path, If-None-Match) of every GET.
        codes: the status of every answer.
    """

    isLeaf = True

    def __init__(self) -> None:
        """No document."""
        super().__init__()
        self.documents: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.codes: list[int] = []
        self.port = 45638

    def render_GET(self, request: Request) -> bytes:
        """200, 304 or 404, with Kamailio's headers."""
        raw = request.path.decode()
        value = request.requestHeaders.getRawHeaders(b"if-none-match")
        match = value[0].decode() if value else None
        self.requests.append((raw, match))
        self.port += 2
        request.setHeader(b"sia", f"SIP/2.0/TCP 127.0.0.1:{self.port}".encode())
        found = self.documents.get(unquote(raw))
        if found is None:
            self.codes.append(404)
            request.setResponseCode(404, b"Not found")
            return b""
        body, etag = found
        if match in (f'"{etag}"', f'W/"{etag}"'):
            self.codes.append(304)
            request.setResponseCode(304, b"Not Modified")
            return b""
        self.codes.append(200)
        request.setHeader(b"etag", f'"{etag}"'.encode())
        request.setHeader(b"content-type", b"application/auth-policy+xml")
        return body


class ExternalModeTests(SynchronousTestCase):
    """Kamailio's xcap_server as the XCAP server of the external mode."""

    def setUp(self) -> None:
        """The server with Kamailio's XCAP root, as in the run."""
        self.server = Server(xcapServer=(ROOT,), queryPeriod=10)
        self.addCleanup(self.server.close)
        self.kamailio = KamailioXCAP()
        client = self.server.stack.xcapClient
        assert client is not None
        self.client: XCAPClient = client
        self.client.http = StubTreq(self.kamailio)
        self.logged: list[LogEvent] = []
        self.client.log = Logger(observer=cast(ILogObserver, self.logged.append))
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)

    def put(self, user: str, body: bytes, etag: str) -> None:
        """A PUT to Kamailio of ``user``'s pres-rules, at its decoded path."""
        path = f"/xcap-root/pres-rules/users/sip:{user}@example.com/index"
        self.kamailio.documents[path] = (body, etag)

    def held(self, user: str = "bob") -> list[XCAPDocument]:
        """The user's pres-rules rows in this server's table."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        return run(xcap.documents(user, "example.com", (PRES_RULES,)))

    def states(self) -> list[str]:
        """The states of the NOTIFYs alice got, answered."""
        out = []
        for notify in self.alice.notifies():
            self.alice.answer(notify)
            out.append(str(notify.header("subscription-state")).split(";")[0])
        return out

    def test_fetchConditionalChangeDelete(self) -> None:
        """The run of the external mode, step by step.

        RFC 4825 section 7.10 (conditional operations): the client sends
        the entity tag it holds in If-None-Match; Kamailio answers 304 only
        to the tag quoted as it sent it, so the tag is stored without its
        quotes and sent with them.
        """
        self.put("bob", ALLOW, "sr-1796589613-9664-1")
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.states(), ["active"])
        [row] = self.held()
        self.assertEqual(
            (row.docURI, row.port, row.source, row.etag, row.doc),
            (
                f"{ROOT}/pres-rules/users/sip:bob@example.com/index",
                18000,
                1,
                "sr-1796589613-9664-1",
                ALLOW,
            ),
        )
        self.server.advance(10)
        self.assertEqual(
            self.kamailio.requests[-1],
            (
                "/xcap-root/pres-rules/users/sip:bob@example.com/index",
                '"sr-1796589613-9664-1"',
            ),
        )
        self.assertEqual(self.kamailio.codes, [200, 304])
        self.assertEqual(self.states(), [])
        # A PUT of the blocking rules: Kamailio's new tag, from another worker.
        self.put("bob", BLOCK, "sr-1796589682-10906-1")
        self.server.advance(10)
        self.assertEqual(self.states(), ["terminated"])
        self.assertEqual(self.held()[0].etag, "sr-1796589682-10906-1")
        # The DELETE: 404 Not found, the row goes.
        self.kamailio.documents.clear()
        self.server.advance(10)
        self.assertEqual(self.held(), [])
        self.assertEqual(self.kamailio.codes, [200, 304, 200, 404])
        self.assertEqual([e for e in self.logged if "failed" in e["log_format"]], [])

    def test_percentEncodedXUI(self) -> None:
        """A user part with ``+``: the XUI percent-encoded, Kamailio decodes.

        RFC 4825 section 6: the XUI is a path segment, percent-encoded as
        RFC 3986 requires; Kamailio looks the document up by the decoded path
        (its row's ``doc_uri`` is ``.../sip:+4930123@example.com/index``).
        """
        self.put("+4930123", ALLOW, "sr-1796589613-9664-3")
        watched = Subscriber(self.server, "+4930123", "192.0.2.23", 5073)
        watched.publish(RICH)
        self.assertEqual(self.alice.subscribe("sip:+4930123@example.com").code, 200)
        self.assertEqual(self.states(), ["active"])
        self.assertEqual(
            self.kamailio.requests[0][0],
            "/xcap-root/pres-rules/users/sip:%2B4930123@example.com/index",
        )
        [row] = self.held("+4930123")
        self.assertEqual(
            row.docURI, f"{ROOT}/pres-rules/users/sip:%2B4930123@example.com/index"
        )

    def test_noDocument(self) -> None:
        """Kamailio's 404 Not found for a user without rules: pending."""
        self.bob.publish(RICH)
        self.assertEqual(self.alice.subscribe(BOB).code, 200)
        self.assertEqual(self.states(), ["pending"])
        self.assertEqual(self.held(), [])
        self.assertEqual(self.logged, [])


#: The rows Kamailio wrote into this server's table for bob, as read back.
KAMAILIO_ROWS = (
    XCAPDocument(
        "bob",
        "example.com",
        ALLOW,
        PRES_RULES,
        "sr-1796590254-19545-2",
        "/xcap-root/pres-rules/users/sip:bob@example.com/index",
    ),
    XCAPDocument(
        "bob",
        "example.com",
        CAROL_CONFIRM,
        PRES_RULES,
        "sr-1796590254-19539-2",
        "/xcap-root/pres-rules/users/sip:bob@example.com/index.xml",
    ),
    XCAPDocument(
        "bob",
        "example.com",
        DAVE_POLITE,
        PRES_RULES,
        "sr-1796590254-19545-3",
        "/xcap-root/org.openmobilealliance.pres-rules/users/sip:bob@example.com/pres-rules",
    ),
)


class IntegratedModeTests(SynchronousTestCase):
    """Kamailio's xcap_server writing the table of the integrated mode."""

    def setUp(self) -> None:
        """The server in the integrated mode, with Kamailio's three rows."""
        self.server = Server(integratedXcapServer=True)
        self.addCleanup(self.server.close)
        xcap = self.server.stack.xcap
        assert xcap is not None
        for row in KAMAILIO_ROWS:
            run(xcap.put(row))
        self.bob = Subscriber(self.server, "bob", "192.0.2.21", 5071)
        self.bob.publish(RICH)

    def test_threeRowsOneRuleSet(self) -> None:
        """Every row of doc_type 2 counts, whatever its path.

        RFC 5025 section 9.7 and RFC 4745 section 10: the rule sets combine;
        alice is allowed by ``index``, carol confirmed by ``index.xml``, dave
        politely blocked by the OMA document, and erin matches no rule.
        """
        outcomes = {}
        for port, name in enumerate(("alice", "carol", "dave", "erin")):
            watcher = Subscriber(self.server, name, "192.0.2.30", 5080 + port)
            code = watcher.subscribe(BOB).code
            notifies = watcher.notifies()
            for notify in notifies:
                watcher.answer(notify)
            outcomes[name] = (
                code,
                [str(n.header("subscription-state")).split(";")[0] for n in notifies],
                [n.body == offlineDocument(BOB) for n in notifies],
            )
        self.assertEqual(
            outcomes,
            {
                "alice": (200, ["active"], [False]),
                "carol": (200, ["pending"], [False]),
                "dave": (200, ["active"], [True]),
                "erin": (403, [], []),
            },
        )
