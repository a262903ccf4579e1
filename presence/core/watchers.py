"""Keeping track of watchers: the ``watchers`` table and watcher information.

When a subscription of a package that needs authorisation comes, is
refreshed, or ends, its watcher's row in ``watchers`` is updated, and if the
package has a watcher-information package (``presence`` has
``presence.winfo``), the winfo subscribers of the presentity are notified.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from presence.core.notify import Notifier
from presence.packages.interfaces import (
    ENDING_WATCHER_EVENTS,
    IWatcherInfoPackage,
    PackageRegistry,
)
from presence.packages.winfo import WatcherInfoPackage
from presence.status import TERMINATED
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Subscription, Watcher


class WatcherTracker:
    """Updates watcher rows and feeds watcher-information packages."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IPresenceStore,
        packages: PackageRegistry,
        notifier: Notifier,
    ) -> None:
        """Track watchers of the packages in ``packages``."""
        self.clock = clock
        self.store = store
        self.packages = packages
        self.notifier = notifier

    async def changed(self, subscription: Subscription, event: str) -> None:
        """A subscription came (``subscribe``), was refreshed, or ended.

        Args:
            subscription: the subscription.
            event: the watcher event of RFC 3857 section 3.2: ``subscribe``,
                ``approved``, ``timeout``, ``deactivated``, ``rejected``...
        """
        package = self.packages.get(subscription.event)
        if package is None:
            return
        if IWatcherInfoPackage.providedBy(package):
            # A watcher-information subscription: nobody watches those, and
            # the package forgets what it kept for one that ended.
            if event in ENDING_WATCHER_EVENTS:
                package.forget(subscription)
            return
        track = getattr(self.store, "trackWatcher", None)
        if package.needsAuthorisation and track is not None:
            # Shared mode: the row and the winfo subscribers in one round trip.
            await self._tracked(track, package, subscription, event)
            return
        if package.needsAuthorisation:
            ended = event in ENDING_WATCHER_EVENTS
            row = self._row(subscription, event)
            if (
                ended
                and event != "rejected"
                and not await self._stillWatching(subscription)
            ):
                # Its last subscription is gone: the row goes too, or rows of
                # watchers long gone would pile up for ever. A rejected
                # watcher's row stays, terminated: the user's decision, as
                # the XCAP server's watchers application shows it.
                await self.store.removeWatcher(row)
            else:
                await self.store.putWatcher(row)
        if package.watcherInfo is None:
            return
        winfo = self.packages.get(package.watcherInfo)
        if not IWatcherInfoPackage.providedBy(winfo):
            return
        for subscriber in await winfo.watcherChanged(subscription, event):
            self.notifier.send(subscriber)

    def _row(self, subscription: Subscription, event: str) -> Watcher:
        """The ``watchers`` row of ``subscription`` after ``event``."""
        ended = event in ENDING_WATCHER_EVENTS
        return Watcher(
            presentity=subscription.presentity,
            watcherUsername=subscription.watcherUsername,
            watcherDomain=subscription.watcherDomain,
            event=subscription.event,
            status=TERMINATED if ended else subscription.status,
            reason=event if ended else subscription.reason,
            insertedTime=subscription.createdTime or self.clock.seconds(),
        )

    async def _tracked(
        self, track: Any, package: Any, subscription: Subscription, event: str
    ) -> None:
        """`changed` through the store's ``trackWatcher``: one round trip."""
        ended = event in ENDING_WATCHER_EVENTS
        row = self._row(subscription, event)
        winfo = (
            self.packages.get(package.watcherInfo)
            if package.watcherInfo is not None
            else None
        )
        if not isinstance(winfo, WatcherInfoPackage):
            winfo = None
        removable = ended and event != "rejected"
        subscribers = await track(
            row,
            subscription.key if removable else None,
            "" if winfo is None else winfo.name,
        )
        if winfo is not None:
            for subscriber in await winfo.watcherChanged(
                subscription, event, subscribers
            ):
                self.notifier.send(subscriber)

    async def _stillWatching(self, subscription: Subscription) -> bool:
        """Whether the watcher has another subscription to the presentity."""
        for other in await self.store.subscriptions(
            subscription.presentity, subscription.event
        ):
            if (
                other.key != subscription.key
                and other.watcherUsername == subscription.watcherUsername
                and other.watcherDomain == subscription.watcherDomain
            ):
                return True
        return False
