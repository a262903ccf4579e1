"""A watcher for the by-hand run of docs/interop-kamailio-xcap.md.

Run from the repository root with the project's virtual environment:

    .venv/bin/python etc/interop/watch.py --port 15070 --seconds 60

bob (``--presentity``) publishes an open PIDF, then alice (``--watcher``)
subscribes to bob's presence over UDP; every response and every NOTIFY (its
Subscription-State and the first PIDF basic status of its body) is printed
with the time, for ``--seconds`` seconds. It answers each NOTIFY 200. It
uses the end-to-end tests' user agent (test/support/sockets.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Any

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
    """Print a line with the time."""
    print(time.strftime("%H:%M:%S"), what, flush=True)


def basic(body: str) -> str:
    """The first PIDF basic status in a body, or ``-``."""
    for status in ("open", "closed"):
        if f"<basic>{status}" in body:
            return status
    return "-"


async def main(reactor: Any, options: argparse.Namespace) -> None:
    """Publish for bob, subscribe as the watcher, print what comes."""
    bob = SocketUA(reactor, options.presentity, options.port)
    bob.tag = f"{options.presentity}-{time.time_ns()}"
    await bob.start()
    alice = SocketUA(reactor, options.watcher, options.port)
    alice.tag = f"{options.watcher}-{time.time_ns()}"
    await alice.start()
    if options.publish:
        response = await bob.publish(
            PIDF.replace(b"sip:bob@", f"sip:{options.presentity}@".encode()),
            expires=3600,
        )
        say(f"{options.presentity} PUBLISH -> {response.code} {response.phrase}")
    response = await alice.subscribe(
        f"sip:{options.presentity}@example.com", expires=options.expires
    )
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
        say(
            f"NOTIFY Subscription-State: {state};"
            f" body {len(notify.body)} bytes, basic {basic(body)}"
        )
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
    parser.add_argument("--presentity", default="bob")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--expires", type=int, default=600)
    parser.add_argument("--no-publish", dest="publish", action="store_false")
    parser.add_argument("--no-unsubscribe", dest="unsubscribe", action="store_false")
    parser.add_argument("--verbose", action="store_true")
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))
