"""In-process memory per subscription and per completed transaction.

Runs the in-memory server of `presence.testing` (fake UDP socket, fake
clock), sets up N subscriptions each with its own presentity and its own
watcher over UDP (as `bench/load.py` does against a real server), answers
every NOTIFY, and reads ``tracemalloc``'s traced memory:

- right after set-up (the SUBSCRIBE's completed server transaction and the
  NOTIFY's client transaction still held);
- 6 s later (the NOTIFY's transaction has waited out Timer K; the
  SUBSCRIBE's completed transaction still waits out Timer J);
- 33 s later (every transaction gone: the established subscription alone).

The figure per completed transaction is the difference between the last two
readings, per subscription. Prints one line per figure; ``--rounds`` runs it
several times (each in a fresh process) and prints the medians.

    python bench/memory.py [--count 8000] [--rounds 3]

It needs the project installed (it imports ``presence``), unlike the other
benchmarks, which drive a real server from outside.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tracemalloc
from typing import Any


def _measure(count: int, top: int = 0, presentities: int = 0) -> dict[str, float]:
    from presence.sip.message import SIPRequest, responseTo
    from presence.sip.parser import parseDatagram
    from presence.testing import Server

    server = Server()
    written = server.udp.written

    def answerNotifies() -> None:
        for data, addr in list(written):
            message = parseDatagram(data)
            if isinstance(message, SIPRequest):
                server.receive(responseTo(message, 200, toTag=None).toBytes(), addr)
        written.clear()

    def subscribe(i: int) -> bytes:
        host = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        uri = f"sip:p{i % presentities if presentities else i}@example.com"
        return (
            f"SUBSCRIBE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:5070;branch=z9hG4bK-m{i};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:w{i}@example.com>;tag=wt{i}\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: c{i}@{host}\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:w{i}@{host}:5070>\r\n"
            "Event: presence\r\n"
            "Expires: 3600\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def source(i: int) -> tuple[str, int]:
        return (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 5070)

    # Warm up (caches, interned names, lazily built tables), then forget.
    for i in range(count, count + 200):
        server.receive(subscribe(i), source(i))
        answerNotifies()
    server.advance(40)
    requests = [subscribe(i) for i in range(count)]
    gc.collect()
    tracemalloc.start(4 if top else 1)
    base = tracemalloc.get_traced_memory()[0]
    before = tracemalloc.take_snapshot() if top else None
    for i, data in enumerate(requests):
        server.receive(data, source(i))
        answerNotifies()
    del requests
    gc.collect()
    setUp = tracemalloc.get_traced_memory()[0]
    server.advance(6)
    gc.collect()
    timerJ = tracemalloc.get_traced_memory()[0]
    server.advance(27)
    gc.collect()
    established = tracemalloc.get_traced_memory()[0]
    if before is not None:
        after = tracemalloc.take_snapshot()
        for stat in after.compare_to(before, "traceback")[:top]:
            print(f"{stat.size_diff / count:7.1f} B {stat.count_diff / count:5.2f}")
            for line in stat.traceback.format()[-8:]:
                print("   ", line)
    tracemalloc.stop()
    subscriptions = sum(1 for _ in server.store._subscriptions.values())
    assert subscriptions >= count, subscriptions
    server.close()
    return {
        "right after set-up": (setUp - base) / count,
        "completed SUBSCRIBE transaction (Timer J)": (timerJ - established) / count,
        "established subscription": (established - base) / count,
    }


def main() -> None:
    """Run the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--top",
        type=int,
        default=0,
        help="print where the established subscription's memory was allocated",
    )
    parser.add_argument(
        "--presentities",
        type=int,
        default=0,
        help="watch this many presentities between them (default: one each)",
    )
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.top:
        print(_measure(args.count, args.top, args.presentities))
        return
    if args.json:
        print(json.dumps(_measure(args.count, presentities=args.presentities)))
        return
    results: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--json",
                "--count",
                str(args.count),
                "--presentities",
                str(args.presentities),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out))
    for name in results[0]:
        values = [r[name] for r in results]
        shown = " ".join(f"{v:,.0f}" for v in values)
        print(f"{name}: {statistics.median(values):,.0f} B  ({shown})")


if __name__ == "__main__":
    main()
