"""The integrated XCAP mode end to end: rules an XCAP server wrote change a watcher.

The server runs in cache mode on SQLite with ``integrated_xcap_server =
true``, on real loopback sockets. The pres-rules row is written straight into
the database file by another connection, as OpenXCAP 3.2.0 writes it (OMA
pres-rules as ``doc_type`` 32, ``doc_uri`` ``index.xml``, ``source`` and
``port`` 0, an md5 entity tag); then the re-authorise operation (what
refreshWatchers and xcap-diff call) turns alice's pending subscription active.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from presence.testing import pidf
from test.support.sockets import SocketUA, startServer

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"

ALLOW_ALICE = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n<cr:ruleset xmlns:cr="{CP}"'
    f' xmlns:pr="{PR}"><cr:rule id="a"><cr:conditions><cr:identity>'
    '<cr:one id="sip:alice@example.com"/></cr:identity></cr:conditions>'
    "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>"
    "<cr:transformations><pr:provide-services><pr:all-services/>"
    "</pr:provide-services><pr:provide-all-attributes/></cr:transformations>"
    "</cr:rule></cr:ruleset>"
).encode()


class IntegratedXCAPEndToEndTests(TestCase):
    """bob publishes, alice watches over UDP; OpenXCAP writes bob's rules."""

    timeout = 30

    def writeConfig(self) -> str:
        """A configuration on a new SQLite file in the integrated mode."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.database = os.path.join(directory, "presence.sqlite")
        config = os.path.join(directory, "presence.toml")
        with open(config, "w") as f:
            f.write(
                f'database = "sqlite:///{self.database.lstrip("/")}"\n'
                "integrated_xcap_server = true\n"
            )
        return config

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Start the server on a new SQLite file in the integrated mode."""
        config = self.writeConfig()
        self.server, self.udpPort, _ = startServer(reactor, "--config", config)
        self.addCleanup(self.server.stopService)
        await self.server.stack.storage.whenLoaded()

    async def ua(self, user: str) -> SocketUA:
        """A user agent over UDP."""
        agent = SocketUA(reactor, user, self.udpPort, "UDP")
        await agent.start()
        self.addCleanup(agent.close)
        return agent

    def writeAsOpenXCAP(self, document: bytes) -> None:
        """Insert bob's OMA pres-rules the way OpenXCAP 3.2.0 does."""
        connection = sqlite3.connect(self.database, timeout=10)
        try:
            with connection:
                connection.execute(
                    "INSERT INTO xcap (username, domain, doc, doc_type, etag,"
                    " source, doc_uri, port) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        "bob",
                        "example.com",
                        document,
                        32,
                        "874739014a9855dee2cdd0a56eedcb63",
                        0,
                        "index.xml",
                        0,
                    ),
                )
        finally:
            connection.close()

    async def test_rulesRowThenReauthorise(self) -> None:
        """No rules: pending; the row written and reauthorise: active, state.

        RFC 6665 section 4.2.2: no state is sent to a pending subscription;
        once it becomes active, a NOTIFY with the state follows.
        """
        bob = await self.ua("bob")
        alice = await self.ua("alice")
        self.assertEqual(
            (await bob.publish(pidf(note="Gone fishing", user="bob"))).code, 200
        )
        self.assertEqual((await alice.subscribe("sip:bob@example.com")).code, 200)
        notify = await alice.notify()
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.assertEqual(notify.body, b"")
        self.writeAsOpenXCAP(ALLOW_ALICE)
        result = await self.server.stack.reauthorise("sip:bob@example.com")
        self.assertEqual(result.changed, 1)
        notify = await alice.notify()
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertIn(b"Gone fishing", notify.body)
        self.assertEqual(alice.errors, [])
