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
