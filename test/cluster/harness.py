"""Several servers of one cluster in one test process, on one real PostgreSQL.

Each server (`Node`) is the stack `presence.stack.buildStack` builds, on a
fake clock of its own (`MemoryReactorClock`: its timers, heartbeats and
sweeps move only when the test advances it) and an in-memory UDP socket,
while its PostgreSQL connections run on the real reactor. `Cluster` records
everything every server sends, in the order it was sent, answers the
NOTIFYs of the user agents that want it, and lets a test wait for a
condition: it is checked again after each event the stack fires (a message
sent, a request handled, a notifier idle, a signal acted on, a heartbeat),
never after a length of time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from presence.config import Config
from presence.sip.message import SIPMessage, SIPRequest, SIPResponse, responseTo
from presence.sip.parser import StreamFramer, parseDatagram
from presence.sip.transport import SIPStreamProtocol
from presence.stack import Stack, buildStack
from presence.storage.waiters import Waiters
from presence.testing import FakeDatagramTransport, Subscriber

#: Where every server's clock starts: the same Unix time for all of them.
EPOCH = 1_700_000_000.0

_branches = itertools.count(1)


@dataclass
class Sent:
    """One message a server sent.

    Attributes:
        node: the server's name.
        message: the message.
        to: where it went, ``(host, port)``.
        transport: ``UDP``, or ``TCP`` when it went over a connection.
    """

    node: str
    message: SIPMessage
    to: tuple[str, int]
    transport: str = "UDP"


class _Socket(FakeDatagramTransport):
    """The fake UDP socket of one node, reporting each datagram to the cluster."""

    def __init__(self, cluster: Cluster, node: str, host: str) -> None:
        super().__init__(host, 5060)
        self.cluster = cluster
        self.node = node

    def write(self, packet: bytes, addr: tuple[str, int] | None = None) -> None:
        super().write(packet, addr)
        assert addr is not None
        self.cluster.sent(Sent(self.node, parseDatagram(packet), addr))


class _Connection(StringTransport):
    """A client's TCP connection to one node, reporting what the node writes."""

    def __init__(self, cluster: Cluster, node: str, host: str, port: int) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "192.0.2.1", 5060),
            peerAddress=IPv4Address("TCP", host, port),
        )
        self.cluster = cluster
        self.node = node
        self.to = (host, port)
        self.framer = StreamFramer()

    def write(self, data: bytes) -> None:
        super().write(data)
        for message in self.framer.dataReceived(data):
            if isinstance(message, SIPMessage):
                self.cluster.sent(Sent(self.node, message, self.to, "TCP"))


class Node:
    """One server of the cluster."""

    def __init__(
        self, cluster: Cluster, name: str, host: str, database: str, **settings: Any
    ) -> None:
        """Build server ``name`` at ``host`` on ``database`` (not started)."""
        self.cluster = cluster
        self.name = name
        self.host = host
        self.clock = MemoryReactorClock()
        self.clock.advance(EPOCH)
        settings.setdefault("sourceRateLimit", 0)
        settings.setdefault("adminListen", "none")
        self.config = Config(
            database=database,
            fallback2db=True,
            serverId=name,
            listen=("udp:5060", "tcp:5060"),
            **settings,
        ).validate()
        self.stack: Stack = buildStack(self.config, self.clock, databaseReactor=reactor)
        self.socket = _Socket(cluster, name, host)
        self.protocol = self.stack.transports.datagramProtocol()
        self.protocol.makeConnection(self.socket)
        self.stack.transports.tcpListening(5060)
        self.handling = 0
        for method, handler in list(self.stack.dispatcher.handlers.items()):
            self.stack.dispatcher.handlers[method] = self._tracked(handler)
        # A sweep under way is work too: a tick during one is skipped.
        sweeper: Any = self.stack.sweeper
        sweeper.sweep = self._tracked(sweeper.sweep)
        self.running = False
        #: Cut from the database: the signals sent to it never arrive.
        self.deaf = False

    def _tracked(self, handler: Any) -> Any:
        async def tracked(*args: Any) -> None:
            self.handling += 1
            try:
                await handler(*args)
            finally:
                self.handling -= 1
                self.cluster.event()

        return tracked

    @property
    def member(self) -> Any:
        """The node's cluster member."""
        assert self.stack.cluster is not None
        return self.stack.cluster

    async def start(self) -> None:
        """Open the store, join the cluster, beat once, start sweeping."""
        self.stack.storage.startService()
        await self.stack.storage.whenLoaded()
        self.member.startService()
        self.stack.sweeper.startService()
        self.running = True

    async def beat(self) -> None:
        """Advance the clock one heartbeat interval; wait for that heartbeat."""
        beaten = self.member.whenBeaten()
        self.clock.advance(self.member.interval)
        await beaten

    def advance(self, seconds: float) -> None:
        """Let this node's time pass (timers, sweeps, heartbeats fire)."""
        self.clock.advance(seconds)

    async def stop(self) -> None:
        """A clean stop: leave the cluster, close the store."""
        if not self.running:
            return
        self.running = False
        self.stack.sweeper.stopService()
        await self.member.stopService()
        self.stack.transactions.stop()
        await self.stack.storage.stopService()

    def pause(self) -> None:
        """Stop beating, as a process stalled or cut from the others would."""
        self.member.stopBeating()

    def resume(self) -> None:
        """Beat again, every interval from now."""
        self.member.startService()

    async def crash(self) -> None:
        """Stop without a goodbye: the heartbeat ends, nothing is sent or kept."""
        if not self.running:
            return
        self.running = False
        self.member.stopBeating()
        self.member.listener.close()
        self.stack.sweeper.stopService()
        self.stack.transactions.stop()
        await self.stack.storage.abort()

    def receive(self, data: bytes, source: tuple[str, int]) -> None:
        """A datagram from ``source`` arrives."""
        self.protocol.datagramReceived(data, source)

    def tcp(self, host: str, port: int) -> tuple[SIPStreamProtocol, _Connection]:
        """A client's TCP connection, accepted."""
        protocol = self.stack.transports.streamFactory.buildProtocol(
            IPv4Address("TCP", host, port)
        )
        assert isinstance(protocol, SIPStreamProtocol)
        transport = _Connection(self.cluster, self.name, host, port)
        protocol.makeConnection(transport)
        return protocol, transport


class Cluster:
    """Nodes, what they sent, and waiting for conditions."""

    def __init__(self, database: str) -> None:
        """Nodes on ``database``, added by `node`."""
        self.database = database
        self.nodes: dict[str, Node] = {}
        self.log: list[Sent] = []
        self.autoAnswer: set[tuple[str, int]] = set()
        #: The TCP connections of user agents that answer their NOTIFYs.
        self.tcpAnswer: dict[tuple[str, int], SIPStreamProtocol] = {}
        #: NOTIFYs sent and not answered yet, by user agent address.
        self.unanswered: dict[tuple[str, int], int] = {}
        #: The most NOTIFYs ever unanswered at once, by user agent address.
        self.mostUnanswered: dict[tuple[str, int], int] = {}
        self._events = Waiters()
        self._seen: set[tuple[str, int]] = set()

    def node(
        self, name: str, host: str, database: str | None = None, **settings: Any
    ) -> Node:
        """A new node (not started), on the cluster's database or ``database``."""
        node = Node(self, name, host, database or self.database, **settings)
        self.nodes[name] = node
        return node

    def sent(self, sent: Sent) -> None:
        """A node sent a message; answer it if its user agent wants that."""
        self.log.append(sent)
        message = sent.message
        if isinstance(message, SIPRequest) and message.method == "NOTIFY":
            to = sent.to
            answer = responseTo(message, 200, toTag=None).toBytes()
            if to in self.autoAnswer or to in self.tcpAnswer:
                # Each NOTIFY is counted once, not at each retransmission.
                first = (message.callId, message.cseq.number) not in self._seen
                self._seen.add((message.callId, message.cseq.number))
                if first:
                    self.unanswered[to] = self.unanswered.get(to, 0) + 1
                    self.mostUnanswered[to] = max(
                        self.mostUnanswered.get(to, 0), self.unanswered[to]
                    )
                    reactor.callLater(0, self._answer, sent, answer)
        self.event()

    def _answer(self, sent: Sent, answer: bytes) -> None:
        node = self.nodes[sent.node]
        self.unanswered[sent.to] -= 1
        if node.running:
            if sent.transport == "TCP":
                self.tcpAnswer[sent.to].dataReceived(answer)
            else:
                node.receive(answer, sent.to)
        self.event()

    def event(self) -> None:
        """Something happened: check the conditions waited on again."""
        reactor.callLater(0, self._events.fire)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds, checking it after each event.

        The events are those the stack fires: messages sent, requests
        handled, notifiers idle, signals acted on, heartbeats. The test's
        timeout bounds the wait.
        """
        while not condition():
            waits: list[defer.Deferred[Any]] = [self._events.wait()]
            for node in self.nodes.values():
                if node.running:
                    waits.append(node.stack.notifier.whenIdle())
                    waits.append(node.member.whenActive())
                    waits.append(node.member.whenBeaten())
            await defer.DeferredList(waits, fireOnOneCallback=True)

    def quiet(self) -> bool:
        """Nothing under way anywhere: no request, NOTIFY or signal."""
        running = [n for n in self.nodes.values() if n.running]
        every = list(self.nodes.values())
        delivered = all(
            sum(m.member.stats.delivered.get(n.name, 0) for m in every)
            == n.member.stats.signalsReceived
            for n in running
            if not n.deaf
        )
        return delivered and all(
            n.member.stats.inFlight == 0
            and not n.member.beating
            and n.handling == 0
            and n.member.handling == 0
            and n.stack.notifier.outstanding == 0
            and n.stack.notifier.queued == 0
            for n in running
        )

    async def settle(self) -> None:
        """Wait until `quiet`."""
        await self.until(self.quiet)

    def to(self, address: tuple[str, int], method: str = "NOTIFY") -> list[Sent]:
        """The requests of ``method`` sent to ``address``, in order."""
        return [
            s
            for s in self.log
            if s.to == address
            and isinstance(s.message, SIPRequest)
            and s.message.method == method
        ]

    async def request(
        self, node: Node, ua: Subscriber, data: bytes, transport: Any = None
    ) -> SIPResponse:
        """Send a request of ``ua`` to ``node``; wait for its final response."""
        request = parseDatagram(data)
        assert isinstance(request, SIPRequest)
        key = (request.callId, request.cseq.number, request.cseq.method)
        start = len(self.log)

        def answered() -> SIPResponse | None:
            for sent in self.log[start:]:
                message = sent.message
                if (
                    isinstance(message, SIPResponse)
                    and message.code >= 200
                    and (message.callId, message.cseq.number, message.cseq.method)
                    == key
                ):
                    return message
            return None

        if transport is None:
            node.receive(data, (ua.host, ua.port))
        else:
            transport.dataReceived(data)
        await self.until(lambda: answered() is not None)
        response = answered()
        assert response is not None
        return response


class Watcher(Subscriber):
    """A user agent keeping one subscription, sent to whichever node it likes."""

    def __init__(self, user: str, host: str, port: int = 5070) -> None:
        """A watcher at ``host``:``port``; it sends nothing by itself."""
        super().__init__(None, user, host, port)  # type: ignore[arg-type]  # no server
        self.callId = ""
        self.toTag: str | None = None
        self.presentity = ""

    @property
    def address(self) -> tuple[str, int]:
        """Where it receives."""
        return (self.host, self.port)

    def subscribeBytes(
        self,
        presentity: str = "sip:bob@example.com",
        expires: int = 600,
        event: str = "presence",
        refresh: bool = False,
    ) -> bytes:
        """A SUBSCRIBE (or a refresh of the dialog)."""
        if not refresh:
            self.callId = f"sub-{next(_branches)}@{self.host}"
            self.toTag = None
            self.presentity = presentity
        return self.request(
            "SUBSCRIBE",
            self.presentity,
            [("Event", event), ("Expires", str(expires))],
            callId=self.callId,
            toTag=self.toTag,
        )

    def publishBytes(
        self, body: bytes, etag: str | None = None, expires: int = 3600
    ) -> bytes:
        """A PUBLISH of this user's presence."""
        headers = [("Event", "presence"), ("Expires", str(expires))]
        if etag is not None:
            headers.append(("SIP-If-Match", etag))
        headers.append(("Content-Type", "application/pidf+xml"))
        return self.request("PUBLISH", self.aor, headers, body)
