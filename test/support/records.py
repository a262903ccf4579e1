"""Records the tests build again and again."""

from __future__ import annotations

from typing import Any

from presence.storage.records import Subscription


def aliceSubscription(**changes: Any) -> Subscription:
    """Alice's subscription to bob's presence, with ``changes`` applied."""
    fields: dict[str, Any] = {
        "presentity": "sip:bob@example.com",
        "event": "presence",
        "eventId": "",
        "callId": "call-1",
        "toTag": "to-1",
        "fromTag": "from-1",
        "watcherUsername": "alice",
        "watcherDomain": "example.com",
        "toUser": "bob",
        "toDomain": "example.com",
        "localCSeq": 0,
        "remoteCSeq": 1,
        "contact": "sip:alice@192.0.2.20:5070",
        "recordRoute": "",
        "expires": 2_000_000,
    }
    fields.update(changes)
    return Subscription(**fields)


def carolSubscription(n: int, **changes: Any) -> Subscription:
    """Stored subscription number ``n`` to carol's presence, of watcher ``w{n}``.

    Many of them, each its own dialog, fill listings and pages.
    """
    return aliceSubscription(
        presentity="sip:carol@example.com",
        callId=f"call-{n:05d}",
        toTag="t",
        fromTag="f",
        watcherUsername=f"w{n}",
        watcherDomain="example.org",
        toUser="carol",
        localCSeq=1,
        contact=f"sip:w{n}@192.0.2.2",
        expires=4e9,
        socketInfo="udp:192.0.2.2:5060",
        **changes,
    )
