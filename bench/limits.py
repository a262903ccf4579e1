"""What the source rate limit costs: microseconds per request checked.

Run as ``python bench/limits.py`` (``--seconds`` sets how long each case
runs). CPU time of this process (``time.process_time``), no sockets, the
check called directly as the dispatcher calls it
(`presence.core.limits.SourceRateLimit`), on a clock that advances 1 µs a
request (so buckets refill as they would); ``baseline`` is the loop and the clock
alone, to subtract:

- ``pass-one``: one source well under the rate (200/s; the clock runs 10 ms
  a request): every request passes;
- ``pass-10k``: 10,000 sources in turn, each under the rate;
- ``trusted-set``: ``trusted_peers`` set, the source not among them (the
  cached membership test, then the bucket);
- ``trusted``: the source a trusted peer (no bucket at all);
- ``over-3x``: one source at three times the rate: a third pass, two
  thirds are answered 503 (the exception built and raised; the
  dispatcher's work to answer it is not included);
- ``dropped``: one source far over it (the transaction ended, the exception
  raised).

``whole-subscribe`` is the same initial SUBSCRIBE through the whole in-memory
server (`presence.testing`) with ``source_rate_limit`` off and on, for the
share of the check in a request's cost.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock

from presence.auth.identity import TrustedPeers
from presence.core.limits import SourceRateLimit
from presence.sip.errors import ServiceUnavailable
from presence.sip.limits import LimitStatistics
from presence.sip.transport import Peer
from presence.testing import Server, Subscriber


class _Transaction:
    def __init__(self, host: str) -> None:
        self.peer = Peer("UDP", host, 5060)

    def terminate(self) -> None:
        pass


def _timed(run: Callable[[int], None], seconds: float) -> float:
    """Microseconds per iteration of ``run``, over about ``seconds``."""
    n = 1000
    while True:
        start = time.process_time()
        run(n)
        spent = time.process_time() - start
        if spent >= seconds:
            return spent / n * 1e6
        n *= 2


def _case(
    rate: float, step: float, hosts: list[str], trusted: list[str]
) -> Callable[[int], None]:
    clock = Clock()
    limit: Callable[[Any, Any], None] = lambda request, transaction: None  # noqa: E731
    if rate:
        limit = SourceRateLimit(
            clock, rate, LimitStatistics(), TrustedPeers(trusted) if trusted else None
        )
    transactions: list[Any] = [_Transaction(h) for h in hosts]

    def run(n: int) -> None:
        count = len(transactions)
        advance = clock.advance
        for i in range(n):
            advance(step)
            try:
                limit(None, transactions[i % count])
            except ServiceUnavailable:
                pass

    return run


def _subscribe(rate: float) -> Callable[[int], None]:
    server = Server(sourceRateLimit=rate)
    ua = Subscriber(server, "alice", "192.0.2.20", 5070)

    def run(n: int) -> None:
        for i in range(n):
            ua.subscribe(f"sip:p{i}@example.com", expires=0)
            server.advance(0.001)
            server.udp.written.clear()

    return run


def main() -> None:
    """Print microseconds per request for each case."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    options = parser.parse_args()
    one = ["192.0.2.1"]
    many = [f"10.{i // 256 % 256}.{i % 256}.1" for i in range(10_000)]
    cases = {
        "baseline": _case(0, 0.01, one, []),
        "pass-one": _case(200, 0.01, one, []),
        "pass-10k": _case(200, 1e-6, many, []),
        "trusted-set": _case(200, 0.01, one, ["10.0.0.0/8"]),
        "trusted": _case(200, 1e-6, ["10.1.1.1"], ["10.0.0.0/8"]),
        "over-3x": _case(200, 1 / 600, one, []),
        "dropped": _case(1e-9, 0, one, []),
    }
    for name, run in cases.items():
        print(f"{name:18} {_timed(run, options.seconds):7.3f} µs/request")
    off = _timed(_subscribe(0), options.seconds)
    on = _timed(_subscribe(1e6), options.seconds)
    print(f"{'whole-subscribe':18} {off:7.1f} µs off, {on:7.1f} µs on")


if __name__ == "__main__":
    main()
