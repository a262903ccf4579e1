"""What privacy rules cost the SUBSCRIBE cycle and a fan-out, in process.

Run as ``python bench/rules.py`` (``--seconds`` sets how long each cycle case
runs, ``--watchers`` the fan-out's size). CPU time of this process
(``time.process_time``), no sockets, the whole in-memory server of
`presence.testing` (parse, transaction, dispatcher, handlers, store,
notifier; the user agents' own work is in every figure):

- ``cycle-force``, ``cycle-rules``: one SUBSCRIBE cycle (SUBSCRIBE, its
  NOTIFY answered, SUBSCRIBE Expires 0, its NOTIFY answered), a new watcher
  each time, to one of 100 presentities that have published a PIDF; with
  ``force_active`` (the default), then in the integrated XCAP mode with a
  rules document of five rules per presentity in the memory XCAP store (read
  again every 2 s of the fake clock, which the cycle does not advance: the
  parsed rule set is reused, as between two reads of unchanged rows);
- ``fanout-force``, ``fanout-rules``: one PUBLISH to a presentity with
  ``--watchers`` (1,000) active watchers, until every watcher's NOTIFY is
  sent and answered; with rules, the watchers fall under five rules with
  five different sets of permissions, so five transformed documents are
  composed (the count is printed, and checked by
  ``test/xcap/test_integrated.py``);
- ``cycle-hard``, ``fanout-hard``: ``cycle-rules`` and ``fanout-rules``
  with ``pidf_manipulation`` (each presentity's hard state read once, then
  held; in the fan-out bob has one, aggregated before his PUBLISH).

With ``--repeats N`` every case runs N times, interleaved, and the medians
are printed, then the two targets of the privacy-rules issue: the cycle with
rules at most 20% over ``force_active``, and the fan-out composing at most
one transformed document per distinct set of permissions (five).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred

from presence.packages.presence import PresencePackage
from presence.sip.message import SIPRequest, responseTo
from presence.sip.parser import parseDatagram
from presence.storage.xcap import XCAPDocument
from presence.testing import UA, Server, Subscriber

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:u@example.com">'
    b'<tuple id="t8a2f3c"><status><basic>open</basic></status>'
    b'<contact priority="0.8">sip:u@192.0.2.10</contact>'
    b"<note>Available for calls</note></tuple>"
    b'<note xml:lang="en">In the office until five</note></presence>'
)
GRANTS = (
    "<pr:provide-note>true</pr:provide-note>",
    "<pr:provide-services><pr:all-services/></pr:provide-services>",
    "<pr:provide-services><pr:all-services/></pr:provide-services>"
    "<pr:provide-note>true</pr:provide-note>",
    "<pr:provide-services><pr:all-services/></pr:provide-services>"
    "<pr:provide-all-attributes/>",
    "<pr:provide-persons><pr:all-persons/></pr:provide-persons>",
)


def rulesDocument(groups: list[list[str]] | None) -> bytes:
    """Five allow rules, each for one group of users (or the whole domain)."""
    rules = []
    for k, grant in enumerate(GRANTS):
        if groups is None:
            who = '<cr:identity><cr:many domain="example.com"/></cr:identity>'
        else:
            who = (
                "<cr:identity>"
                + "".join(f'<cr:one id="sip:{u}@example.com"/>' for u in groups[k])
                + "</cr:identity>"
            )
        rules.append(
            f'<cr:rule id="r{k}"><cr:conditions>{who}</cr:conditions>'
            "<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>"
            f"<cr:transformations>{grant}</cr:transformations></cr:rule>"
        )
    return (
        f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}">'
        + "".join(rules)
        + "</cr:ruleset>"
    ).encode()


def run(coroutine: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine of the memory stores (it finishes at once)."""
    Deferred.fromCoroutine(coroutine)


def server(rules: bool, hardState: bool = False) -> Server:
    """A server, in the integrated mode when ``rules``."""
    if hardState:
        return Server(integratedXcapServer=True, pidfManipulation=True)
    return Server(integratedXcapServer=True) if rules else Server()


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


def cycleCase(rules: bool, hardState: bool = False) -> Callable[[int], None]:
    """``n`` SUBSCRIBE cycles, each a new watcher."""
    target = server(rules, hardState)
    presentities = [f"p{i}" for i in range(100)]
    for name in presentities:
        UA(target, name, "192.0.2.21", 5071).publish(PIDF)
        if rules:
            assert target.stack.xcap is not None
            run(
                target.stack.xcap.put(
                    XCAPDocument(name, "example.com", rulesDocument(None), 2, "e")
                )
            )
    counter = itertools.count()

    def cycle(n: int) -> None:
        for _ in range(n):
            i = next(counter)
            watcher = Subscriber(target, f"w{i}", "198.51.100.7", 5070 + i % 1000)
            watcher.subscribe(f"sip:{presentities[i % 100]}@example.com")
            for notify in watcher.notifies():
                watcher.answer(notify)
            watcher.subscribe(refresh=True, expires=0)
            for notify in watcher.notifies():
                watcher.answer(notify)

    return cycle


def measure(case: Callable[[int], None], seconds: float) -> float:
    """Operations per CPU second."""
    case(50)
    done, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        case(100)
        done += 100
    return done / (time.process_time() - start)


def fanOut(rules: bool, watchers: int, hardState: bool = False) -> tuple[float, int]:
    """CPU ms of one PUBLISH to ``watchers`` watchers; documents transformed."""
    target = server(rules, hardState)
    if hardState:
        assert target.stack.xcap is not None
        hard = PIDF.replace(b"t8a2f3c", b"voicemail").replace(b"u@", b"bob@")
        run(target.stack.xcap.put(XCAPDocument("bob", "example.com", hard, 16, "h")))
    names = [f"w{n}" for n in range(watchers)]
    if rules:
        groups = [names[k :: len(GRANTS)] for k in range(len(GRANTS))]
        assert target.stack.xcap is not None
        run(
            target.stack.xcap.put(
                XCAPDocument("bob", "example.com", rulesDocument(groups), 2, "e")
            )
        )
    for n, name in enumerate(names):
        watcher = Subscriber(target, name, f"198.51.{n // 250}.{n % 250 + 1}")
        watcher.subscribe("sip:bob@example.com")
        for notify in watcher.notifies():
            watcher.answer(notify)
    package = target.stack.packages.get("presence")
    assert isinstance(package, PresencePackage)
    before = package.transformed
    start = time.process_time()
    UA(target, "bob", "192.0.2.21", 5071).publish(PIDF)
    answered = answerEverything(target)
    elapsed = time.process_time() - start
    assert answered == watchers, answered
    target.close()
    return elapsed * 1000, package.transformed - before


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cycles: dict[str, list[float]] = {}
    fanouts: dict[str, list[tuple[float, int]]] = {}
    cases = (
        ("cycle-force", False, False),
        ("cycle-rules", True, False),
        ("cycle-hard", True, True),
    )
    for _ in range(args.repeats):
        for name, rules, hardState in cases:
            rate = measure(cycleCase(rules, hardState), args.seconds)
            cycles.setdefault(name, []).append(1000 / rate)
            print(f"{name:14} {rate:10,.0f} cycles/s  {1000 / rate:7.3f} CPU-ms/cycle")
        for name, rules, hardState in (
            ("fanout-force", False, False),
            ("fanout-rules", True, False),
            ("fanout-hard", True, True),
        ):
            ms, transformed = fanOut(rules, args.watchers, hardState)
            fanouts.setdefault(name, []).append((ms, transformed))
            print(
                f"{name:14} {ms:10,.1f} CPU-ms for {args.watchers} NOTIFYs"
                f"  {transformed} documents transformed"
            )
    if args.repeats < 2:
        return
    median = {name: statistics.median(ms) for name, ms in cycles.items()}
    print(f"medians of {args.repeats}:")
    for name, ms in median.items():
        print(f"{name:14} {ms:7.3f} CPU-ms/cycle")
    for name, runs in fanouts.items():
        print(
            f"{name:14} {statistics.median(r[0] for r in runs):10,.1f} CPU-ms,"
            f" {max(r[1] for r in runs)} documents transformed at most"
        )
    overhead = median["cycle-rules"] / median["cycle-force"] - 1
    print(
        f"rules over force_active on the cycle: {overhead:+.1%}"
        f" (target at most +20%: {'met' if overhead <= 0.20 else 'MISSED'})"
    )
    transformed = max(
        r[1] for name in ("fanout-rules", "fanout-hard") for r in fanouts[name]
    )
    print(
        f"fan-out: {transformed} transformed documents for {len(GRANTS)} distinct"
        " permission sets (target at most one each:"
        f" {'met' if transformed <= len(GRANTS) else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
