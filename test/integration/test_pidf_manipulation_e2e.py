"""The hard state (RFC 4827 pidf-manipulation) end to end, over real sockets.

Integrated mode: the server runs in cache mode on SQLite with
``integrated_xcap_server`` and ``pidf_manipulation``; bob's rules and his
pidf-manipulation document are written straight into the ``xcap`` table by
another connection, as an XCAP server does (``doc_type`` 16, Kamailio's
path-shaped ``doc_uri``), and XML-RPC ``refreshWatchers`` of type 1 over HTTP
tells the server; alice, watching over UDP, gets the hard state, then the hard
state aggregated with bob's PUBLISH.

External mode: the test XCAP server of ``test/xcap/test_client.py`` on a real
loopback HTTP port holds bob's pres-rules and pidf-manipulation documents; the
server fetches both, alice gets the hard state, and ``refreshXcapDoc`` over
HTTP brings a changed document to her.
"""

from __future__ import annotations

import os
import sqlite3
import xmlrpc.client
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from presence.sip.message import SIPRequest
from presence.storage.xcap import PIDF_MANIPULATION, PRES_RULES
from test.integration.test_xcap_e2e import ALLOW_ALICE
from test.support.sockets import SocketUA, TrackingFactory, startServerWithAdmin
from test.xcap.test_client import RULES_URL, FakeXCAPServer, path
from test.xcap.test_pidf_manipulation import (
    HARD,
    HARD_ALONE,
    HARD_AND_PHONE,
    PHONE,
    PIDF_URL,
)

BOB = "sip:bob@example.com"


class AdminCalls(TestCase):
    """A server with its administration site; XML-RPC over real HTTP."""

    timeout = 30

    def writeConfig(self, settings: str) -> str:
        """A configuration file holding ``settings``; its path."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = os.path.join(directory, "presence.toml")
        with open(config, "w") as f:
            f.write(settings)
        return config

    def newDatabase(self) -> str:
        """The path of a new SQLite file."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return os.path.join(directory, "presence.sqlite")

    async def startWith(self, settings: str) -> None:
        """Start the server on a configuration file holding ``settings``."""
        config = self.writeConfig(settings)
        started = await startServerWithAdmin(reactor, "--config", config)
        self.server, self.udpPort, _, adminPort, connections = started
        self.addCleanup(self.server.stopService)
        self.addCleanup(connections.whenClosed)
        self.base = f"http://127.0.0.1:{adminPort}"
        self.http = HTTPClient(Agent(reactor))

    async def call(self, method: str, *args: Any) -> Any:
        """Call an XML-RPC method over HTTP; its result."""
        response = await self.http.post(
            f"{self.base}/RPC2",
            data=xmlrpc.client.dumps(args, method).encode(),
            headers=Headers({"Content-Type": ["text/xml"]}),
        )
        self.assertEqual(response.code, 200)
        (result,), _ = xmlrpc.client.loads(await response.content())
        return result

    async def ua(self, user: str) -> SocketUA:
        """A user agent over UDP, checked for errors at cleanup."""
        agent = SocketUA(reactor, user, self.udpPort, "UDP")
        await agent.start()
        self.addCleanup(lambda: self.assertEqual(agent.errors, []))
        self.addCleanup(agent.close)
        return agent

    async def active(self, agent: SocketUA) -> SIPRequest:
        """The next NOTIFY of an active subscription (pending ones skipped)."""
        while True:
            notify = await agent.notify()
            state = str(notify.header("subscription-state"))
            if state.startswith("active"):
                return notify
            self.assertTrue(state.startswith("pending"), state)


class IntegratedTests(AdminCalls):
    """The hard state written into the xcap table, signalled by refreshWatchers."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """The integrated mode with pidf_manipulation, on a new SQLite file."""
        self.database = self.newDatabase()
        await self.startWith(
            f'database = "sqlite:///{self.database.lstrip("/")}"\n'
            "integrated_xcap_server = true\npidf_manipulation = true\n"
        )
        await self.server.stack.storage.whenLoaded()

    def write(self, doc: bytes, docType: int, auid: str, etag: str) -> None:
        """A row of bob's as Kamailio's xcap_server writes it (path doc_uri)."""
        connection = sqlite3.connect(self.database, timeout=10)
        try:
            with connection:
                connection.execute(
                    "INSERT OR REPLACE INTO xcap (username, domain, doc, doc_type,"
                    " etag, source, doc_uri, port) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        "bob",
                        "example.com",
                        doc,
                        docType,
                        etag,
                        0,
                        f"/xcap-root/{auid}/users/sip:bob@example.com/index",
                        0,
                    ),
                )
        finally:
            connection.close()

    async def test_rowThenRefreshWatchersThenPublish(self) -> None:
        """Row written, refreshWatchers type 1: the hard state; then a PUBLISH.

        RFC 4827: the XCAP-manipulated document is "one of the inputs on
        which [the compositor] builds the overall presence state".
        """
        self.write(ALLOW_ALICE, PRES_RULES, "pres-rules", "r1")
        alice = await self.ua("alice")
        bob = await self.ua("bob")
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        first = await self.active(alice)
        self.assertIn(b"<basic>closed</basic>", first.body)
        self.write(HARD, PIDF_MANIPULATION, "pidf-manipulation", "h1")
        answer = await self.call("refreshWatchers", BOB, "presence", 1)
        self.assertEqual(answer["subscriptions"], 1)
        self.assertEqual((await self.active(alice)).body, HARD_ALONE)
        self.assertEqual((await bob.publish(PHONE)).code, 200)
        self.assertEqual((await self.active(alice)).body, HARD_AND_PHONE)


class ExternalTests(AdminCalls):
    """The hard state fetched from an XCAP server on loopback."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """The XCAP server, then the presence server in the external mode."""
        self.xcap = FakeXCAPServer()
        self.xcap.put(RULES_URL, ALLOW_ALICE, "r1")
        self.xcap.put(PIDF_URL, HARD, "h1")
        tracker = TrackingFactory(Site(self.xcap))
        listening: Any = reactor
        port: Any = listening.listenTCP(0, tracker, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(tracker.whenClosed)
        self.root = f"http://127.0.0.1:{port.getHost().port}/xcap-root"
        await self.startWith(
            f'database = "memory"\nxcap_server = ["{self.root}"]\n'
            "pidf_manipulation = true\n"
        )

    async def test_fetchedThenRefreshXcapDoc(self) -> None:
        """Both documents fetched: the hard state; refreshXcapDoc: the new one."""
        alice = await self.ua("alice")
        self.assertEqual((await alice.subscribe(BOB)).code, 200)
        self.assertEqual((await self.active(alice)).body, HARD_ALONE)
        self.assertIn((path(PIDF_URL), None), self.xcap.requests)
        changed = HARD.replace(b"9-17", b"10-16")
        self.xcap.put(PIDF_URL, changed, "h2")
        url = self.root + path(PIDF_URL).removeprefix("/xcap-root")
        answer = await self.call("refreshXcapDoc", url)
        self.assertEqual(answer["changed"], 1)
        self.assertEqual(
            (await self.active(alice)).body,
            HARD_ALONE.replace(b"9-17", b"10-16"),
        )
