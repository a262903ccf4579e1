"""The XCAP client's bounds on what an XCAP server sends (RFC 4825 over HTTP).

A body without a Content-Length (chunked, RFC 9112 section 7.1) larger than
the cap is refused as it streams in; a body that starts and never ends is
cut at the timeout; either keeps what the table held (fail closed), and one
fetch of a document is in flight however many readers ask for it.
"""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from presence.storage.xcap import PRES_RULES, MemoryXCAPStore, XCAPDocument
from presence.xcap.client import XCAPClient

ROOT = "http://xcap.example.com:8080/xcap-root"
URL = f"{ROOT}/pres-rules/users/sip:bob@example.com/index"
DOCUMENT = b'<ruleset xmlns="urn:ietf:params:xml:ns:common-policy"/>'


class Dribbling(Resource):
    """Answers 200 without a length and writes what it is told to, when told.

    Attributes:
        requests: the requests, unfinished.
    """

    isLeaf = True

    def __init__(self) -> None:
        """No request yet."""
        super().__init__()
        self.requests: list[Request] = []

    def render_GET(self, request: Request) -> int:
        """Start the answer: headers, no length (chunked), no body yet."""
        request.setHeader(b"etag", b'"e2"')
        request.setHeader(b"content-type", b"application/auth-policy+xml")
        self.requests.append(request)
        return NOT_DONE_YET

    def write(self, data: bytes) -> None:
        """Write more of every answer."""
        for request in self.requests:
            request.write(data)


class BoundsTests(SynchronousTestCase):
    """A client on a clock, an in-memory table holding an older document."""

    def setUp(self) -> None:
        """The client; the table holds bob's rules as ``e1``."""
        self.clock = Clock()
        self.server = Dribbling()
        self.stub = StubTreq(self.server)
        self.table = MemoryXCAPStore()
        self.held = XCAPDocument("bob", "example.com", DOCUMENT, PRES_RULES, "e1", URL)
        self.successResultOf(Deferred.fromCoroutine(self.table.put(self.held)))
        self.client = XCAPClient(
            self.clock, self.stub, self.table, [ROOT], timeout=10, maxSize=100
        )

    def fetch(self) -> Deferred[bool]:
        """Fetch bob's pres-rules."""
        return Deferred.fromCoroutine(self.client.fetch("bob", "example.com", 2))

    def rows(self) -> list[Any]:
        """Bob's pres-rules rows."""
        return self.successResultOf(
            Deferred.fromCoroutine(self.table.documents("bob", "example.com", (2,)))
        )

    def test_streamedOverTheCap(self) -> None:
        """Chunks adding up past the cap: refused before the body ends."""
        fetched = self.fetch()
        self.stub.flush()
        self.server.write(b"<ruleset>" + b" " * 60)
        self.stub.flush()
        self.assertNoResult(fetched)
        self.server.write(b" " * 60)
        self.stub.flush()
        self.assertFalse(self.successResultOf(fetched))
        self.assertEqual(self.rows(), [self.held])
        self.assertEqual(self.client.failures, 1)

    def test_bodyNeverEnds(self) -> None:
        """Headers and a part of the body, then nothing: cut at the timeout."""
        fetched = self.fetch()
        self.stub.flush()
        self.server.write(b"<ruleset")
        self.stub.flush()
        self.clock.advance(9)
        self.assertNoResult(fetched)
        self.clock.advance(1)
        self.assertFalse(self.successResultOf(fetched))
        self.assertEqual(self.rows(), [self.held])
        self.assertEqual(self.client.failures, 1)

    def test_oneFetchInFlight(self) -> None:
        """Three readers of one document while its fetch runs: one GET."""
        fetches = [self.fetch() for _ in range(3)]
        self.stub.flush()
        self.assertEqual(len(self.server.requests), 1)
        self.server.write(DOCUMENT)
        self.server.requests[0].finish()
        self.stub.flush()
        self.assertEqual([self.successResultOf(f) for f in fetches], [True] * 3)
        [row] = self.rows()
        self.assertEqual(row.etag, "e2")
        self.assertEqual(self.client.fetches, 1)
