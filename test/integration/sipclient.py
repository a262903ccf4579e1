"""A small SIP test client over real sockets, for the end-to-end tests."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol

from presence.sip.message import SIPMessage
from presence.sip.parser import StreamFramer, parseDatagram
from presence.tap import Options, StackService, makeService


class UDPClient(DatagramProtocol):
    """Sends datagrams and queues what comes back."""

    def __init__(self) -> None:
        self.queue: defer.DeferredQueue[tuple[SIPMessage, Any]] = defer.DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.queue.put((parseDatagram(datagram), addr))


class TCPClient(Protocol):
    """Writes bytes and queues the messages framed from what comes back."""

    def __init__(self) -> None:
        self.framer = StreamFramer()
        self.queue: defer.DeferredQueue[SIPMessage] = defer.DeferredQueue()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        for item in self.framer.dataReceived(data):
            if isinstance(item, SIPMessage):
                self.queue.put(item)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


def startServer(*argv: str) -> tuple[StackService, int, int]:
    """Start the server on ephemeral loopback ports; return it and its ports."""
    options = Options()
    options.parseOptions(
        [
            "--listen",
            "udp:0:interface=127.0.0.1",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            *argv,
        ]
    )
    server = makeService(options, reactor)
    server.startService()
    transports = server.stack.transports
    udpPort = transports.udp[0].transport.getHost().port  # type: ignore[union-attr]
    tcpPort = transports.tcpPorts[0]
    return server, udpPort, tcpPort


async def connectTCP(port: int) -> TCPClient:
    """Connect a TCP client to the server."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    client = TCPClient()
    await connectProtocol(endpoint, client)
    return client


def listenUDP() -> tuple[UDPClient, Any]:
    """Open a UDP client socket on loopback."""
    client = UDPClient()
    port = reactor.listenUDP(0, client, interface="127.0.0.1")  # type: ignore[attr-defined]
    return client, port
