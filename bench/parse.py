"""Messages parsed per second, with the header access a presence server makes.

Run as ``python bench/parse.py``; ``--profile`` prints where the time goes,
``--seconds`` sets how long each case runs. Each iteration parses one datagram
and reads every header the dispatcher, the transaction layer and the
SUBSCRIBE/PUBLISH handlers read: the top Via and its branch, From and To with
their URIs and tags, Call-ID, CSeq, Contact, Event, Expires, Max-Forwards,
Accept, Content-Type, SIP-If-Match, the Request-URI and any Record-Route.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

from presence.sip.message import SIPRequest
from presence.sip.parser import parseDatagram

SUBSCRIBE = (
    b"SUBSCRIBE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 SUBSCRIBE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b"Record-Route: <sip:proxy.example.com;lr>\r\n"
    b"Event: presence\r\n"
    b"Expires: 3600\r\n"
    b"Accept: application/pidf+xml, application/rlmi+xml, multipart/related\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, SUBSCRIBE, NOTIFY, PUBLISH\r\n"
    b"Allow-Events: presence, message-summary, dialog\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" '
    b'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
    b'entity="sip:alice@example.com">\n'
    b'  <tuple id="t8a2f3c">\n'
    b"    <status><basic>open</basic></status>\n"
    b'    <contact priority="0.8">sip:alice@192.0.2.10</contact>\n'
    b"    <note>Available</note>\n"
    b"  </tuple>\n"
    b'  <dm:person id="p1"><dm:note>At my desk</dm:note></dm:person>\n'
    b"</presence>\n"
)

PUBLISH = (
    b"PUBLISH sip:alice@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK8dk3l2m;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=88asd7f\r\n"
    b"Call-ID: 98asjd8f7a6sd@192.0.2.10\r\n"
    b"CSeq: 2 PUBLISH\r\n"
    b"Event: presence\r\n"
    b"Expires: 3600\r\n"
    b"SIP-If-Match: dx200xyz\r\n"
    b"Content-Type: application/pidf+xml\r\n"
    b"User-Agent: Example SIP Phone 1.2.3\r\n"
    b"Content-Length: " + str(len(PIDF)).encode() + b"\r\n"
    b"\r\n" + PIDF
)

CASES: dict[str, bytes] = {"SUBSCRIBE": SUBSCRIBE, "PUBLISH + PIDF": PUBLISH}


def variants(data: bytes, count: int = 20000) -> list[bytes]:
    """Copies of ``data`` from ``count`` users, each with its own dialog.

    The users, tags, branches and Call-IDs differ from copy to copy, so no
    per-text cache in the parser can help with them; only the values every
    message shares (Event, Accept, Expires, the proxy's Record-Route...) repeat.
    """
    out = []
    for i in range(count):
        copy = (
            data.replace(b"alice", b"user%06d" % i)
            .replace(b"bob", b"buddy%06d" % i)
            .replace(b"192.0.2.10", b"10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255))
            .replace(b"z9hG4bK", b"z9hG4bK%06d" % i)
            .replace(b"tag=", b"tag=%06d" % i)
            .replace(b"Call-ID: ", b"Call-ID: %06d" % i)
        )
        out.append(copy)
    return out


def parseAndRead(data: bytes) -> object:
    """Parse one datagram and read what a presence server reads."""
    m = parseDatagram(data)
    assert isinstance(m, SIPRequest)
    via = m.topVia
    return (
        via.branch,
        via.sentBy,
        m.fromAddr.uri,
        m.fromAddr.tag,
        m.toAddr.uri,
        m.toAddr.tag,
        m.callId,
        m.cseq.number,
        m.cseq.method,
        m.contacts,
        m.event,
        m.expires,
        m.maxForwards,
        m.mediaTypes("accept"),
        m.contentType,
        m.header("sip-if-match"),
        m.uri,
        m.addressList("record-route"),
    )


def rate(fn: Callable[[bytes], object], data: list[bytes], seconds: float) -> float:
    """Run ``fn`` over ``data`` for about ``seconds``; return calls per second.

    The best of five runs, to keep out other processes' noise.
    """
    best = 0.0
    n = 2000
    for _ in range(5):
        batch = (data * (n // len(data) + 1))[:n]
        start = time.perf_counter()
        for item in batch:
            fn(item)
        elapsed = time.perf_counter() - start
        best = max(best, n / elapsed)
        n = max(2000, int(best * seconds / 5))
    return best


def parseOnly(data: bytes) -> object:
    """Parse one datagram and read nothing."""
    return parseDatagram(data)


def main() -> None:
    """Print the table, or the profile."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="store_true", help="print the top functions")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per case")
    ap.add_argument("--top", type=int, default=25, help="functions to show")
    args = ap.parse_args()

    cases: list[tuple[str, list[bytes]]] = []
    for name, data in CASES.items():
        cases.append((name, [data]))
        cases.append((name + ", new users", variants(data)))

    if args.profile:
        for name, items in cases:
            print(f"== {name} ({len(items[0])} bytes), 20000 iterations")
            batch = (items * (20000 // len(items) + 1))[:20000]
            profiler = cProfile.Profile()
            profiler.enable()
            for data in batch:
                parseAndRead(data)
            profiler.disable()
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(args.top)
        return

    print(
        f"{'message':<27} {'bytes':>5} {'parse only/s':>13} {'parse+read/s':>13} "
        f"{'us/msg':>7}"
    )
    for name, items in cases:
        parsed = rate(parseOnly, items, args.seconds)
        full = rate(parseAndRead, items, args.seconds)
        print(
            f"{name:<27} {len(items[0]):>5} {parsed:>13,.0f} {full:>13,.0f} "
            f"{1e6 / full:>7.1f}"
        )


if __name__ == "__main__":
    main()
