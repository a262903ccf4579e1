"""The interface every store provides, whatever keeps the rows."""

from __future__ import annotations

from zope.interface import Attribute, Interface

from presence.storage.records import (
    Binding,
    DialogKey,
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
