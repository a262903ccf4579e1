"""A store that keeps everything in memory.

For tests and throw-away runs, and the cache that the database-backed modes sit behind.

Expiry costs O(log n) per change and O(k) per sweep for k expired rows: each
put pushes (expires, key) on a heap, and a sweep pops only what is due,
skipping entries that a later put made stale (the row is gone, or its expiry
is no longer the one pushed).

Memory matters here: with a phone population every subscription has a
presentity and a watcher row of its own, so an index that holds one small
dict per presentity costs more than the subscription itself. The indexes
hold a lone key (or row) directly and a dict only when there are several
(`_add`, `_drop`, `_members`), are nested by event (a handful of packages)
so that no (presentity, event) tuple is made per row, find a dialog's
subscriptions by Call-ID, and the expiry heap keeps no second dict of due
times: the row's own ``expires`` says whether an entry is current.

The paged listings of the administration interface read ordered indexes of
the keys (`SortedKeys`), kept up to date when a row comes or goes (not when
it is replaced), so that a page costs O(log n + page).
"""

from __future__ import annotations

import dataclasses
import heapq
import operator
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
    """Due times of keyed rows; an entry is current while ``due(key)`` is its time.

    ``due`` reads the row's expiry from its table (``None`` when the row is
    gone), so that nothing but the heap's own (time, key) pairs is kept.
    """

    def __init__(
        self, due: Callable[[Any], float | None], size: Callable[[], int]
    ) -> None:
        self._heap: list[tuple[float, Any]] = []
        self._dueOf = due
        self._size = size

    def set(self, key: Hashable, when: float) -> None:
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * self._size() + 1024:
            due = self._dueOf
            self._heap = [(w, k) for w, k in self._heap if due(k) == w]
            heapq.heapify(self._heap)

    def discard(self, key: Hashable) -> None:
        """Nothing to do: the row is gone, so its entries are stale."""

    def popDue(self, now: float) -> list[Hashable]:
        out: list[Hashable] = []
        seen: set[Hashable] = set()
        heap = self._heap
        due = self._dueOf
        while heap and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            if key not in seen and due(key) == when:
                seen.add(key)
                out.append(key)
        return out


def _add(index: dict[str, Any], name: str, key: Hashable, row: Any, keyOf: Any) -> None:
    """Put ``row`` (named ``key``) under ``name`` in ``index``.

    ``index[name]`` is absent, a lone row, or a dict of rows by key when
    there are several: nearly every presentity of a phone population has one
    subscription and one watcher, and a dict is the size of several rows.
    ``keyOf(row)`` is a row's key.
    """
    members = index.get(name)
    if members is None:
        index[name] = row
    elif type(members) is dict:
        members[key] = row
    elif keyOf(members) == key:
        index[name] = row
    else:
        index[name] = {keyOf(members): members, key: row}


def _drop(index: dict[str, Any], name: str, key: Hashable, keyOf: Any) -> None:
    """Take the row named ``key`` from under ``name`` in ``index``."""
    members = index.get(name)
    if members is None:
        return
    if type(members) is dict:
        members.pop(key, None)
        if len(members) == 1:
            index[name] = next(iter(members.values()))
        elif not members:
            del index[name]
    elif keyOf(members) == key:
        del index[name]


def _members(index: dict[str, Any], name: str) -> list[Any]:
    """The rows under ``name`` in ``index``, in the order they came."""
    members = index.get(name)
    if members is None:
        return []
    if type(members) is dict:
        return list(members.values())
    return [members]


#: A subscription's key, from its fields (what ``Subscription.key`` makes).
_SUBSCRIPTION_KEY: Final = operator.attrgetter(
    "callId", "toTag", "fromTag", "event", "eventId"
)
#: What tells a presentity's watcher rows of one event apart.
_WATCHER_OF: Final = operator.attrgetter("watcherUsername", "watcherDomain")


@implementer(IPresenceStore)
class MemoryStore:
    """Every row in dictionaries, indexed for the look-ups the core makes."""

    def __init__(self) -> None:
        """Start empty."""
        self.ready = True
        self._publications: dict[tuple[str, str], dict[str, Publication]] = {}
        self._publicationExpiry = _ExpiryHeap(
            self._publicationDue, lambda: len(self._publications)
        )
        self._subscriptions: dict[SubscriptionKey, Subscription] = {}
        # event -> presentity -> the subscriptions' keys (see `_add`).
        self._byPresentity: dict[str, dict[str, Any]] = {}
        # Call-ID -> the keys of the subscriptions of dialogs with that
        # Call-ID (see `_add`); the tags tell the dialogs apart.
        self._byCallId: dict[str, Any] = {}
        self._subscriptionExpiry = _ExpiryHeap(
            self._subscriptionDue, lambda: len(self._subscriptions)
        )
        # event -> presentity -> (watcher user, domain) -> row (see `_add`).
        self._watchers: dict[str, dict[str, Any]] = {}
        self._bindings: dict[str, dict[str, Binding]] = {}
        self._bindingExpiry = _ExpiryHeap(self._bindingDue, lambda: len(self._bindings))
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

    def _publicationDue(self, key: tuple[str, str, str]) -> float | None:
        row = self._publications.get(key[:2], {}).get(key[2])
        return None if row is None else row.expires

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

    def _subscriptionDue(self, key: SubscriptionKey) -> float | None:
        row = self._subscriptions.get(key)
        return None if row is None else row.expires

    async def subscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.subscription`."""
        row = self._subscriptions.get(key)
        return None if row is None else row.copy()

    def dialogRows(self, dialog: DialogKey) -> list[Subscription]:
        """The rows (not copies) of the subscriptions of a dialog."""
        callId, toTag, fromTag = dialog
        return [
            row
            for row in _members(self._byCallId, callId)
            if row.toTag == toTag and row.fromTag == fromTag
        ]

    async def dialogSubscriptions(self, dialog: DialogKey) -> list[Subscription]:
        """See `IPresenceStore.dialogSubscriptions`."""
        return [row.copy() for row in self.dialogRows(dialog)]

    async def subscriptions(self, presentity: str, event: str) -> list[Subscription]:
        """See `IPresenceStore.subscriptions`."""
        byPresentity = self._byPresentity.get(event)
        if byPresentity is None:
            return []
        return [row.copy() for row in _members(byPresentity, presentity)]

    async def putSubscription(self, subscription: Subscription) -> None:
        """See `IPresenceStore.putSubscription`."""
        key = subscription.key
        old = self._subscriptions.get(key)
        if old is None:
            self._subscriptionKeys.add(key)
            self._events.add(subscription.event)
            counts = self._counts.subscriptions
            counts[subscription.event] = counts.get(subscription.event, 0) + 1
        elif old.presentity != subscription.presentity:
            _drop(self._byPresentity[old.event], old.presentity, key, _SUBSCRIPTION_KEY)
        row = subscription.copy()
        self._subscriptions[key] = row
        byPresentity = self._byPresentity.setdefault(row.event, {})
        other = byPresentity.get(row.presentity)
        if other is not None:
            # The watchers of one presentity share one copy of its name and
            # of its user (the strings are not interned: most presentities
            # of a phone population have one watcher).
            if type(other) is dict:
                other = next(iter(other.values()))
            row.presentity = other.presentity
            if row.toUser == other.toUser:
                row.toUser = other.toUser
        _add(byPresentity, row.presentity, key, row, _SUBSCRIPTION_KEY)
        _add(self._byCallId, row.callId, key, row, _SUBSCRIPTION_KEY)
        if old is None or old.expires != row.expires:
            self._subscriptionExpiry.set(key, row.expires)

    def _unindex(self, row: Subscription) -> None:
        key = row.key
        byPresentity = self._byPresentity.get(row.event)
        if byPresentity is not None:
            _drop(byPresentity, row.presentity, key, _SUBSCRIPTION_KEY)
        _drop(self._byCallId, row.callId, key, _SUBSCRIPTION_KEY)

    async def removeSubscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.removeSubscription`."""
        return self._dropSubscription(key)

    def _dropSubscription(self, key: Any) -> Subscription | None:
        row = self._subscriptions.pop(key, None)
        if row is None:
            return None
        self._unindex(row)
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
        siblings = self.dialogRows(row.dialogKey)
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

    def watcherRow(self, watcher: Watcher) -> Watcher | None:
        """The row (not a copy) kept under ``watcher``'s key, if any."""
        rows = self._watchers.get(watcher.event)
        if rows is None:
            return None
        for row in _members(rows, watcher.presentity):
            if _WATCHER_OF(row) == _WATCHER_OF(watcher):
                found: Watcher = row
                return found
        return None

    async def watchers(self, presentity: str, event: str) -> list[Watcher]:
        """See `IPresenceStore.watchers`."""
        rows = self._watchers.get(event)
        if rows is None:
            return []
        return [_copyWatcher(w) for w in _members(rows, presentity)]

    async def putWatcher(self, watcher: Watcher) -> None:
        """See `IPresenceStore.putWatcher`."""
        if self.watcherRow(watcher) is None:
            self._watcherKeys.add(watcher.key)
            self._events.add(watcher.event)
            counts = self._counts.watchers
            counts[watcher.event] = counts.get(watcher.event, 0) + 1
        _add(
            self._watchers.setdefault(watcher.event, {}),
            watcher.presentity,
            _WATCHER_OF(watcher),
            _copyWatcher(watcher),
            _WATCHER_OF,
        )

    async def removeWatcher(self, watcher: Watcher) -> None:
        """See `IPresenceStore.removeWatcher`."""
        if self.watcherRow(watcher) is None:
            return
        _drop(
            self._watchers[watcher.event],
            watcher.presentity,
            _WATCHER_OF(watcher),
            _WATCHER_OF,
        )
        self._watcherKeys.discard(watcher.key)
        self._counts.watchers[watcher.event] -= 1

    # -- bindings -------------------------------------------------------------------

    def _bindingDue(self, key: tuple[str, str]) -> float | None:
        row = self._bindings.get(key[0], {}).get(key[1])
        return None if row is None else row.expires

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
                for key in map(
                    _SUBSCRIPTION_KEY,
                    _members(self._byPresentity.get(ev, {}), presentity),
                )
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
            for found in _members(self._watchers.get(key[3], {}), key[0]):
                if _WATCHER_OF(found) == key[1:3]:
                    return _copyWatcher(found)
            raise KeyError(key)

        if presentity is not None:
            keys = [
                w.key
                for ev in self._eventsOf(event)
                for w in _members(self._watchers.get(ev, {}), presentity)
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
            "watchers": sum(self._counts.watchers.values()),
            "bindings": sum(len(r) for r in self._bindings.values()),
        }


def _copyWatcher(row: Watcher) -> Watcher:
    """A copy of a watcher row (positional: faster than ``replace``)."""
    return Watcher(
        row.presentity,
        row.watcherUsername,
        row.watcherDomain,
        row.event,
        row.status,
        row.reason,
        row.insertedTime,
    )


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
