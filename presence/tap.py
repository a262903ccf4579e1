"""The ``twistd presence`` command: options, and the service tree they build.

The stack itself is built by `presence.stack.buildStack`; this module adds
the services that listen, start and stop it.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

from twisted.application import internet, service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from presence.config import Config, ConfigError, fromMapping, loadFile
from presence.sip.parser import MAX_MESSAGE_SIZE
from presence.stack import Stack, buildStack
from presence.workers import (
    ParentWatch,
    RelayProtocol,
    ResponseRelay,
    SupervisorService,
    WorkerSpec,
)


class Options(usage.Options):
    """Options of ``twistd presence``; they override the configuration file."""

    synopsis = "[options]"
    longdesc = (
        "A SIP presence server. Settings come from --config (TOML) and the"
        " options below, which override the file."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, "TOML configuration file."],
        ["advertised-address", None, None, "Host to put in Via and Contact."],
        [
            "admin-listen",
            None,
            None,
            "Where the admin site (XML-RPC /RPC2, /metrics) listens, as a Twisted"
            ' endpoint (tcp:8080:interface=127.0.0.1), or "none".',
        ],
        [
            "database",
            None,
            None,
            "memory, sqlite:PATH or postgresql://user@host:port/name.",
        ],
        [
            "tcp-idle-timeout",
            None,
            None,
            "Seconds before an idle TCP connection closes.",
            float,
        ],
        [
            "workers",
            None,
            None,
            "Server processes on this machine (shared mode on PostgreSQL).",
            int,
        ],
        [
            "worker",
            None,
            None,
            "Internal: run as a worker of a parent started with workers > 1"
            " (its index, cluster id and sockets, as JSON).",
        ],
    ]
    optFlags: ClassVar[list[list[Any]]] = [
        ["sip-trace", None, "Log every SIP message in and out."],
        [
            "fallback2db",
            None,
            "Shared mode: every read and write goes to the database.",
        ],
    ]

    def __init__(self) -> None:
        """Start with no repeated options."""
        super().__init__()
        self.listen: list[str] = []
        self.domains: list[str] = []
        self.config: Config = Config()
        self.arguments: list[str] = []
        self.worker: WorkerSpec | None = None

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """Parse, keeping the arguments: workers are started with them."""
        import sys

        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, description: str) -> None:
        """Listen on an address such as udp:5060:interface=127.0.0.1.

        Repeatable; given once or more, it replaces the default UDP and TCP
        listeners on port 5060. ``tls:5061:privateKey=KEY:certKey=CERT``
        listens for SIP over TLS (the rest is Twisted's ``ssl:`` endpoint
        syntax).
        """
        self.listen.append(description)

    def opt_domain(self, name: str) -> None:
        """Serve a domain (repeatable); none given serves every domain."""
        self.domains.append(name.lower())

    def postOptions(self) -> None:
        """Read the file, apply the options on top, and check the result."""
        try:
            config = loadFile(self["config"]) if self["config"] else Config()
            overrides: dict[str, Any] = {}
            if self.listen:
                overrides["listen"] = self.listen
            if self.domains:
                overrides["domain"] = self.domains
            if self["sip-trace"]:
                overrides["sip_trace"] = True
            if self["fallback2db"]:
                overrides["fallback2db"] = True
            if self["database"]:
                overrides["database"] = self["database"]
            if self["advertised-address"]:
                overrides["advertised_address"] = self["advertised-address"]
            if self["tcp-idle-timeout"] is not None:
                overrides["tcp_idle_timeout"] = self["tcp-idle-timeout"]
            if self["admin-listen"]:
                overrides["admin_listen"] = self["admin-listen"]
            if self["workers"] is not None:
                overrides["workers"] = self["workers"]
            self.config = fromMapping(overrides, config).validate()
            if self["worker"] is not None:
                self.worker = WorkerSpec.decode(self["worker"])
        except (ConfigError, ValueError) as e:
            raise usage.UsageError(str(e)) from None


@implementer(IStreamServerEndpoint)
class _RecordingEndpoint:
    """Wraps an endpoint to tell the transports which TCP or TLS port it got."""

    def __init__(
        self, endpoint: IStreamServerEndpoint, record: Callable[[int], None]
    ) -> None:
        self.endpoint = endpoint
        self.record = record

    def listen(self, protocolFactory: Any) -> defer.Deferred[IListeningPort]:
        d = self.endpoint.listen(protocolFactory)

        def listening(port: IListeningPort) -> IListeningPort:
            self.record(port.getHost().port)  # type: ignore[attr-defined]
            return port

        d.addCallback(listening)
        return d


class StackService(service.MultiService):
    """Holds the listeners; on stop, cancels every transaction timer."""

    log = Logger()

    def __init__(self, stack: Stack) -> None:
        """Hold the stack."""
        super().__init__()
        self.stack = stack

    def startService(self) -> None:
        """Open the store, then start listening."""
        if self.stack.storage.onRefused is None:
            self.stack.storage.onRefused = self._refuse
        self.stack.storage.startService()
        super().startService()
        tuneGarbageCollector()
        self.log.info(
            "presence server listening on {listen}; administration: {admin}",
            listen=", ".join(self.stack.config.listen),
            admin=self.stack.config.adminListen,
        )

    def _refuse(self, reason: str) -> None:
        """The database cannot be used at all: stop the server's reactor."""
        reactor = self.stack.reactor
        if reactor.running:
            reactor.stop()

    def stopService(self) -> defer.Deferred[None]:
        """Stop listening, cancel the transaction timers, then close the store.

        The store flushes what it holds before it closes; twistd waits for
        that.
        """
        d: defer.Deferred[None] = defer.maybeDeferred(super().stopService)
        d.addCallback(lambda _: self.stack.transactions.stop())
        d.addCallback(lambda _: self.stack.storage.stopService())
        return d


def tuneGarbageCollector() -> None:
    """Make the collector cheaper for a server holding many live objects.

    Everything made at start-up (modules, the stack, the configuration) is
    moved out of the collector's view, and the youngest generation is
    collected less often: under load thousands of transactions are alive at
    any time, and with the default thresholds the collector runs hundreds of
    times a second.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


#: Allocations between collections of the youngest generation (Python's
#: default is 700).
GC_THRESHOLD: Final = 20_000


def makeService(options: Options, reactor: Any = None) -> Any:
    """Build the service tree for the options given.

    With ``workers`` above 1 (and no ``--worker``) this is the parent's
    `SupervisorService <presence.workers.SupervisorService>`, which runs no
    SIP stack; otherwise the server's `StackService`.

    Args:
        options: the parsed options.
        reactor: what the server runs on; twistd, which calls this with the
            options alone, gets the global reactor.
    """
    if reactor is None:
        from twisted.internet import reactor as defaultReactor

        reactor = defaultReactor
    if options.worker is None and options.config.workers > 1:
        return makeSupervisor(options, reactor)
    return makeStackService(options, reactor)


def makeSupervisor(options: Options, reactor: Any) -> SupervisorService:
    """The parent of ``workers = N``: N workers on shared sockets.

    Every worker is given the parent's options (the same file), its index
    and its cluster id (`presence.workers.workerServerId` of ``server_id``,
    by default of ``host:port``).
    """
    config = options.config
    addresses = [
        (a.description, a.transport, a.interface, a.port)
        for a in config.listenAddresses
    ]
    return SupervisorService(
        reactor, config.workers, addresses, config.serverId, options.arguments
    )


def makeStackService(options: Options, reactor: Any) -> StackService:
    """The server: its stack, its listeners and its administration site.

    A worker (``--worker``) takes its listening sockets from its parent, is
    a member of the cluster under the id its parent gave it, and only
    worker 1 has the administration site.
    """
    config = options.config
    worker = options.worker
    if worker is not None:
        config = config.replace(serverId=worker.serverId)
        if worker.index != 1:
            config = config.replace(adminListen="none")
    stack = buildStack(config, reactor)
    top = StackService(stack)
    stack.sweeper.setName("expiry")
    stack.sweeper.setServiceParent(top)
    if stack.cluster is not None:
        stack.cluster.setName("cluster")
        stack.cluster.setServiceParent(top)
    if stack.xcapClient is not None:
        stack.xcapClient.setName("xcap-client")
        stack.xcapClient.setServiceParent(top)
    if stack.rulesWatch is not None:
        stack.rulesWatch.setName("rules-watch")
        stack.rulesWatch.setServiceParent(top)
    if worker is not None:
        _adoptSockets(top, stack, worker, reactor)
        ParentWatch(reactor).setServiceParent(top)
    # A worker's listeners are its parent's sockets.
    for address in [] if worker is not None else config.listenAddresses:
        if address.transport == "udp":
            udp = internet.UDPServer(
                address.port,
                stack.transports.datagramProtocol(),
                interface=address.interface,
                # A whole datagram, up to the largest SIP message over UDP
                # (RFC 3261 section 18.1.1); Twisted reads 8,192 by default.
                maxPacketSize=MAX_MESSAGE_SIZE,
                reactor=reactor,
            )
            udp.setName(address.description)
            udp.setServiceParent(top)
        else:
            # A TLS listener is Twisted's ssl: endpoint (which reads the key
            # and certificate now) around the same protocol, told it is TLS.
            endpoint = serverFromString(reactor, address.endpointDescription())
            tls = address.transport == "tls"
            transports = stack.transports
            tcp = internet.StreamServerEndpointService(
                _RecordingEndpoint(
                    endpoint,
                    transports.tlsListening if tls else transports.tcpListening,
                ),
                transports.tlsFactory if tls else transports.streamFactory,
            )
            tcp.setName(address.description)
            tcp.setServiceParent(top)
    if config.adminListen != "none":
        admin = internet.StreamServerEndpointService(
            serverFromString(reactor, config.adminListen), stack.admin
        )
        admin.setName("admin")
        admin.setServiceParent(top)
    return top


class _AdoptedPort(service.Service):
    """A listening socket the parent bound, taken up at start."""

    def __init__(self, adopt: Callable[[], IListeningPort]) -> None:
        self.adopt = adopt
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        self.port = self.adopt()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        stopped = None if port is None else port.stopListening()
        return defer.succeed(None) if stopped is None else stopped


def _adoptSockets(
    top: service.MultiService, stack: Stack, worker: WorkerSpec, reactor: Any
) -> None:
    """A worker's listeners: the sockets its parent bound and handed down."""
    transports = stack.transports
    for described in worker.sockets:
        fd, family = described.fd, socket.AddressFamily(described.family)
        if described.transport == "udp":

            def adoptUDP(fd: int = fd, family: int = family) -> IListeningPort:
                port: IListeningPort = reactor.adoptDatagramPort(
                    fd,
                    family,
                    transports.datagramProtocol(),
                    maxPacketSize=MAX_MESSAGE_SIZE,
                )
                return port

            adopted = _AdoptedPort(adoptUDP)
        else:

            def adoptTCP(fd: int = fd, family: int = family) -> IListeningPort:
                port: IListeningPort = reactor.adoptStreamPort(
                    fd, family, transports.streamFactory
                )
                transports.tcpListening(port.getHost().port)  # type: ignore[attr-defined]
                return port

            adopted = _AdoptedPort(adoptTCP)
        adopted.setName(described.description)
        adopted.setServiceParent(top)
    if worker.relay is not None:
        # Responses to requests another worker sent go on to it.
        relay = ResponseRelay(stack.transactions, worker.siblings)
        transports.sink = relay
        fd, family = worker.relay.fd, socket.AddressFamily(worker.relay.family)

        def adoptRelay() -> IListeningPort:
            port: IListeningPort = reactor.adoptDatagramPort(
                fd,
                family,
                RelayProtocol(stack.transactions, worker.siblings),
                maxPacketSize=MAX_MESSAGE_SIZE,
            )
            relay.port = port
            return port

        relayed = _AdoptedPort(adoptRelay)
        relayed.setName("relay")
        relayed.setServiceParent(top)
