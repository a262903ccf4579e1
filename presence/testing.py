"""Fakes for tests: a datagram transport, a DNS resolver, a transaction user.

Each fake is a real implementation of the interface it stands in for, so
that tests can check it with ``verifyObject`` and it cannot drift from it.
Nothing here opens a socket or reads the real time.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IUDPTransport
from twisted.names import dns
from twisted.names.common import ResolverBase
from twisted.names.error import DNSNameError
from twisted.protocols import portforward
from twisted.python.failure import Failure
from zope.interface import implementer

from presence.sip.errors import SIPParseError
from presence.sip.message import SIPMessage, SIPRequest
from presence.sip.transaction import ServerTransaction
from presence.sip.transport import Peer


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


__all__ = [
    "FakeDatagramTransport",
    "FakeResolver",
    "RecordingSink",
    "RecordingUser",
    "requestBytes",
    "responseBytes",
]


# -- PostgreSQL test databases and a proxy that can cut them off ------------------

#: The DSN of the test PostgreSQL server, or None: tests then skip.
PG_DSN = os.environ.get("PRESENCE_TEST_PG_DSN")
NO_PG = "PRESENCE_TEST_PG_DSN is not set: no PostgreSQL server to test against"


def pgDSN(**changes: str) -> str:
    """The test server's DSN with some parameters changed."""
    assert PG_DSN is not None
    import psycopg2.extensions

    params = psycopg2.extensions.parse_dsn(PG_DSN)
    params.update(changes)
    return str(psycopg2.extensions.make_dsn(**params))


def pgURL(**changes: str) -> str:
    """The test server as a ``postgresql://`` URL, with some parameters changed.

    The server's ``database`` setting takes URLs; the test DSN may be either
    form.
    """
    import psycopg2.extensions

    assert PG_DSN is not None
    params = psycopg2.extensions.parse_dsn(PG_DSN)
    params.update(changes)
    user = params.get("user", "postgres")
    password = params.get("password")
    userinfo = f"{user}:{password}" if password else user
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql://{userinfo}@{host}:{port}/{params.get('dbname', 'test')}"


def pgAddress() -> tuple[str, int]:
    """The host and port of the test server."""
    import psycopg2.extensions

    assert PG_DSN is not None
    params = psycopg2.extensions.parse_dsn(PG_DSN)
    return params.get("host", "127.0.0.1"), int(params.get("port", 5432))


class PostgresDatabase:
    """A database of its own on the test server, for one test class."""

    def __init__(self) -> None:
        """Create it."""
        self.name = f"presence_test_{uuid.uuid4().hex[:12]}"
        self._admin("CREATE DATABASE " + self.name)
        self.dsn = pgDSN(dbname=self.name)
        self.url = pgURL(dbname=self.name)

    def _admin(self, sql: str) -> None:
        import psycopg2

        connection = psycopg2.connect(PG_DSN)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def drop(self) -> None:
        """Drop it, closing what is still connected."""
        self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class _CuttableServer(portforward.ProxyServer):
    factory: CuttableProxy

    def connectionMade(self) -> None:
        self.factory.servers.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.factory.servers.discard(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]  # untyped Twisted


class CuttableProxy(portforward.ProxyFactory):
    """A TCP proxy whose connections can be cut, and which can refuse new ones."""

    protocol = _CuttableServer
    noisy = False

    def __init__(self, host: str, port: int) -> None:
        """Forward to ``host``, ``port``."""
        super().__init__(host, port)
        self.servers: set[_CuttableServer] = set()
        self.refusing = False

    def buildProtocol(self, addr: Any) -> portforward.ProxyServer | None:
        """A forwarding connection, or None (closing it) while refusing."""
        if self.refusing:
            return None
        return super().buildProtocol(addr)

    def cut(self) -> None:
        """Abort every connection, and refuse new ones."""
        self.refusing = True
        for server in list(self.servers):
            transport: Any = server.transport
            transport.abortConnection()
