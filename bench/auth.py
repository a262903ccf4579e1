"""What digest authentication costs: responses verified per second, and per request.

Run as ``python bench/auth.py [CASE ...]`` (``--seconds`` sets how long each
case runs, ``--repeats 3`` runs every case three times in turn and prints the
medians, ``--profile CASE`` prints where one case's time goes, ``--no-gc``
turns the garbage collector off). CPU time of this process
(``time.process_time``), no sockets; each batch is prepared first (users
provisioned, challenges fetched, requests built) and only what follows is
measured:

- ``hash-md5``, ``hash-sha256``: one expected response computed
  (`presence.auth.digest.digestResponse`: H(A2) and the response; HA1 is
  stored);
- ``verify-md5``, ``verify-sha256``: one request's digest response verified
  by `DigestAuthenticator.authenticate
  <presence.auth.check.DigestAuthenticator.authenticate>`: the Authorization
  header parsed, the nonce's HMAC checked, the credentials read (from memory),
  the response computed and compared, the nonce count advanced;
- ``publish-off``, ``publish-nc``: one initial PUBLISH (a new presentity
  each, 400-byte PIDF) through the whole in-memory server of
  `presence.testing` (parse, transaction, dispatcher, handler, store,
  response), with authentication off; on, the client reusing the nonce of a
  challenge it had beforehand with a growing nonce count (one request per
  PUBLISH). The requests are built beforehand and the responses are not
  parsed: this is the server's work;
- ``publish-challenge``: the client challenged every time (a 401, then the
  request with credentials: two requests per PUBLISH), the user agent's
  work (parsing the 401, hashing, building the second request) included:
  for the server's cost of a challenged PUBLISH alone, see ``bench/run.py
  publish-auth``;
- ``subscribe-off``, ``subscribe-nc``: one subscribe cycle (SUBSCRIBE to one
  of 100 presentities, its NOTIFY answered, the un-SUBSCRIBE in the dialog,
  its NOTIFY answered), a new watcher each, with authentication off; on,
  both SUBSCRIBEs answering a challenge the watcher had beforehand (nonce
  counts 1 and 2). The client's share is small: the initial SUBSCRIBE is
  built beforehand, the un-SUBSCRIBE is formatted, and a NOTIFY is answered
  by copying five of its header lines.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import heapq
import itertools
import pstats
import re
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from presence.auth.check import DigestAuthenticator
from presence.auth.digest import (
    answerChallenge,
    computeHA1,
    digestResponse,
    parseChallenge,
)
from presence.auth.identity import Identity
from presence.sip.message import SIPRequest
from presence.sip.parser import parseDatagram
from presence.sip.transport import Peer
from presence.storage.credentials import Credentials, MemoryCredentialStore
from presence.testing import UA, Server

#: A case's preparation of ``n`` operations, returning the part measured.
Prepare = Callable[[int], Callable[[], None]]

PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:u@example.com">\n'
    b'  <tuple id="t8a2f3c">\n'
    b"    <status><basic>open</basic></status>\n"
    b'    <contact priority="0.8">sip:u@192.0.2.10</contact>\n'
    b"    <note>Available for calls</note>\n"
    b"    <timestamp>2024-05-01T09:30:00Z</timestamp>\n"
    b"  </tuple>\n"
    b'  <note xml:lang="en">In the office until five</note>\n'
    b"</presence>\n"
)
PEER = Peer("UDP", "192.0.2.10", 5060)
PASSWORD = "bench password"


def credentials(username: str, domain: str = "example.com") -> Credentials:
    """A user provisioned as presence-ctl does: the MD5 and SHA-256 hashes."""
    return Credentials(
        username,
        domain,
        ha1=computeHA1("MD5", username, domain, PASSWORD),
        ha1Sha256=computeHA1("SHA-256", username, domain, PASSWORD),
    )


def hashCase(algorithm: str) -> Prepare:
    """Compute expected responses."""
    ha1 = computeHA1(algorithm, "alice", "example.com", PASSWORD)

    def prepare(n: int) -> Callable[[], None]:
        def hashes() -> None:
            for i in range(n):
                digestResponse(
                    algorithm,
                    ha1,
                    "nonce",
                    "PUBLISH",
                    "sip:alice@example.com",
                    f"{i:08x}",
                    "cnonce",
                )

        return hashes

    return prepare


def verifyCase(algorithm: str) -> Prepare:
    """Verify requests, one nonce with a growing count."""
    clock = Clock()
    clock.advance(1_000_000)
    store = MemoryCredentialStore()
    store.put(credentials("alice"))
    authenticator = DigestAuthenticator(
        clock, store, b"k" * 32, algorithms=(algorithm,), nonceCountLimit=10**7
    )
    nonce = authenticator.nonces.issue("example.com")
    challenge = (
        f'Digest realm="example.com", nonce="{nonce}", algorithm={algorithm},'
        ' qop="auth"'
    )
    counter = itertools.count(1)

    def prepare(n: int) -> Callable[[], None]:
        requests = []
        for _ in range(n):
            value = answerChallenge(
                challenge,
                "alice",
                PASSWORD,
                "PUBLISH",
                "sip:alice@example.com",
                nc=next(counter),
            )
            requests.append(publishRequest("alice", value))

        def verifications() -> None:
            for request in requests:
                found = authenticator.authenticate(request, PEER)
                if not isinstance(found, Identity):
                    d = Deferred.fromCoroutine(found)
                    d.addErrback(lambda f: print(f.getErrorMessage()))

        return verifications

    return prepare


def publishRequest(user: str, authorization: str | None = None) -> SIPRequest:
    """A parsed initial PUBLISH of ``user``, with credentials if given."""
    headers = [
        f"PUBLISH sip:{user}@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1",
        "Max-Forwards: 70",
        f"To: <sip:{user}@example.com>",
        f"From: <sip:{user}@example.com>;tag=1",
        "Call-ID: c1",
        "CSeq: 1 PUBLISH",
        "Event: presence",
        "Content-Type: application/pidf+xml",
    ]
    if authorization:
        headers.append(f"Authorization: {authorization}")
    data = ("\r\n".join(headers) + f"\r\nContent-Length: {len(PIDF)}\r\n\r\n").encode()
    message = parseDatagram(data + PIDF)
    assert isinstance(message, SIPRequest)
    return message


def publishCase(mode: str) -> Prepare:
    """Initial PUBLISHes through the in-memory server, a new presentity each."""
    server = benchServer(
        authentication=mode != "off", authAlgorithms=("SHA-256", "MD5")
    )
    store = server.stack.credentials
    assert isinstance(store, MemoryCredentialStore)
    counter = itertools.count(1)

    def prepare(n: int) -> Callable[[], None]:
        agents = []
        for _ in range(n):
            i = next(counter)
            user = f"u{i}"
            store.put(credentials(user))
            agents.append(UA(server, user, port=10000 + i % 50000))
        if mode == "challenge":
            flush(server)
            return lambda: challengedPublishes(server, agents)
        prepared: list[tuple[bytes, tuple[str, int]]] = []
        for ua in agents:
            authorization = None
            if mode == "nc":
                # One challenge per user beforehand; each PUBLISH then reuses
                # the nonce with the next count, as phones that keep nonces do.
                ua.send(publishBytes(ua))
                value = ua.response().headerLines("www-authenticate")[0]
                authorization = answer(ua, value, "PUBLISH", ua.aor, nc=2)
            prepared.append((publishBytes(ua, authorization), (ua.host, ua.port)))
        flush(server)

        def publishes() -> None:
            written = server.udp.written
            for data, source in prepared:
                server.receive(data, source)
                assert written[-1][0].startswith(b"SIP/2.0 200 "), written[-1]
                written.clear()

        return publishes

    return prepare


def benchServer(**settings: Any) -> Server:
    """The in-memory server, its fake clock's delayed calls kept in a heap.

    `Clock.callLater <twisted.internet.task.Clock.callLater>` sorts its whole
    list of calls each time, and a cancelled call is removed from it: with
    the Timer J or K of every transaction of a batch waiting (the fake clock
    stands still while a batch runs), that cost more than the server's own
    work, and grew with the batch. A heap costs what a real reactor's does.
    """
    server = Server(**settings)
    clock = server.reactor
    heap: list[tuple[float, int, DelayedCall]] = []
    order = itertools.count()

    def push(call: DelayedCall) -> None:
        heapq.heappush(heap, (call.getTime(), next(order), call))

    def callLater(
        delay: float, f: Callable[..., object], *args: object, **kw: object
    ) -> DelayedCall:
        call = DelayedCall(
            clock.seconds() + delay, f, args, kw, _ignore, _ignore, clock.seconds
        )
        push(call)
        return call

    def advance(amount: float) -> None:
        clock.rightNow += amount
        while heap and heap[0][0] <= clock.rightNow:
            _, _, call = heapq.heappop(heap)
            if call.cancelled or call.called:
                continue
            if call.getTime() > clock.rightNow:
                push(call)  # reset to later
                continue
            call.called = 1
            call.func(*call.args, **call.kw)

    for call in clock.calls:
        push(call)
    clock.calls = []
    clock.callLater = callLater  # type: ignore[method-assign, assignment]
    clock.advance = advance  # type: ignore[method-assign]
    return server


def _ignore(call: DelayedCall) -> None:
    """A delayed call's canceller and resetter: the heap skips it when due."""


def flush(server: Server) -> None:
    """Let the server's timers fire before a batch is timed.

    The batch's challenges too: a client that reuses its nonce is challenged
    once per nonce lifetime, not once per request, so the 401 transactions
    waiting out their Timer J are few among its requests' transactions.
    Transactions' timers are at most 32 s (64*T1), far within a nonce's
    lifetime (300 s): the nonces fetched before this are still valid after.
    The garbage of the preparation is collected too (with ``--no-gc`` as
    without): left, a case that prepares more (challenges) would run on a
    larger heap, and its timed part would pay for fresh memory.
    """
    server.reactor.advance(33)
    gc.collect()


def challengedPublishes(server: Server, agents: list[UA]) -> None:
    """Each UA's PUBLISH challenged, answered, accepted: the UA's work included."""
    for ua in agents:
        ua.send(publishBytes(ua))
        value = ua.response().headerLines("www-authenticate")[0]
        ua.send(publishBytes(ua, answer(ua, value, "PUBLISH", ua.aor)))
        assert ua.response().code == 200


def publishBytes(ua: UA, authorization: str | None = None) -> bytes:
    """An initial PUBLISH of the UA's own presentity."""
    headers = [
        ("Event", "presence"),
        ("Expires", "3600"),
        ("Content-Type", "application/pidf+xml"),
    ]
    if authorization:
        headers.append(("Authorization", authorization))
    return ua.request("PUBLISH", ua.aor, headers, PIDF)


def answer(ua: UA, challenge: str, method: str, uri: str, nc: int = 1) -> str:
    """The UA's Authorization for a challenge."""
    assert parseChallenge(challenge)["algorithm"] == "SHA-256"
    return answerChallenge(challenge, ua.user, PASSWORD, method, uri, nc=nc)


_TO_TAG: Final = re.compile(rb"\r\nTo:[^\r]*;tag=([^\r;]+)")
_DIALOG_HEADERS: Final = (b"via:", b"from:", b"to:", b"call-id:", b"cseq:")


def answerWritten(server: Server) -> bytes | None:
    """Answer each NOTIFY the server sent with 200; the To tag of its 200.

    The NOTIFY's 200 copies its Via, From, To, Call-ID and CSeq lines as
    they are, so that the client's share of the measure stays small.
    """
    written = server.udp.written
    tag = None
    while written:
        sent = list(written)
        written.clear()
        for data, destination in sent:
            if data.startswith(b"SIP/2.0 "):
                assert data.startswith(b"SIP/2.0 200 "), data
                found = _TO_TAG.search(data)
                tag = found.group(1) if found else tag
                continue
            head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            assert head[0].startswith(b"NOTIFY "), head[0]
            lines = [line for line in head if line.lower().startswith(_DIALOG_HEADERS)]
            response = b"\r\n".join(
                [b"SIP/2.0 200 OK", *lines, b"Content-Length: 0", b"", b""]
            )
            server.receive(response, destination)
    return tag


def subscribeCase(mode: str) -> Prepare:
    """SUBSCRIBE cycles through the in-memory server, a new watcher each.

    A cycle is a SUBSCRIBE to one of 100 presentities, its NOTIFY answered,
    the un-SUBSCRIBE (Expires 0) in the dialog and its NOTIFY answered. With
    ``nc``, each watcher was challenged beforehand and both SUBSCRIBEs
    answer that challenge (nonce counts 1 and 2).
    """
    server = benchServer(
        authentication=mode != "off", authAlgorithms=("SHA-256", "MD5")
    )
    store = server.stack.credentials
    assert isinstance(store, MemoryCredentialStore)
    presentities = [f"sip:p{i}@example.com" for i in range(100)]
    for i in range(100):
        ua = UA(server, f"p{i}", "192.0.2.21", 5071)
        if mode == "off":
            ua.send(publishBytes(ua))
        else:
            store.put(credentials(ua.user))
            ua.send(publishBytes(ua))
            value = ua.response().headerLines("www-authenticate")[0]
            ua.send(publishBytes(ua, answer(ua, value, "PUBLISH", ua.aor)))
        assert ua.response().code == 200
    counter = itertools.count()
    subscribe = [("Event", "presence"), ("Expires", "600")]
    unsubscribe = [("Event", "presence"), ("Expires", "0")]

    def prepare(n: int) -> Callable[[], None]:
        prepared = []
        for _ in range(n):
            i = next(counter)
            watcher = UA(server, f"w{i}", "198.51.100.7", 5070 + i % 1000)
            presentity = presentities[i % 100]
            first: list[tuple[str, str]] = []
            second: list[tuple[str, str]] = []
            if mode == "nc":
                store.put(credentials(watcher.user))
                watcher.send(watcher.request("SUBSCRIBE", presentity, subscribe))
                value = watcher.response().headerLines("www-authenticate")[0]
                first = [
                    ("Authorization", answer(watcher, value, "SUBSCRIBE", presentity))
                ]
                second = [
                    (
                        "Authorization",
                        answer(watcher, value, "SUBSCRIBE", presentity, 2),
                    )
                ]
            callId = f"sub-{i}@198.51.100.7"
            data = watcher.request(
                "SUBSCRIBE", presentity, subscribe + first, callId=callId
            )
            prepared.append((watcher, presentity, callId, data, unsubscribe + second))
        flush(server)

        def cycles() -> None:
            for watcher, presentity, callId, data, headers in prepared:
                source = (watcher.host, watcher.port)
                server.receive(data, source)
                tag = answerWritten(server)
                assert tag is not None
                server.receive(
                    watcher.request(
                        "SUBSCRIBE",
                        presentity,
                        headers,
                        callId=callId,
                        toTag=tag.decode(),
                    ),
                    source,
                )
                answerWritten(server)

        return cycles

    return prepare


CASES: dict[str, tuple[Callable[[], Prepare], str]] = {
    "hash-md5": (lambda: hashCase("MD5"), "response"),
    "hash-sha256": (lambda: hashCase("SHA-256"), "response"),
    "verify-md5": (lambda: verifyCase("MD5"), "request"),
    "verify-sha256": (lambda: verifyCase("SHA-256"), "request"),
    "publish-off": (lambda: publishCase("off"), "PUBLISH"),
    "publish-nc": (lambda: publishCase("nc"), "PUBLISH"),
    "publish-challenge": (lambda: publishCase("challenge"), "PUBLISH"),
    "subscribe-off": (lambda: subscribeCase("off"), "cycle"),
    "subscribe-nc": (lambda: subscribeCase("nc"), "cycle"),
}


def measure(prepare: Prepare, seconds: float) -> float:
    """Operations per CPU second, over batches until ``seconds`` are spent.

    Only the timed part of each batch is measured, not its preparation.
    """
    done, spent, batch = 0, 0.0, 1000
    prepare(100)()  # warm up
    while spent < seconds:
        timed = prepare(batch)
        started = time.process_time()
        timed()
        spent += time.process_time() - started
        done += batch
    return done / spent


def main() -> None:
    """Print each case's rate and CPU time per operation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every case this many times, in turn, and print the medians",
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="disable the garbage collector: the benchmark keeps every"
        " transaction alive, and the collections that costs differ from case"
        " to case",
    )
    parser.add_argument("--profile", choices=sorted(CASES))
    parser.add_argument(
        "--count",
        choices=sorted(CASES),
        help="run one case's timed part once, over --operations operations,"
        " inside functools.reduce: for valgrind --tool=callgrind"
        " --collect-atstart=no --toggle-collect=functools_reduce, which then"
        " counts the instructions of that part alone",
    )
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("cases", nargs="*", choices=[*sorted(CASES), []])
    options = parser.parse_args()
    if options.no_gc:
        gc.disable()
    if options.count:
        prepare = CASES[options.count][0]()
        prepare(100)()
        timed = prepare(options.operations)
        functools.reduce(lambda _a, _b: timed(), (None, None))
        return
    if options.profile:
        prepare = CASES[options.profile][0]()
        prepare(100)()
        timed = prepare(5000)
        profiler = cProfile.Profile()
        profiler.enable()
        timed()
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(30)
        return
    names = options.cases or list(CASES)
    results: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(options.repeats):
        for name in names:
            make, unit = CASES[name]
            rate = measure(make(), options.seconds)
            results[name].append(1e6 / rate)
            print(f"{name:18} {rate:12,.0f} {unit}/s  {1e6 / rate:8.1f} us CPU each")
    if options.repeats > 1:
        print("medians:")
        for name in names:
            print(f"{name:18} {statistics.median(results[name]):8.1f} us CPU each")


if __name__ == "__main__":
    main()
