"""A watcher for the by-hand run of docs/interop-kamailio-xcap.md.

Run from the repository root with the project's virtual environment:

    .venv/bin/python etc/interop/watch.py --port 15070 --seconds 60

bob publishes an open PIDF, then alice subscribes to bob's presence over
UDP; every response and every NOTIFY (its Subscription-State and the first
line of its body) is printed with the time, for ``--seconds`` seconds. It
answers each NOTIFY 200. It uses the end-to-end tests' user agent
(test/support/sockets.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import importlib.util

from twisted.internet import defer, task

_SOCKETS = Path(__file__).resolve().parents[2] / "test" / "support" / "sockets.py"
# The standard library's own "test" package hides the repository's: load the
# file by its path.
_spec = importlib.util.spec_from_file_location("interop_sockets", _SOCKETS)
assert _spec is not None and _spec.loader is not None
_sockets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sockets)
SocketUA = _sockets.SocketUA

PIDF = b"""<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:bob@example.com">
  <tuple id="t1"><status><basic>open</basic></status><note>bob is in</note></tuple>
</presence>
"""


def say(what: str) -> None:
    print(time.strftime("%H:%M:%S"), what, flush=True)


async def main(reactor: Any, options: argparse.Namespace) -> None:
    bob = SocketUA(reactor, "bob", options.port)
    bob.tag = f"bob-{time.time_ns()}"
    await bob.start()
    alice = SocketUA(reactor, options.watcher, options.port)
    alice.tag = f"{options.watcher}-{time.time_ns()}"
    await alice.start()
    if options.publish:
        response = await bob.publish(PIDF, expires=3600)
        say(f"bob PUBLISH -> {response.code} {response.phrase}")
    response = await alice.subscribe("sip:bob@example.com", expires=options.expires)
    say(f"{options.watcher} SUBSCRIBE -> {response.code} {response.phrase}")
    deadline = reactor.seconds() + options.seconds
    while reactor.seconds() < deadline:
        alice.timeout = max(deadline - reactor.seconds(), 0.1)
        try:
            notify = await alice.notify()
        except defer.TimeoutError:
            break
        state = notify.header("Subscription-State")
        body = notify.body.decode("utf-8", "replace")
        basic = "closed" if "<basic>closed" in body else "open" if "<basic>open" in body else "-"
        say(f"NOTIFY Subscription-State: {state}; body {len(notify.body)} bytes, basic {basic}")
        if options.verbose and body:
            print(body, flush=True)
    if alice.toTag is not None and options.unsubscribe:
        try:
            response = await alice.subscribe(expires=0)
            say(f"un-SUBSCRIBE -> {response.code}")
        except defer.TimeoutError:
            say("un-SUBSCRIBE: no answer")
    say(f"errors: {alice.errors + bob.errors}")
    await alice.close()
    await bob.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=15070)
    parser.add_argument("--watcher", default="alice")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--expires", type=int, default=600)
    parser.add_argument("--no-publish", dest="publish", action="store_false")
    parser.add_argument("--no-unsubscribe", dest="unsubscribe", action="store_false")
    parser.add_argument("--verbose", action="store_true")
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, parser.parse_args())))
