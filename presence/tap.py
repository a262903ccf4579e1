"""The ``twistd presence`` command: options, and the service tree they build.

The stack itself is built by `presence.stack.buildStack`; this module adds
the services that listen, start and stop it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
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
            self.config = fromMapping(overrides, config).validate()
        except ConfigError as e:
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


def makeService(options: Options, reactor: Any = None) -> StackService:
    """Build the service tree for the options given.

    Args:
        options: the parsed options.
        reactor: what the server runs on; twistd, which calls this with the
            options alone, gets the global reactor.
    """
    if reactor is None:
        from twisted.internet import reactor as defaultReactor

        reactor = defaultReactor
    config = options.config
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
    for address in config.listenAddresses:
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
