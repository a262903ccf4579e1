"""For tests.

A whole server over in-memory transports and a fake clock, and a scripted user agent to
talk to it.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from presence.config import Config
from presence.sip.message import SIPMessage, SIPRequest, SIPResponse, responseTo
from presence.sip.parser import StreamFramer, parseDatagram
from presence.sip.transport import SIPStreamProtocol
from presence.tap import Options, Stack, StackService, buildStack, makeService
from presence.testing import FakeDatagramTransport

SERVER = ("192.0.2.10", 5060)
_counter = itertools.count(1)

PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@example.com">'
    '<tuple id="{tuple}"><status><basic>{basic}</basic></status>'
    "<note>{note}</note></tuple></presence>"
)


def pidf(
    basic: str = "open", tuple: str = "t1", note: str = "", user: str = "bob"
) -> bytes:
    """A small PIDF document."""
    return PIDF.format(basic=basic, tuple=tuple, note=note, user=user).encode()


class Server:
    """The server built by tap.buildStack, on a fake UDP socket and clock."""

    def __init__(self, **settings: Any) -> None:
        """Build the server with these configuration settings."""
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_000_000)
        self.config = Config(**settings)
        self.stack: Stack = buildStack(self.config, self.reactor)
        self.udp = FakeDatagramTransport(*SERVER)
        self.protocol = self.stack.transports.datagramProtocol()
        self.protocol.makeConnection(self.udp)
        self.stack.sweeper.startService()

    def close(self) -> None:
        """Stop the sweeper and every transaction timer."""
        self.stack.sweeper.stopService()
        self.stack.transactions.stop()

    def receive(
        self, data: bytes, source: tuple[str, int] = ("192.0.2.20", 5070)
    ) -> None:
        """A datagram arrives from C{source}."""
        self.protocol.datagramReceived(data, source)

    def sent(self) -> list[tuple[SIPMessage, tuple[str, int]]]:
        """Everything sent since the last call, parsed."""
        out = [(parseDatagram(data), addr) for data, addr in self.udp.written]
        self.udp.written.clear()
        return out

    def advance(self, seconds: float) -> None:
        """Let time pass, one second at a time."""
        for _ in range(int(seconds)):
            self.reactor.advance(1)
        rest = seconds - int(seconds)
        if rest:
            self.reactor.advance(rest)

    def tcp(
        self, host: str = "192.0.2.30", port: int = 40000
    ) -> tuple[SIPStreamProtocol, StringTransport]:
        """Open a TCP connection from a client, as if accepted."""
        from twisted.internet.address import IPv4Address

        protocol = self.stack.transports.streamFactory.buildProtocol(
            IPv4Address("TCP", host, port)
        )
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", *SERVER),
            peerAddress=IPv4Address("TCP", host, port),
        )
        protocol.makeConnection(transport)
        self.stack.transports.tcpListening(5060)
        return protocol, transport


class UA:
    """A scripted user agent: builds requests and answers NOTIFYs."""

    def __init__(
        self,
        server: Server,
        user: str = "alice",
        host: str = "192.0.2.20",
        port: int = 5070,
        transport: str = "UDP",
    ) -> None:
        """A user agent for C{user} at C{host}:C{port} over C{transport}."""
        self.server = server
        self.user = user
        self.host = host
        self.port = port
        self.transport = transport
        self.tag = f"{user}-tag"
        self.cseq = 0
        self.tcpClient: tuple[SIPStreamProtocol, StringTransport] | None = None
        self.framer = StreamFramer()

    @property
    def aor(self) -> str:
        """The UA's address of record."""
        return f"sip:{self.user}@example.com"

    def request(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        callId: str | None = None,
        toTag: str | None = None,
        to: str | None = None,
        contentLength: bool = True,
        branch: str | None = None,
        cseq: int | None = None,
    ) -> bytes:
        """Build a request as bytes."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        branch = branch or f"z9hG4bK-{next(_counter)}"
        to = to or f"<{uri}>"
        if toTag:
            to += f";tag={toTag}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {self.host}:{self.port}"
            f";branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <{self.aor}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {callId or f'{method}-{next(_counter)}@{self.host}'}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.user}@{self.host}:{self.port}"
            + (";transport=tcp" if self.transport == "TCP" else "")
            + ">",
        ]
        lines += [f"{n}: {v}" for n, v in (headers or [])]
        if contentLength:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def send(self, data: bytes) -> None:
        """Send bytes to the server over this UA's transport."""
        if self.transport == "UDP":
            self.server.receive(data, (self.host, self.port))
        else:
            if self.tcpClient is None:
                self.tcpClient = self.server.tcp(self.host, self.port)
            self.tcpClient[0].dataReceived(data)

    def received(self) -> list[SIPMessage]:
        """What the server sent to this UA since the last call."""
        if self.transport == "UDP":
            mine: list[tuple[bytes, Any]] = []
            others: list[tuple[bytes, Any]] = []
            for data, addr in self.server.udp.written:
                (mine if addr == (self.host, self.port) else others).append(
                    (data, addr)
                )
            self.server.udp.written[:] = others
            return [parseDatagram(d) for d, _ in mine]
        assert self.tcpClient is not None
        transport = self.tcpClient[1]
        data = transport.value()
        transport.clear()
        return [m for m in self.framer.dataReceived(data) if isinstance(m, SIPMessage)]

    def publish(
        self,
        body: bytes | None = None,
        etag: str | None = None,
        expires: int | None = 3600,
        event: str = "presence",
        contentType: str | None = "application/pidf+xml",
        presentity: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> SIPResponse:
        """PUBLISH and return the response."""
        headers = [("Event", event)]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if etag is not None:
            headers.append(("SIP-If-Match", etag))
        if contentType is not None and (body is not None):
            headers.append(("Content-Type", contentType))
        headers += extra or []
        self.send(self.request("PUBLISH", presentity or self.aor, headers, body or b""))
        return self.response()

    def response(self) -> SIPResponse:
        """The one response waiting for this UA, leaving NOTIFYs queued."""
        messages = self.received()
        responses = [m for m in messages if isinstance(m, SIPResponse)]
        self.pending = getattr(self, "pending", []) + [
            m for m in messages if isinstance(m, SIPRequest)
        ]
        assert len(responses) == 1, messages
        return responses[0]

    def notifies(self) -> list[SIPRequest]:
        """The NOTIFYs received so far and not yet taken."""
        out = list(getattr(self, "pending", []))
        self.pending = []
        out += [m for m in self.received() if isinstance(m, SIPRequest)]
        unique: dict[tuple[str, str], SIPRequest] = {}
        for request in out:
            # Retransmissions over UDP are the same request again.
            unique.setdefault((request.callId, request.header("cseq") or ""), request)
        return list(unique.values())

    def answer(self, request: SIPRequest, code: int = 200) -> None:
        """Answer a request the server sent."""
        self.send(responseTo(request, code, toTag=None).toBytes())


class Subscriber(UA):
    """A UA that keeps one subscription dialog."""

    def subscribe(
        self,
        presentity: str = "sip:bob@example.com",
        expires: int | None = 600,
        event: str = "presence",
        accept: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        refresh: bool = False,
    ) -> SIPResponse:
        """SUBSCRIBE (or refresh) and return the response."""
        headers = [("Event", event)]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if accept is not None:
            headers.append(("Accept", accept))
        headers += extra or []
        if not refresh:
            self.callId = f"sub-{next(_counter)}@{self.host}"
            self.toTag = None
            self.presentity = presentity
        self.send(
            self.request(
                "SUBSCRIBE",
                self.presentity,
                headers,
                callId=self.callId,
                toTag=self.toTag,
            )
        )
        response = self.response()
        if response.code == 200 and not refresh:
            self.toTag = response.toAddr.tag
        return response


# -- over real sockets, for the end-to-end tests ---------------------------------


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class UDPClient(DatagramProtocol):
    """Sends datagrams and queues what comes back."""

    def __init__(self) -> None:
        """Start with an empty queue."""
        self.queue: defer.DeferredQueue[tuple[SIPMessage, Any]] = defer.DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Queue the parsed datagram."""
        self.queue.put((parseDatagram(datagram), addr))


class TCPClient(Protocol):
    """Writes bytes and queues the messages framed from what comes back."""

    def __init__(self) -> None:
        """Start with an empty queue."""
        self.framer = StreamFramer()
        self.queue: defer.DeferredQueue[SIPMessage] = defer.DeferredQueue()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        """Queue every complete message."""
        for item in self.framer.dataReceived(data):
            if isinstance(item, SIPMessage):
                self.queue.put(item)

    def send(self, data: bytes) -> None:
        """Write bytes to the server."""
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        """Close the connection."""
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        """Fire C{lost}."""
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
    server = makeService(options, _reactor())
    server.startService()
    transports = server.stack.transports
    udpPort = transports.udp[0].transport.getHost().port  # type: ignore[union-attr]
    tcpPort = transports.tcpPorts[0]
    return server, udpPort, tcpPort


async def connectTCP(port: int) -> TCPClient:
    """Connect a TCP client to the server."""
    endpoint = TCP4ClientEndpoint(_reactor(), "127.0.0.1", port)
    client = TCPClient()
    await connectProtocol(endpoint, client)
    return client


def listenUDP() -> tuple[UDPClient, Any]:
    """Open a UDP client socket on loopback."""
    client = UDPClient()
    port = _reactor().listenUDP(0, client, interface="127.0.0.1")
    return client, port
