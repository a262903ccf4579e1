"""What a refreshWatchers costs that changes the status of 1,000 watchers.

Run as ``python bench/reauthorise.py`` (``--watchers`` sets how many,
``--repeats`` how many runs of each case, the median printed). CPU time of
this process (``time.process_time``), no sockets, the whole in-memory server
of `presence.testing` in the integrated XCAP mode (the user agents' own work
is in every figure). One presentity, bob, has ``--watchers`` watchers over
UDP and watches his own ``presence.winfo`` over TCP (a winfo NOTIFY listing
a thousand watchers is some 150 kB: over UDP's 65,535 bytes, it could never
be sent as a datagram, RFC 3261 section 18.1.1 wants TCP for it; a UDP
datagram over 65,535 bytes is counted as undeliverable, never answered, and
printed); his rules are rewritten in the
memory XCAP store, then XML-RPC ``refreshWatchers(bob, "presence", 0)`` is
called on the administration resource (argument checks, the re-authorise
operation, the answer) and every NOTIFY it causes is sent and answered 200
(the watchers' and the winfo ones): the figure is the whole operation, from
the call to the last answer.

- ``allow-block``: every watcher active under ``allow``; the rules now
  ``block``: each subscription ends with ``terminated;reason=rejected``;
- ``confirm-allow``: every watcher pending under ``confirm``; the rules now
  ``allow`` with ``provide-services`` and ``provide-note``: each gets its
  first NOTIFY with the (transformed) state;
- ``hardstate-type1``: with ``pidf_manipulation``, every watcher active; bob's
  pidf-manipulation row rewritten, then ``refreshWatchers`` type 1: the hard
  state read again and every watcher notified of the new aggregate (no status
  changes: what a change of the hard state costs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred

from presence.sip.errors import SIPParseError
from presence.sip.message import SIPRequest, responseTo
from presence.sip.parser import StreamFramer, parseDatagram
from presence.status import ACTIVE, PENDING
from presence.storage.xcap import PIDF_MANIPULATION, PRES_RULES, XCAPDocument
from presence.testing import Server, Subscriber

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.com">'
    b'<tuple id="t8a2f3c"><status><basic>open</basic></status>'
    b'<contact priority="0.8">sip:bob@192.0.2.10</contact>'
    b"<note>Available for calls</note></tuple>"
    b'<note xml:lang="en">In the office until five</note></presence>'
)
HARD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.com">'
    b'<tuple id="voicemail"><status><basic>open</basic></status>'
    b"<contact>sip:bob-vm@example.com</contact></tuple>"
    b"<note>Office hours %d-17</note></presence>"
)
#: Sizes of the datagrams the server wrote over 65,535 bytes: UDP cannot
#: carry them (no answer is sent for them).
OVERSIZED: list[int] = []
#: Sizes of the winfo NOTIFYs bob got over TCP.
WINFO: list[int] = []

GRANTS = (
    "<pr:provide-services><pr:all-services/></pr:provide-services>"
    "<pr:provide-note>true</pr:provide-note>"
)


def rules(handling: str) -> bytes:
    """One rule for the whole domain with this sub-handling."""
    return (
        f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}"><cr:rule id="all">'
        '<cr:conditions><cr:identity><cr:many domain="example.com"/>'
        "</cr:identity></cr:conditions>"
        f"<cr:actions><pr:sub-handling>{handling}</pr:sub-handling></cr:actions>"
        f"<cr:transformations>{GRANTS}</cr:transformations></cr:rule></cr:ruleset>"
    ).encode()


def run(coroutine: Coroutine[Any, Any, Any]) -> None:
    """Run a coroutine of the memory stores (it finishes at once)."""
    Deferred.fromCoroutine(coroutine)


def answerEverything(
    target: Server, winfo: Subscriber, bodies: list[bytes] | None = None
) -> int:
    """Answer every request the server sent with 200, until none is left.

    The UDP datagrams (the watchers') and bob's winfo NOTIFYs over TCP; a
    datagram over 65,535 bytes is one UDP could not have carried: counted
    in `OVERSIZED`, not answered (the server's transaction then times out,
    as it would on a network).
    """
    answered = 0
    while True:
        written = list(target.udp.written)
        target.udp.written.clear()
        for data, addr in written:
            if len(data) > 65_535:
                OVERSIZED.append(len(data))
                continue
            try:
                message: Any = parseDatagram(data)
            except SIPParseError:
                continue
            if isinstance(message, SIPRequest):
                if bodies is not None:
                    bodies.append(message.body)
                target.receive(responseTo(message, 200, toTag=None).toBytes(), addr)
                answered += 1
        notifies = winfo.notifies()
        for notify in notifies:
            WINFO.append(len(notify.toBytes()))
            winfo.answer(notify)
            answered += 1
        if not written and not notifies:
            return answered


def put(target: Server, doc: bytes, docType: int, etag: str) -> None:
    """Write one of bob's rows, as the XCAP server does."""
    assert target.stack.xcap is not None
    run(target.stack.xcap.put(XCAPDocument("bob", "example.com", doc, docType, etag)))


def statuses(target: Server) -> dict[int, int]:
    """How many of bob's watcher rows have each status."""
    found: dict[int, int] = {}

    async def count() -> None:
        for row in await target.store.watchers("sip:bob@example.com", "presence"):
            found[row.status] = found.get(row.status, 0) + 1

    run(count())
    return found


def case(name: str, watchers: int) -> tuple[float, int, int]:
    """One run: CPU ms of the refresh, NOTIFYs answered, status changes."""
    hardState = name == "hardstate-type1"
    target = Server(integratedXcapServer=True, pidfManipulation=hardState)
    before, after = {
        "allow-block": ("allow", "block"),
        "confirm-allow": ("confirm", "allow"),
        "hardstate-type1": ("allow", "allow"),
    }[name]
    put(target, rules(before), PRES_RULES, "r1")
    bob = Subscriber(target, "bob", "192.0.2.21", 5071)
    bob.publish(PIDF)
    if hardState:
        put(target, HARD % 9, PIDF_MANIPULATION, "h1")
    winfo = Subscriber(target, "bob", "192.0.2.21", 5072, transport="TCP")
    # The UA reads messages of any size (the server's own parser stops at
    # 65,535 bytes; a winfo NOTIFY of 1,000 watchers is twice that).
    winfo.framer = StreamFramer(maxSize=1 << 24)
    winfo.subscribe("sip:bob@example.com", event="presence.winfo")
    for n in range(watchers):
        watcher = Subscriber(target, f"w{n}", f"198.51.{n // 250}.{n % 250 + 1}")
        watcher.subscribe("sip:bob@example.com")
        for notify in watcher.notifies():
            watcher.answer(notify)
    answerEverything(target, winfo)
    expected = ACTIVE if before == "allow" else PENDING
    assert statuses(target) == {expected: watchers}, statuses(target)
    if hardState:
        put(target, HARD % 8, PIDF_MANIPULATION, "h2")
        kind = 1
    else:
        put(target, rules(after), PRES_RULES, "r2")
        kind = 0
    rpc: Any = target.stack.admin.resource.children[b"RPC2"]
    answers: list[Any] = []
    start = time.process_time()
    rpc.xmlrpc_refreshWatchers("sip:bob@example.com", "presence", kind).addCallback(
        answers.append
    )
    bodies: list[bytes] = []
    answered = answerEverything(target, winfo, bodies)
    elapsed = time.process_time() - start
    [answer] = answers
    assert answered >= watchers, answered
    if name == "allow-block":
        assert answer["changed"] == watchers, answer
    elif hardState:
        assert sum(b"Office hours 8-17" in b for b in bodies) == watchers, bodies[:2]
    elif name == "confirm-allow":
        assert statuses(target) == {ACTIVE: watchers}, statuses(target)
        assert answer["changed"] == watchers, answer
    target.close()
    return elapsed * 1000, answered, int(answer["changed"])


def main() -> None:
    """Print the figures: medians of ``--repeats`` runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "cases",
        nargs="*",
        default=["allow-block", "confirm-allow", "hardstate-type1"],
    )
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, int, int]]] = {name: [] for name in args.cases}
    OVERSIZED.clear()
    WINFO.clear()
    for _ in range(args.repeats):
        # Interleaved: each round runs every case once.
        for name in args.cases:
            runs[name].append(case(name, args.watchers))
    for name in args.cases:
        ms = statistics.median(r[0] for r in runs[name])
        _, answered, changed = runs[name][0]
        print(
            f"{name:16} {ms:9,.1f} CPU-ms  {ms * 1000 / args.watchers:7.1f} us per"
            f" watcher  ({changed} status changes, {answered} NOTIFYs answered;"
            f" runs {', '.join(f'{r[0]:,.0f}' for r in runs[name])})"
        )
    if WINFO:
        print(
            f"{len(WINFO)} winfo NOTIFYs over TCP in all, the largest"
            f" {max(WINFO):,} bytes"
        )
    if OVERSIZED:
        print(
            f"{len(OVERSIZED)} datagrams over 65,535 bytes written to UDP (the"
            f" largest {max(OVERSIZED):,}): not deliverable, not answered"
        )


if __name__ == "__main__":
    main()
