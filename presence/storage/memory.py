"""A store that keeps everything in memory.

For tests and throw-away runs, and the cache that the database-backed modes sit behind.

Expiry costs O(log n) per change and O(k) per sweep for k expired rows: each
put pushes (expires, key) on a heap, and a sweep pops only what is due,
skipping entries that a later put made stale.

The paged listings of the administration interface read ordered indexes of
the keys (`SortedKeys`), kept up to date when a row comes or goes (not when
it is replaced), so that a page costs O(log n + page).
"""

from __future__ import annotations

import dataclasses
import heapq
from bisect import bisect_right
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Final, TypeVar

from zope.interface import implementer

from presence.storage.interfaces import IPresenceStore
from presence.storage.records import (
    Binding,
    DialogKey,
    EventCounts,
    Page,
    Publication,
    PublicationKey,
    Subscription,
    SubscriptionKey,
    Watcher,
    WatcherKey,
    checkPage,
)
from presence.storage.sortedkeys import SortedKeys

K = TypeVar("K", bound=tuple[str, ...])
R = TypeVar("R")

#: Keys a page of a listing filtered by event alone looks at, per row it may
#: hold, before it stops (and says where to go on): a rare event among a
#: million subscriptions costs many short pages, never one long one.
SCAN_FACTOR: Final = 10


class _ExpiryHeap:
    """Due times of keyed rows, with stale entries skipped lazily."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._counter = 0

    def set(self, key: Hashable, when: float) -> None:
        if self._due.get(key) == when:
            return
        self._due[key] = when
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, key))
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._heap = [(w, i, k) for w, i, k in self._heap if self._due.get(k) == w]
            heapq.heapify(self._heap)

    def discard(self, key: Hashable) -> None:
        self._due.pop(key, None)

    def popDue(self, now: float) -> list[Hashable]:
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            if self._due.get(key) == when:
                del self._due[key]
                out.append(key)
        return out


@implementer(IPresenceStore)
class MemoryStore:
    """Every row in dictionaries, indexed for the look-ups the core makes."""

    def __init__(self) -> None:
        """Start empty."""
        self.ready = True
        self._publications: dict[tuple[str, str], dict[str, Publication]] = {}
        self._publicationExpiry = _ExpiryHeap()
        self._subscriptions: dict[SubscriptionKey, Subscription] = {}
        self._byPresentity: dict[tuple[str, str], dict[SubscriptionKey, None]] = {}
        # A list, not a dict: a dialog nearly always holds one subscription,
        # and a one-element list is a quarter of the size of a dict.
        self._byDialog: dict[DialogKey, list[SubscriptionKey]] = {}
        self._subscriptionExpiry = _ExpiryHeap()
        self._watchers: dict[
            tuple[str, str], dict[tuple[str, str, str, str], Watcher]
        ] = {}
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._bindingExpiry = _ExpiryHeap()
        # For the listings: the keys in order, the events ever stored (a
        # handful: the packages served), the rows by event.
        self._publicationKeys: SortedKeys[PublicationKey] = SortedKeys()
        self._subscriptionKeys: SortedKeys[SubscriptionKey] = SortedKeys()
        self._watcherKeys: SortedKeys[WatcherKey] = SortedKeys()
        self._events: set[str] = set()
        self._counts = EventCounts()

    # -- publications -----------------------------------------------------------

    async def publications(self, presentity: str, event: str) -> list[Publication]:
        """See `IPresenceStore.publications`."""
        rows = self._publications.get((presentity, event))
        if not rows:
            return []
        return sorted((p.copy() for p in rows.values()), key=lambda p: p.receivedTime)

    async def publication(
        self, presentity: str, event: str, etag: str
    ) -> Publication | None:
        """See `IPresenceStore.publication`."""
        row = self._publications.get((presentity, event), {}).get(etag)
        return None if row is None else row.copy()

    async def putPublication(
        self, publication: Publication, replacing: str | None = None
    ) -> None:
        """See `IPresenceStore.putPublication`."""
        key = (publication.presentity, publication.event)
        rows = self._publications.setdefault(key, {})
        if replacing is not None and replacing != publication.etag:
            if rows.pop(replacing, None) is not None:
                self._unlistPublication(*key, replacing)
            self._publicationExpiry.discard((*key, replacing))
        if publication.etag not in rows:
            self._listPublication(*key, publication.etag)
        rows[publication.etag] = publication.copy()
        self._publicationExpiry.set((*key, publication.etag), publication.expires)

    def _listPublication(self, presentity: str, event: str, etag: str) -> None:
        username, _, domain = presentity.rpartition("@")
        self._publicationKeys.add((username, domain, event, etag))
        self._events.add(event)
        counts = self._counts.publications
        counts[event] = counts.get(event, 0) + 1

    def _unlistPublication(self, presentity: str, event: str, etag: str) -> None:
        username, _, domain = presentity.rpartition("@")
        self._publicationKeys.discard((username, domain, event, etag))
        self._counts.publications[event] -= 1

    async def removePublication(
        self, presentity: str, event: str, etag: str
    ) -> Publication | None:
        """See `IPresenceStore.removePublication`."""
        return self._dropPublication((presentity, event, etag))

    def _dropPublication(self, key: Any) -> Publication | None:
        presentity, event, etag = key
        rows = self._publications.get((presentity, event))
        if rows is None:
            return None
        row = rows.pop(etag, None)
        if not rows:
            del self._publications[(presentity, event)]
        self._publicationExpiry.discard(key)
        if row is not None:
            self._unlistPublication(presentity, event, etag)
        return row

    async def expiredPublications(self, now: float) -> list[Publication]:
        """See `IPresenceStore.expiredPublications`."""
        out = []
        for key in self._publicationExpiry.popDue(now):
            row = self._dropPublication(key)
            if row is not None:
                out.append(row)
        return out

    # -- subscriptions ------------------------------------------------------------

    async def subscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.subscription`."""
        row = self._subscriptions.get(key)
        return None if row is None else row.copy()

    async def dialogSubscriptions(self, dialog: DialogKey) -> list[Subscription]:
        """See `IPresenceStore.dialogSubscriptions`."""
        keys = self._byDialog.get(dialog, ())
        return [self._subscriptions[k].copy() for k in keys]

    async def subscriptions(self, presentity: str, event: str) -> list[Subscription]:
        """See `IPresenceStore.subscriptions`."""
        keys = self._byPresentity.get((presentity, event), {})
        return [self._subscriptions[k].copy() for k in keys]

    async def putSubscription(self, subscription: Subscription) -> None:
        """See `IPresenceStore.putSubscription`."""
        key = subscription.key
        old = self._subscriptions.get(key)
        if old is None:
            self._subscriptionKeys.add(key)
            self._events.add(subscription.event)
            counts = self._counts.subscriptions
            counts[subscription.event] = counts.get(subscription.event, 0) + 1
        elif (old.presentity, old.event) != (
            subscription.presentity,
            subscription.event,
        ):
            self._unindex(old)
        self._subscriptions[key] = subscription.copy()
        self._byPresentity.setdefault(
            (subscription.presentity, subscription.event), {}
        )[key] = None
        siblings = self._byDialog.get(subscription.dialogKey)
        if siblings is None:
            self._byDialog[subscription.dialogKey] = [key]
        elif key not in siblings:
            siblings.append(key)
        self._subscriptionExpiry.set(key, subscription.expires)

    def _unindex(self, row: Subscription) -> None:
        index = (row.presentity, row.event)
        keys = self._byPresentity.get(index)
        if keys is not None:
            keys.pop(row.key, None)
            if not keys:
                del self._byPresentity[index]
        dialog = self._byDialog.get(row.dialogKey)
        if dialog is not None:
            if row.key in dialog:
                dialog.remove(row.key)
            if not dialog:
                del self._byDialog[row.dialogKey]

    async def removeSubscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.removeSubscription`."""
        return self._dropSubscription(key)

    def _dropSubscription(self, key: Any) -> Subscription | None:
        row = self._subscriptions.pop(key, None)
        if row is None:
            return None
        self._unindex(row)
        self._subscriptionExpiry.discard(key)
        self._subscriptionKeys.discard(key)
        self._counts.subscriptions[row.event] -= 1
        return row

    async def expiredSubscriptions(self, now: float) -> list[Subscription]:
        """See `IPresenceStore.expiredSubscriptions`."""
        out = []
        for key in self._subscriptionExpiry.popDue(now):
            row = self._dropSubscription(key)
            if row is not None:
                out.append(row)
        return out

    async def nextCSeq(self, key: SubscriptionKey) -> int | None:
        """See `IPresenceStore.nextCSeq`."""
        row = self._subscriptions.get(key)
        if row is None:
            return None
        siblings = [
            self._subscriptions[k] for k in self._byDialog.get(row.dialogKey, ())
        ]
        cseq = max(s.localCSeq for s in siblings) + 1
        for sibling in siblings:
            sibling.localCSeq = cseq
        return cseq

    async def claimNotify(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.claimNotify`."""
        if await self.nextCSeq(key) is None:
            return None
        return self._subscriptions[key].copy()

    # -- watchers -------------------------------------------------------------------

    async def watchers(self, presentity: str, event: str) -> list[Watcher]:
        """See `IPresenceStore.watchers`."""
        rows = self._watchers.get((presentity, event), {})
        return [dataclasses.replace(w) for w in rows.values()]

    async def putWatcher(self, watcher: Watcher) -> None:
        """See `IPresenceStore.putWatcher`."""
        rows = self._watchers.setdefault((watcher.presentity, watcher.event), {})
        key = watcher.key
        if key not in rows:
            self._watcherKeys.add(key)
            self._events.add(watcher.event)
            counts = self._counts.watchers
            counts[watcher.event] = counts.get(watcher.event, 0) + 1
        rows[key] = dataclasses.replace(watcher)

    async def removeWatcher(self, watcher: Watcher) -> None:
        """See `IPresenceStore.removeWatcher`."""
        rows = self._watchers.get((watcher.presentity, watcher.event))
        if rows is not None:
            if rows.pop(watcher.key, None) is not None:
                self._watcherKeys.discard(watcher.key)
                self._counts.watchers[watcher.event] -= 1
            if not rows:
                del self._watchers[(watcher.presentity, watcher.event)]

    # -- bindings -------------------------------------------------------------------

    async def bindings(self, aor: str) -> list[Binding]:
        """See `IPresenceStore.bindings`."""
        return [dataclasses.replace(b) for b in self._bindings.get(aor, {}).values()]

    async def putBinding(self, binding: Binding) -> None:
        """See `IPresenceStore.putBinding`."""
        self._bindings.setdefault(binding.aor, {})[binding.contact] = (
            dataclasses.replace(binding)
        )
        self._bindingExpiry.set((binding.aor, binding.contact), binding.expires)

    async def removeBinding(self, aor: str, contact: str) -> None:
        """See `IPresenceStore.removeBinding`."""
        self._dropBinding((aor, contact))

    def _dropBinding(self, key: Any) -> Binding | None:
        aor, contact = key
        rows = self._bindings.get(aor)
        if rows is None:
            return None
        row = rows.pop(contact, None)
        if not rows:
            del self._bindings[aor]
        self._bindingExpiry.discard(key)
        return row

    async def expiredBindings(self, now: float) -> list[Binding]:
        """See `IPresenceStore.expiredBindings`."""
        out = []
        for key in self._bindingExpiry.popDue(now):
            row = self._dropBinding(key)
            if row is not None:
                out.append(row)
        return out

    # -- listings -------------------------------------------------------------------

    async def listPublications(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Publication]:
        """See `IPresenceStore.listPublications`."""

        def row(key: PublicationKey) -> Publication:
            username, domain, event, etag = key
            # The presentity the key was split from: user@domain, or a
            # domain alone (or, oddly, @domain).
            aors = (f"{username}@{domain}",) if username else (domain, f"@{domain}")
            for aor in aors:
                found = self._publications.get((aor, event), {}).get(etag)
                if found is not None:
                    return found.copy()
            raise KeyError(key)

        if presentity is not None:
            keys = [
                p.key
                for ev in self._eventsOf(event)
                for p in self._publications.get((presentity, ev), {}).values()
            ]
            return _page(_sortedAfter(keys, after, 4), row, limit)
        return _page(
            self._publicationKeys.after(_key(after, 4)),
            row,
            limit,
            (lambda key: key[2] == event) if event is not None else None,
        )

    async def listSubscriptions(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Subscription]:
        """See `IPresenceStore.listSubscriptions`."""

        def row(key: SubscriptionKey) -> Subscription:
            return self._subscriptions[key].copy()

        if presentity is not None:
            keys = [
                key
                for ev in self._eventsOf(event)
                for key in self._byPresentity.get((presentity, ev), {})
            ]
            return _page(_sortedAfter(keys, after, 5), row, limit)
        return _page(
            self._subscriptionKeys.after(_key(after, 5)),
            row,
            limit,
            (lambda key: key[3] == event) if event is not None else None,
        )

    async def listWatchers(
        self,
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Watcher]:
        """See `IPresenceStore.listWatchers`."""

        def row(key: WatcherKey) -> Watcher:
            return dataclasses.replace(self._watchers[(key[0], key[3])][key])

        if presentity is not None:
            keys = [
                key
                for ev in self._eventsOf(event)
                for key in self._watchers.get((presentity, ev), {})
            ]
            return _page(_sortedAfter(keys, after, 4), row, limit)
        return _page(
            self._watcherKeys.after(_key(after, 4)),
            row,
            limit,
            (lambda key: key[3] == event) if event is not None else None,
        )

    def _eventsOf(self, event: str | None) -> Iterable[str]:
        return (event,) if event is not None else sorted(self._events)

    async def eventCounts(self) -> EventCounts:
        """See `IPresenceStore.eventCounts`."""
        counts = self._counts
        return EventCounts(
            {e: n for e, n in counts.publications.items() if n},
            {e: n for e, n in counts.subscriptions.items() if n},
            {e: n for e, n in counts.watchers.items() if n},
        )

    # -- counts, for statistics -----------------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many rows of each kind are kept."""
        return {
            "publications": sum(len(r) for r in self._publications.values()),
            "subscriptions": len(self._subscriptions),
            "watchers": sum(len(r) for r in self._watchers.values()),
            "bindings": sum(len(r) for r in self._bindings.values()),
        }


def _key(after: tuple[str, ...] | None, size: int) -> Any:
    """``after``, checked to be a key of ``size`` strings."""
    checkPage(after, size, 1)
    return after


def _sortedAfter(keys: list[K], after: tuple[str, ...] | None, size: int) -> list[K]:
    """The keys above ``after`` (a key of ``size`` strings), in order."""
    keys.sort()
    if after is None:
        return keys
    return keys[bisect_right(keys, _key(after, size)) :]


def _page(
    keys: Iterable[K],
    row: Callable[[K], R],
    limit: int,
    match: Callable[[K], bool] | None = None,
) -> Page[R]:
    """The rows of the first ``limit`` keys that ``match``, and where to go on.

    At most ``SCAN_FACTOR * limit`` keys are looked at: a filter that matches
    few rows gives short pages rather than a long wait.
    """
    checkPage(None, 0, limit)
    entries: list[R] = []
    budget = SCAN_FACTOR * limit
    last: K | None = None
    for key in keys:
        if len(entries) == limit or budget == 0:
            return Page(entries, last)
        budget -= 1
        last = key
        if match is None or match(key):
            entries.append(row(key))
    return Page(entries, None)
