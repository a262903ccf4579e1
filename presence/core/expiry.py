"""The sweep that ends what expired: publications, subscriptions, bindings.

It runs every second on the injected clock and costs only what expired: the
store hands out due rows without scanning the live ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from presence._async import detach
from presence.core.notify import Notifier
from presence.storage.errors import StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Subscription


class ExpirySweeper(Service):
    """Ends expired state once a second and notifies who must know."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IPresenceStore,
        notifier: Notifier,
        interval: float = 1.0,
        onSubscriptionExpired: Callable[[Subscription], Awaitable[Any]] | None = None,
        onPublicationExpired: Callable[[str, str], Awaitable[Any]] | None = None,
    ) -> None:
        """Sweep ``store`` every ``interval`` seconds of ``clock``.

        Args:
            clock: the clock the sweep runs on and expiry is judged by.
            store: what expires.
            notifier: tells the watchers of what expired.
            interval: the seconds between sweeps.
            onSubscriptionExpired: called with each subscription that expired,
                after its final NOTIFY is sent.
            onPublicationExpired: called with the presentity URI and the
                event of each presentity whose publications expired, before
                its watchers are notified (the re-authorisation of rules
                with a ``sphere`` condition, as after a PUBLISH).
        """
        self.clock = clock
        self.store = store
        self.notifier = notifier
        self.interval = interval
        self._loop: LoopingCall | None = None
        self._running = False
        self._storageDown = False
        self.onSubscriptionExpired = onSubscriptionExpired
        self.onPublicationExpired = onPublicationExpired
        self.expired = {"publications": 0, "subscriptions": 0, "bindings": 0}

    def startService(self) -> None:
        """Start sweeping."""
        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        """Stop sweeping."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def tick(self) -> None:
        """Start a sweep unless one is still running; never raises."""
        if self._running:
            return
        self._running = True
        d = detach(self._guardedSweep(), self.log, "expiry sweep")
        d.addBoth(self._done)

    async def _guardedSweep(self) -> None:
        """Sweep; a storage outage is logged once, not once a second."""
        try:
            await self.sweep()
        except StorageError as e:
            if not self._storageDown:
                self._storageDown = True
                self.log.warn(
                    "expiry sweep paused: storage unavailable ({error})", error=str(e)
                )
            return
        if self._storageDown:
            self._storageDown = False
            self.log.info("expiry sweep resumed")

    def _done(self, _: object) -> None:
        self._running = False

    async def sweep(self) -> None:
        """End everything that expired by now."""
        now = self.clock.seconds()
        changed: dict[tuple[str, str], None] = {}
        for publication in await self.store.expiredPublications(now):
            self.expired["publications"] += 1
            changed[(publication.presentity, publication.event)] = None
        for aor, event in changed:
            self.log.debug(
                "publication of {presentity} for {event} expired",
                presentity=aor,
                event=event,
            )
            if self.onPublicationExpired is not None:
                try:
                    await self.onPublicationExpired(f"sip:{aor}", event)
                except Exception:
                    # The watchers are notified of the expiry all the same.
                    self.log.failure(
                        "after the publication of {presentity} expired",
                        presentity=aor,
                    )
            await self.notifier.presentityChanged(f"sip:{aor}", event)
        for subscription in await self.store.expiredSubscriptions(now):
            self.expired["subscriptions"] += 1
            self.log.debug(
                "subscription of {watcher} to {presentity} expired",
                watcher=subscription.watcher,
                presentity=subscription.presentity,
            )
            self.notifier.send(subscription, terminated="timeout")
            if self.onSubscriptionExpired is not None:
                await self.onSubscriptionExpired(subscription)
        self.expired["bindings"] += len(await self.store.expiredBindings(now))
