r"""A SUBSCRIBE flood from one address, and another client's latency meanwhile.

Run by hand against a server with its default limits (``source_rate_limit =
200``), listening on 127.0.0.1::

    twistd -n --pidfile= presence --database memory \
        --listen udp:5060:interface=127.0.0.1 &
    python bench/flood.py --port 5060 --pid $! --rate 2000 --seconds 10

One UDP socket on 127.0.0.2 sends ``--rate`` initial SUBSCRIBEs a second for
``--seconds`` seconds (each its own dialog and watcher, so that only the
rate limit refuses them; their NOTIFYs are answered, as a user agent would),
while a second socket on 127.0.0.1 sends ``--probe-rate`` initial SUBSCRIBEs
(fetches, Expires 0) a second and times each final response from the first
transmission (retransmitted at T1 = 500 ms doubling, RFC 3261 17.1.2.2).
Both addresses are loopback, so the server tells them apart by source
address. It prints one JSON object: the flood's answers by status code and
how many went unanswered, the probe's latency (p50, p99, max, lost), the
server's resident memory before, just after, and 5 s after the flood
(``--pid``), and the server's CPU seconds during the flood.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from load import Message, cpuSeconds, rssKiB

T1 = 0.5


def subscribe(i: int, who: str, host: str, port: int, expires: int) -> bytes:
    """An initial SUBSCRIBE of its own dialog from ``who``."""
    return (
        "SUBSCRIBE sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{who}-{i};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{who}{i}@example.com>;tag={who}{i}\r\n"
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: {who}-{i}@{host}\r\n"
        "CSeq: 1 SUBSCRIBE\r\n"
        f"Contact: <sip:{who}@{host}:{port}>\r\n"
        "Event: presence\r\n"
        f"Expires: {expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def udp(host: str) -> socket.socket:
    """A non-blocking UDP socket on ``host`` with a large receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def main() -> None:
    """Flood, probe, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=5060)
    parser.add_argument("--pid", type=int)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--probe-rate", type=float, default=20)
    options = parser.parse_args()
    server = ("127.0.0.1", options.port)
    flood, probe = udp("127.0.0.2"), udp("127.0.0.1")
    floodPort, probePort = flood.getsockname()[1], probe.getsockname()[1]
    pid = options.pid
    rssBefore = rssKiB(pid) if pid else 0
    cpuBefore = cpuSeconds(pid)
    codes: dict[int, int] = {}
    latencies: list[float] = []
    # probe i -> (first sent, next retransmission, interval, bytes)
    pending: dict[str, tuple[float, float, float, bytes]] = {}
    start = time.monotonic()
    end = start + options.seconds
    sent = probes = 0
    nextProbe = start
    while True:
        now = time.monotonic()
        if now >= end and not pending:
            break
        if now > end + 35:
            break
        due = min(
            int((now - start) * options.rate), int(options.seconds * options.rate)
        )
        while sent < due:
            try:
                flood.sendto(
                    subscribe(sent, "flood", "127.0.0.2", floodPort, 600), server
                )
            except BlockingIOError:
                break
            sent += 1
        if now >= nextProbe and now < end:
            data = subscribe(probes, "probe", "127.0.0.1", probePort, 0)
            pending[f"z9hG4bK-probe-{probes}"] = (now, now + T1, T1, data)
            probe.sendto(data, server)
            probes += 1
            nextProbe += 1 / options.probe_rate
        for branch, (first, again, interval, data) in list(pending.items()):
            if now >= again:
                probe.sendto(data, server)
                pending[branch] = (first, now + 2 * interval, 2 * interval, data)
            if now - first > 32:
                del pending[branch]
        ready, _, _ = select.select([flood, probe], [], [], 0.001)
        for sock in ready:
            for _ in range(1000):
                try:
                    datagram, source = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                message = Message.parse(datagram)
                if message.isRequest:
                    sock.sendto(message.okResponse(), source)
                    continue
                if message.code < 200:
                    continue
                if sock is flood:
                    codes[message.code] = codes.get(message.code, 0) + 1
                    continue
                via = message.header("via")
                branch = via.split("branch=", 1)[1].split(";", 1)[0]
                entry = pending.pop(branch, None)
                if entry is not None:
                    latencies.append((time.monotonic() - entry[0]) * 1000)
    cpu = cpuSeconds(pid) - cpuBefore
    rssAfter = rssKiB(pid) if pid else 0
    time.sleep(5)
    rssLater = rssKiB(pid) if pid else 0
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)

    print(
        json.dumps(
            {
                "flood_sent": sent,
                "flood_answers": codes,
                "flood_unanswered": sent - sum(codes.values()),
                "probe_sent": probes,
                "probe_answered": len(latencies),
                "probe_ms_p50": round(statistics.median(latencies), 2)
                if latencies
                else None,
                "probe_ms_p99": pct(0.99),
                "probe_ms_max": pct(1.0),
                "server_cpu_s": round(cpu, 2),
                "rss_kib_before": rssBefore,
                "rss_kib_after": rssAfter,
                "rss_kib_5s_later": rssLater,
            }
        )
    )


if __name__ == "__main__":
    main()
