"""Tests for TLS in `presence.sip.transport`: names, routing, addresses."""

# trial's assertions and Twisted's test doubles are untyped.
# mypy: allow-untyped-calls

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from presence.sip.message import SIPURI
from presence.sip.tls import clientTLS
from presence.sip.transport import (
    DEFAULT_TLS_PORT,
    Peer,
    SIPStreamProtocol,
    SIPTransports,
    TransportError,
)
from presence.testing import FakeResolver, RecordingSink

SOURCE = ("198.51.100.7", 40000)


def accept(transports: SIPTransports, factory: Any) -> SIPStreamProtocol:
    """A connection from `SOURCE` accepted through ``factory``."""
    protocol = factory.buildProtocol(IPv4Address("TCP", *SOURCE))
    protocol.makeConnection(
        StringTransport(
            hostAddress=IPv4Address("TCP", "192.0.2.10", 5061),
            peerAddress=IPv4Address("TCP", *SOURCE),
        )
    )
    assert isinstance(protocol, SIPStreamProtocol)
    return protocol


class TransportNameTests(SynchronousTestCase):
    """A connection's transport name comes from the factory that built it."""

    def setUp(self) -> None:
        """Transports with a recording sink, listening on TCP and TLS."""
        self.transports = SIPTransports(Clock(), advertisedHost="192.0.2.10")
        self.transports.sink = RecordingSink()
        self.transports.tcpListening(5060)
        self.transports.tlsListening(5061)

    def test_tlsPeer(self) -> None:
        """A TLS listener's connection reports TLS peers."""
        protocol = accept(self.transports, self.transports.tlsFactory)
        self.assertEqual(protocol.transportName, "TLS")
        self.assertEqual(protocol.peer, Peer("TLS", *SOURCE))
        tcp = accept(self.transports, self.transports.streamFactory)
        self.assertEqual(tcp.peer, Peer("TCP", *SOURCE))

    def test_viaAndContact(self) -> None:
        """Via and Contact of a TLS peer name TLS and the TLS port."""
        peer = Peer("TLS", *SOURCE)
        via = self.transports.makeVia(peer, "z9hG4bKx")
        self.assertEqual(str(via), "SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bKx;rport")
        self.assertEqual(
            str(self.transports.contactURI(peer)),
            "sip:192.0.2.10:5061;transport=tls",
        )
        self.assertEqual(
            str(self.transports.contactURI(peer, secure=True)), "sips:192.0.2.10:5061"
        )
        # sips only over TLS: a secure request over TCP gets a sip Contact.
        self.assertEqual(
            str(self.transports.contactURI(Peer("TCP", *SOURCE), secure=True)),
            "sip:192.0.2.10:5060;transport=tcp",
        )

    def test_connectionsCountTogether(self) -> None:
        """``max_tcp_connections`` counts TCP and TLS connections together."""
        transports = SIPTransports(Clock(), maxConnections=2)
        transports.sink = RecordingSink()
        accept(transports, transports.streamFactory)
        accept(transports, transports.tlsFactory)
        refused = accept(transports, transports.tlsFactory)
        self.assertFalse(refused.connected)
        self.assertEqual(transports.inboundConnections, 2)
        self.assertEqual(transports.limitStats.connectionsRefused, 1)

    def test_noReuseAcrossTransports(self) -> None:
        """A TLS target is not sent over a TCP connection to the same address."""
        tcp = accept(self.transports, self.transports.streamFactory)
        self.assertIs(self.transports.connectionFor(Peer("TCP", *SOURCE)), tcp)
        self.assertIsNone(self.transports.connectionFor(Peer("TLS", *SOURCE)))

    def test_noClientTLS(self) -> None:
        """Without client TLS options no TLS connection is made."""
        transports = SIPTransports(Clock(), reactor=object())
        d = transports.sendBytes(b"NOTIFY", Peer("TLS", *SOURCE))
        self.failureResultOf(d, TransportError)


class ResolveTLSTests(SynchronousTestCase):
    """RFC 3263 for TLS: sips and transport=tls, port 5061, _sips._tcp."""

    def setUp(self) -> None:
        """Transports with a fake resolver."""
        self.resolver = FakeResolver()
        self.transports = SIPTransports(Clock(), resolver=self.resolver)

    def resolve(self, uri: SIPURI) -> Peer:
        """Resolve ``uri``, which must succeed at once."""
        peer = self.successResultOf(self.transports.resolve(uri))
        assert isinstance(peer, Peer)
        return peer

    def test_sipsLiteral(self) -> None:
        """A sips IP literal is TLS on 5061, the address its server name."""
        peer = self.resolve(SIPURI("192.0.2.5", "bob", scheme="sips"))
        self.assertEqual(peer, Peer("TLS", "192.0.2.5", DEFAULT_TLS_PORT))
        self.assertEqual(peer.serverName, "192.0.2.5")

    def test_transportTLS(self) -> None:
        """transport=tls in a sip URI is TLS too; the host is the server name."""
        self.resolver.addAddress("example.com", "192.0.2.7")
        peer = self.resolve(SIPURI("example.com", "bob", 5071, {"transport": "tls"}))
        self.assertEqual(peer, Peer("TLS", "192.0.2.7", 5071))
        self.assertEqual(peer.serverName, "example.com")

    def test_srvSips(self) -> None:
        """Without a port, sips looks up _sips._tcp; the name stays the domain's."""
        self.resolver.addService("_sips._tcp.example.com", "sip.example.com", 5091)
        self.resolver.addAddress("sip.example.com", "192.0.2.8")
        peer = self.resolve(SIPURI("example.com", "bob", scheme="sips"))
        self.assertEqual(peer, Peer("TLS", "192.0.2.8", 5091))
        self.assertEqual(peer.serverName, "example.com")
        self.assertEqual(self.resolver.queries[0], ("_sips._tcp.example.com", dns.SRV))

    def test_sipsTransportTCP(self) -> None:
        """Sips with transport=tcp still means TLS (RFC 5630 section 3.1.3)."""
        peer = self.resolve(
            SIPURI("192.0.2.5", "bob", 5061, {"transport": "tcp"}, scheme="sips")
        )
        self.assertEqual(peer.transport, "TLS")


class ClientTLSTests(SynchronousTestCase):
    """`presence.sip.tls.clientTLS`: unverified by default, verified on demand."""

    def test_unverified(self) -> None:
        """Without ``tls_verify`` the options accept any certificate."""
        options = clientTLS()("example.com")
        self.assertFalse(options.verify)

    def test_verified(self) -> None:
        """With ``tls_verify`` the options check the server name."""
        creator = clientTLS(verify=True)
        options = creator("example.com")
        self.assertEqual(options._hostname, "example.com")
