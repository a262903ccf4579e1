"""What digest authentication costs: responses verified per second, and per PUBLISH.

Run as ``python bench/auth.py`` (``--seconds`` sets how long each case runs,
``--profile CASE`` prints where one case's time goes, ``--no-gc`` turns the
garbage collector off). CPU time of this
process (``time.process_time``), no sockets:

- ``hash-md5``, ``hash-sha256``: one expected response computed
  (`presence.auth.digest.digestResponse`: H(A2) and the response; HA1 is
  stored);
- ``verify-md5``, ``verify-sha256``: one request's digest response verified
  by `DigestAuthenticator.authenticate
  <presence.auth.check.DigestAuthenticator.authenticate>`: the Authorization
  header parsed, the nonce's HMAC checked, the credentials read (from memory),
  the response computed and compared, the nonce count advanced;
- ``publish-off``, ``publish-nc``, ``publish-challenge``: one initial PUBLISH
  (a new presentity each, 400-byte PIDF) through the whole in-memory server
  of `presence.testing` (parse, transaction, dispatcher, handler, store,
  response), with authentication off; on, the client reusing its nonce with a
  growing nonce count (one request per PUBLISH); on, the client challenged
  every time (a 401, then the request with credentials: two requests per
  PUBLISH). The user agents' own work (building requests, parsing responses)
  is in every ``publish-*`` figure, and answering the challenge (hashing,
  building the second request) in ``publish-challenge``'s: for the server's
  cost of a challenged PUBLISH alone, see ``bench/run.py publish-auth``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from presence.auth.check import DigestAuthenticator
from presence.auth.digest import (
    answerChallenge,
    computeHA1,
    digestResponse,
    parseChallenge,
)
from presence.sip.message import SIPRequest
from presence.sip.parser import parseDatagram
from presence.sip.transport import Peer
from presence.storage.credentials import Credentials, MemoryCredentialStore
from presence.testing import UA, Server

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


def hashCase(algorithm: str) -> Callable[[int], None]:
    """Compute ``n`` expected responses."""
    ha1 = computeHA1(algorithm, "alice", "example.com", PASSWORD)

    def run(n: int) -> None:
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

    return run


def verifyCase(algorithm: str) -> Callable[[int], None]:
    """Verify ``n`` requests, one nonce with a growing count."""
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
    counter = [0]

    def run(n: int) -> None:
        # The requests are built first: the client's work is not measured.
        requests = []
        for _ in range(n):
            counter[0] += 1
            value = answerChallenge(
                challenge,
                "alice",
                PASSWORD,
                "PUBLISH",
                "sip:alice@example.com",
                nc=counter[0],
            )
            requests.append(publishRequest("alice", value))
        started = time.process_time()
        for request in requests:
            d = Deferred.fromCoroutine(authenticator.authenticate(request, PEER))
            d.addErrback(lambda f: print(f.getErrorMessage()))
        run.measured = time.process_time() - started  # type: ignore[attr-defined]

    return run


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


def publishCase(mode: str) -> Callable[[int], None]:
    """``n`` initial PUBLISHes through the in-memory server, a new user each."""
    server = Server(authentication=mode != "off", authAlgorithms=("SHA-256", "MD5"))
    store = server.stack.credentials
    assert isinstance(store, MemoryCredentialStore)
    counter = [0]

    def run(n: int) -> None:
        agents = []
        for _ in range(n):
            counter[0] += 1
            user = f"u{counter[0]}"
            store.put(credentials(user))
            agents.append(UA(server, user, port=10000 + counter[0] % 50000))
        prepared: list[tuple[UA, bytes]] = []
        if mode == "nc":
            # One challenge per user beforehand; each PUBLISH then reuses the
            # nonce with the next count, as phones that keep nonces do.
            for ua in agents:
                ua.send(publishBytes(ua))
                [value] = ua.response().headerLines("www-authenticate")[:1]
                prepared.append((ua, publishBytes(ua, answer(ua, value, nc=2))))
        started = time.process_time()
        if mode == "off":
            for ua in agents:
                ua.send(publishBytes(ua))
                assert ua.response().code == 200
        elif mode == "nc":
            for ua, data in prepared:
                ua.send(data)
                assert ua.response().code == 200
        else:
            for ua in agents:
                ua.send(publishBytes(ua))
                challenged = ua.response()
                value = challenged.headerLines("www-authenticate")[0]
                ua.send(publishBytes(ua, answer(ua, value)))
                assert ua.response().code == 200
        run.measured = time.process_time() - started  # type: ignore[attr-defined]

    return run


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


def answer(ua: UA, challenge: str, nc: int = 1) -> str:
    """The UA's Authorization for a challenge."""
    assert parseChallenge(challenge)["algorithm"] == "SHA-256"
    return answerChallenge(challenge, ua.user, PASSWORD, "PUBLISH", ua.aor, nc=nc)


CASES: dict[str, tuple[Callable[[], Callable[[int], None]], str]] = {
    "hash-md5": (lambda: hashCase("MD5"), "response"),
    "hash-sha256": (lambda: hashCase("SHA-256"), "response"),
    "verify-md5": (lambda: verifyCase("MD5"), "request"),
    "verify-sha256": (lambda: verifyCase("SHA-256"), "request"),
    "publish-off": (lambda: publishCase("off"), "PUBLISH"),
    "publish-nc": (lambda: publishCase("nc"), "PUBLISH"),
    "publish-challenge": (lambda: publishCase("challenge"), "PUBLISH"),
}


def measure(run: Callable[[int], None], seconds: float) -> float:
    """Operations per CPU second, over batches until ``seconds`` are spent."""
    done, spent, batch = 0, 0.0, 1000
    run(100)  # warm up
    while spent < seconds:
        started = time.process_time()
        run(batch)
        elapsed = getattr(run, "measured", None)
        spent += elapsed if elapsed is not None else time.process_time() - started
        done += batch
    return done / spent


def main() -> None:
    """Print each case's rate and CPU time per operation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="disable the garbage collector: the benchmark keeps every"
        " transaction alive, and the collections that costs differ from case"
        " to case",
    )
    parser.add_argument("--profile", choices=sorted(CASES))
    parser.add_argument("cases", nargs="*", choices=[*sorted(CASES), []])
    options = parser.parse_args()
    if options.no_gc:
        gc.disable()
    if options.profile:
        run = CASES[options.profile][0]()
        profiler = cProfile.Profile()
        profiler.enable()
        run(5000)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        return
    for name in options.cases or CASES:
        make, unit = CASES[name]
        rate = measure(make(), options.seconds)
        print(f"{name:18} {rate:12,.0f} {unit}/s  {1e6 / rate:8.1f} us CPU each")


if __name__ == "__main__":
    main()
