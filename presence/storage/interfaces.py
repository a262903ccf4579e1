"""The interface every store provides, whatever keeps the rows."""

from __future__ import annotations

from zope.interface import Attribute, Interface

from presence.storage.records import (
    Binding,
    DialogKey,
    EventCounts,
    Page,
    Publication,
    Subscription,
    SubscriptionKey,
    Watcher,
)


class IPresenceStore(Interface):
    """Publications, subscriptions, watchers and bindings.

    Every method may do I/O and is a coroutine; a memory store answers at
    once. Records handed out are the caller's to change: a change is kept
    only when the record is put back. Every method may raise
    `presence.storage.errors.StorageError`.
    """

    ready = Attribute("Whether the store can serve requests now.")

    # Publications (table presentity)

    async def publications(presentity: str, event: str) -> list[Publication]:
        """The live publications of a presentity for an event, oldest first."""

    async def publication(presentity: str, event: str, etag: str) -> Publication | None:
        """The publication with this entity tag, or ``None``."""

    async def putPublication(
        publication: Publication, replacing: str | None = None
    ) -> None:
        """Insert a publication, or replace the one whose etag is ``replacing``."""

    async def removePublication(
        presentity: str, event: str, etag: str
    ) -> Publication | None:
        """Remove a publication; return it, or ``None`` if there was none."""

    async def expiredPublications(now: float) -> list[Publication]:
        """Remove and return the publications that expired at ``now`` or before."""

    # Subscriptions (table active_watchers)

    async def subscription(key: SubscriptionKey) -> Subscription | None:
        """The subscription with this key, or ``None``."""

    async def dialogSubscriptions(dialog: DialogKey) -> list[Subscription]:
        """Every subscription sharing one dialog."""

    async def subscriptions(presentity: str, event: str) -> list[Subscription]:
        """The subscriptions to a presentity for an event."""

    async def putSubscription(subscription: Subscription) -> None:
        """Insert or replace a subscription."""

    async def removeSubscription(key: SubscriptionKey) -> Subscription | None:
        """Remove a subscription; return it, or ``None`` if there was none."""

    async def expiredSubscriptions(now: float) -> list[Subscription]:
        """Remove and return the subscriptions that expired at ``now`` or before."""

    async def nextCSeq(key: SubscriptionKey) -> int | None:
        """Take the next local CSeq of a subscription's dialog, atomically.

        Returns:
            The CSeq for the next NOTIFY, saved as the subscription's (and its
            dialog's) ``localCSeq``; ``None`` if the subscription is gone.
        """

    async def claimNotify(key: SubscriptionKey) -> Subscription | None:
        """Take the next local CSeq, as `nextCSeq`, and return the row.

        One step for what a NOTIFY needs: the subscription as it is now, with
        its ``localCSeq`` already the CSeq to send (one database round trip
        in shared mode instead of two).

        Returns:
            The subscription, or ``None`` if it is gone.
        """

    # Watchers (table watchers)

    async def watchers(presentity: str, event: str) -> list[Watcher]:
        """The watcher rows of a presentity for an event."""

    async def putWatcher(watcher: Watcher) -> None:
        """Insert or replace a watcher row."""

    async def removeWatcher(watcher: Watcher) -> None:
        """Remove a watcher row, if present."""

    # Registrar bindings (table location)

    async def bindings(aor: str) -> list[Binding]:
        """The live bindings of an address of record."""

    async def putBinding(binding: Binding) -> None:
        """Insert or replace the binding of ``binding.aor`` and ``binding.contact``."""

    async def removeBinding(aor: str, contact: str) -> None:
        """Remove a binding, if present."""

    async def expiredBindings(now: float) -> list[Binding]:
        """Remove and return the bindings that expired at ``now`` or before."""

    # Listings, for the administration interface

    async def listPublications(
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Publication]:
        """A page of publications, in the order of their key.

        Keyset paging: the key is the ``presentity`` table's unique key,
        ``(username, domain, event, etag)`` (`Publication.key`), and each page
        starts after the key where the last one stopped, so that a page costs
        the same however far into the listing it is, and a row present for the
        whole listing comes in it exactly once. Keys compare as the database
        compares them (code points in memory and in SQLite; the database's
        collation on PostgreSQL).

        Args:
            presentity: only this presentity's (``user@domain``), or all.
            event: only this event package's, or all.
            after: the ``next`` of the previous page; ``None`` for the first.
            limit: the most rows the page holds (at least 1).
        """

    async def listSubscriptions(
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Subscription]:
        """A page of subscriptions, in the order of their key.

        As `listPublications`; the key is `Subscription.key`, ``(callid,
        to_tag, from_tag, event, event_id)``, the unique key of
        ``active_watchers``.

        Args:
            presentity: only the subscriptions to this presentity URI, or all.
            event: only this event package's, or all.
            after: the ``next`` of the previous page; ``None`` for the first.
            limit: the most rows the page holds (at least 1).
        """

    async def listWatchers(
        presentity: str | None = None,
        event: str | None = None,
        after: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> Page[Watcher]:
        """A page of ``watchers`` rows, in the order of their key.

        As `listPublications`; the key is `Watcher.key`, ``(presentity_uri,
        watcher_username, watcher_domain, event)``.

        Args:
            presentity: only the watchers of this presentity URI, or all.
            event: only this event package's, or all.
            after: the ``next`` of the previous page; ``None`` for the first.
            limit: the most rows the page holds (at least 1).
        """

    async def eventCounts() -> EventCounts:
        """How many publications, subscriptions and watchers, by event."""
