"""The watcher tracker feeds watcher-information packages by their interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, cast

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer, implementer_only

from presence.core.notify import Notifier
from presence.core.watchers import WatcherTracker
from presence.packages.base import EventPackage
from presence.packages.interfaces import (
    ENDING_WATCHER_EVENTS,
    Body,
    IEventPackage,
    IWatcherInfoPackage,
    PackageRegistry,
)
from presence.storage.memory import MemoryStore
from presence.storage.records import Publication, Subscription
from test.support.records import aliceSubscription


def subscription(event: str, callId: str = "call-1") -> Subscription:
    """Alice's subscription to one of bob's packages."""
    return aliceSubscription(event=event, callId=callId)


class RecordingNotifier:
    """Stands for the `Notifier`: records the subscriptions it is to notify."""

    def __init__(self) -> None:
        """Nothing sent yet."""
        self.sent: list[Subscription] = []

    def send(self, subscription: Subscription) -> None:
        """Record ``subscription``."""
        self.sent.append(subscription)


class Package(EventPackage):
    """A package with no bodies, for the tracker to look up."""

    acceptTypes: ClassVar[list[str]] = []
    notifyTypes: ClassVar[list[str]] = []
    acceptsPublish = False
    needsAuthorisation = False

    def notifyBody(
        self,
        presentity: str,
        subscription: Subscription,
        publications: Sequence[Publication],
    ) -> Body | None:
        """No body."""
        return None


@implementer(IEventPackage)
class Watched(Package):
    """``x-watched``: watched by ``x-watched.winfo``."""

    name = "x-watched"
    watcherInfo = "x-watched.winfo"


@implementer(IWatcherInfoPackage)
class WatcherInfo(Package):
    """``x-watched.winfo``: records what the tracker tells it."""

    name = "x-watched.winfo"

    def __init__(self) -> None:
        """Nothing told yet; ``subscribers`` are who to notify of a change."""
        super().__init__()
        self.changes: list[tuple[Subscription, str]] = []
        self.forgotten: list[Subscription] = []
        self.subscribers: list[Subscription] = []

    async def watcherChanged(
        self, subscription: Subscription, event: str
    ) -> list[Subscription]:
        """Record the change; return the subscribers."""
        self.changes.append((subscription, event))
        return self.subscribers

    def forget(self, subscription: Subscription) -> None:
        """Record the subscription forgotten."""
        self.forgotten.append(subscription)


@implementer_only(IEventPackage)
class LooksLikeWatcherInfo(WatcherInfo):
    """Has the methods of a watcher-information package, not its interface."""


class WatcherTrackerTests(SynchronousTestCase):
    """What `WatcherTracker.changed` tells the watcher-information package."""

    def setUp(self) -> None:
        """A tracker over ``x-watched`` and its watcher-information package."""
        self.winfo = WatcherInfo()
        self.notifier = RecordingNotifier()
        self.tracker = self.trackerFor(self.winfo)

    def trackerFor(self, winfo: WatcherInfo) -> WatcherTracker:
        """A tracker of ``x-watched`` watched by ``winfo``."""
        return WatcherTracker(
            Clock(),
            MemoryStore(),
            PackageRegistry([Watched(), winfo]),
            cast(Notifier, self.notifier),
        )

    def test_watcherChangeReported(self) -> None:
        """RFC 3857 3.2: a watcher's change goes to the winfo package.

        The winfo subscribers it returns are notified.
        """
        watcher = subscription("x-watched")
        subscriber = subscription("x-watched.winfo", callId="call-2")
        self.winfo.subscribers = [subscriber]
        self.successResultOf(self.tracker.changed(watcher, "subscribe"))
        self.assertEqual(self.winfo.changes, [(watcher, "subscribe")])
        self.assertEqual(self.notifier.sent, [subscriber])

    def test_endedWinfoForgotten(self) -> None:
        """An ended winfo subscription is forgotten; nobody watches its watchers."""
        winfo = subscription("x-watched.winfo")
        self.successResultOf(self.tracker.changed(winfo, "subscribe"))
        self.assertEqual(self.winfo.forgotten, [])
        for event in sorted(ENDING_WATCHER_EVENTS):
            self.successResultOf(self.tracker.changed(winfo, event))
        self.assertEqual(self.winfo.forgotten, [winfo] * len(ENDING_WATCHER_EVENTS))
        self.assertEqual(self.winfo.changes, [])
        self.assertEqual(self.notifier.sent, [])

    def test_interfaceDecides(self) -> None:
        """A package is fed only if it provides IWatcherInfoPackage.

        Having methods of the same names is not enough.
        """
        impostor = LooksLikeWatcherInfo()
        tracker = self.trackerFor(impostor)
        self.successResultOf(tracker.changed(subscription("x-watched"), "subscribe"))
        ended = subscription("x-watched.winfo")
        self.successResultOf(tracker.changed(ended, "timeout"))
        self.assertEqual((impostor.changes, impostor.forgotten), ([], []))
