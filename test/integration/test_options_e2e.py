"""End to end over real sockets: OPTIONS over UDP and TCP."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from presence.sip.message import SIPResponse
from test.support.sockets import connectTCP, listenUDP, startServer


def options(port: int, transport: str, n: int, localPort: int = 5099) -> bytes:
    """An OPTIONS request numbered ``n``."""
    return (
        f"OPTIONS sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{localPort}"
        f";branch=z9hG4bK-e2e-{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        "From: <sip:alice@127.0.0.1>;tag=e2e\r\n"
        f"Call-ID: e2e-{n}@127.0.0.1\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def within(d: defer.Deferred, seconds: float = 5.0):  # type: ignore[type-arg,no-untyped-def]
    """Wait for ``d``, failing after ``seconds``."""
    d.addTimeout(seconds, reactor)
    return await d


class OptionsEndToEndTests(TestCase):
    """The server answers OPTIONS over real UDP and TCP sockets."""

    timeout = 20

    def setUp(self) -> None:
        """Start a server on ephemeral ports."""
        self.server, self.udpPort, self.tcpPort = startServer(reactor)
        self.addCleanup(self.server.stopService)

    async def test_udp(self) -> None:
        """An OPTIONS datagram is answered 200 at the rport it came from."""
        client, port = listenUDP(reactor)
        self.addCleanup(port.stopListening)
        port.write(options(self.udpPort, "UDP", 1), ("127.0.0.1", self.udpPort))
        response, _ = await within(client.queue.get())
        self.assertIsInstance(response, SIPResponse)
        self.assertEqual(response.code, 200)
        self.assertIn("OPTIONS", response.header("allow"))
        self.assertEqual(response.topVia.rport, port.getHost().port)

    async def test_udpGarbageIgnored(self) -> None:
        """Garbage datagrams are dropped and the server keeps serving."""
        client, port = listenUDP(reactor)
        self.addCleanup(port.stopListening)
        for junk in [b"\x00\xff garbage", b"SIP/2.0 999", b"INVITE\r\n\r\n"]:
            port.write(junk, ("127.0.0.1", self.udpPort))
        port.write(options(self.udpPort, "UDP", 2), ("127.0.0.1", self.udpPort))
        response, _ = await within(client.queue.get())
        self.assertEqual(response.code, 200)
        self.assertEqual(response.cseq.number, 2)

    async def test_tcpTwoInOneSegment(self) -> None:
        """Two requests in one TCP segment get two responses, in order."""
        client = await connectTCP(reactor, self.tcpPort)
        self.addCleanup(client.close)
        client.send(options(self.tcpPort, "TCP", 1) + options(self.tcpPort, "TCP", 2))
        first = await within(client.queue.get())
        second = await within(client.queue.get())
        self.assertEqual([first.code, second.code], [200, 200])
        self.assertEqual([first.cseq.number, second.cseq.number], [1, 2])

    async def test_tcpSplitAcrossSegments(self) -> None:
        """A request split across several TCP segments is answered once."""
        client = await connectTCP(reactor, self.tcpPort)
        self.addCleanup(client.close)
        data = options(self.tcpPort, "TCP", 3)
        for i in range(0, len(data), 40):
            client.send(data[i : i + 40])
            # One turn of the reactor: the segment is written on its own.
            await task.deferLater(reactor, 0, lambda: None)
        response = await within(client.queue.get())
        self.assertEqual(response.code, 200)
        self.assertEqual(response.cseq.number, 3)

    async def test_tcpMalformedClosed(self) -> None:
        """A malformed TCP stream gets 400 and the connection is closed."""
        client = await connectTCP(reactor, self.tcpPort)
        request = options(self.tcpPort, "TCP", 4)
        # A line without a colon among the headers: the stream cannot be
        # framed, but the Via above it says where the 400 goes.
        malformed = request.replace(b"Content-Length: 0\r\n", b"not a header\r\n")
        client.send(malformed)
        await within(client.lost)
        # What the server wrote before it closed, framed and parsed.
        received = client.queue.pending
        self.assertEqual(len(received), 1)
        response = received[0]
        assert isinstance(response, SIPResponse)
        self.assertEqual(response.code, 400)
        self.assertEqual(response.cseq.number, 4)
        self.assertEqual(response.topVia.branch, "z9hG4bK-e2e-4")

    async def test_tcpUnanswerableClosed(self) -> None:
        """A malformed TCP stream with no Via to answer is closed unanswered."""
        client = await connectTCP(reactor, self.tcpPort)
        client.send(b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nVia SIP/2.0/TCP x\r\n\r\n")
        await within(client.lost)
        self.assertEqual(client.queue.pending, [])

    def test_socketBuffers(self) -> None:
        """The UDP socket's buffers are enlarged beyond the kernel's default."""
        import socket

        transport: Any = self.server.stack.transports.udp[0].transport
        handle = transport.socket
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.assertGreater(handle.getsockopt(socket.SOL_SOCKET, option), 212992)
