"""Digest authentication end to end: a user presence-ctl provisions logs in.

The server runs in cache mode on SQLite with ``authentication = true``; the
users are written by ``presence-ctl user add`` into the same database file,
and the server reads them there (RFC 3261 section 22, RFC 8760).
"""

from __future__ import annotations

import io
import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from presence.auth.digest import answerChallenge, parseChallenge
from presence.ctl import Options, run
from presence.sip.message import SIPResponse
from presence.tap import StackService
from presence.testing import pidf
from test.support.sockets import SocketUA, startServer


class AuthEndToEndTests(TestCase):
    """alice, provisioned with presence-ctl, publishes over UDP and TCP."""

    timeout = 30

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """Provision alice, then start the server on the same database."""
        self.writeConfig()
        await self.ctl("db", "init")
        await self.ctl("user", "add", "--password-stdin", "alice@example.com")
        self.server, self.udpPort, self.tcpPort = startServer(
            reactor, "--config", self.config
        )
        self.addCleanup(self.server.stopService)
        await self.server.stack.storage.whenLoaded()

    def writeConfig(self) -> None:
        """Write the configuration file the server and presence-ctl share."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.config = os.path.join(directory, "presence.toml")
        with open(self.config, "w") as f:
            f.write(
                f'database = "sqlite:///{directory.lstrip("/")}/presence.sqlite"\n'
                "authentication = true\n"
            )

    async def ctl(self, *argv: str) -> None:
        """Run presence-ctl on the configuration; alice's password on stdin."""
        options = Options()
        options.parseOptions(["--config", self.config, *argv])
        if options.subCommand == "user":
            options.subOptions.stdin = io.StringIO("wonderland\n")
        self.assertEqual(await run(options, reactor, io.StringIO()), 0)

    async def ua(self, transport: str) -> SocketUA:
        """Alice's user agent over ``transport``."""
        port = self.udpPort if transport == "UDP" else self.tcpPort
        agent = SocketUA(reactor, "alice", port, transport)
        await agent.start()
        self.addCleanup(agent.close)
        return agent

    async def publish(self, agent: SocketUA, authorization: str = "") -> SIPResponse:
        """PUBLISH alice's PIDF, with credentials if given."""
        headers = [
            ("Event", "presence"),
            ("Expires", "600"),
            ("Content-Type", "application/pidf+xml"),
        ]
        if authorization:
            headers.append(("Authorization", authorization))
        return await agent.request("PUBLISH", agent.aor, headers, pidf(user="alice"))

    async def loginAndPublish(self, transport: str) -> None:
        """Challenged, then SHA-256 credentials: 200; a wrong password: 401."""
        agent = await self.ua(transport)
        challenged = await self.publish(agent)
        self.assertEqual(challenged.code, 401)
        [sha256, md5] = challenged.headerLines("www-authenticate")
        self.assertEqual(
            [parseChallenge(v)["algorithm"] for v in (sha256, md5)], ["SHA-256", "MD5"]
        )
        right = answerChallenge(sha256, "alice", "wonderland", "PUBLISH", agent.aor)
        self.assertEqual((await self.publish(agent, right)).code, 200)
        wrong = answerChallenge(md5, "alice", "looking glass", "PUBLISH", agent.aor)
        self.assertEqual((await self.publish(agent, wrong)).code, 401)

    async def test_udp(self) -> None:
        """Over UDP."""
        await self.loginAndPublish("UDP")

    async def test_tcp(self) -> None:
        """Over TCP."""
        await self.loginAndPublish("TCP")

    def test_stack(self) -> None:
        """The server is the one twistd runs, with authentication on."""
        self.assertIsInstance(self.server, StackService)
        self.assertIsNotNone(self.server.stack.authenticator)
