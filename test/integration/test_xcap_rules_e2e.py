"""Privacy rules end to end over real sockets, in cache mode and in shared mode.

The server runs in the integrated XCAP mode with its administration site,
on SQLite (cache mode) and on PostgreSQL with ``fallback2db`` (shared mode,
every row read back from the database). Bob's pres-rules are written into
the ``xcap`` table by another connection, as an XCAP server writes them;
the watchers are user agents on loopback UDP, bob watches his
``presence.winfo`` over UDP, and OpenXCAP's xcap-diff PUBLISH comes over
TCP. What each step proves:

- allow (active, the state), confirm (pending, no state, winfo pending),
  polite-block (active, the offline body), block (403), RFC 5025 section
  3.2.1;
- a rules change and XML-RPC ``refreshWatchers`` over HTTP: the pending
  watcher gets its active NOTIFY, the allowed one now blocked gets
  ``terminated;reason=rejected`` (RFC 6665 section 4.2.2), winfo hears of
  both (RFC 3857 section 4.3); a watcher whose view did not change is not
  notified again, also when its row is read back from the database;
- faults for an empty URI or event, and the server keeps serving;
- the rules deleted and an xcap-diff PUBLISH (RFC 5874): revocation to
  pending, 200 with ``Expires: 0``, no publication left.
"""

from __future__ import annotations

import os
import sqlite3
import xmlrpc.client
from typing import TYPE_CHECKING, Any

from lxml import etree
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from twisted.web.http_headers import Headers

from presence.packages.winfo import WINFO_NS
from presence.sip.message import SIPRequest
from presence.storage.postgres import PostgresStore
from presence.testing import pidf
from test.support.postgres import PostgresPerClass
from test.support.sockets import SocketUA, startServerWithAdmin

if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
BOB = "sip:bob@example.com"
EVERYTHING = (
    "<pr:provide-services><pr:all-services/></pr:provide-services>"
    "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
    "<pr:provide-all-attributes/>"
)


def rules(**handling: str) -> bytes:
    """Bob's pres-rules: one rule per watcher with its sub-handling."""
    body = "".join(
        f'<cr:rule id="{who}"><cr:conditions><cr:identity>'
        f'<cr:one id="sip:{who}@example.com"/></cr:identity></cr:conditions>'
        f"<cr:actions><pr:sub-handling>{what}</pr:sub-handling></cr:actions>"
        f"<cr:transformations>{EVERYTHING}</cr:transformations></cr:rule>"
        for who, what in handling.items()
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<cr:ruleset xmlns:cr="{CP}"'
        f' xmlns:pr="{PR}">{body}</cr:ruleset>'
    ).encode()


def xcapDiff(sel: str) -> bytes:
    """An RFC 5874 body, as OpenXCAP 3.2.0 sends it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff"'
        ' xcap-root="http://127.0.0.1:8000/xcap-root">'
        f'<document new-etag="e-new" sel="{sel}"/></xcap-diff>'
    ).encode()


def state(notify: SIPRequest) -> str:
    """The Subscription-State of a NOTIFY, as sent."""
    return str(notify.header("subscription-state"))


async def until(ua: SocketUA, wanted: str) -> SIPRequest:
    """The first NOTIFY ``ua`` gets whose Subscription-State starts ``wanted``.

    Those before it are skipped: in shared mode a PUBLISH is answered before
    its watchers are read from the database, so a watcher that subscribes
    meanwhile may get that PUBLISH's NOTIFY too, composed whenever the
    read finishes (RFC 6665 section 4.2.2 allows a NOTIFY at any time).
    """
    while True:
        notify = await ua.notify()
        if state(notify).startswith(wanted):
            return notify


def watchers(notify: SIPRequest) -> dict[str, tuple[str, str]]:
    """Watcher URI -> (status, event) in a winfo NOTIFY."""
    root = etree.fromstring(notify.body)
    return {
        (w.text or ""): (w.get("status") or "", w.get("event") or "")
        for w in root.iter(f"{{{WINFO_NS}}}watcher")
    }


async def winfoUntil(
    bob: SocketUA, seen: dict[str, tuple[str, str]], *wanted: str
) -> dict[str, tuple[str, str]]:
    """Bob's winfo NOTIFYs, merged into ``seen``, until all ``wanted`` came."""
    while not all(w in seen for w in wanted):
        seen.update(watchers(await bob.notify()))
    return seen


class RulesEndToEnd(_Base):
    """The integrated mode over real sockets; the storage is the subclass's."""

    timeout = 60

    def settings(self) -> str:
        """The TOML lines of the storage (and mode) to run in."""
        raise NotImplementedError

    async def writeRules(self, document: bytes, etag: str) -> None:
        """Write (or replace) bob's pres-rules row, as OpenXCAP does."""
        raise NotImplementedError

    async def deleteRules(self) -> None:
        """Delete bob's pres-rules row."""
        raise NotImplementedError

    def writeConfig(self) -> str:
        """The configuration file, in a directory of the test's own."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.directory = directory
        config = os.path.join(directory, "presence.toml")
        with open(config, "w") as f:
            f.write(self.settings() + "integrated_xcap_server = true\n")
        return config

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Start the server with its administration site."""
        config = self.writeConfig()
        started = await startServerWithAdmin(reactor, "--config", config)
        self.server, self.udpPort, self.tcpPort, adminPort, connections = started
        self.addCleanup(self.server.stopService)
        self.addCleanup(connections.whenClosed)
        await self.server.stack.storage.whenLoaded()
        self.rpc = f"http://127.0.0.1:{adminPort}/RPC2"
        self.http = HTTPClient(Agent(reactor))

    async def ua(self, user: str, transport: str = "UDP") -> SocketUA:
        """A started user agent, closed and checked at cleanup."""
        port = self.udpPort if transport == "UDP" else self.tcpPort
        agent = SocketUA(reactor, user, port, transport)
        await agent.start()
        self.addCleanup(lambda: self.assertEqual(agent.errors, []))
        self.addCleanup(agent.close)
        return agent

    async def call(self, method: str, *args: Any) -> Any:
        """An XML-RPC call over HTTP: its result, or raise its fault."""
        response = await self.http.post(
            self.rpc,
            data=xmlrpc.client.dumps(args, method).encode(),
            headers=Headers({"Content-Type": ["text/xml"]}),
        )
        (result,), _ = xmlrpc.client.loads(await response.content())
        return result

    async def test_outcomesThenRefreshWatchers(self) -> None:
        """allow, confirm, polite-block, block; then a change and refreshWatchers."""
        # Written first: rows once read are used for 2 seconds (RULES_TTL).
        await self.writeRules(
            rules(alice="confirm", carol="allow", dave="polite-block"), "r1"
        )
        bob = await self.ua("bob")
        self.assertEqual(
            (await bob.publish(pidf(note="Gone fishing", user="bob"))).code, 200
        )
        self.assertEqual(
            (
                await bob.subscribe(
                    BOB, event="presence.winfo", accept="application/watcherinfo+xml"
                )
            ).code,
            200,
        )
        self.assertEqual(watchers(await bob.notify()), {})
        alice, carol, dave, erin = [
            await self.ua(name) for name in ("alice", "carol", "dave", "erin")
        ]
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        notify = await alice.notify()
        self.assertTrue(state(notify).startswith("pending"))
        self.assertEqual(notify.body, b"")
        self.assertEqual((await carol.subscribe(BOB)).code, 200)
        notify = await carol.notify()
        self.assertTrue(state(notify).startswith("active"))
        self.assertIn(b"Gone fishing", notify.body)
        self.assertEqual((await dave.subscribe(BOB)).code, 200)
        notify = await dave.notify()
        self.assertTrue(state(notify).startswith("active"))
        self.assertNotIn(b"Gone fishing", notify.body)
        self.assertIn(b"<basic>closed</basic>", notify.body)
        self.assertEqual((await erin.subscribe(BOB)).code, 403)
        seen = await winfoUntil(
            bob, {}, "sip:alice@example.com", "sip:carol@example.com"
        )
        self.assertEqual(seen["sip:alice@example.com"][0], "pending")
        self.assertEqual(seen["sip:carol@example.com"][0], "active")
        # Alice approved, carol blocked; dave's rule stays what it was.
        await self.writeRules(
            rules(alice="allow", carol="block", dave="polite-block"), "r2"
        )
        answer = await self.call("refreshWatchers", BOB, "presence", 0)
        self.assertEqual((answer["subscriptions"], answer["changed"]), (3, 2))
        notify = await until(alice, "active")
        self.assertIn(b"Gone fishing", notify.body)
        notify = await until(carol, "terminated")
        self.assertEqual(state(notify), "terminated;reason=rejected")
        seen = await winfoUntil(bob, {}, "sip:carol@example.com")
        seen = await winfoUntil(bob, seen, "sip:alice@example.com")
        self.assertEqual(seen["sip:alice@example.com"], ("active", "approved"))
        self.assertEqual(seen["sip:carol@example.com"], ("terminated", "rejected"))
        # Rules that decide the same for everybody subscribed: nobody is
        # notified, whether the decisions were kept (cache mode) or the rows
        # are read back from the database (shared mode).
        await self.writeRules(
            rules(alice="allow", carol="block", dave="polite-block", frank="allow"),
            "r3",
        )
        result = await self.server.stack.reauthorise(BOB)
        self.assertEqual(
            (result.subscriptions, result.changed, result.renotified), (2, 0, 0)
        )
        # Faults, and the server keeps serving.
        for args in (("", "presence", 0), (BOB, "", 0)):
            with self.assertRaises(xmlrpc.client.Fault):
                await self.call("refreshWatchers", *args)
        answer = await self.call(
            "refreshWatchers", "sip:nobody@example.com", "presence"
        )
        self.assertEqual((answer["subscriptions"], answer["changed"]), (0, 0))
        self.assertEqual((await bob.ping()).code, 200)

    async def test_deletedThenXcapDiff(self) -> None:
        """The rules deleted, an xcap-diff PUBLISH over TCP: pending, nothing kept.

        No document is the no-rules default, pending; the xcap-diff PUBLISH
        is answered 200 with ``Expires: 0`` and leaves no publication
        (RFC 3903 section 4).
        """
        await self.writeRules(rules(alice="allow"), "r1")
        bob = await self.ua("bob")
        self.assertEqual(
            (await bob.publish(pidf(note="Gone fishing", user="bob"))).code, 200
        )
        alice = await self.ua("alice")
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        self.assertTrue(state(await alice.notify()).startswith("active"))
        await self.deleteRules()
        xcap = await self.ua("bob", "TCP")
        response = await xcap.publish(
            xcapDiff(
                "org.openmobilealliance.pres-rules/users/sip:bob@example.com/index"
            ),
            expires=0,
            event="xcap-diff",
            contentType="application/xcap-diff+xml",
        )
        self.assertEqual((response.code, response.header("expires")), (200, "0"))
        self.assertIsNone(response.header("sip-etag"))
        notify = await until(alice, "pending")
        self.assertEqual(notify.body, b"")
        listing = await self.call("pres_phtable_list", BOB, "", "", 10)
        self.assertEqual([entry["event"] for entry in listing["entries"]], ["presence"])


class CacheModeTests(RulesEndToEnd, TestCase):
    """Cache mode on SQLite; the rows written by another connection."""

    def settings(self) -> str:
        """SQLite in the test's directory."""
        self.database = os.path.join(self.directory, "presence.sqlite")
        return f'database = "sqlite:///{self.database.lstrip("/")}"\n'

    def _execute(self, sql: str, values: tuple[Any, ...]) -> None:
        connection = sqlite3.connect(self.database, timeout=10)
        try:
            with connection:
                connection.execute(sql, values)
        finally:
            connection.close()

    async def writeRules(self, document: bytes, etag: str) -> None:
        """OMA pres-rules as OpenXCAP 3.2.0 writes them (doc_type 32)."""
        self._execute("DELETE FROM xcap WHERE username = 'bob' AND doc_type = 32", ())
        self._execute(
            "INSERT INTO xcap (username, domain, doc, doc_type, etag, source,"
            " doc_uri, port) VALUES ('bob', 'example.com', ?, 32, ?, 0,"
            " 'index.xml', 0)",
            (document, etag),
        )

    async def deleteRules(self) -> None:
        """OpenXCAP's DELETE."""
        self._execute("DELETE FROM xcap WHERE username = 'bob'", ())


class SharedModeTests(PostgresPerClass, RulesEndToEnd, TestCase):
    """Shared mode on PostgreSQL: every row read back from the database."""

    def settings(self) -> str:
        """The class's PostgreSQL database, fallback2db."""
        return f'database = "{self.pg.url}"\nfallback2db = true\n'

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Start the server on emptied tables; a connection of our own."""
        self.writer = PostgresStore(self.pg.dsn, reactor=reactor)
        await self.writer.start()
        self.addCleanup(self.writer.stop)
        await self.writer.ensureSchema(create=True)
        await self._sql(
            *[
                (f"DELETE FROM {table}", {})
                for table in ("presentity", "active_watchers", "watchers", "xcap")
            ]
        )
        await super().setUp()

    async def _sql(self, *statements: tuple[str, dict[str, object]]) -> None:
        assert self.writer.runner is not None
        await self.writer.runner.runInteraction(list(statements))

    async def writeRules(self, document: bytes, etag: str) -> None:
        """Kamailio's way: doc_type 2 with the path-shaped doc_uri."""
        await self._sql(
            ("DELETE FROM xcap WHERE username = 'bob' AND doc_type = 2", {}),
            (
                "INSERT INTO xcap (username, domain, doc, doc_type, etag, source,"
                " doc_uri, port) VALUES ('bob', 'example.com', :doc, 2, :etag, 0,"
                " '/xcap-root/pres-rules/users/sip:bob@example.com/index', 0)",
                {"doc": document, "etag": etag},
            ),
        )

    async def deleteRules(self) -> None:
        """The row deleted."""
        await self._sql(("DELETE FROM xcap WHERE username = 'bob'", {}))
