"""UDP, TCP and TLS transports (RFC 3261 sections 18 and 26, RFC 3581, RFC 5626 3.5.1).

The protocols here only move bytes: a datagram or a Content-Length framed
stream becomes a message handed to one sink, with the `Peer` it came from.
`SIPTransports` owns the listening sockets and the stream connections, and
sends: responses where the top Via says (over the request's own connection
for TCP and TLS), requests over an existing connection to the target when
there is one and otherwise over a new one. Host names resolve through an
injected ``IResolver`` (RFC 3263: SRV, then A; IP literals and explicit ports
skip the SRV lookup).

A stream connection knows the name of its transport, ``"TCP"`` or ``"TLS"``,
from the factory that built it: TLS is Twisted's, wrapped around the same
protocol (a listener made with an ``ssl:`` endpoint, and for outgoing
connections the client TLS options `SIPTransports` is given), so everything
above the bytes is the same for both.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import sys
from collections.abc import Callable
from typing import Any, Final, cast
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionRefusedError as ConnectRefused
from twisted.internet.error import MessageLengthError, NoRouteError, TCPTimedOutError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import (
    DatagramProtocol,
    Factory,
    Protocol,
    connectionDone,
)
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure
from zope.interface import implementer

from presence.sip.errors import SIPParseError, TransportError
from presence.sip.grammar import splitList
from presence.sip.headers import Via
from presence.sip.limits import LimitStatistics
from presence.sip.message import SIPMessage, SIPRequest, SIPResponse
from presence.sip.parser import KEEPALIVE, StreamFramer, parseDatagram
from presence.sip.uri import SIPURI

RELIABLE: Final = frozenset({"TCP", "TLS", "SCTP", "WS", "WSS"})
DEFAULT_PORT: Final = 5060
#: The default port of SIP over TLS (RFC 3261 section 19.1.2).
DEFAULT_TLS_PORT: Final = 5061
#: The stream transports this layer speaks.
STREAMS: Final = frozenset({"TCP", "TLS"})
#: The largest UDP datagram, IP and UDP headers included (RFC 3261 18.1.1:
#: "For UDP, this size is 65,535 bytes, including IP and UDP headers.").
MAX_DATAGRAM: Final = 65535
#: The default ``udp_mtu``: the size above which a request the server sends
#: to a UDP destination goes over TCP when the path MTU is unknown (RFC 3261
#: section 18.1.1).
DEFAULT_UDP_MTU: Final = 1300
#: The errnos of a connection attempt that RFC 3261 section 18.1.1 answers
#: with a retry over UDP: a TCP reset (refused, or reset while connecting)
#: and ICMP Protocol Not Supported (``ENOPROTOOPT`` on Linux).
_RETRY_OVER_UDP_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ENOPROTOOPT}
)


def defaultPort(transport: str) -> int:
    """The port a URI or Via without one means for ``transport``."""
    return DEFAULT_TLS_PORT if transport == "TLS" else DEFAULT_PORT


#: Makes the client TLS options for a connection to a server name (a host
#: name, or an IP address when the URI has one): an
#: ``IOpenSSLClientConnectionCreator``.
ClientTLS = Callable[[str], Any]


class Peer:
    """The far end of a hop: where a message came from or goes to.

    Attributes:
        transport: ``"UDP"``, ``"TCP"`` or ``"TLS"``.
        host: the IP address.
        port: the port.
        connection: the stream connection it came on or should go over, or
            the UDP listener it came on; ``None`` when any will do.
        serverName: the host name a TLS connection to it must prove it
            serves (the URI's host, RFC 5922 section 7.2); ``None``: the
            IP address.
    """

    __slots__ = ("connection", "host", "port", "serverName", "transport")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int,
        connection: Any = None,
        serverName: str | None = None,
    ) -> None:
        """Describe a peer."""
        self.transport = transport
        self.host = host
        self.port = port
        self.connection = connection
        self.serverName = serverName

    @property
    def reliable(self) -> bool:
        """Whether the transport is reliable (no retransmissions)."""
        return self.transport in RELIABLE

    def __str__(self) -> str:
        """Write as ``transport:host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"

    def __repr__(self) -> str:
        """Show the peer."""
        return f"Peer({self})"

    def __eq__(self, other: object) -> bool:
        """Compare transport, host and port."""
        if not isinstance(other, Peer):
            return NotImplemented
        return (self.transport, self.host, self.port) == (
            other.transport,
            other.host,
            other.port,
        )

    def __hash__(self) -> int:
        """Hash transport, host and port."""
        return hash((self.transport, self.host, self.port))


class MessageSink(TypingProtocol):
    """What the transports hand received messages to (the transaction layer)."""

    def messageReceived(self, message: SIPMessage, peer: Peer) -> None:
        """Take a parsed message and where it came from."""

    def malformedReceived(self, error: SIPParseError, peer: Peer) -> None:
        """Take a request that could not be parsed but can be answered."""


class StreamWatcher(TypingProtocol):
    """What wants to hear that a TCP connection it sent over was lost."""

    def streamLost(self, connection: SIPStreamProtocol) -> None:
        """The connection is gone: nothing more will come over it."""


class Statistics:
    """Counters of the transport layer, read by the admin interface."""

    def __init__(self) -> None:
        """Start every counter at zero."""
        self.received = 0
        self.sent = 0
        self.dropped = 0
        self.malformed = 0
        self.keepAlives = 0
        self.sendErrors = 0
        self.connectionsOpened = 0


class StreamRefused(TransportError):
    """A TCP or TLS connection attempt was refused or reset.

    Or ICMP said the protocol is not supported: the cases after which RFC
    3261 section 18.1.1 sends a request moved off UDP for its size over UDP
    again.
    """


#: Seconds a UDP destination whose TCP connection attempt failed gets its
#: large requests over UDP without a new attempt.
NO_STREAM_MEMORY: Final = 300.0

#: At most this many such destinations are remembered.
NO_STREAM_ENTRIES: Final = 10_000


def datagramFits(size: int, host: str) -> bool:
    """Whether a message of ``size`` bytes fits one UDP datagram to ``host``.

    The 65,535 bytes of RFC 3261 section 18.1.1 include the IP header (20
    bytes for IPv4, 40 for IPv6) and the UDP header (8 bytes).
    """
    headers = 48 if ":" in host else 28
    return size + headers <= MAX_DATAGRAM


def _retriesOverUDP(failure: Failure) -> bool:
    """Whether a failed connection attempt is one retried over UDP.

    The RFC's two cases (a reset, ICMP Protocol Not Supported), and also a
    connection attempt that times out or finds no route: a phone behind a
    NAT or a firewall that drops the SYN would otherwise lose every NOTIFY
    over ``udp_mtu`` that UDP still delivers (a decision of this server,
    beyond the RFC's SHOULD, which names no other case).
    """
    if (
        failure.check(
            ConnectRefused,
            ConnectionRefusedError,
            TCPTimedOutError,
            ConnectTimeout,
            NoRouteError,
        )
        is not None
    ):
        return True
    code = getattr(failure.value, "osError", None)
    if isinstance(code, OSError):
        code = code.errno
    return code in _RETRY_OVER_UDP_ERRNOS


def isIPAddress(host: str) -> bool:
    """Whether ``host`` is an IPv4 address or an IPv6 reference or address.

    The answers are kept (a few thousand hosts): every NOTIFY asks it of its
    watcher's host.
    """
    known = _IP_LITERALS.get(host)
    if known is not None:
        return known
    try:
        ipaddress.ip_address(host.strip("[]"))
        answer = True
    except ValueError:
        answer = False
    if len(_IP_LITERALS) >= 4096:
        _IP_LITERALS.clear()
    _IP_LITERALS[host] = answer
    return answer


#: Hosts -> whether they are IP literals, for `isIPAddress`.
_IP_LITERALS: dict[str, bool] = {}


class SIPDatagramProtocol(DatagramProtocol):
    """A UDP socket: each datagram is one message."""

    noisy = False

    def __init__(self, transports: SIPTransports) -> None:
        """Report to ``transports``."""
        self.transports = transports
        #: Hosts Twisted's ``Port.write`` accepted once (valid addresses of
        #: the socket's family): `send` writes to them directly.
        self._checkedHosts: set[str] = set()

    #: Socket buffer sizes asked for: bursts (a NOTIFY to thousands of
    #: watchers, and their thousands of 200s) overflow the kernel's default.
    #: The kernel caps them at net.core.rmem_max and wmem_max.
    bufferSize = 8 * 1024 * 1024

    def startProtocol(self) -> None:
        """Enlarge the socket's buffers."""
        transport: Any = self.transport
        handle = getattr(transport, "socket", None)
        if handle is None:
            return
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                handle.setsockopt(socket.SOL_SOCKET, option, self.bufferSize)
            except OSError:
                pass

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Parse the datagram and hand the message on."""
        self.transports.datagramReceived(self, datagram, addr[0], addr[1])

    def send(self, data: bytes, host: str, port: int) -> None:
        """Send one datagram.

        Raises:
            TransportError: the socket refused it (too large, bad address,
                or any socket error).
        """
        assert self.transport is not None
        handle = self._socket
        if handle is not None and host in self._checkedHosts:
            # Twisted's Port.write checks the address on every datagram;
            # this host passed those checks once, so write to the socket as
            # Port.write does, errors handled the same way.
            try:
                handle.sendto(data, (host, port))
                return
            except InterruptedError:
                pass
            except OSError as e:
                if e.errno == errno.ECONNREFUSED:
                    # Port.write ignores it too: an earlier datagram's ICMP.
                    return
                if e.errno != errno.EMSGSIZE:
                    raise TransportError(f"cannot send to {host}:{port}: {e}") from e
        try:
            self.transport.write(data, (host, port))
        except (OSError, ValueError, MessageLengthError) as e:
            raise TransportError(f"cannot send to {host}:{port}: {e}") from e
        if handle is not None and len(self._checkedHosts) < 4096:
            self._checkedHosts.add(host)

    @property
    def _socket(self) -> socket.socket | None:
        """The listening port's socket; ``None`` for a fake transport."""
        handle = getattr(self.transport, "socket", None)
        return handle if isinstance(handle, socket.socket) else None


@implementer(IHandshakeListener)
class SIPStreamProtocol(Protocol):
    """A TCP or TLS connection carrying SIP messages framed by Content-Length.

    Attributes:
        transportName: ``"TCP"`` or ``"TLS"``: what the connection's `peer`
            and the Via of requests sent over it say.
        peer: the far end, set when the connection is made.
        connected: whether messages may still be written; false once the
            connection is lost or being closed by us.
        watchers: told once when the connection is lost or closed (client
            transactions waiting for a response over it).
    """

    def __init__(
        self,
        transports: SIPTransports,
        idleTimeout: float | None,
        inbound: bool = True,
        transportName: str = "TCP",
    ) -> None:
        """Report to ``transports``; close after ``idleTimeout`` idle seconds.

        ``inbound`` is false for a connection this server makes (to send a
        NOTIFY): only accepted connections, TCP and TLS together, count
        against ``max_tcp_connections``. ``transportName`` is ``"TLS"`` for
        a protocol that Twisted's TLS wraps.
        """
        self.transports = transports
        self.inbound = inbound
        self.transportName = transportName
        self.counted = False
        self._readCall: IDelayedCall | None = None
        self.framer = StreamFramer()
        self.idleTimeout = idleTimeout
        self.peer: Peer | None = None
        self.connected = False
        self.watchers: set[StreamWatcher] = set()
        self._idleCall: IDelayedCall | None = None
        self._handshakeCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Register the connection so that requests can reuse it.

        An accepted connection beyond ``max_tcp_connections`` is closed at
        once, before anything is read from it.
        """
        if self.inbound and not self.transports.admit(self):
            self.connected = False
            assert self.transport is not None
            self.transport.loseConnection()
            return
        self.connected = True
        address = cast(ITCPTransport, self.transport).getPeer()
        host = str(getattr(address, "host", ""))
        port = int(getattr(address, "port", 0))
        self.peer = Peer(self.transportName, host, port, self)
        if self.idleTimeout is not None:
            self._idleCall = self.transports.clock.callLater(
                self.idleTimeout, self.timeoutConnection
            )
        timeout = self.transports.readTimeout
        if self.transportName == "TLS" and timeout is not None:
            # Twisted's TLS makes the connection before the handshake: one
            # never finished is no message begun, and would otherwise hold
            # the connection until the idle timeout.
            self._handshakeCall = self.transports.clock.callLater(
                timeout, self.handshakeTimedOut
            )
        self.transports.connectionMade(self)

    def handshakeCompleted(self) -> None:
        """The TLS handshake is done: messages may come."""
        call, self._handshakeCall = self._handshakeCall, None
        if call is not None and call.active():
            call.cancel()

    def handshakeTimedOut(self) -> None:
        """Close a TLS connection whose handshake did not finish in time."""
        self._handshakeCall = None
        self.transports.limitStats.readTimeouts += 1
        self.transports.log.info(
            "closing connection from {peer}: the TLS handshake took longer"
            " than {timeout} s",
            peer=self.peer,
            timeout=self.transports.readTimeout,
        )
        self.close()

    def _activity(self) -> None:
        call = self._idleCall
        if call is not None and call.active() and self.idleTimeout is not None:
            call.reset(self.idleTimeout)

    def dataReceived(self, data: bytes) -> None:
        """Frame the bytes and hand each message on."""
        if not self.connected:
            return
        self._activity()
        assert self.peer is not None
        items = self.framer.dataReceived(data)
        for item in items:
            if item is KEEPALIVE:
                self.transports.stats.keepAlives += 1
                self._write(b"\r\n")
            elif isinstance(item, SIPParseError):
                self.transports.streamBroken(self, item)
                self.close()
                return
            elif isinstance(item, SIPMessage):
                self.transports.messageReceived(item, self.peer)
            if not self.connected:
                return
        if self.transports.readTimeout is not None:
            self._readBudget(bool(items))

    def _readBudget(self, framed: bool) -> None:
        """Give an incomplete message ``tcp_read_timeout`` seconds to finish.

        The time runs from when the bytes of a message start waiting for the
        rest, and is not reset by more bytes, only by a message (or ping)
        completed: a peer sending one byte a second does not keep its
        connection for ever.
        """
        call = self._readCall
        if call is not None and (framed or not self.framer.buffered):
            self._readCall = None
            if call.active():
                call.cancel()
            call = None
        if call is None and self.framer.buffered:
            timeout = self.transports.readTimeout
            assert timeout is not None
            self._readCall = self.transports.clock.callLater(timeout, self.readTimedOut)

    def readTimedOut(self) -> None:
        """Close a connection whose message did not arrive in time."""
        self._readCall = None
        self.transports.limitStats.readTimeouts += 1
        self.transports.log.info(
            "closing connection from {peer}: an incomplete message waited"
            " longer than {timeout} s",
            peer=self.peer,
            timeout=self.transports.readTimeout,
        )
        self.close()

    def send(self, data: bytes) -> None:
        """Write one message."""
        self._activity()
        self._write(data)

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        """Close the connection; nothing more is written or read on it."""
        if not self.connected:
            return
        self.connected = False
        self._cancelIdle()
        self.transports.connectionLost(self)
        assert self.transport is not None
        self.transport.loseConnection()
        self._tellWatchers()

    def timeoutConnection(self) -> None:
        """Close an idle connection."""
        self._idleCall = None
        self.transports.log.debug("closing idle connection to {peer}", peer=self.peer)
        self.close()

    def _cancelIdle(self) -> None:
        call, self._idleCall = self._idleCall, None
        if call is not None and call.active():
            call.cancel()
        call, self._handshakeCall = self._handshakeCall, None
        if call is not None and call.active():
            call.cancel()
        call, self._readCall = self._readCall, None
        if call is not None and call.active():
            call.cancel()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the connection."""
        self.connected = False
        self._cancelIdle()
        self.transports.connectionLost(self)
        self._tellWatchers()

    def _tellWatchers(self) -> None:
        watchers, self.watchers = self.watchers, set()
        for watcher in watchers:
            watcher.streamLost(self)


class SIPStreamFactory(Factory[SIPStreamProtocol]):
    """Builds `SIPStreamProtocol` instances for listening and for connecting."""

    noisy = False

    def __init__(
        self,
        transports: SIPTransports,
        inbound: bool = True,
        transportName: str = "TCP",
    ) -> None:
        """Build protocols reporting to ``transports``.

        ``inbound``: for accepted connections (the listening factory), or
        for those the server makes. ``transportName``: ``"TCP"``, or
        ``"TLS"`` for the protocols that Twisted's TLS wraps.
        """
        self.transports = transports
        self.inbound = inbound
        self.transportName = transportName

    def buildProtocol(self, addr: IAddress | None) -> SIPStreamProtocol:
        """Build one connection's protocol."""
        return SIPStreamProtocol(
            self.transports,
            self.transports.idleTimeout,
            self.inbound,
            self.transportName,
        )


class SIPTransports:
    """Owns the sockets; receives and sends SIP messages.

    Attributes:
        sink: where received messages go (the transaction layer); set once
            after construction.
        stats: counters.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        reactor: Any = None,
        resolver: Any = None,
        idleTimeout: float | None = 600.0,
        trace: bool = False,
        advertisedHost: str | None = None,
        maxConnections: int | None = None,
        readTimeout: float | None = None,
        limitStats: LimitStatistics | None = None,
        clientTLS: ClientTLS | None = None,
        udpMtu: int | None = DEFAULT_UDP_MTU,
    ) -> None:
        """Build the transport layer.

        Args:
            clock: the reactor's clock, for idle timeouts.
            reactor: the reactor that makes outgoing TCP connections.
            resolver: an ``IResolver`` for host names (RFC 3263).
            idleTimeout: seconds after which an idle TCP connection closes.
            trace: log every message in and out with its peer.
            advertisedHost: the host to put in Via and Contact; by default
                the address of the socket a message goes out on.
            maxConnections: the most accepted TCP and TLS connections open
                at once, counted together (``max_tcp_connections``); one
                more is closed on arrival. ``None``: no limit.
            readTimeout: seconds an incomplete message may wait for the rest
                on a TCP or TLS connection, and a TLS handshake may take,
                before the connection is closed (``tcp_read_timeout``);
                ``None``: for ever.
            limitStats: where refused connections and read timeouts are
                counted.
            clientTLS: makes the client TLS options for a new TLS connection
                to a server name (`presence.sip.tls.clientTLS`); ``None``:
                no request goes out over a new TLS connection.
            udpMtu: the size in bytes above which a request this server
                sends to a UDP destination goes over TCP to the same host
                and port instead (``udp_mtu``, RFC 3261 section 18.1.1; see
                `largeRequestTarget`); ``None``: always UDP.
        """
        self.clientTLS = clientTLS
        self.udpMtu = udpMtu
        #: Whether "no TCP listener to move a large request to" was logged.
        self._noStreamLogged = False
        #: UDP destinations whose TCP connection attempt failed, with when:
        #: large requests to them stay on UDP for `NO_STREAM_MEMORY`
        #: seconds rather than waiting for a connection again each time.
        self._noStream: dict[tuple[str, int], float] = {}
        self.maxConnections = maxConnections
        self.readTimeout = readTimeout
        self.limitStats = limitStats if limitStats is not None else LimitStatistics()
        #: How many accepted connections are open.
        self.inboundConnections = 0
        self.clock = clock
        self.reactor = reactor
        self.resolver = resolver
        self.idleTimeout = idleTimeout
        self.trace = trace
        self.advertisedHost = advertisedHost
        self.sink: MessageSink | None = None
        self.stats = Statistics()
        self.udp: list[SIPDatagramProtocol] = []
        self.tcpPorts: list[int] = []
        self.tlsPorts: list[int] = []
        self.connections: dict[tuple[str, int], SIPStreamProtocol] = {}
        self._connecting: dict[
            tuple[str, int], list[tuple[bytes, defer.Deferred[None]]]
        ] = {}
        self.streamFactory = SIPStreamFactory(self)
        #: What a TLS listener's connections are built with (inside
        #: Twisted's TLS).
        self.tlsFactory = SIPStreamFactory(self, transportName="TLS")
        self._clientFactories = {
            name: SIPStreamFactory(self, inbound=False, transportName=name)
            for name in STREAMS
        }
        self._localHosts: dict[str, str] = {}

    # -- listeners ------------------------------------------------------------

    def datagramProtocol(self) -> SIPDatagramProtocol:
        """Make a UDP protocol to listen with, remembered for sending."""
        protocol = SIPDatagramProtocol(self)
        self.udp.append(protocol)
        return protocol

    def tcpListening(self, port: int) -> None:
        """Record a TCP port we listen on (for Via and Contact)."""
        if port not in self.tcpPorts:
            self.tcpPorts.append(port)

    def tlsListening(self, port: int) -> None:
        """Record a TLS port we listen on (for Via and Contact)."""
        if port not in self.tlsPorts:
            self.tlsPorts.append(port)

    # -- receiving ------------------------------------------------------------

    def datagramReceived(
        self, protocol: SIPDatagramProtocol, data: bytes, host: str, port: int
    ) -> None:
        """Parse a datagram; drop and count what cannot be answered."""
        self.stats.received += 1
        peer = Peer("UDP", host, port, protocol)
        if data.strip(b"\r\n\x00 ") == b"":
            self.stats.keepAlives += 1
            return
        if self.trace:
            self._traceIn(data, peer)
        try:
            message = parseDatagram(data)
        except SIPParseError as e:
            self.stats.malformed += 1
            if e.request is None:
                self.stats.dropped += 1
                self.log.warn(
                    "dropped malformed datagram from {peer}: {reason}",
                    peer=peer,
                    reason=e.reason,
                )
                return
            self.malformedReceived(e, peer)
            return
        except Exception:
            # The transport edge: a parser bug must not escape to the reactor.
            self.stats.malformed += 1
            self.stats.dropped += 1
            self.log.failure("cannot parse a datagram from {peer}", peer=peer)
            return
        self.messageReceived(message, peer)

    def messageReceived(self, message: SIPMessage, peer: Peer) -> None:
        """Stamp a request's top Via with received/rport and hand it on."""
        if self.trace and peer.transport != "UDP":
            self._traceIn(message.toBytes(), peer)
        if isinstance(message, SIPRequest):
            try:
                _stampVia(message, peer)
            except SIPParseError as e:
                self.stats.dropped += 1
                self.log.warn(
                    "dropped request with a bad Via from {peer}: {reason}",
                    peer=peer,
                    reason=e.reason,
                )
                return
        assert self.sink is not None
        self.sink.messageReceived(message, peer)

    def malformedReceived(self, error: SIPParseError, peer: Peer) -> None:
        """Hand on a malformed request that can still be answered."""
        request = error.request
        assert request is not None
        try:
            _stampVia(request, peer)
        except SIPParseError:
            self.stats.dropped += 1
            self.log.warn(
                "dropped malformed request from {peer}: {reason}",
                peer=peer,
                reason=error.reason,
            )
            return
        self.log.warn(
            "malformed request from {peer}: {reason}", peer=peer, reason=error.reason
        )
        assert self.sink is not None
        self.sink.malformedReceived(error, peer)

    def streamBroken(self, protocol: SIPStreamProtocol, error: SIPParseError) -> None:
        """A TCP stream could not be framed: answer 400 if we can, then close."""
        self.stats.malformed += 1
        assert protocol.peer is not None
        if error.request is None:
            self.stats.dropped += 1
            self.log.warn(
                "closing stream from {peer}: {reason}",
                peer=protocol.peer,
                reason=error.reason,
            )
            return
        self.malformedReceived(error, protocol.peer)

    def connectionMade(self, protocol: SIPStreamProtocol) -> None:
        """Remember a connection for reuse by requests to the same peer."""
        assert protocol.peer is not None
        self.stats.connectionsOpened += 1
        self.connections[(protocol.peer.host, protocol.peer.port)] = protocol

    def admit(self, protocol: SIPStreamProtocol) -> bool:
        """Count an accepted connection, or refuse it beyond the limit."""
        if (
            self.maxConnections is not None
            and self.inboundConnections >= self.maxConnections
        ):
            self.limitStats.connectionsRefused += 1
            self.log.debug(
                "refused a {transport} connection: {limit} TCP and TLS"
                " connections are open (max_tcp_connections)",
                transport=protocol.transportName,
                limit=self.inboundConnections,
            )
            return False
        protocol.counted = True
        self.inboundConnections += 1
        return True

    def connectionLost(self, protocol: SIPStreamProtocol) -> None:
        """Forget a connection (lost, or being closed)."""
        if protocol.counted:
            protocol.counted = False
            self.inboundConnections -= 1
        if protocol.peer is None:
            return
        key = (protocol.peer.host, protocol.peer.port)
        if self.connections.get(key) is protocol:
            del self.connections[key]

    # -- sending --------------------------------------------------------------

    def sendResponse(self, response: SIPResponse, peer: Peer | None = None) -> None:
        """Send a response where its top Via says (RFC 3261 18.2.2, RFC 3581).

        Over a reliable transport the response goes back over the request's
        connection while it is open, and otherwise over a new connection to
        the received address and sent-by port. Over UDP it goes to the
        received address and the rport when the request asked for rport, and
        to the sent-by port otherwise.
        """
        try:
            via = response.topVia
        except SIPParseError as e:
            self.log.warn("cannot route a response: {reason}", reason=e.reason)
            return
        self.sendResponseBytes(response.toBytes(), via, peer)

    def sendResponseBytes(
        self, data: bytes, via: Via, peer: Peer | None = None
    ) -> None:
        """Send a response's bytes where its top Via ``via`` says.

        See `sendResponse`; transactions keep the bytes and the Via of their
        last response, and send them again with this.
        """
        host = via.received or via.host.strip("[]")
        if via.transport in RELIABLE:
            connection = peer.connection if peer is not None else None
            if isinstance(connection, SIPStreamProtocol) and connection.connected:
                self._writeStream(connection, data)
                return
            transport = via.transport if via.transport in STREAMS else "TCP"
            port = via.port or defaultPort(transport)
            self._sendOrLog(Peer(transport, host, port), data)
            return
        self.sendDatagramTo(self.datagramDestination(via, peer), data)

    def datagramDestination(
        self, via: Via, peer: Peer | None = None
    ) -> tuple[SIPDatagramProtocol, str, int] | None:
        """Where a response over UDP with top Via ``via`` goes (RFC 3261 18.2.2).

        The socket, host and port, worked out once, so that a completed
        transaction keeps these three rather than the Via and the peer;
        ``None`` when no UDP socket can send there (`sendDatagramTo` counts
        and logs it).  The host is interned: the responses to one peer share
        one copy.
        """
        host = sys.intern(via.received or via.host.strip("[]"))
        port = via.rport or via.port or DEFAULT_PORT
        protocol = peer.connection if peer is not None else None
        if not isinstance(protocol, SIPDatagramProtocol):
            protocol = self._udpFor(host)
        if protocol is None:
            self.log.warn("no UDP socket to send a response to {host}", host=host)
            return None
        return (protocol, host, port)

    def sendDatagramTo(
        self, destination: tuple[SIPDatagramProtocol, str, int] | None, data: bytes
    ) -> None:
        """Send a response's bytes to a `datagramDestination`."""
        if destination is None:
            self.stats.sendErrors += 1
            return
        protocol, host, port = destination
        try:
            self._writeDatagram(protocol, data, host, port)
        except TransportError as e:
            self.stats.sendErrors += 1
            self.log.warn(
                "could not send a response to {peer}: {error}",
                peer=Peer("UDP", host, port),
                error=str(e),
            )

    def _sendOrLog(self, target: Peer, data: bytes) -> None:
        d = self.sendBytes(data, target)

        def failed(failure: Failure) -> None:
            self.stats.sendErrors += 1
            self.log.warn(
                "could not send to {peer}: {error}",
                peer=target,
                error=failure.getErrorMessage(),
            )

        d.addErrback(failed)

    def sendBytes(self, data: bytes, target: Peer) -> defer.Deferred[None]:
        """Send a message's bytes to a resolved target.

        Over TCP and TLS an open connection to the target (or the one the
        target names) is reused; otherwise a new one is made.

        Returns:
            A Deferred that fires when the bytes were handed to a socket, or
            fails with `TransportError`.
        """
        if target.transport == "UDP":
            protocol = target.connection
            if not isinstance(protocol, SIPDatagramProtocol):
                protocol = self._udpFor(target.host)
            if protocol is None:
                return defer.fail(TransportError("no UDP socket"))
            try:
                self._writeDatagram(protocol, data, target.host, target.port)
            except TransportError as e:
                return defer.fail(e)
            return defer.succeed(None)
        if target.transport not in STREAMS:
            return defer.fail(
                TransportError(f"unsupported transport {target.transport}")
            )
        connection = self.connectionFor(target)
        if connection is not None:
            self._writeStream(connection, data)
            return defer.succeed(None)
        return self._connectAndSend(data, target)

    def largeRequestTarget(self, target: Peer, size: int) -> Peer | None:
        """Where a request of ``size`` bytes for a UDP ``target`` goes instead.

        RFC 3261 section 18.1.1: "If a request is within 200 bytes of the
        path MTU, or if it is larger than 1300 bytes and the path MTU is
        unknown, the request MUST be sent using an RFC 2914 congestion
        controlled transport protocol, such as TCP." Above ``udpMtu`` bytes
        the answer is TCP to the same host and port; ``None`` (stay on UDP)
        when the target is not UDP, the request is small enough, ``udpMtu``
        is off, or this server has no TCP listener (responses over a new
        connection, and the Via, need one; logged once).
        """
        if target.transport != "UDP" or self.udpMtu is None or size <= self.udpMtu:
            return None
        if not self.tcpPorts:
            if not self._noStreamLogged:
                self._noStreamLogged = True
                self.log.warn(
                    "a {size}-byte request to {peer} is over udp_mtu ({mtu}"
                    " bytes) but this server has no TCP listener: requests"
                    " over udp_mtu go over UDP (logged once)",
                    size=size,
                    peer=target,
                    mtu=self.udpMtu,
                )
            return None
        key = (target.host, target.port)
        failedAt = self._noStream.get(key)
        if failedAt is not None:
            if self._now() - failedAt < NO_STREAM_MEMORY:
                return None
            del self._noStream[key]
        return Peer("TCP", target.host, target.port)

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _streamFailed(self, host: str, port: int) -> None:
        """Remember that a TCP connection attempt to ``host:port`` failed."""
        if len(self._noStream) >= NO_STREAM_ENTRIES:
            # Bounded: the oldest entry makes room.
            del self._noStream[next(iter(self._noStream))]
        self._noStream[(host, port)] = self._now()

    def connectionFor(self, target: Peer) -> SIPStreamProtocol | None:
        """The open stream connection that bytes for ``target`` go over, if any.

        The one the target names while it is open, or else an open one to
        the target's address over the target's transport (a TLS target is
        never sent to over a TCP connection, nor the other way round).
        """
        named = target.connection
        if isinstance(named, SIPStreamProtocol) and named.connected:
            return named
        connection = self.connections.get((target.host, target.port))
        if (
            connection is not None
            and connection.connected
            and connection.transportName == target.transport
        ):
            return connection
        return None

    def _connectAndSend(self, data: bytes, target: Peer) -> defer.Deferred[None]:
        """Connect to ``target`` and send; later sends wait for the same connection."""
        if self.reactor is None:
            return defer.fail(TransportError("no reactor to connect with"))
        if target.transport == "TLS" and self.clientTLS is None:
            return defer.fail(TransportError("no TLS client options to connect with"))
        key = (target.host, target.port)
        sent: defer.Deferred[None] = defer.Deferred()
        waiting = self._connecting.get(key)
        if waiting is not None:
            waiting.append((data, sent))
            return sent
        waiting = self._connecting[key] = [(data, sent)]
        endpointClass = TCP6ClientEndpoint if ":" in target.host else TCP4ClientEndpoint
        endpoint: Any = endpointClass(
            self.reactor, target.host, target.port, timeout=10
        )
        if target.transport == "TLS":
            assert self.clientTLS is not None
            endpoint = wrapClientTLS(
                self.clientTLS(target.serverName or target.host), endpoint
            )

        def connected(protocol: object) -> None:
            assert isinstance(protocol, SIPStreamProtocol)
            if self._connecting.get(key) is waiting:
                del self._connecting[key]
            for queued, d in waiting:
                if protocol.connected:
                    self._writeStream(protocol, queued)
                    d.callback(None)
                else:
                    d.errback(TransportError(f"connection to {target} lost"))

        def failed(failure: Failure) -> None:
            if self._connecting.get(key) is waiting:
                del self._connecting[key]
            reason = f"cannot connect to {target}: {failure.getErrorMessage()}"
            kind = StreamRefused if _retriesOverUDP(failure) else TransportError
            if kind is StreamRefused and target.transport == "TCP":
                self._streamFailed(target.host, target.port)
            for _, d in waiting:
                d.errback(kind(reason))

        endpoint.connect(self._clientFactories[target.transport]).addCallbacks(
            connected, failed
        )
        return sent

    def _writeStream(self, connection: SIPStreamProtocol, data: bytes) -> None:
        self.stats.sent += 1
        if self.trace:
            self._traceOut(data, connection.peer)
        connection.send(data)

    def _writeDatagram(
        self, protocol: SIPDatagramProtocol, data: bytes, host: str, port: int
    ) -> None:
        self.stats.sent += 1
        if self.trace:
            self._traceOut(data, Peer("UDP", host, port))
        protocol.send(data, host, port)

    def _udpFor(self, host: str) -> SIPDatagramProtocol | None:
        """Pick a UDP listener of the right address family."""
        family6 = ":" in host
        for protocol in self.udp:
            transport = protocol.transport
            if transport is None:
                continue
            local = transport.getHost()
            if (":" in local.host) == family6 or local.host in ("", "::"):
                return protocol
        return None

    # -- addresses of our own -------------------------------------------------

    def localAddress(self, target: Peer) -> tuple[str, int]:
        """The host and port to put in Via and Contact for ``target``."""
        if target.transport == "UDP":
            protocol = target.connection
            if not isinstance(protocol, SIPDatagramProtocol):
                protocol = self._udpFor(target.host)
            port = DEFAULT_PORT
            host = "127.0.0.1"
            if protocol is not None and protocol.transport is not None:
                local = protocol.transport.getHost()
                host, port = local.host, local.port
        else:
            ports = self.tlsPorts if target.transport == "TLS" else self.tcpPorts
            port = ports[0] if ports else defaultPort(target.transport)
            host = "0.0.0.0"
            connection = target.connection
            if not isinstance(connection, SIPStreamProtocol):
                connection = self.connections.get((target.host, target.port))
            if connection is not None and connection.transport is not None:
                host = connection.transport.getHost().host
        if self.advertisedHost:
            return self.advertisedHost, port
        if host in ("0.0.0.0", "::", ""):
            host = self._routeTo(target.host)
        return host, port

    def _routeTo(self, host: str) -> str:
        """The local address the kernel would use to reach ``host``."""
        cached = self._localHosts.get(host)
        if cached is not None:
            return cached
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_DGRAM)
        try:
            probe.connect((host, 9))
            local = str(probe.getsockname()[0])
        except OSError:
            local = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        finally:
            probe.close()
        if len(self._localHosts) < 4096:
            self._localHosts[host] = local
        return local

    def makeVia(self, target: Peer, branch: str) -> Via:
        """The Via for a request we send to ``target``."""
        host, port = self.localAddress(target)
        if ":" in host:
            host = f"[{host}]"
        return Via(target.transport, host, port, {"branch": branch, "rport": None})

    def contactURI(
        self, target: Peer, user: str | None = None, secure: bool = False
    ) -> SIPURI:
        """A URI that reaches this server over the transport of ``target``.

        Over TLS, ``secure`` (the request's URI was ``sips:``) makes a
        ``sips:`` URI (RFC 3261 section 8.1.1.8, RFC 5630 section 3.1.3);
        otherwise the URI names its transport (``;transport=tls``).
        """
        host, port = self.localAddress(target)
        if ":" in host:
            host = f"[{host}]"
        params: dict[str, str | None] = {}
        if secure and target.transport == "TLS":
            return SIPURI(host, user, port, params, scheme="sips")
        if target.transport != "UDP":
            params["transport"] = target.transport.lower()
        return SIPURI(host, user, port, params)

    # -- resolution (RFC 3263) --------------------------------------------------

    async def resolve(self, uri: SIPURI, connection: Any = None) -> Peer:
        """Find where to send a request for ``uri`` (RFC 3263 section 4).

        The transport is the URI's ``transport`` parameter, else TLS for a
        ``sips:`` URI and UDP for a ``sip:`` one. An IP literal is used as it
        is; a host with a port is looked up for its address; a host without
        a port is looked up as ``_sip._udp`` (``_sip._tcp``, ``_sips._tcp``)
        SRV first and then as an address on port 5060 (5061 for TLS). A TLS
        peer keeps the URI's host as the name its certificate must show.

        Raises:
            TransportError: the host cannot be resolved.
        """
        transport = uri.transport or ("TLS" if uri.scheme == "sips" else "UDP")
        if uri.scheme == "sips" and transport == "TCP":
            # RFC 5630 section 3.1.3: sips with transport=tcp still means TLS.
            transport = "TLS"
        if transport not in ("UDP", "TCP", "TLS"):
            raise TransportError(f"unsupported transport {transport}")
        host = uri.params.get("maddr") or uri.host
        host = host.strip("[]")
        name = host if transport == "TLS" else None
        port = uri.port or defaultPort(transport)
        if isIPAddress(host):
            return Peer(transport, host, port, connection, name)
        if self.resolver is None:
            raise TransportError(f"cannot resolve {host}: no resolver")
        if uri.port is None:
            service = (
                "_sips._tcp" if transport == "TLS" else f"_sip._{transport.lower()}"
            )
            target = await self._lookupSRV(f"{service}.{host}")
            if target is not None:
                srvHost, srvPort = target
                if not srvHost:
                    # RFC 2782: a target of "." means "no service here".
                    raise TransportError(f"no SIP service at {host}")
                address = await self._lookupAddress(srvHost)
                return Peer(transport, address, srvPort, connection, name)
        address = await self._lookupAddress(host)
        return Peer(transport, address, port, connection, name)

    async def _lookupSRV(self, name: str) -> tuple[str, int] | None:
        try:
            answers, _, _ = await self.resolver.lookupService(name)
        except Exception:
            # Any DNS failure means "no SRV": fall back to an address lookup.
            return None
        records = [
            a.payload for a in answers if a.type == dns.SRV and a.payload is not None
        ]
        if not records:
            return None
        best = min(r.priority for r in records)
        candidates = [r for r in records if r.priority == best]
        total = sum(r.weight for r in candidates)
        if total:
            pick = random.uniform(0, total)  # load spreading, not security
            for record in candidates:
                pick -= record.weight
                if pick <= 0:
                    break
        else:
            record = candidates[0]
        return str(record.target).rstrip("."), int(record.port)

    async def _lookupAddress(self, host: str) -> str:
        try:
            address = await self.resolver.getHostByName(host)
        except Exception as e:  # every failure is "cannot resolve"
            raise TransportError(f"cannot resolve {host}: {e}") from None
        return str(address)

    # -- trace ------------------------------------------------------------------

    def _traceIn(self, data: bytes, peer: Peer | None) -> None:
        self.log.info(
            "SIP in from {peer}:\n{text}",
            peer=peer,
            text=data.decode("utf-8", "replace"),
        )

    def _traceOut(self, data: bytes, peer: Peer | None) -> None:
        self.log.info(
            "SIP out to {peer}:\n{text}",
            peer=peer,
            text=data.decode("utf-8", "replace"),
        )


def _sameAddress(sentBy: str, source: str) -> bool:
    """Whether a Via sent-by host is the IP address ``source``."""
    if sentBy == source:
        return True
    try:
        return ipaddress.ip_address(sentBy.strip("[]")) == ipaddress.ip_address(source)
    except ValueError:
        return False


def _stampVia(request: SIPRequest, peer: Peer) -> None:
    """Add received and rport to the top Via (RFC 3261 18.2.1, RFC 3581 4).

    Raises:
        SIPParseError: there is no Via, or the top Via is malformed.
    """
    via = request.topVia
    params = via.params
    changed = False
    # RFC 3581 section 4: an empty rport asks for the source port, and then
    # received is added even when it equals the sent-by host.
    askedRport = "rport" in params and params["rport"] is None
    if askedRport or not _sameAddress(via.host, peer.host):
        params["received"] = peer.host
        changed = True
    if askedRport:
        params["rport"] = str(peer.port)
        changed = True
    if not changed:
        return
    lines = request._index["via"]
    first = lines[0]
    if "," in first:
        parts = splitList(first)
        parts[0] = str(via)
        newFirst = ", ".join(parts)
    else:
        newFirst = str(via)
    lines[0] = newFirst
    headers = request.headers
    for i, (name, _) in enumerate(headers):
        if name == "via":
            headers[i] = ("via", newFirst)
            break


__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "DEFAULT_UDP_MTU",
    "MAX_DATAGRAM",
    "RELIABLE",
    "STREAMS",
    "ClientTLS",
    "MessageSink",
    "Peer",
    "SIPDatagramProtocol",
    "SIPStreamFactory",
    "SIPStreamProtocol",
    "SIPTransports",
    "Statistics",
    "StreamRefused",
    "StreamWatcher",
    "TransportError",
    "datagramFits",
    "defaultPort",
]
