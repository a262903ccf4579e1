"""Tests for `presence.core.publish`: the entity-tag rules of RFC 3903."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from presence.sip.message import SIPResponse
from presence.testing import UA, Server, pidf


class SingleEntityTagTests(SynchronousTestCase):
    """RFC 3903 section 6 step 3.

    "If the request contains a SIP-If-Match header field, the ESC checks
    whether the request contains a single entity-tag. If not, the request is
    invalid, and the ESC MUST return with a 400 (Invalid Request) response
    and skip the remaining steps."
    """

    def setUp(self) -> None:
        """A server and bob, who has published once."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.bob = UA(self.server, "bob", "192.0.2.21", 5071)
        response = self.bob.publish(pidf())
        self.assertEqual(response.code, 200)
        etag = response.header("sip-etag")
        assert etag is not None
        self.etag: str = etag

    def publishWith(self, *values: str, body: bytes | None = None) -> SIPResponse:
        """PUBLISH with one SIP-If-Match header per value."""
        extra = [("SIP-If-Match", value) for value in values]
        return self.bob.publish(body, extra=extra)

    def assertRefused(self, response: SIPResponse, why: str) -> None:
        """A 400 whose reason phrase says ``why``; the publication untouched."""
        self.assertEqual((response.code, response.phrase), (400, why))
        publications = self.successResultOf(
            self.server.store.publications(
                self.bob.aor.removeprefix("sip:"), "presence"
            )
        )
        self.assertEqual([p.etag for p in publications], [self.etag])

    def test_twoTagsInOneHeader(self) -> None:
        """Two entity tags in one header: 400, not 412, even if one is live."""
        response = self.publishWith(f"{self.etag}, other")
        self.assertRefused(response, "SIP-If-Match must hold exactly one entity-tag")

    def test_twoHeaders(self) -> None:
        """Two SIP-If-Match headers: 400, even when the first one is live."""
        response = self.publishWith(self.etag, "other")
        self.assertRefused(response, "more than one SIP-If-Match header")
        response = self.publishWith(self.etag, self.etag)
        self.assertRefused(response, "more than one SIP-If-Match header")

    def test_empty(self) -> None:
        """An empty SIP-If-Match names no entity tag: 400."""
        self.assertRefused(self.publishWith(""), "empty SIP-If-Match")
        self.assertRefused(self.publishWith("  "), "empty SIP-If-Match")

    def test_notAToken(self) -> None:
        """``entity-tag = token`` (section 11.3.2): a quoted string is not one."""
        response = self.publishWith(f'"{self.etag}"', body=pidf())
        self.assertRefused(response, "SIP-If-Match must hold exactly one entity-tag")

    def test_beforeExpiryChecks(self) -> None:
        """Step 3 comes before step 4: a bad tag with a brief Expires gets 400."""
        self.bob.send(
            self.bob.request(
                "PUBLISH",
                self.bob.aor,
                [("Event", "presence"), ("Expires", "1"), ("SIP-If-Match", "a b")],
            )
        )
        self.assertEqual(self.bob.response().code, 400)

    def test_oneTagStillWorks(self) -> None:
        """One entity tag, whitespace around it, refreshes as before."""
        response = self.publishWith(f" {self.etag} ")
        self.assertEqual(response.code, 200)
        self.assertNotEqual(response.header("sip-etag"), self.etag)

    def test_unknownSingleTag(self) -> None:
        """A single tag that matches nothing still gets 412 (step 4)."""
        self.assertEqual(self.publishWith("unknown").code, 412)
