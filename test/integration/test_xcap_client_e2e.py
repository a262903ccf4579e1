"""The external XCAP mode end to end: rules fetched from a real XCAP server.

A twisted.web XCAP server listens on loopback port 0 and holds bob's
pres-rules; the presence server runs in memory mode with ``xcap_server``
pointing at it, on real UDP. alice's first SUBSCRIBE is pending while the
fetch is held; once the XCAP server answers, the client stores the document
and re-authorises, and alice's subscription becomes active with bob's state.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from presence.testing import pidf
from test.integration.test_xcap_e2e import ALLOW_ALICE
from test.support.sockets import SocketUA, TrackingFactory, startServer

RULES_PATH = "/xcap-root/pres-rules/users/sip:bob@example.com/index"


class HeldXCAPServer(Resource):
    """Bob's pres-rules, each GET held until `release`.

    Attributes:
        held: the GETs waiting.
        arrived: fires at the first GET.
    """

    isLeaf = True

    def __init__(self) -> None:
        """Hold bob's pres-rules, with entity tag ``e1``."""
        super().__init__()
        self.held: list[Request] = []
        self.arrived: defer.Deferred[None] = defer.Deferred()
        self.paths: list[str] = []

    def render_GET(self, request: Request) -> int:
        """Hold the GET."""
        self.paths.append(request.path.decode())
        self.held.append(request)
        if not self.arrived.called:
            self.arrived.callback(None)
        return NOT_DONE_YET

    def release(self) -> None:
        """Answer the GETs held: 200 with the rules, or 404."""
        for request in self.held:
            if request.path.decode() == RULES_PATH:
                body = ALLOW_ALICE
                request.setHeader(b"etag", b'"e1"')
                request.setHeader(b"content-type", b"application/auth-policy+xml")
            else:
                body = b""
                request.setResponseCode(404)
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()
        self.held = []


class ExternalXCAPEndToEndTests(TestCase):
    """bob publishes, alice watches over UDP; bob's rules on an XCAP server."""

    timeout = 30

    def writeConfig(self) -> str:
        """A configuration in memory mode with ``xcap_server`` at ours."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = os.path.join(directory, "presence.toml")
        with open(config, "w") as f:
            f.write(f'database = "memory"\nxcap_server = ["{self.root}"]\n')
        return config

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Start the XCAP server, then the presence server pointing at it."""
        self.xcap = HeldXCAPServer()
        self.tracker = TrackingFactory(Site(self.xcap))
        listening: Any = reactor
        port: Any = listening.listenTCP(0, self.tracker, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self.tracker.whenClosed)
        self.root = f"http://127.0.0.1:{port.getHost().port}/xcap-root"
        self.server, self.udpPort, _ = startServer(
            reactor, "--config", self.writeConfig()
        )
        self.addCleanup(self.server.stopService)

    async def ua(self, user: str) -> SocketUA:
        """A user agent over UDP."""
        agent = SocketUA(reactor, user, self.udpPort, "UDP")
        await agent.start()
        self.addCleanup(agent.close)
        return agent

    async def test_fetchedThenActive(self) -> None:
        """Pending while the fetch is held; active with the state after it."""
        bob = await self.ua("bob")
        alice = await self.ua("alice")
        self.assertEqual(
            (await bob.publish(pidf(note="Gone fishing", user="bob"))).code, 200
        )
        await self.xcap.arrived
        self.assertEqual(self.xcap.paths, [RULES_PATH])
        self.assertEqual((await alice.subscribe("sip:bob@example.com")).code, 200)
        notify = await alice.notify()
        self.assertTrue(str(notify.header("subscription-state")).startswith("pending"))
        self.xcap.release()
        notify = await alice.notify()
        self.assertTrue(str(notify.header("subscription-state")).startswith("active"))
        self.assertIn(b"Gone fishing", notify.body)
        xcap = self.server.stack.xcap
        assert xcap is not None
        [row] = await xcap.documents("bob", "example.com", (2,))
        self.assertEqual(
            (row.docURI, row.source, row.etag),
            (self.root + RULES_PATH.removeprefix("/xcap-root"), 1, "e1"),
        )
        client = self.server.stack.xcapClient
        assert client is not None
        self.assertEqual(client.fetches, 1)
        self.assertEqual(alice.errors, [])
