"""Records to the SQL stores' rows and back, in OpenSIPS's columns.

Rows to write are dicts of a table's columns, for the ``:name`` placeholders
of `presence.storage.statements`; rows read are sequences in the order of the
table's `presence.storage.statements.Table.columns`.

Times are kept to the second, as in OpenSIPS: a publication's expiry is
rounded up (it never expires early), a subscription's down (a NOTIFY's
``expires``, read from the row, is then never above the time the 2xx granted,
RFC 6665 section 4.2.2; the row may expire up to a second early), the other
times down. Addresses of record are kept
as OpenSIPS keeps them, the user part and the domain in two columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from presence.storage.records import (
    Binding,
    Publication,
    Subscription,
    SubscriptionKey,
    Watcher,
)
from presence.storage.statements import ACTIVE_WATCHERS, LOCATION, WATCHERS

#: A row as the driver returns it.
Row = Sequence[Any]

#: OpenSIPS's bits for ``location.methods`` (parser/msg_parser.h).
METHOD_BITS: Final = {
    "INVITE": 1,
    "CANCEL": 2,
    "ACK": 4,
    "BYE": 8,
    "INFO": 16,
    "OPTIONS": 32,
    "UPDATE": 64,
    "REGISTER": 128,
    "MESSAGE": 256,
    "SUBSCRIBE": 512,
    "NOTIFY": 1024,
    "PRACK": 2048,
    "REFER": 4096,
    "PUBLISH": 8192,
}
_OTHER_METHOD: Final = 16384


def methodBits(methods: str) -> int | None:
    """OpenSIPS's bit mask for a list of methods, ``None`` when it is empty.

    Args:
        methods: method names separated by commas (an Allow header's value).

    Returns:
        The mask, with OpenSIPS's "other" bit for unknown methods.
    """
    names = [m.strip().upper() for m in methods.split(",") if m.strip()]
    if not names:
        return None
    mask = 0
    for name in names:
        mask |= METHOD_BITS.get(name, _OTHER_METHOD)
    return mask


def _expiry(when: float) -> int:
    """An expiry time in whole seconds, rounded up."""
    return math.ceil(when)


def _instant(when: float) -> int:
    """Another time in whole seconds, rounded down."""
    return math.floor(when)


def addressValues(address: str) -> dict[str, object]:
    """The ``username`` and ``domain`` columns of an address of record.

    Args:
        address: ``user@domain``, or a domain alone.

    Returns:
        The two columns.
    """
    username, _, domain = address.rpartition("@")
    return {"username": username, "domain": domain}


def _join(user: str | None, domain: str | None) -> str:
    return f"{user}@{domain or ''}" if user else domain or ""


def _bytes(value: Any) -> bytes:
    return b"" if value is None else bytes(value)


# -- presentity --------------------------------------------------------------


def publicationRow(publication: Publication) -> dict[str, object]:
    """The ``presentity`` columns of a publication."""
    return {
        **addressValues(publication.presentity),
        "event": publication.event,
        "etag": publication.etag,
        "expires": _expiry(publication.expires),
        "received_time": _instant(publication.receivedTime),
        "body": publication.body,
        "extra_hdrs": publication.extraHeaders,
        "sender": publication.sender,
        "content_type": publication.contentType,
    }


def publicationFromRow(row: Row) -> Publication:
    """A publication from a ``presentity`` row, in column order."""
    (username, domain, event, etag, expires, received, body, extra, sender, ctype) = row
    return Publication(
        presentity=_join(username, domain),
        event=event,
        etag=etag,
        expires=float(expires),
        receivedTime=float(received),
        body=_bytes(body),
        contentType=ctype or "",
        sender=sender,
        extraHeaders=_bytes(extra),
    )


def publicationKeyValues(presentity: str, event: str, etag: str) -> dict[str, object]:
    """The key columns of a publication."""
    return {**addressValues(presentity), "event": event, "etag": etag}


# -- active_watchers ---------------------------------------------------------


def subscriptionRow(subscription: Subscription) -> dict[str, object]:
    """The ``active_watchers`` columns of a subscription."""
    s = subscription
    return {
        "presentity_uri": s.presentity,
        "watcher_username": s.watcherUsername,
        "watcher_domain": s.watcherDomain,
        "to_user": s.toUser,
        "to_domain": s.toDomain,
        "event": s.event,
        "event_id": s.eventId,
        "to_tag": s.toTag,
        "from_tag": s.fromTag,
        "callid": s.callId,
        "local_cseq": s.localCSeq,
        "remote_cseq": s.remoteCSeq,
        "contact": s.contact,
        "record_route": s.recordRoute,
        # Down, not up: the time remaining computed from the row must never
        # exceed what was granted (RFC 6665 section 4.2.2).
        "expires": _instant(s.expires),
        "status": s.status,
        "reason": s.reason,
        "version": s.version,
        "socket_info": s.socketInfo,
        "local_contact": s.localContact,
        "sharing_tag": s.sharingTag,
        "watcher_uri": s.watcherURI,
        "watcher_display_name": s.watcherDisplayName,
        "from_header": s.fromHeader,
        "to_header": s.toHeader,
        "created_time": _instant(s.createdTime),
    }


def subscriptionFromRow(row: Row) -> Subscription:
    """A subscription from an ``active_watchers`` row, in column order."""
    v = dict(zip(ACTIVE_WATCHERS.columns, row, strict=True))
    return Subscription(
        presentity=v["presentity_uri"],
        event=v["event"],
        eventId=v["event_id"] or "",
        callId=v["callid"],
        toTag=v["to_tag"],
        fromTag=v["from_tag"],
        watcherUsername=v["watcher_username"],
        watcherDomain=v["watcher_domain"],
        toUser=v["to_user"],
        toDomain=v["to_domain"],
        localCSeq=v["local_cseq"],
        remoteCSeq=v["remote_cseq"],
        contact=v["contact"],
        recordRoute=v["record_route"] or "",
        expires=float(v["expires"]),
        status=v["status"],
        reason=v["reason"],
        version=v["version"],
        socketInfo=v["socket_info"] or "",
        localContact=v["local_contact"] or "",
        watcherURI=v["watcher_uri"] or "",
        watcherDisplayName=v["watcher_display_name"],
        fromHeader=v["from_header"] or "",
        toHeader=v["to_header"] or "",
        sharingTag=v["sharing_tag"],
        createdTime=float(v["created_time"] or 0),
    )


def subscriptionKeyValues(key: SubscriptionKey) -> dict[str, object]:
    """The key columns of a subscription."""
    callId, toTag, fromTag, event, eventId = key
    return {
        "callid": callId,
        "to_tag": toTag,
        "from_tag": fromTag,
        "event": event,
        "event_id": eventId,
    }


def dialogValues(callId: str, toTag: str, fromTag: str) -> dict[str, object]:
    """The dialog columns of the subscriptions of one dialog."""
    return {"callid": callId, "to_tag": toTag, "from_tag": fromTag}


# -- watchers ----------------------------------------------------------------


def watcherRow(watcher: Watcher) -> dict[str, object]:
    """The ``watchers`` columns of a watcher."""
    return {
        "presentity_uri": watcher.presentity,
        "watcher_username": watcher.watcherUsername,
        "watcher_domain": watcher.watcherDomain,
        "event": watcher.event,
        "status": watcher.status,
        "reason": watcher.reason,
        "inserted_time": _instant(watcher.insertedTime),
    }


def watcherFromRow(row: Row) -> Watcher:
    """A watcher from a ``watchers`` row, in column order."""
    presentity, username, domain, event, status, reason, inserted = row
    return Watcher(
        presentity=presentity,
        watcherUsername=username,
        watcherDomain=domain,
        event=event,
        status=status,
        reason=reason,
        insertedTime=float(inserted),
    )


def watcherKeyValues(key: tuple[str, str, str, str]) -> dict[str, object]:
    """The key columns of a watcher."""
    return dict(zip(WATCHERS.key, key, strict=True))


# -- location ----------------------------------------------------------------


def bindingRow(binding: Binding) -> dict[str, object]:
    """The ``location`` columns of a binding."""
    return {
        **addressValues(binding.aor),
        "contact": binding.contact,
        "received": binding.received,
        "path": binding.path,
        "expires": _expiry(binding.expires),
        "q": binding.q,
        "callid": binding.callId,
        "cseq": binding.cseq,
        "user_agent": binding.userAgent,
        "methods": methodBits(binding.methods),
        "method_names": binding.methods,
        "contact_params": binding.params,
    }


def bindingFromRow(row: Row) -> Binding:
    """A binding from a ``location`` row, in column order."""
    v = dict(zip(LOCATION.columns, row, strict=True))
    return Binding(
        aor=_join(v["username"], v["domain"]),
        contact=v["contact"],
        expires=float(v["expires"]),
        q=None if v["q"] is None else float(v["q"]),
        callId=v["callid"],
        cseq=v["cseq"],
        received=v["received"] or "",
        path=v["path"] or "",
        userAgent=v["user_agent"] or "",
        methods=v["method_names"] or "",
        params=v["contact_params"] or "",
    )


def bindingKeyValues(aor: str, contact: str) -> dict[str, object]:
    """The key columns of a binding."""
    return {**addressValues(aor), "contact": contact}
