"""Watcher load that sipp cannot drive: fan-out, memory and PUBLISH latency.

Run by ``bench/run.py`` against a server it started, or by hand::

    python bench/load.py fanout --port 5060 --watchers 5000
    python bench/load.py memory --port 5060 --pid 1234 --first 10000 --total 50000
    python bench/load.py latency --port 5060 --rate 200 --seconds 10

It uses the standard library only, talks to 127.0.0.1 only, and every loop
is bounded by a deadline.  One socket plays every watcher: each SUBSCRIBE has
its own Call-ID and From tag, and the NOTIFYs come back to that socket inside
their dialogs, where every one of them is answered with a 200 at once.  Over
UDP an unanswered request is retransmitted with T1 = 500 ms doubling up to
T2 = 4 s (RFC 3261 section 17.1.2.2).  The figures are printed as one JSON
object on stdout; progress goes to stderr.

``fanout``: subscribe N watchers to one presentity (answering their first
NOTIFYs), then send one PUBLISH, and time the NOTIFYs it causes: the first,
the N-th, and the 200 to the PUBLISH.

``memory``: subscribe ``--first`` watchers (to ``--presentities`` presentities
in turn, or each to its own with ``--presentities 0``), wait ``--settle``
seconds, read its resident memory (RSS) and proportional set size (PSS,
summed over the process and its children, as a Kamailio's workers share
memory) from ``/proc``, subscribe up to ``--total``, read them again.  It
uses TCP by default, because over TCP a finished transaction is gone at once
(Timers J and K are zero), so the difference counts subscriptions, not
transactions waiting in Timer J; ``--transport udp`` measures what a phone
population over UDP costs.  CPU and memory always count the process given
by ``--pid`` and its descendants.

``latency``: send initial PUBLISHes at a steady rate, each to its own
presentity, and time each 200 from the first transmission of its request.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

LOOPBACK: Final = "127.0.0.1"
T1: Final = 0.5
T2: Final = 4.0
#: A request unanswered for this long has failed (Timer F, 64 x T1).
GIVE_UP: Final = 32.0
#: Compact header names (RFC 3261 section 7.3.3) the answers copy.
COMPACT: Final = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "l": "content-length",
}
PIDF: Final = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{aor}">\n'
    '  <tuple id="t{tag}a">\n'
    "    <status><basic>open</basic></status>\n"
    '    <contact priority="0.8">sip:{aor}</contact>\n'
    '    <note xml:lang="en">Available for calls</note>\n'
    "    <timestamp>2024-05-01T09:30:00Z</timestamp>\n"
    "  </tuple>\n"
    '  <note xml:lang="en">In the office until five</note>\n'
    "</presence>\n"
)


def say(text: str) -> None:
    """Write a progress line to stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@dataclass
class Message:
    """A parsed SIP message: the start line, the headers in order, the body."""

    startLine: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Parse one complete message (header names lowercased, compact expanded)."""
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers.append((COMPACT.get(name, name), value.strip()))
        return cls(lines[0], headers, body)

    @property
    def isRequest(self) -> bool:
        """Whether this is a request, not a response."""
        return not self.startLine.startswith("SIP/2.0 ")

    @property
    def code(self) -> int:
        """The status code of a response."""
        return int(self.startLine.split(" ", 2)[1])

    @property
    def method(self) -> str:
        """The method of a request."""
        return self.startLine.split(" ", 1)[0]

    def header(self, name: str) -> str:
        """The first value of a header, or the empty string."""
        for key, value in self.headers:
            if key == name:
                return value
        return ""

    @property
    def cseq(self) -> int:
        """The CSeq number."""
        return int(self.header("cseq").split()[0])

    def okResponse(self) -> bytes:
        """A 200 to this request, copying Via, From, To, Call-ID and CSeq."""
        keep = ("via", "from", "to", "call-id", "cseq")
        lines = ["SIP/2.0 200 OK"]
        lines.extend(
            f"{name.title()}: {value}" for name, value in self.headers if name in keep
        )
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Connection:
    """One client socket to the server, UDP or TCP, on 127.0.0.1."""

    def __init__(self, transport: str, port: int) -> None:
        """Open the socket (and connect, for TCP)."""
        self.transport = transport
        self.server = (LOOPBACK, port)
        self.reliable = transport == "tcp"
        if self.reliable:
            self.sock = socket.create_connection(self.server, timeout=10)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self.sock.bind((LOOPBACK, 0))
            # Non-blocking: a timeout would make MSG_DONTWAIT wait after all.
            self.sock.setblocking(False)
        self.localPort: int = self.sock.getsockname()[1]
        self._buffer = b""

    def send(self, data: bytes) -> None:
        """Send one message."""
        if self.reliable:
            self.sock.sendall(data)
            return
        for _ in range(1000):
            try:
                self.sock.sendto(data, self.server)
                return
            except BlockingIOError:
                select.select([], [self.sock], [], 0.01)
        raise ConnectionError("the UDP socket stayed full for 10 s")

    def receive(self, timeout: float) -> list[bytes]:
        """The messages that arrive within ``timeout`` seconds (maybe none)."""
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not ready:
            return []
        if not self.reliable:
            out = []
            for _ in range(10000):
                try:
                    out.append(self.sock.recv(65535, socket.MSG_DONTWAIT))
                except BlockingIOError:
                    break
            return out
        try:
            chunk = self.sock.recv(1 << 20)
        except (BlockingIOError, TimeoutError):
            return []
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buffer += chunk
        return self._frames()

    def _frames(self) -> list[bytes]:
        out = []
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return out
            length = 0
            for line in self._buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() in (b"content-length", b"l"):
                    length = int(value)
            total = end + 4 + length
            if len(self._buffer) < total:
                return out
            out.append(self._buffer[:total])
            self._buffer = self._buffer[total:]

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@dataclass
class Pending:
    """A request of ours waiting for its final response."""

    data: bytes
    sent: float
    nextRetransmit: float
    interval: float = T1
    onFinal: Callable[[Message, float], None] | None = None


@dataclass
class Watch:
    """One subscription's dialog, from the watcher's side."""

    index: int
    callId: str
    fromTag: str
    presentity: str
    answered: bool = False
    notifies: int = 0
    lastNotifyCSeq: int = 0
    firstNotifyAt: list[float] = field(default_factory=list)


class Watchers:
    """Many watchers and publishers behind one socket, answering every NOTIFY."""

    def __init__(self, connection: Connection) -> None:
        """Use ``connection`` for everything."""
        self.connection = connection
        self.pending: dict[tuple[str, int], Pending] = {}
        self.watches: dict[str, Watch] = {}
        self.retransmissions = 0
        self.notifyRetransmissions = 0
        self.failures: dict[str, int] = {}
        self.unexpected = 0
        self.onNotify: Callable[[Watch, Message, float], None] | None = None

    # -- requests ---------------------------------------------------------------

    def _via(self, branch: str) -> str:
        c = self.connection
        return f"SIP/2.0/{c.transport.upper()} {LOOPBACK}:{c.localPort};branch={branch}"

    def _contactURI(self, user: str) -> str:
        c = self.connection
        suffix = ";transport=tcp" if c.reliable else ""
        return f"sip:{user}@{LOOPBACK}:{c.localPort}{suffix}"

    def _request(
        self,
        callId: str,
        cseq: int,
        data: bytes,
        onFinal: Callable[[Message, float], None] | None = None,
    ) -> None:
        now = time.perf_counter()
        self.pending[(callId, cseq)] = Pending(data, now, now + T1, T1, onFinal)
        self.connection.send(data)

    def subscribe(self, index: int, presentity: str, expires: int = 3600) -> Watch:
        """Send an initial SUBSCRIBE for watcher ``index`` to ``presentity``."""
        watch = Watch(
            index, f"w{index}-{uuid.uuid4().hex[:12]}", f"t{index}", presentity
        )
        self.watches[watch.callId] = watch
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        data = (
            f"SUBSCRIBE sip:{presentity} SIP/2.0\r\n"
            f"Via: {self._via(branch)}\r\n"
            f"From: <sip:watcher-{index}@{LOOPBACK}>;tag={watch.fromTag}\r\n"
            f"To: <sip:{presentity}>\r\n"
            f"Call-ID: {watch.callId}\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            "Max-Forwards: 70\r\n"
            f"Contact: <{self._contactURI(f'watcher-{index}')}>\r\n"
            "Event: presence\r\n"
            "Accept: application/pidf+xml\r\n"
            f"Expires: {expires}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

        def answered(response: Message, when: float) -> None:
            watch.answered = True

        self._request(watch.callId, 1, data, answered)
        return watch

    def publish(
        self, aor: str, onFinal: Callable[[Message, float], None] | None = None
    ) -> str:
        """Send an initial PUBLISH of a ~400-byte PIDF for ``aor``; its Call-ID."""
        callId = "p" + uuid.uuid4().hex[:16]
        body = PIDF.format(aor=aor, tag=callId[:8]).encode()
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        head = (
            f"PUBLISH sip:{aor} SIP/2.0\r\n"
            f"Via: {self._via(branch)}\r\n"
            f"From: <sip:{aor}>;tag={callId[:10]}\r\n"
            f"To: <sip:{aor}>\r\n"
            f"Call-ID: {callId}\r\n"
            "CSeq: 1 PUBLISH\r\n"
            "Max-Forwards: 70\r\n"
            "Event: presence\r\n"
            "Expires: 3600\r\n"
            "Content-Type: application/pidf+xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._request(callId, 1, head + body, onFinal)
        return callId

    # -- the loop -----------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        """Handle what arrives within ``timeout``, and retransmit what is due."""
        for data in self.connection.receive(timeout):
            self._received(data, time.perf_counter())
        if self.connection.reliable:
            return
        now = time.perf_counter()
        for key, pending in list(self.pending.items()):
            if now < pending.nextRetransmit:
                continue
            if now - pending.sent > GIVE_UP:
                del self.pending[key]
                self.failures["timeout"] = self.failures.get("timeout", 0) + 1
                continue
            self.connection.send(pending.data)
            self.retransmissions += 1
            pending.interval = min(2 * pending.interval, T2)
            pending.nextRetransmit = now + pending.interval

    def pumpUntil(self, done: Callable[[], bool], seconds: float) -> bool:
        """Pump until ``done()`` or ``seconds`` pass; whether ``done()``."""
        deadline = time.perf_counter() + seconds
        while not done():
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.pump(min(left, 0.05))
        return True

    def _received(self, data: bytes, when: float) -> None:
        try:
            message = Message.parse(data)
        except (ValueError, IndexError):
            self.unexpected += 1
            return
        callId = message.header("call-id")
        if message.isRequest:
            watch = self.watches.get(callId)
            if message.method != "NOTIFY" or watch is None:
                self.unexpected += 1
                return
            self.connection.send(message.okResponse())
            cseq = message.cseq
            if cseq <= watch.lastNotifyCSeq:
                self.notifyRetransmissions += 1
                return
            watch.lastNotifyCSeq = cseq
            watch.notifies += 1
            if self.onNotify is not None:
                self.onNotify(watch, message, when)
            return
        try:
            key = (callId, message.cseq)
            code = message.code
        except (ValueError, IndexError):
            self.unexpected += 1
            return
        pending = self.pending.get(key)
        if pending is None or code < 200:
            return
        del self.pending[key]
        if code >= 300:
            name = f"{code}"
            self.failures[name] = self.failures.get(name, 0) + 1
        if pending.onFinal is not None:
            pending.onFinal(message, when)

    def subscribeMany(
        self,
        indices: range,
        presentityOf: Callable[[int], str],
        window: int,
        seconds: float,
    ) -> float:
        """Subscribe watchers ``indices``, ``window`` at a time; the time taken.

        A watcher is done when its SUBSCRIBE got its 200 and its first NOTIFY
        came (and was answered).
        """
        started = time.perf_counter()
        deadline = started + seconds
        todo = iter(indices)
        opened: list[Watch] = []
        busy: list[Watch] = []
        exhausted = False
        while time.perf_counter() < deadline:
            busy = [w for w in busy if not (w.answered and w.notifies)]
            while not exhausted and len(busy) < window:
                index = next(todo, None)
                if index is None:
                    exhausted = True
                    break
                watch = self.subscribe(index, presentityOf(index))
                opened.append(watch)
                busy.append(watch)
            if exhausted and not busy:
                break
            self.pump(0.05)
        else:
            raise RuntimeError(
                f"subscribing timed out: {len(busy)} of {len(indices)} unfinished"
            )
        return time.perf_counter() - started


# -- the measurements ----------------------------------------------------------


def processTree(pid: int) -> list[int]:
    """``pid`` and its descendants (a Kamailio's workers), from ``/proc``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, ()))
    return tree


def cpuSeconds(pid: int | None) -> float:
    """User plus system CPU seconds of a process and its descendants.

    0 without a pid.  A process that ends between the listing and the read
    is left out.
    """
    if pid is None:
        return 0.0
    total = 0
    for member in processTree(pid):
        try:
            text = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rssKiB(pid: int) -> int:
    """Resident memory of a process and its descendants in KiB.

    Shared pages (a Kamailio's shared memory) count once per process here;
    `pssKiB` shares them out.
    """
    total = 0
    for member in processTree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def pssKiB(pid: int) -> int:
    """Proportional set size of a process and its descendants in KiB.

    From ``/proc/PID/smaps_rollup``: a page shared by n processes counts 1/n
    in each, so the sum over a process tree counts every page once.
    """
    total = 0
    for member in processTree(pid):
        try:
            lines = Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


def udpReceiveErrors() -> int:
    """The host's UDP datagrams dropped for a full receive buffer, so far."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    udp = [line for line in lines if line and line[0] == "Udp:"]
    if len(udp) < 2 or "RcvbufErrors" not in udp[0]:
        return 0
    return int(udp[1][udp[0].index("RcvbufErrors")])


def quiet(watchers: Watchers, seconds: float) -> None:
    """Keep answering for ``seconds``, so that stragglers are dealt with."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        watchers.pump(min(0.05, end - time.perf_counter()))


def fanout(options: argparse.Namespace) -> dict[str, Any]:
    """Time the NOTIFYs one PUBLISH causes to N watchers of one presentity."""
    connection = Connection(options.transport, options.port)
    watchers = Watchers(connection)
    n = options.watchers
    aor = f"fan-{uuid.uuid4().hex[:8]}@{LOOPBACK}"
    setup = watchers.subscribeMany(range(n), lambda i: aor, options.window, 120)
    say(f"  {n} watchers subscribed in {setup:.1f} s")
    quiet(watchers, options.settle)
    baseline = watchers.retransmissions, watchers.notifyRetransmissions
    arrivals: list[float] = []
    published: list[float] = []

    def notified(watch: Watch, message: Message, when: float) -> None:
        arrivals.append(when)

    watchers.onNotify = notified
    cpuBefore = cpuSeconds(options.pid)
    dropsBefore = udpReceiveErrors()
    started = time.perf_counter()
    watchers.publish(aor, lambda response, when: published.append(when))
    complete = watchers.pumpUntil(
        lambda: len(arrivals) >= n and bool(published), options.timeout
    )
    cpu = cpuSeconds(options.pid) - cpuBefore
    # The 200s to the NOTIFYs come back while the server is still sending.
    quiet(watchers, 0.5)
    drops = udpReceiveErrors() - dropsBefore
    connection.close()
    return {
        "watchers": n,
        "setupSeconds": setup,
        "complete": complete,
        "notified": len(arrivals),
        "publishMs": 1000 * (published[0] - started) if published else None,
        "firstNotifyMs": 1000 * (min(arrivals) - started) if arrivals else None,
        "lastNotifyMs": 1000 * (max(arrivals) - started) if arrivals else None,
        "serverCPUms": 1000 * cpu,
        "fanoutUDPDrops": drops,
        "retransmissions": watchers.retransmissions - baseline[0],
        "notifyRetransmissions": watchers.notifyRetransmissions - baseline[1],
        "failures": watchers.failures,
        "unexpected": watchers.unexpected,
    }


def memory(options: argparse.Namespace) -> dict[str, Any]:
    """Memory per subscription between ``--first`` and ``--total``.

    Both the resident set (RSS) and the proportional set size (PSS, which
    counts shared memory once over a tree of processes) are read.  With
    ``--presentities 0`` every subscription watches a presentity of its own.
    """
    if options.pid is None:
        raise SystemExit("memory needs --pid")
    connection = Connection(options.transport, options.port)
    watchers = Watchers(connection)
    count = options.presentities
    prefix = uuid.uuid4().hex[:6]

    def presentityOf(i: int) -> str:
        return f"mem-{prefix}-{i % count if count else i}@{LOOPBACK}"

    first, total = options.first, options.total
    before = rssKiB(options.pid)
    setup1 = watchers.subscribeMany(range(first), presentityOf, options.window, 300)
    quiet(watchers, options.settle)
    rssFirst, pssFirst = rssKiB(options.pid), pssKiB(options.pid)
    say(f"  {first} subscriptions in {setup1:.1f} s, PSS {pssFirst / 1024:.1f} MiB")
    setup2 = watchers.subscribeMany(
        range(first, total), presentityOf, options.window, 600
    )
    quiet(watchers, options.settle)
    rssTotal, pssTotal = rssKiB(options.pid), pssKiB(options.pid)
    say(
        f"  {total} subscriptions in {setup2:.1f} s more, PSS {pssTotal / 1024:.1f} MiB"
    )
    connection.close()
    added = total - first
    return {
        "first": first,
        "total": total,
        "presentities": count or total,
        "transport": options.transport,
        "settle": options.settle,
        "rssStartKiB": before,
        "rssFirstKiB": rssFirst,
        "rssTotalKiB": rssTotal,
        "pssFirstKiB": pssFirst,
        "pssTotalKiB": pssTotal,
        "bytesPerSubscription": 1024 * (rssTotal - rssFirst) / added,
        "pssBytesPerSubscription": 1024 * (pssTotal - pssFirst) / added,
        "subscribesPerSecond": added / setup2 if setup2 else None,
        "retransmissions": watchers.retransmissions,
        "notifyRetransmissions": watchers.notifyRetransmissions,
        "failures": watchers.failures,
        "unexpected": watchers.unexpected,
    }


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile of ``values`` (sorted or not)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency(options: argparse.Namespace) -> dict[str, Any]:
    """PUBLISH response times at a steady rate."""
    connection = Connection(options.transport, options.port)
    watchers = Watchers(connection)
    count = int(options.rate * options.seconds)
    times: list[float] = []
    started = time.perf_counter()
    cpuBefore = cpuSeconds(options.pid)
    prefix = uuid.uuid4().hex[:6]
    for k in range(count):
        due = started + k / options.rate
        while True:
            left = due - time.perf_counter()
            if left <= 0:
                break
            watchers.pump(left)
        sent = time.perf_counter()

        def answered(response: Message, when: float, sent: float = sent) -> None:
            if response.code == 200:
                times.append(1000 * (when - sent))

        watchers.publish(f"lat-{prefix}-{k}@{LOOPBACK}", answered)
    watchers.pumpUntil(lambda: not watchers.pending, 10)
    elapsed = time.perf_counter() - started
    cpu = cpuSeconds(options.pid) - cpuBefore
    connection.close()
    return {
        "rate": options.rate,
        "sent": count,
        "answered": len(times),
        "p50ms": percentile(times, 0.50) if times else None,
        "p90ms": percentile(times, 0.90) if times else None,
        "p99ms": percentile(times, 0.99) if times else None,
        "maxMs": max(times) if times else None,
        "meanMs": statistics.fmean(times) if times else None,
        "serverCPUms": 1000 * cpu,
        "elapsed": elapsed,
        "retransmissions": watchers.retransmissions,
        "failures": watchers.failures,
        "unexpected": watchers.unexpected,
    }


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("fanout", "memory", "latency"))
    parser.add_argument("--port", type=int, required=True, help="server port")
    parser.add_argument("--pid", type=int, help="server pid, for CPU and memory")
    parser.add_argument("--transport", choices=("udp", "tcp"), help="udp or tcp")
    parser.add_argument("--watchers", type=int, default=1000, help="fanout: N")
    parser.add_argument(
        "--window", type=int, default=100, help="subscriptions set up at once"
    )
    parser.add_argument(
        "--settle", type=float, default=1.0, help="quiet seconds before measuring"
    )
    parser.add_argument(
        "--timeout", type=float, default=30, help="fanout: wait at most"
    )
    parser.add_argument("--first", type=int, default=10000, help="memory: first")
    parser.add_argument("--total", type=int, default=50000, help="memory: total")
    parser.add_argument(
        "--presentities",
        type=int,
        default=1000,
        help="memory: presentities (0: one per subscription)",
    )
    parser.add_argument("--rate", type=float, default=200, help="latency: per s")
    parser.add_argument("--seconds", type=float, default=10, help="latency: length")
    options = parser.parse_args(argv)
    if options.transport is None:
        options.transport = "tcp" if options.mode == "memory" else "udp"
    if options.mode == "memory" and not 0 < options.first < options.total:
        parser.error("memory needs 0 < --first < --total")
    return options


def main(argv: list[str]) -> int:
    """Run one measurement and print its figures as JSON."""
    options = parseArguments(argv)
    run = {"fanout": fanout, "memory": memory, "latency": latency}[options.mode]
    print(json.dumps(run(options)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
