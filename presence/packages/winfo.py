"""The ``presence.winfo`` event package (RFC 3857), bodies RFC 3858.

Only the presentity itself may watch its watchers. The first NOTIFY of a
winfo subscription carries ``state="full"`` with every watcher of the
presentity's presence; later ones carry ``state="partial"`` with the watchers
that changed since the last NOTIFY to that subscription. The ``version``
attribute counts up per winfo subscription, from 0, without gaps.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from lxml import etree
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from presence.packages.base import DEFAULT_EXPIRES, NO_EXPIRES, EventPackage
from presence.packages.interfaces import (
    ENDING_WATCHER_EVENTS,
    Body,
    ExpiryRange,
    IWatcherInfoPackage,
)
from presence.packages.xml import serialise
from presence.status import STATUS_NAMES
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Publication, Subscription, SubscriptionKey

WINFO_NS: Final = "urn:ietf:params:xml:ns:watcherinfo"
WINFO_TYPE: Final = "application/watcherinfo+xml"
_W: Final = "{" + WINFO_NS + "}"
_NSMAP: Final[Any] = {None: WINFO_NS}

#: Watcher events of RFC 3857 section 3.2.
EVENTS: Final = frozenset(
    {
        "subscribe",
        "approved",
        "deactivated",
        "probation",
        "rejected",
        "timeout",
        "giveup",
        "noresource",
    }
)


def watcherId(subscription: Subscription) -> str:
    """A stable, opaque id for one watcher subscription."""
    digest = hashlib.sha1(
        "\0".join(subscription.key).encode("utf-8", "surrogateescape")
    )
    return "w" + digest.hexdigest()[:16]


@dataclass(frozen=True)
class WatcherEntry:
    """One ``<watcher>`` element of a watcher-list."""

    id: str
    status: str
    event: str
    uri: str
    displayName: str | None
    durationSubscribed: int
    expiration: int | None

    def element(self) -> etree._Element:
        """The element, in the default namespace."""
        element = etree.Element(_W + "watcher", nsmap=_NSMAP)
        element.set("id", self.id)
        element.set("status", self.status)
        element.set("event", self.event)
        element.set("duration-subscribed", str(self.durationSubscribed))
        if self.expiration is not None:
            element.set("expiration", str(self.expiration))
        if self.displayName:
            element.set("display-name", self.displayName)
        element.text = self.uri
        return element


def entryFor(subscription: Subscription, event: str, now: float) -> WatcherEntry:
    """The watcher entry describing one presence subscription."""
    status = STATUS_NAMES.get(subscription.status, "pending")
    if event in ENDING_WATCHER_EVENTS:
        status = "terminated"
    expiration = None
    if status != "terminated":
        expiration = max(0, math.ceil(subscription.expires - now))
    return WatcherEntry(
        id=watcherId(subscription),
        status=status,
        event=event,
        uri=subscription.watcherURI or f"sip:{subscription.watcher}",
        displayName=subscription.watcherDisplayName,
        durationSubscribed=max(0, int(now - (subscription.createdTime or now))),
        expiration=expiration,
    )


def document(
    version: int,
    state: str,
    resource: str,
    package: str,
    entries: Sequence[WatcherEntry],
) -> bytes:
    """A watcherinfo document (RFC 3858 section 4)."""
    root = etree.Element(_W + "watcherinfo", nsmap=_NSMAP)
    root.set("version", str(version))
    root.set("state", state)
    watcherList = etree.SubElement(root, _W + "watcher-list")
    watcherList.set("resource", resource)
    watcherList.set("package", package)
    for entry in entries:
        watcherList.append(entry.element())
    return serialise(root)


@implementer(IWatcherInfoPackage)
class WatcherInfoPackage(EventPackage):
    """RFC 3857 watcher information for the presence package.

    It keeps, for each winfo subscription, the watcher changes not yet sent;
    the core reports changes through `watcherChanged`. Watcher information
    is never published, so every PUBLISH body is refused.
    """

    name = "presence.winfo"
    acceptTypes: ClassVar[list[str]] = []
    notifyTypes: ClassVar[list[str]] = [WINFO_TYPE]
    acceptsPublish = False
    needsAuthorisation = False
    ownerOnly = True

    def __init__(
        self,
        clock: IReactorTime,
        store: IPresenceStore,
        watched: str = "presence",
        subscribeExpires: ExpiryRange = DEFAULT_EXPIRES,
    ) -> None:
        """Watch the watchers of the ``watched`` package, reading ``store``."""
        super().__init__(NO_EXPIRES, subscribeExpires)
        self.clock = clock
        self.store = store
        self.watched = watched
        self._pending: dict[SubscriptionKey, dict[str, WatcherEntry]] = {}
        self._full: set[SubscriptionKey] = set()

    async def watcherChanged(
        self,
        subscription: Subscription,
        event: str,
        subscribers: list[Subscription] | None = None,
    ) -> list[Subscription]:
        """Record a change of one watcher for every winfo subscriber.

        Args:
            subscription: the watched package's subscription that changed.
            event: what happened, a watcher event of RFC 3857 (``subscribe``,
                ``approved``, ``timeout``, ``deactivated``...).
            subscribers: the winfo subscriptions to the presentity, when the
                caller read them already (shared mode, in the same round
                trip as the watcher's row); ``None``: read here.

        Returns:
            The winfo subscriptions to notify.
        """
        winfo = subscribers
        if winfo is None:
            winfo = await self.store.subscriptions(subscription.presentity, self.name)
        if not winfo:
            return []
        entry = entryFor(subscription, event, self.clock.seconds())
        for watcher in winfo:
            self._pending.setdefault(watcher.key, {})[entry.id] = entry
        return winfo

    def forget(self, subscription: Subscription) -> None:
        """Drop what is kept for an ended winfo subscription."""
        self._pending.pop(subscription.key, None)
        self._full.discard(subscription.key)

    def stale(self, subscription: Subscription) -> None:
        """Make the next NOTIFY full state: the changes were seen elsewhere.

        Shared mode: another server of the cluster saw the watchers change,
        or this one took the subscription over, so what changed since the
        last NOTIFY is not known here. A full document may follow partial
        ones (RFC 3858 section 4); its version still counts up by one.
        """
        self._full.add(subscription.key)

    async def notifyBody(
        self,
        presentity: str,
        subscription: Subscription,
        publications: Sequence[Publication],
    ) -> Body | None:
        """Full state for the first NOTIFY, the changes after it."""
        version = subscription.version
        subscription.version = version + 1
        if version == 0 or subscription.key in self._full:
            self._full.discard(subscription.key)
            self._pending.pop(subscription.key, None)
            now = self.clock.seconds()
            watchers = await self.store.subscriptions(presentity, self.watched)
            entries = [entryFor(w, "subscribe", now) for w in watchers]
            state = "full"
        else:
            entries = list(self._pending.pop(subscription.key, {}).values())
            state = "partial"
        return Body(
            WINFO_TYPE, document(version, state, presentity, self.watched, entries)
        )
