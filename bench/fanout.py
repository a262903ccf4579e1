"""The in-process cost of one fan-out: a PUBLISH to many watchers' NOTIFYs.

Run as ``python bench/fanout.py`` (``--watchers`` 1,000 by default,
``--repeats`` 3, ``--profile`` to print a cProfile of one send phase sorted
by own time). The whole in-memory server of `presence.testing`, no sockets;
CPU time of this process (``time.process_time``), in two phases:

- ``send``: from the PUBLISH until every watcher's NOTIFY is written to the
  fake UDP transport (the server's work: composing, building, serialising,
  the client transactions, the send);
- ``answer``: every NOTIFY parsed and answered with a 200 by the bench, and
  the server matching each response to its transaction (part of this phase
  is the bench's own work).

The CPU time the cyclic garbage collector took during the send phase is
printed apart (``gc``, and how many full collections, generation 2, ran),
since a full collection over the subscriptions' objects is a large part of
a fan-out. The collector's state is left as the set-up made it, as a server's
would be; ``--collect`` collects everything just before the PUBLISH (no full
collection is then due), ``--no-gc`` turns the collector off during the send
phase (the work alone). The medians of the repeats are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import time
from typing import Any

from presence.sip.message import SIPRequest, responseTo
from presence.sip.parser import parseDatagram
from presence.testing import UA, Server, Subscriber

PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.com">'
    b'<tuple id="t8a2f3c"><status><basic>open</basic></status>'
    b'<contact priority="0.8">sip:bob@192.0.2.10</contact>'
    b"<note>Available for calls</note></tuple>"
    b'<note xml:lang="en">In the office until five</note></presence>'
)


def prepared(watchers: int) -> Server:
    """A server with ``watchers`` active watchers of bob, every NOTIFY answered."""
    target = Server()
    for n in range(watchers):
        watcher = Subscriber(target, f"w{n}", f"198.51.{n // 250}.{n % 250 + 1}")
        watcher.subscribe("sip:bob@example.com")
        for notify in watcher.notifies():
            watcher.answer(notify)
    target.udp.written.clear()
    return target


def answerEverything(target: Server) -> int:
    """Answer every request the server sent with 200; how many."""
    answered = 0
    while target.udp.written:
        written = list(target.udp.written)
        target.udp.written.clear()
        for data, addr in written:
            message = parseDatagram(data)
            if isinstance(message, SIPRequest):
                target.receive(responseTo(message, 200, toTag=None).toBytes(), addr)
                answered += 1
    return answered


class Collections:
    """The CPU time of the garbage collector's runs, and the full ones."""

    def __init__(self) -> None:
        """Count nothing yet."""
        self.ms = 0.0
        self.full = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """A `gc.callbacks` entry."""
        if phase == "start":
            self._start = time.process_time()
            return
        self.ms += (time.process_time() - self._start) * 1000
        if info["generation"] == 2:
            self.full += 1


def fanOut(
    watchers: int,
    profile: cProfile.Profile | None = None,
    collect: bool = False,
    collector: bool = True,
) -> tuple[float, float, Collections]:
    """CPU ms of the send phase and of the answer phase of one fan-out."""
    target = prepared(watchers)
    publisher = UA(target, "bob", "192.0.2.21", 5071)
    if collect:
        gc.collect()
    if not collector:
        gc.disable()
    collections = Collections()
    gc.callbacks.append(collections)
    start = time.process_time()
    if profile is not None:
        profile.enable()
    publisher.publish(PIDF)
    if profile is not None:
        profile.disable()
    sent = time.process_time()
    gc.callbacks.remove(collections)
    gc.enable()
    answered = answerEverything(target)
    done = time.process_time()
    assert answered >= watchers, answered
    target.close()
    return (sent - start) * 1000, (done - sent) * 1000, collections


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--collect", action="store_true")
    parser.add_argument("--no-gc", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profile = cProfile.Profile()
        fanOut(args.watchers, profile, args.collect, not args.no_gc)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    sends, answers, pauses = [], [], []
    for _ in range(args.repeats):
        send, answer, collections = fanOut(
            args.watchers, collect=args.collect, collector=not args.no_gc
        )
        sends.append(send)
        answers.append(answer)
        pauses.append(collections.ms)
        print(
            f"send {send:8.1f} CPU-ms (gc {collections.ms:6.1f},"
            f" {collections.full} full)  answer {answer:8.1f} CPU-ms"
        )
    print(
        f"medians of {args.repeats}, {args.watchers} NOTIFYs:"
        f" send {statistics.median(sends):.1f} CPU-ms"
        f" (gc {statistics.median(pauses):.1f}),"
        f" answer {statistics.median(answers):.1f} CPU-ms"
    )


if __name__ == "__main__":
    main()
