"""The DNS resolver the transports use for RFC 3263 look-ups.

Twisted's default resolver re-reads ``/etc/resolv.conf`` every minute on a
timer of its own; this one reads the name servers once, when the first look-up
is made, so that a server that never resolves a name never schedules anything.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IResolver
from twisted.names import cache, client, hosts, resolve


def readNameServers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The ``nameserver`` lines of a resolv.conf, or the loopback server."""
    servers: list[tuple[str, int]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append((parts[1], 53))
    except OSError:
        pass
    return servers or [("127.0.0.1", 53)]


class LazyResolver:
    """Builds a hosts-file, cache and DNS resolver chain on first use.

    It offers the two look-ups the transports make: ``lookupService`` and
    ``getHostByName``, with the signatures of ``IResolver``.
    """

    def __init__(
        self,
        reactor: Any,
        resolvConf: str = "/etc/resolv.conf",
        hostsFile: str = "/etc/hosts",
    ) -> None:
        """Remember where to read the configuration from."""
        self.reactor = reactor
        self.resolvConf = resolvConf
        self.hostsFile = hostsFile
        self._resolver: IResolver | None = None

    def _get(self) -> IResolver:
        if self._resolver is None:
            servers = readNameServers(self.resolvConf)
            self._resolver = resolve.ResolverChain(
                [
                    hosts.Resolver(file=self.hostsFile),
                    cache.CacheResolver(reactor=self.reactor),
                    client.Resolver(servers=servers, reactor=self.reactor),
                ]
            )
        return self._resolver

    def lookupService(self, name: str, timeout: Any = None) -> Any:
        """Look up SRV records."""
        return self._get().lookupService(name, timeout)

    def getHostByName(self, name: str, timeout: Any = None) -> Any:
        """Look up an address."""
        return self._get().getHostByName(name, timeout)
