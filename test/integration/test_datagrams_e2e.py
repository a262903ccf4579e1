"""Whole UDP datagrams over real sockets, up to the largest SIP message.

RFC 3261 section 18.1.1 lets a message of up to 65,535 bytes travel over UDP
(a presence server gets large dialog-info and PIDF documents); Twisted's UDP
port reads 8,192 bytes unless told otherwise, which cut such datagrams.
"""

from __future__ import annotations

import re

from twisted.internet import reactor
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from presence.sip.message import SIPResponse
from presence.testing import pidf
from test.support.sockets import SocketUA, startServer


class LargeDatagramTests(TestCase):
    """PUBLISHes of a given datagram size over UDP."""

    timeout = 20

    async def start(self, maxBodySize: int | None = None) -> SocketUA:
        """A server (with ``max_body_size`` if given) and bob on UDP."""
        argv: list[str] = []
        if maxBodySize is not None:
            path = FilePath(self.mktemp() + ".toml")
            path.setContent(f"max_body_size = {maxBodySize}\n".encode())
            argv = ["--config", path.path, "--database", "memory"]
        server, udpPort, _ = startServer(reactor, *argv)
        self.addCleanup(server.stopService)
        bob = SocketUA(reactor, "bob", udpPort)
        await bob.start()
        self.addCleanup(bob.close)
        self.addCleanup(lambda: self.assertEqual(bob.errors, []))
        return bob

    def publishOfSize(self, bob: SocketUA, size: int) -> tuple[bytes, str]:
        """A PUBLISH of exactly ``size`` bytes: a PIDF padded in its note."""
        pad = 0
        for _ in range(5):
            data, branch = bob.build(
                "PUBLISH",
                bob.aor,
                [("Event", "presence"), ("Content-Type", "application/pidf+xml")],
                pidf(note="x" * pad),
            )
            if len(data) == size:
                return data, branch
            pad += size - len(data)
        raise AssertionError(f"could not build a {size}-byte PUBLISH")

    async def publish(self, size: int, maxBodySize: int | None = None) -> SIPResponse:
        """Send a PUBLISH datagram of ``size`` bytes; return the response."""
        bob = await self.start(maxBodySize)
        data, branch = self.publishOfSize(bob, size)
        self.assertEqual(len(data), size)
        return await bob.sendRequest(data, branch)

    async def test_8191(self) -> None:
        """A datagram just under Twisted's default read size is accepted."""
        self.assertEqual((await self.publish(8191)).code, 200)

    async def test_8193(self) -> None:
        """A datagram just over 8,192 bytes is read whole and accepted."""
        self.assertEqual((await self.publish(8193)).code, 200)

    async def test_20000(self) -> None:
        """A 20,000-byte PUBLISH is accepted, not 400 for a short body."""
        self.assertEqual((await self.publish(20000)).code, 200)

    async def test_65000(self) -> None:
        """65,000 bytes with ``max_body_size`` above the body: accepted."""
        self.assertEqual((await self.publish(65000, maxBodySize=65535)).code, 200)

    async def test_65000OverBodyLimit(self) -> None:
        """65,000 bytes with the default ``max_body_size`` (60,000): 513.

        RFC 3261 section 21.5.14: 513 Message Too Large, the request's
        message length is longer than the server is willing to process.
        """
        self.assertEqual((await self.publish(65000)).code, 513)

    async def test_bodyOneOverLimit(self) -> None:
        """A body of ``max_body_size`` bytes is accepted; one more gets 513."""
        bob = await self.start()
        for bodySize, code in ((60000, 200), (60001, 513)):
            body = pidf(note="x" * (bodySize - len(pidf())))
            self.assertEqual(len(body), bodySize)
            data, branch = bob.build(
                "PUBLISH",
                bob.aor,
                [("Event", "presence"), ("Content-Type", "application/pidf+xml")],
                body,
            )
            self.assertEqual((await bob.sendRequest(data, branch)).code, code)

    async def test_shorterThanContentLength(self) -> None:
        """A datagram really shorter than its Content-Length is still 400.

        RFC 3261 section 18.3: "If there are fewer bytes in the message than
        indicated [by Content-Length], the message is considered malformed".
        """
        bob = await self.start()
        data, branch = self.publishOfSize(bob, 20000)
        length = len(data.split(b"\r\n\r\n", 1)[1])
        data = re.sub(
            rb"Content-Length: \d+", f"Content-Length: {length + 100}".encode(), data
        )
        self.assertEqual((await bob.sendRequest(data, branch)).code, 400)
