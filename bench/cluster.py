"""Shared mode in one process: one server, or two servers on one PostgreSQL.

The servers are the stacks `presence.stack.buildStack` builds, on in-memory
UDP sockets whose datagrams this script delivers (no kernel sockets, no
sipp), with their PostgreSQL connections on the real reactor. Clients are
plain functions answering every NOTIFY at once. It reports operations per
second of wall time and this process's CPU milliseconds per operation
(servers and clients together; PostgreSQL's own CPU is not in it).

    python bench/cluster.py --database postgresql://postgres@127.0.0.1:5432/DB
    python bench/cluster.py --servers 2 --ops 2000 --concurrency 50 publish cycle

A cycle is SUBSCRIBE, its NOTIFY, un-SUBSCRIBE, its final NOTIFY (sipp's
subscribe-cycle.xml); with two servers, cycle ``i`` goes to server ``i % 2``.
A publish is an initial PUBLISH of a presentity of its own, to server
``i % 2``.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.testing import MemoryReactorClock

from presence.config import Config
from presence.sip.message import SIPRequest, SIPResponse, responseTo
from presence.sip.parser import parseDatagram
from presence.stack import buildStack
from presence.testing import FakeDatagramTransport, pidf

_ids = itertools.count(1)


class Socket(FakeDatagramTransport):
    """A server's socket: datagrams go to the bench's clients."""

    def __init__(self, bench: Bench, index: int) -> None:
        """Server ``index``'s socket."""
        super().__init__(f"192.0.2.{index + 1}", 5060)
        self.bench = bench
        self.index = index

    def write(self, packet: bytes, addr: tuple[str, int] | None = None) -> None:
        """A datagram the server sends: to the clients."""
        self.bench.received(self.index, parseDatagram(packet), addr)


class Bench:
    """The servers, and the clients' waiting requests."""

    def __init__(self, database: str, servers: int) -> None:
        """``servers`` stacks on ``database``, not started."""
        self.stacks: list[Any] = []
        self.protocols: list[Any] = []
        self.waiting: dict[tuple[str, str], defer.Deferred[Any]] = {}
        for n in range(servers):
            clock = MemoryReactorClock()
            clock.advance(time.time())
            config = Config(
                database=database,
                fallback2db=True,
                serverId=f"bench-{n}",
                sourceRateLimit=0,
                adminListen="none",
                maxSubscriptionsPerWatcher=0,
                maxPublicationsPerPresentity=0,
            ).validate()
            stack = buildStack(config, clock, databaseReactor=reactor)
            protocol = stack.transports.datagramProtocol()
            protocol.makeConnection(Socket(self, n))
            self.stacks.append(stack)
            self.protocols.append(protocol)

    async def start(self) -> None:
        """Open the stores (each joins the cluster), start the heartbeats."""
        for stack in self.stacks:
            stack.storage.startService()
            await stack.storage.whenLoaded()
            stack.cluster.startService()

    async def stop(self) -> None:
        """Leave the cluster, close the stores."""
        for stack in self.stacks:
            await stack.cluster.stopService()
            stack.transactions.stop()
            await stack.storage.stopService()

    def received(self, server: int, message: Any, addr: Any) -> None:
        """A message from server ``server``: answer a NOTIFY, wake a waiter."""
        if isinstance(message, SIPRequest):
            # A NOTIFY: answered at once, and its waiter told.
            answer = responseTo(message, 200, toTag=None).toBytes()
            reactor.callLater(0, self.protocols[server].datagramReceived, answer, addr)
            state = message.header("subscription-state") or ""
            key = (message.callId, "terminated" if state[:4] == "term" else "NOTIFY")
        else:
            assert isinstance(message, SIPResponse)
            if message.code < 200:
                return
            key = (message.callId, message.cseq.method)
        d = self.waiting.pop(key, None)
        if d is not None:
            d.callback(message)

    def expect(self, callId: str, what: str) -> defer.Deferred[Any]:
        """A Deferred fired by the next ``what`` of ``callId``."""
        d: defer.Deferred[Any] = defer.Deferred()
        self.waiting[(callId, what)] = d
        return d

    def send(self, server: int, data: bytes, source: tuple[str, int]) -> None:
        """A client's datagram to server ``server``."""
        self.protocols[server].datagramReceived(data, source)


def request(
    method: str,
    uri: str,
    user: str,
    callId: str,
    cseq: int,
    port: int,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    toTag: str | None = None,
) -> bytes:
    """A request's bytes."""
    to = f"<{uri}>" + (f";tag={toTag}" if toTag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.100:{port};branch=z9hG4bK-{next(_ids)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@example.com>;tag={user}-tag",
        f"To: {to}",
        f"Call-ID: {callId}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{user}@192.0.2.100:{port}>",
        *(f"{n}: {v}" for n, v in headers),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def cycle(bench: Bench, i: int) -> None:
    """Subscribe cycle ``i``: SUBSCRIBE, NOTIFY, un-SUBSCRIBE, NOTIFY."""
    server = i % len(bench.stacks)
    user, port = f"w{i}", 10000 + i % 50000
    callId = f"cycle-{i}-{next(_ids)}"
    presentity = f"sip:bench-{i}@example.com"
    answered = bench.expect(callId, "SUBSCRIBE")
    notified = bench.expect(callId, "NOTIFY")
    headers = [("Event", "presence"), ("Expires", "600")]
    bench.send(
        server,
        request("SUBSCRIBE", presentity, user, callId, 1, port, headers),
        ("192.0.2.100", port),
    )
    response = await answered
    await notified
    answered = bench.expect(callId, "SUBSCRIBE")
    ended = bench.expect(callId, "terminated")
    headers = [("Event", "presence"), ("Expires", "0")]
    data = request(
        "SUBSCRIBE",
        presentity,
        user,
        callId,
        2,
        port,
        headers,
        toTag=response.toAddr.tag,
    )
    bench.send(server, data, ("192.0.2.100", port))
    await answered
    await ended


async def publish(bench: Bench, i: int) -> None:
    """Initial PUBLISH ``i``, of a presentity of its own."""
    server = i % len(bench.stacks)
    callId = f"publish-{i}-{next(_ids)}"
    presentity = f"sip:pub-{i}@example.com"
    answered = bench.expect(callId, "PUBLISH")
    headers = [
        ("Event", "presence"),
        ("Expires", "600"),
        ("Content-Type", "application/pidf+xml"),
    ]
    body = pidf("open", user=f"pub-{i}")
    bench.send(
        server,
        request("PUBLISH", presentity, f"pub-{i}", callId, 1, 9000, headers, body),
        ("192.0.2.100", 9000),
    )
    await answered


async def run(
    bench: Bench, kind: str, ops: int, concurrency: int
) -> tuple[float, float]:
    """``ops`` operations, ``concurrency`` at a time: rate, CPU-ms each."""
    work = iter(range(ops))
    operation = {"cycle": cycle, "publish": publish}[kind]

    async def worker() -> None:
        for i in work:
            await operation(bench, i)

    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(worker()) for _ in range(concurrency)]
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - started
    return ops / wall, 1000 * (usage.ru_utime + usage.ru_stime - cpu) / ops


async def main(options: argparse.Namespace) -> None:
    """Each kind, ``--repeats`` times on fresh stacks; print the medians."""
    for kind in options.kinds:
        results = []
        for _ in range(options.repeats):
            bench = Bench(options.database, options.servers)
            await bench.start()
            try:
                # Warm up, then measure.
                await run(bench, kind, min(200, options.ops), options.concurrency)
                results.append(await run(bench, kind, options.ops, options.concurrency))
            finally:
                await bench.stop()
        rates = sorted(r for r, _ in results)
        costs = sorted(c for _, c in results)
        middle = len(results) // 2
        print(
            f"{kind:8} servers={options.servers} ops={options.ops}"
            f" concurrency={options.concurrency}: median {rates[middle]:,.0f}/s,"
            f" {costs[middle]:.3f} CPU-ms per op (runs: "
            + ", ".join(f"{r:,.0f}/s {c:.3f}" for r, c in results)
            + ")"
        )


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=["publish", "cycle"])
    parser.add_argument("--database", required=True)
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    task.react(lambda _: defer.Deferred.fromCoroutine(main(options)))
