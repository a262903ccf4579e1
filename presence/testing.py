"""For tests of the server and of event packages: fakes, and a whole server.

A user writing an event package tests it here: `Server` is the server that
`presence.stack.buildStack` builds, on an in-memory UDP socket and a fake
clock, and `UA` and `Subscriber` are scripted user agents that talk to it.
The fakes below them stand in for a UDP socket, a DNS resolver, a transport
sink and a transaction user; each is a real implementation of the interface
it stands in for, so that tests can check it with ``verifyObject`` and it
cannot drift from it. Nothing here opens a socket or reads the real time.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError
from zope.interface import implementer

from presence.config import Config
from presence.sip.errors import SIPParseError
from presence.sip.message import SIPMessage, SIPRequest, SIPResponse, responseTo
from presence.sip.parser import StreamFramer, parseDatagram
from presence.sip.transaction import ServerTransaction
from presence.sip.transport import Peer, SIPStreamProtocol
from presence.stack import Stack, buildStack
from presence.storage.memory import MemoryStore

__all__ = [
    "PIDF",
    "SERVER",
    "UA",
    "FakeDatagramTransport",
    "FakeResolver",
    "RecordingSink",
    "RecordingUser",
    "Server",
    "Subscriber",
    "pidf",
    "requestBytes",
    "responseBytes",
]


@implementer(IUDPTransport)
class FakeDatagramTransport:
    """An in-memory UDP socket that records what is written to it.

    Attributes:
        written: every datagram written, as ``(bytes, (host, port))`` pairs.
        host: the local address it claims to be bound to.
        port: the local port.
        error: when set, writes raise it (as a socket error would).
    """

    def __init__(self, host: str = "192.0.2.10", port: int = 5060) -> None:
        """Pretend to be bound to ``host`` and ``port``."""
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.host = host
        self.port = port
        self.error: Exception | None = None
        self.listening = True
        self._broadcast = False

    def write(self, packet: bytes, addr: tuple[str, int] | None = None) -> None:
        """Record one datagram, or raise `error`."""
        if self.error is not None:
            raise self.error
        assert addr is not None, "an unconnected socket needs an address"
        self.written.append((packet, addr))

    def connect(self, host: str, port: int) -> None:
        """Refuse: SIP sockets are never connected."""
        raise NotImplementedError("connected UDP is not used")

    def getHost(self) -> IPv4Address | IPv6Address:
        """The local address."""
        if ":" in self.host:
            return IPv6Address("UDP", self.host, self.port)
        return IPv4Address("UDP", self.host, self.port)

    def stopListening(self) -> defer.Deferred[None] | None:
        """Stop listening at once."""
        self.listening = False
        return None

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """Record the broadcast flag."""
        self._broadcast = enabled

    def getBroadcastAllowed(self) -> bool:
        """The broadcast flag."""
        return self._broadcast


class FakeResolver(ResolverBase):
    """An ``IResolver`` answering from records given in advance.

    Every lookup method, ``getHostByName`` included, is Twisted's own
    (``ResolverBase``); only the final record lookup is fake.

    Attributes:
        queries: every ``(name, type)`` asked, in order.
        failures: names whose every lookup fails with the given exception.
    """

    def __init__(self) -> None:
        """Start with no records."""
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted's, untyped
        self.records: dict[bytes, list[dns.RRHeader]] = {}
        self.queries: list[tuple[str, int]] = []
        self.failures: dict[str, Exception] = {}

    def addAddress(self, name: str, address: str) -> None:
        """Add an A (or AAAA, for an IPv6 address) record."""
        # Twisted's record classes are untyped.
        payload: Any
        if ":" in address:
            payload = dns.Record_AAAA(address)
            kind = dns.AAAA
        else:
            payload = dns.Record_A(address)
            kind = dns.A
        self._add(name, kind, payload)

    def addService(
        self, name: str, target: str, port: int, priority: int = 0, weight: int = 0
    ) -> None:
        """Add an SRV record: ``name`` is served by ``target`` on ``port``."""
        # Twisted's record classes are untyped.
        payload = dns.Record_SRV(priority, weight, port, target.encode("ascii"))
        self._add(name, dns.SRV, payload)

    def _add(self, name: str, kind: int, payload: Any) -> None:
        key = name.encode("ascii")
        header = dns.RRHeader(key, kind, dns.IN, 60, payload)
        self.records.setdefault(key, []).append(header)

    def _lookup(
        self, name: bytes, cls: int, type: int, timeout: Any = None
    ) -> defer.Deferred[tuple[list[Any], list[Any], list[Any]]]:
        """Answer one lookup from the records."""
        text = name.decode("ascii")
        self.queries.append((text, type))
        failure = self.failures.get(text)
        if failure is not None:
            return defer.fail(failure)
        records = self.records.get(name.lower(), [])
        answers = [r for r in records if type in (dns.ALL_RECORDS, r.type)]
        if not answers and name.lower() not in self.records:
            return defer.fail(DNSNameError(text))
        return defer.succeed((answers, [], []))


class RecordingSink:
    """A transport sink (`presence.sip.transport.MessageSink`) that records.

    Attributes:
        messages: the messages received, with their peers.
        malformed: the parse errors of answerable requests, with their peers.
    """

    def __init__(self) -> None:
        """Start empty."""
        self.messages: list[tuple[SIPMessage, Peer]] = []
        self.malformed: list[tuple[SIPParseError, Peer]] = []

    def messageReceived(self, message: SIPMessage, peer: Peer) -> None:
        """Record a message."""
        self.messages.append((message, peer))

    def malformedReceived(self, error: SIPParseError, peer: Peer) -> None:
        """Record a malformed request."""
        self.malformed.append((error, peer))


class RecordingUser:
    """A transaction user that records what it gets and answers as told.

    Attributes:
        requests: the new requests received, with their transactions.
        malformed: the malformed requests, with reason and status.
        answer: the status each new request is answered with at once, or
            ``None`` to leave it unanswered.
    """

    def __init__(self, answer: int | None = 200) -> None:
        """Answer every new request with ``answer``."""
        self.answer = answer
        self.requests: list[tuple[SIPRequest, ServerTransaction]] = []
        self.malformed: list[tuple[SIPRequest, ServerTransaction, str, int]] = []

    def requestReceived(
        self, request: SIPRequest, transaction: ServerTransaction
    ) -> None:
        """Record the request and answer it if told to."""
        self.requests.append((request, transaction))
        if self.answer is not None:
            transaction.respond(transaction.response(self.answer))

    def malformedReceived(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        reason: str,
        code: int,
    ) -> None:
        """Record the request and answer it with ``code``."""
        self.malformed.append((request, transaction, reason, code))
        transaction.respond(transaction.response(code, reason))


def requestBytes(
    method: str = "OPTIONS",
    uri: str = "sip:presence@192.0.2.10",
    via: str = "SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKabc;rport",
    callId: str = "call-1@198.51.100.7",
    cseq: int = 1,
    toTag: str | None = None,
    body: bytes = b"",
    extra: tuple[str, ...] = (),
) -> bytes:
    """The bytes of a well-formed request, for feeding to transports."""
    to = "<sip:presence@192.0.2.10>" + (f";tag={toTag}" if toTag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=from1",
        f"To: {to}",
        f"Call-ID: {callId}",
        f"CSeq: {cseq} {'INVITE' if method == 'ACK' else method}",
        *extra,
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8") + body


def responseBytes(
    code: int,
    via: str,
    method: str = "NOTIFY",
    callId: str = "call-1@192.0.2.10",
    cseq: int = 1,
) -> bytes:
    """The bytes of a response to a request we sent with the Via ``via``."""
    lines = [
        f"SIP/2.0 {code} Whatever",
        f"Via: {via}",
        "From: <sip:presence@192.0.2.10>;tag=ours",
        "To: <sip:alice@example.com>;tag=theirs",
        f"Call-ID: {callId}",
        f"CSeq: {cseq} {method}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


# -- a whole server in memory, and scripted user agents --------------------------------

#: The address of `Server`'s UDP socket.
SERVER = ("192.0.2.10", 5060)
_counter = itertools.count(1)

#: The template of `pidf`: one tuple with a basic status and a note.
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
    """The server `presence.stack.buildStack` builds, on a fake UDP socket and clock.

    Attributes:
        reactor: the fake reactor and clock the server runs on.
        stack: the server's objects.
        udp: the server's UDP socket; what it sent is in ``udp.written``.
    """

    def __init__(self, **settings: Any) -> None:
        """Build the server with these configuration settings.

        Args:
            settings: `presence.config.Config` attributes; the database is
                in memory unless given, and ``sourceRateLimit`` is 0 (no
                limit) unless given, since the fake clock stands still while
                a test sends as many requests as it likes.

        Raises:
            presence.config.ConfigError: the settings would not start a
                server (``twistd presence`` refuses them).
        """
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_000_000)
        settings.setdefault("database", "memory")
        settings.setdefault("sourceRateLimit", 0)
        self.config = Config(**settings).validate()
        self.stack: Stack = buildStack(self.config, self.reactor)
        self.udp = FakeDatagramTransport(*SERVER)
        self.protocol = self.stack.transports.datagramProtocol()
        self.protocol.makeConnection(self.udp)
        self.stack.sweeper.startService()
        if self.stack.xcapClient is not None:
            self.stack.xcapClient.startService()

    def register(self, *packages: Any) -> None:
        """Serve more event packages, advertised in OPTIONS, 489 and 415."""
        for package in packages:
            self.stack.packages.register(package)

    @property
    def store(self) -> MemoryStore:
        """The server's store, which is in memory here."""
        store = self.stack.store
        assert isinstance(store, MemoryStore)
        return store

    def close(self) -> None:
        """Stop the sweeper, the XCAP client and every transaction timer."""
        self.stack.sweeper.stopService()
        if self.stack.xcapClient is not None:
            self.stack.xcapClient.stopService()
        self.stack.transactions.stop()

    def receive(
        self, data: bytes, source: tuple[str, int] = ("192.0.2.20", 5070)
    ) -> None:
        """A datagram arrives from ``source``."""
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
        protocol = self.stack.transports.streamFactory.buildProtocol(
            IPv4Address("TCP", host, port)
        )
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", *SERVER),
            peerAddress=IPv4Address("TCP", host, port),
        )
        protocol.makeConnection(transport)  # type: ignore[no-untyped-call]  # Twisted's, untyped
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
        """A user agent for ``user`` at ``host``:``port`` over ``transport``."""
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
