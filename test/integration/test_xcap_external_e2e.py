"""The external XCAP mode against a real HTTP XCAP server on loopback.

The test XCAP server of ``test/xcap/test_client.py`` (a twisted.web resource
answering conditional GETs) listens on a loopback port; the presence server
runs in memory mode with ``xcap_server`` pointing at it and its
administration site on another. What the issue asks of this run:

- the first fetch (alice's SUBSCRIBE, pending until the rules arrive);
- the periodic conditional fetch: ``If-None-Match`` with the stored entity
  tag, a 304 that changes and decides nothing (RFC 7232 section 4.1; the
  check itself is what every ``query_period`` runs, called here at once
  rather than after real seconds);
- ``refreshXcapDoc`` over XML-RPC: the changed document fetched at once,
  alice now blocked (``terminated;reason=rejected``), a wrong port refused;
- the XCAP server failing (5xx): the document held is kept (fail closed), a
  user never fetched stays pending, never active.
"""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from twisted.internet import reactor
from twisted.web.server import Site

from presence.testing import pidf
from test.integration.test_pidf_manipulation_e2e import BOB, AdminCalls
from test.integration.test_xcap_rules_e2e import watchers, winfoUntil
from test.support.sockets import SocketUA, TrackingFactory
from test.xcap.test_client import RULES_URL, FakeXCAPServer, path
from test.xcap.test_integrated import EVERYTHING, rule, ruleset

ERIN_URL = RULES_URL.replace("bob", "erin")
XCAP_DIFF_TYPE = "application/xcap-diff+xml"
XCAP_DIFF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff"'
    b' xcap-root="http://127.0.0.1/xcap-root"><document new-etag="r2"'
    b' sel="pres-rules/users/sip:bob@example.com/index"/></xcap-diff>'
)


class ExternalEndToEndTests(AdminCalls):
    """Bob's rules on a real HTTP XCAP server; watchers over UDP."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """The XCAP server holding bob's rules, then the presence server."""
        self.xcap = FakeXCAPServer()
        self.xcap.put(
            RULES_URL, ruleset(rule("a", ["alice"], "allow", EVERYTHING)), "r1"
        )
        tracker = TrackingFactory(Site(self.xcap))
        listening: Any = reactor
        port: Any = listening.listenTCP(0, tracker, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(tracker.whenClosed)
        self.port = port.getHost().port
        self.root = f"http://127.0.0.1:{self.port}/xcap-root"
        await self.startWith(f'database = "memory"\nxcap_server = ["{self.root}"]\n')

    def url(self, documentURL: str) -> str:
        """A document's URL under the test server's root."""
        return self.root + path(documentURL).removeprefix("/xcap-root")

    async def rows(self, user: str = "bob") -> list[Any]:
        """The user's pres-rules rows in the server's table."""
        xcap = self.server.stack.xcap
        assert xcap is not None
        return list(await xcap.documents(user, "example.com", (2,)))

    async def test_fetchConditionalRefreshFailClosed(self) -> None:
        """First fetch, a 304, refreshXcapDoc, then the XCAP server failing."""
        bob = await self.ua("bob")
        self.assertEqual((await bob.publish(pidf(note="Gone fishing"))).code, 200)
        alice = await self.ua("alice")
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        self.assertIn(b"Gone fishing", (await self.active(alice)).body)
        [row] = await self.rows()
        self.assertEqual(
            (row.source, row.docURI, row.port, row.etag),
            (1, self.url(RULES_URL), self.port, "r1"),
        )
        client = self.server.stack.xcapClient
        reauthoriser = self.server.stack.reauthoriser
        assert client is not None and reauthoriser is not None
        # The periodic check: a conditional GET, 304, nothing decided again.
        runs, requests = reauthoriser.runs, len(self.xcap.requests)
        await client.poll()
        self.assertEqual(self.xcap.requests[requests:], [(path(RULES_URL), '"r1"')])
        self.assertEqual(reauthoriser.runs, runs)
        self.assertEqual([r.etag for r in await self.rows()], ["r1"])
        # The document changes on the XCAP server: refreshXcapDoc at once.
        self.xcap.put(RULES_URL, ruleset(rule("a", ["alice"], "block")), "r2")
        with self.assertRaises(xmlrpc.client.Fault):
            await self.call("refreshXcapDoc", self.url(RULES_URL), self.port + 1)
        answer = await self.call("refreshXcapDoc", self.url(RULES_URL), self.port)
        self.assertEqual(answer["changed"], 1)
        notify = await alice.notify()
        self.assertEqual(
            str(notify.header("subscription-state")), "terminated;reason=rejected"
        )
        # The XCAP server fails: what is held stays; nobody is let in.
        self.xcap.put(RULES_URL, ruleset(rule("a", None, "allow", EVERYTHING)), "r3")
        self.xcap.put(ERIN_URL, ruleset(rule("a", None, "allow", EVERYTHING)), "e1")
        self.xcap.status = 503
        await client.poll()
        self.assertEqual([r.etag for r in await self.rows()], ["r2"])
        carol = await self.ua("carol")
        self.assertEqual((await carol.subscribe(BOB)).code, 403)
        dave = await self.ua("dave")
        self.assertEqual((await dave.subscribe(BOB.replace("bob", "erin"))).code, 200)
        notify = await dave.notify()
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        # The fetch erin's watcher started (or another) ends, refused: one
        # fetch of a document at a time, so this waits for the one in flight.
        self.assertFalse(await client.fetch("erin", "example.com", 2))
        self.assertEqual(await self.rows("erin"), [])
        self.assertGreaterEqual(client.failures, 1)

    async def test_confirmPoliteDeletedXcapDiff(self) -> None:
        """Confirm then approved (winfo), polite-block, the rules deleted, xcap-diff.

        RFC 3857 section 4.3: the winfo watcher hears of every change; RFC
        5025 section 3.2.1: polite-block shows what an offline presentity
        looks like; a 404 for the document removes it (no rules: pending).
        """
        self.xcap.put(
            RULES_URL,
            ruleset(
                rule("a", ["alice"], "confirm"), rule("d", ["dave"], "polite-block")
            ),
            "r1",
        )
        bob = await self.ua("bob")
        self.assertEqual((await bob.publish(pidf(note="Gone fishing"))).code, 200)
        client = self.server.stack.xcapClient
        assert client is not None
        # Bob's PUBLISH read his rules: the fetch it started ends here.
        await client.fetch("bob", "example.com", 2)
        self.assertEqual([r.etag for r in await self.rows()], ["r1"])
        response = await bob.subscribe(
            BOB, event="presence.winfo", accept="application/watcherinfo+xml"
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(watchers(await bob.notify()), {})
        alice = await self.ua("alice")
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        notify = await alice.notify()
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.assertEqual(notify.body, b"")
        seen = await winfoUntil(bob, {}, "sip:alice@example.com")
        self.assertEqual(seen["sip:alice@example.com"][0], "pending")
        dave = await self.ua("dave")
        self.assertEqual((await dave.subscribe(BOB)).code, 200)
        notify = await self.active(dave)
        self.assertNotIn(b"Gone fishing", notify.body)
        self.assertIn(b"<basic>closed</basic>", notify.body)
        # Approved on the XCAP server; OpenXCAP's xcap-diff over TCP says so.
        self.xcap.put(
            RULES_URL,
            ruleset(
                rule("a", ["alice"], "allow", EVERYTHING),
                rule("d", ["dave"], "polite-block"),
            ),
            "r2",
        )
        tcpPort = self.server.stack.transports.tcpPorts[0]
        xcap = SocketUA(reactor, "bob", tcpPort, "TCP")
        await xcap.start()
        self.addCleanup(xcap.close)
        response = await xcap.publish(
            XCAP_DIFF, expires=0, event="xcap-diff", contentType=XCAP_DIFF_TYPE
        )
        self.assertEqual((response.code, response.header("expires")), (200, "0"))
        self.assertIn(b"Gone fishing", (await self.active(alice)).body)
        seen = await winfoUntil(bob, {}, "sip:alice@example.com")
        self.assertEqual(seen["sip:alice@example.com"], ("active", "approved"))
        # Deleted on the XCAP server: the periodic check's 404 revokes.
        del self.xcap.documents[path(RULES_URL)]
        await client.poll()
        self.assertEqual(await self.rows(), [])
        notify = await alice.notify()
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.assertEqual(notify.body, b"")
        listing = await self.call("pres_phtable_list", BOB, "", "", 10)
        self.assertEqual([e["event"] for e in listing["entries"]], ["presence"])
