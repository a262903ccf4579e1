"""The server and user agents over real loopback sockets, for end-to-end tests.

Each takes the reactor it runs on; the tests give the global one, which trial
runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, ssl
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.protocols.policies import WrappingFactory

from presence.sip.message import SIPMessage, SIPRequest, SIPResponse, responseTo
from presence.sip.parser import StreamFramer, parseDatagram
from presence.tap import Options, StackService, makeService

_counter = itertools.count(1)


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
        """Fire ``lost``."""
        self.lost.callback(None)


def startServer(
    reactor: Any, *argv: str, prepare: Callable[[StackService], None] | None = None
) -> tuple[StackService, int, int]:
    """Start the server on ``reactor``, on ephemeral loopback ports.

    Args:
        reactor: the reactor the server runs on.
        argv: more command-line options; without ``--database`` or
            ``--config`` the store is in memory; without ``--admin-listen``
            there is no administration site (`startServerWithAdmin` has one).
        prepare: called with the service tree before it starts.

    Returns:
        The running service, its UDP port and its TCP port.
    """
    options = Options()
    options.parseOptions(
        [
            "--listen",
            "udp:0:interface=127.0.0.1",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            *(
                ()
                if {"--database", "--config"} & set(argv)
                else ("--database", "memory")
            ),
            *(() if "--admin-listen" in argv else ("--admin-listen", "none")),
            *argv,
        ]
    )
    server: StackService = makeService(options, reactor)
    if prepare is not None:
        prepare(server)
    server.startService()
    transports = server.stack.transports
    udpPort = transports.udp[0].transport.getHost().port  # type: ignore[union-attr]
    tcpPort = transports.tcpPorts[0]
    return server, udpPort, tcpPort


class TrackingFactory(WrappingFactory):
    """Wraps a factory to know its open connections and wait for them to close."""

    def __init__(self, wrappedFactory: Any) -> None:
        """Track the connections of ``wrappedFactory``."""
        super().__init__(wrappedFactory)
        self._emptyWaiters: list[defer.Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        """A connection closed: fire the waiters once none is left."""
        super().unregisterProtocol(p)
        if not self.protocols:
            waiters, self._emptyWaiters = self._emptyWaiters, []
            for d in waiters:
                d.callback(None)

    def whenClosed(self) -> defer.Deferred[None]:
        """Fires when no connection is open (at once if none is)."""
        if not self.protocols:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._emptyWaiters.append(d)
        return d


async def startServerWithAdmin(
    reactor: Any, *argv: str
) -> tuple[StackService, int, int, int, TrackingFactory]:
    """`startServer` with the administration site on an ephemeral loopback port.

    The site's connections are tracked: a test waits for them to be closed
    (the clients close them) before it ends, so that none is left open.

    Returns:
        The running service, its UDP, TCP and administration ports, and the
        tracker of the administration connections.
    """
    trackers: list[TrackingFactory] = []

    def track(server: StackService) -> None:
        admin: Any = server.getServiceNamed("admin")
        trackers.append(TrackingFactory(admin.factory))
        admin.factory = trackers[0]

    server, udpPort, tcpPort = startServer(
        reactor, "--admin-listen", "tcp:0:interface=127.0.0.1", *argv, prepare=track
    )
    admin: Any = server.getServiceNamed("admin")
    # The endpoint service keeps the Deferred of its listening port.
    port = await admin._waitingForPort
    return server, udpPort, tcpPort, int(port.getHost().port), trackers[0]


async def connectTCP(reactor: Any, port: int) -> TCPClient:
    """Connect a TCP client to the server on loopback ``port``."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    client = TCPClient()
    await connectProtocol(endpoint, client)
    return client


def listenUDP(reactor: Any) -> tuple[UDPClient, Any]:
    """Open a UDP client socket on loopback; return it and its port."""
    client = UDPClient()
    port = reactor.listenUDP(0, client, interface="127.0.0.1")
    return client, port


# -- a user agent over real sockets -------------------------------------------------


class _DatagramLeg(DatagramProtocol):
    """A UDP socket handing each datagram to its user agent."""

    noisy = False

    def __init__(self, ua: SocketUA) -> None:
        self.ua = ua

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.ua._bytesReceived(datagram, addr)


class _StreamLeg(Protocol):
    """A TCP connection handing each framed message to its user agent."""

    def __init__(self, ua: SocketUA) -> None:
        self.ua = ua
        self.framer = StreamFramer()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        for item in self.framer.dataReceived(data):
            if isinstance(item, SIPMessage):
                self.ua._messageReceived(item)
            elif isinstance(item, Exception):
                self.ua.errors.append(f"cannot frame: {item}")

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class SocketUA:
    """A SIP user agent on a real loopback socket, for the end-to-end tests.

    It sends requests to the server and waits for their final response, and
    answers every request the server sends it (NOTIFYs) with ``notifyCode``,
    queueing each new one in `notifications`; a retransmission is answered
    again but queued once. Over TCP and TLS everything goes over one
    connection (TLS: with ``tlsOptions``, by default any certificate), and
    the Contact names ``contactPort`` (by default the local port), so that a
    test can name a port where nothing listens.

    Attributes:
        notifications: the requests received and not yet taken.
        errors: what could not be parsed or matched; a test expects none.
        notifyCode: the status answering the server's requests.
    """

    def __init__(
        self,
        reactor: Any,
        user: str,
        serverPort: int,
        transport: str = "UDP",
        domain: str = "example.com",
        notifyCode: int = 200,
        contactPort: int | None = None,
        timeout: float = 5.0,
        tlsOptions: Any = None,
    ) -> None:
        """A user agent for ``user@domain`` talking to 127.0.0.1:``serverPort``.

        Its socket and its timeouts are ``reactor``'s.
        """
        self.reactor = reactor
        self.user = user
        self.domain = domain
        self.serverPort = serverPort
        self.transport = transport.upper()
        self.notifyCode = notifyCode
        self.contactPort = contactPort
        self.timeout = timeout
        self.tlsOptions = tlsOptions
        self.tag = f"{user}-{next(_counter)}"
        self.cseq = 0
        self.notifications: defer.DeferredQueue[SIPRequest] = defer.DeferredQueue()
        self.errors: list[str] = []
        self.callId: str | None = None
        self.toTag: str | None = None
        self.presentity: str | None = None
        self._waiting: dict[str, defer.Deferred[SIPResponse]] = {}
        self._answered: dict[tuple[str, str], int] = {}
        self._port: Any = None
        self._stream: _StreamLeg | None = None

    @property
    def aor(self) -> str:
        """The user agent's address of record."""
        return f"sip:{self.user}@{self.domain}"

    @property
    def localPort(self) -> int:
        """The local port of the socket or connection."""
        if self._stream is not None:
            assert self._stream.transport is not None
            host: Any = self._stream.transport.getHost()
            return int(host.port)
        assert self._port is not None
        return int(self._port.getHost().port)

    async def start(self) -> SocketUA:
        """Open the socket (UDP) or the connection (TCP, TLS) to the server."""
        if self.transport == "UDP":
            self._port = self.reactor.listenUDP(
                0, _DatagramLeg(self), interface="127.0.0.1"
            )
        else:
            leg = _StreamLeg(self)
            endpoint: Any = TCP4ClientEndpoint(
                self.reactor, "127.0.0.1", self.serverPort
            )
            if self.transport == "TLS":
                options = self.tlsOptions or ssl.CertificateOptions(verify=False)
                endpoint = wrapClientTLS(options, endpoint)
            await connectProtocol(endpoint, leg)
            self._stream = leg
        return self

    def close(self) -> defer.Deferred[None]:
        """Close the socket or connection; fires when it is closed."""
        for d in list(self._waiting.values()):
            d.cancel()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            if stream.transport is not None:
                stream.transport.loseConnection()
            return stream.lost
        if self._port is not None:
            port, self._port = self._port, None
            return defer.maybeDeferred(port.stopListening)
        return defer.succeed(None)

    # -- sending --------------------------------------------------------------

    def build(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        callId: str | None = None,
        toTag: str | None = None,
        branch: str | None = None,
        to: str | None = None,
    ) -> tuple[bytes, str]:
        """Build a request; return its bytes and its branch.

        The To is ``to`` (by default the Request-URI), with ``toTag``.
        """
        self.cseq += 1
        branch = branch or f"z9hG4bK-ua-{next(_counter)}"
        to = f"<{to or uri}>" + (f";tag={toTag}" if toTag else "")
        contactPort = self.contactPort or self.localPort
        params = (
            "" if self.transport == "UDP" else f";transport={self.transport.lower()}"
        )
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} 127.0.0.1:{self.localPort}"
            f";branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <{self.aor}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {callId or f'{method.lower()}-{next(_counter)}@127.0.0.1'}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{self.user}@127.0.0.1:{contactPort}{params}>",
            *(f"{name}: {value}" for name, value in headers or []),
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body, branch

    def sendBytes(self, data: bytes) -> None:
        """Send raw bytes to the server; nothing once closed."""
        if self._stream is not None:
            assert self._stream.transport is not None
            self._stream.transport.write(data)
        elif self._port is not None:
            self._port.write(data, ("127.0.0.1", self.serverPort))

    async def request(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        callId: str | None = None,
        toTag: str | None = None,
        to: str | None = None,
    ) -> SIPResponse:
        """Send a request and wait for its final response.

        Raises:
            twisted.internet.defer.TimeoutError: no final response in time.
        """
        data, branch = self.build(method, uri, headers, body, callId, toTag, to=to)
        return await self.sendRequest(data, branch)

    async def sendRequest(self, data: bytes, branch: str) -> SIPResponse:
        """Send a request built beforehand and wait for its final response.

        Args:
            data: the request's bytes, as `build` made them or changed.
            branch: its Via branch, which the response carries back.

        Raises:
            twisted.internet.defer.TimeoutError: no final response in time.
        """
        waiting: defer.Deferred[SIPResponse] = defer.Deferred()
        self._waiting[branch] = waiting
        waiting.addTimeout(self.timeout, self.reactor)
        self.sendBytes(data)
        try:
            return await waiting
        finally:
            self._waiting.pop(branch, None)

    async def ping(self) -> SIPResponse:
        """OPTIONS to the server: everything it sent before has arrived."""
        return await self.request("OPTIONS", f"sip:127.0.0.1:{self.serverPort}")

    async def register(self, expires: int = 600) -> SIPResponse:
        """REGISTER the Contact for the address of record."""
        return await self.request(
            "REGISTER", f"sip:{self.domain}", [("Expires", str(expires))], to=self.aor
        )

    async def publish(
        self,
        body: bytes | None = None,
        etag: str | None = None,
        expires: int | None = 3600,
        event: str = "presence",
        contentType: str = "application/pidf+xml",
    ) -> SIPResponse:
        """PUBLISH for the address of record; return the response."""
        headers = [("Event", event)]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        if etag is not None:
            headers.append(("SIP-If-Match", etag))
        if body:
            headers.append(("Content-Type", contentType))
        return await self.request("PUBLISH", self.aor, headers, body or b"")

    async def subscribe(
        self,
        presentity: str | None = None,
        expires: int = 600,
        event: str = "presence",
        accept: str = "application/pidf+xml",
        callId: str | None = None,
    ) -> SIPResponse:
        """SUBSCRIBE to presence: a new dialog, or a refresh of this one.

        With ``presentity`` a new dialog starts (with ``callId`` if given);
        without, the request goes inside the dialog a previous 2xx made
        (``expires=0`` ends it).
        """
        headers = [
            ("Event", event),
            ("Expires", str(expires)),
            ("Accept", accept),
        ]
        if presentity is not None:
            self.presentity = presentity
            self.callId = callId or f"sub-{next(_counter)}@127.0.0.1"
            self.toTag = None
        assert self.presentity is not None and self.callId is not None
        response = await self.request(
            "SUBSCRIBE",
            self.presentity,
            headers,
            callId=self.callId,
            toTag=self.toTag,
        )
        if presentity is not None and 200 <= response.code < 300:
            self.toTag = response.toAddr.tag
        return response

    async def notify(self) -> SIPRequest:
        """The next request the server sent (a NOTIFY), waiting for it.

        Raises:
            twisted.internet.defer.TimeoutError: none came in ``timeout``.
        """
        d = self.notifications.get()
        d.addTimeout(self.timeout, self.reactor)
        return await d

    # -- receiving --------------------------------------------------------------

    def _bytesReceived(self, data: bytes, source: Any) -> None:
        if data.strip(b"\r\n") == b"":
            return
        try:
            message = parseDatagram(data)
        except Exception as e:
            self.errors.append(f"cannot parse: {e!r}")
            return
        self._messageReceived(message, source)

    def _messageReceived(self, message: SIPMessage, source: Any = None) -> None:
        """Match a response, or answer a request (to where it came from)."""
        if isinstance(message, SIPResponse):
            try:
                branch = message.topVia.branch or ""
            except Exception as e:
                self.errors.append(f"bad Via in a response: {e!r}")
                return
            waiting = self._waiting.get(branch)
            if message.code < 200:
                return
            if waiting is None or waiting.called:
                self.errors.append(f"unexpected response {message!r}")
                return
            waiting.callback(message)
            return
        assert isinstance(message, SIPRequest)
        if message.method == "ACK":
            return
        key = (message.callId, message.header("cseq") or "")
        new = key not in self._answered
        code = self._answered.setdefault(key, self.notifyCode)
        # Answer before queueing: the test may go on (and close) at once.
        response = responseTo(message, code, toTag=self.tag).toBytes()
        if source is not None and self._port is not None:
            # RFC 3261 18.2.2: to the source of the request (rport), which
            # is the server that sent it, whichever this UA talks to now.
            self._port.write(response, source)
        else:
            self.sendBytes(response)
        if new:
            self.notifications.put(message)


async def unusedTCPPort(reactor: Any) -> int:
    """A loopback TCP port where nothing listens (just found free)."""
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await endpoint.listen(Factory.forProtocol(Protocol))
    address: Any = port.getHost()
    await defer.maybeDeferred(port.stopListening)
    return int(address.port)
