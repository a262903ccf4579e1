"""A TCP proxy whose connections can be cut: a database going away."""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.protocols import portforward
from twisted.python.failure import Failure


class _CuttableServer(portforward.ProxyServer):
    factory: CuttableProxy

    def connectionMade(self) -> None:
        self.factory.servers.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.factory.servers.discard(self)
        super().connectionLost(reason)


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
