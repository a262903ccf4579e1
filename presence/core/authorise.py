"""Re-authorising a presentity's watchers when its rules (or sphere) change.

`Reauthoriser.reauthorise` is the one operation behind every "the rules
changed" signal: the XML-RPC ``refreshWatchers`` of OpenXCAP 2.x, the
xcap-diff PUBLISH of OpenXCAP 3.x, a periodic check of the ``xcap`` table,
and a PUBLISH that changes the presentity's sphere when a rule has a
``sphere`` condition. It drops what the policy kept of the presentity's
rules, asks it again about every subscription and watcher row, and tells
the watchers what changed:

- pending to active: the first NOTIFY with the state (RFC 6665 section
  4.2.2), and ``approved`` for the winfo watchers;
- active to pending: a NOTIFY ``pending`` without state;
- to blocked: the subscription ends with ``terminated;reason=rejected``
  (RFC 6665 section 4.2.2), and ``rejected`` for the winfo watchers;
- the same status with other permissions, or a polite block begun or
  lifted: a NOTIFY with what the watcher may see now;
- the presentity's hard state (RFC 4827 pidf-manipulation, held by the
  package's ``hardState``) read again and found changed: a NOTIFY with the
  new document to every active watcher not notified already.

Every change of status is also a winfo NOTIFY (RFC 3857 section 4.3).
`Reauthoriser.refreshState` is ``refreshWatchers`` of type 1, "the state
changed": the hard state read again, every watcher notified.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from presence.core.notify import Notifier
from presence.packages.interfaces import PackageRegistry
from presence.status import ACTIVE, PENDING, TERMINATED, WAITING
from presence.storage.errors import StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Subscription
from presence.xcap.policy import Decision, IHardState, IPrivacyPolicy


@dataclass
class ReauthoriseResult:
    """What one re-authorisation changed.

    Attributes:
        subscriptions: how many subscriptions were decided again.
        changed: how many changed status.
        renotified: how many kept their status and were notified because
            what they may see changed.
        rejected: how many ended because they are now blocked.
        watchers: how many watcher rows without a subscription changed.
        stateChanged: whether the hard state was found changed (every
            active watcher then notified).
    """

    subscriptions: int = 0
    changed: int = 0
    renotified: int = 0
    rejected: int = 0
    watchers: int = 0
    stateChanged: bool = False


class Reauthoriser:
    """Decides a presentity's watchers again and notifies the changes."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IPresenceStore,
        packages: PackageRegistry,
        policy: IPrivacyPolicy,
        notifier: Notifier,
        onWatcherChange: Callable[[Subscription, str], Awaitable[Any]] | None = None,
    ) -> None:
        """Re-authorise through ``policy``, notifying through ``notifier``.

        Args:
            clock: the clock.
            store: where subscriptions and watcher rows are.
            packages: the event packages (only those that need
                authorisation are re-authorised).
            policy: the privacy policy.
            notifier: sends the NOTIFYs.
            onWatcherChange: the watcher tracker's callback (the watchers
                row and the winfo NOTIFYs).
        """
        self.clock = clock
        self.store = store
        self.packages = packages
        self.policy = policy
        self.notifier = notifier
        self.onWatcherChange = onWatcherChange
        self.runs = 0
        self._spheres: dict[str, str | None] = {}
        self._reloadFailing = False

    async def published(self, presentity: str, event: str) -> None:
        """Re-authorise after a PUBLISH if it changed the sphere rules read.

        Only when one of the presentity's rules has a ``sphere`` condition
        and the current sphere is not the one last seen.

        RFC 4745 section 7 and RFC 5025 section 3.1.3 (the ``sphere``
        condition holds while the presentity's current sphere is one it
        names): a watcher's status may change with the sphere alone. A
        policy that cannot say (``force_active``) is never asked.
        """
        package = self.packages.get(event)
        if package is None or not package.needsAuthorisation:
            return
        read = await self._readSphere(presentity)
        if read is None:
            return
        (sphere,) = read
        if presentity in self._spheres and self._spheres[presentity] == sphere:
            return
        self._noteSphere(presentity, sphere)
        await self.reauthorise(presentity, event, sphereChanged=True)

    def _noteSphere(self, presentity: str, sphere: str | None) -> None:
        if len(self._spheres) >= 10_000:
            self._spheres.clear()
        self._spheres[presentity] = sphere

    async def _sphereSeen(self, presentity: str) -> None:
        """Note the sphere the watchers are about to be decided with.

        After the hard state changed, a sphere in it may be another: what
        `published` compares a PUBLISH's sphere with must be that one, or a
        PUBLISH bringing back the sphere last published would decide
        nothing again.
        """
        read = await self._readSphere(presentity)
        if read is not None:
            self._noteSphere(presentity, read[0])

    async def _readSphere(self, presentity: str) -> tuple[str | None] | None:
        """The presentity's sphere now, when the policy's rules name one.

        ``None`` when the policy cannot say or the presentity's rules have no
        sphere condition (then nothing of its sphere is kept); else the
        sphere, itself ``None`` when none is published.
        """
        hasSpheres = getattr(self.policy, "hasSphereConditions", None)
        reader = getattr(self.policy, "sphere", None)
        if hasSpheres is None or reader is None:
            return None
        if not await hasSpheres(presentity):
            self._spheres.pop(presentity, None)
            return None
        sphere: str | None = await reader(presentity)
        return (sphere,)

    async def _reload(self, hardState: IHardState, presentity: str) -> bool:
        """Read the hard state again; a read that fails is "unchanged".

        What is held stays what watchers were told; the periodic check (or
        the next signal) finds the change once the store answers again.
        """
        try:
            changed = await hardState.reload(presentity)
        except StorageError as e:
            # Logged once per outage: when a read fails after one succeeded.
            if not self._reloadFailing:
                self._reloadFailing = True
                self.log.warn(
                    "the hard state of {presentity} cannot be read again"
                    " ({error}): the one held is kept until it can",
                    presentity=presentity,
                    error=str(e),
                )
            return False
        self._reloadFailing = False
        return changed

    async def reauthorise(
        self,
        presentity: str,
        event: str = "presence",
        stateChanged: bool | None = None,
        sphereChanged: bool = False,
    ) -> ReauthoriseResult:
        """Re-authorise this presentity's watchers and notify the changes.

        The hard state (when the package has one) is read again first; a
        read that fails counts as no change (what is held is kept) and the
        watchers are decided all the same. A change of it may change the
        presentity's sphere, so the watchers are decided with the new one.

        Args:
            presentity: the presentity URI, ``sip:user@domain``.
            event: the event package whose watchers are decided again.
            stateChanged: whether the caller has just read the hard state
                again and found it changed; none: read it here.
            sphereChanged: the presentity's sphere changed (a PUBLISH, an
                expiry): the rules held cannot tell what a watcher without a
                kept decision was shown before, so such a watcher is
                notified whenever it is active.

        Returns:
            What changed.

        Raises:
            presence.storage.errors.StorageError: the rules or the
                subscriptions cannot be read (nothing is lost: the caller
                may try again).
        """
        self.runs += 1
        result = ReauthoriseResult()
        package = self.packages.get(event)
        if package is None or not package.needsAuthorisation:
            return result
        # What the rules decided before the change, for the watchers whose
        # decision was not kept (rows read back from the database).
        heldOf = getattr(self.policy, "held", None)
        held = None if heldOf is None or sphereChanged else heldOf(presentity)
        self.policy.forget(presentity)
        hardState = self.hardStateOf(event)
        if stateChanged is not None:
            result.stateChanged = stateChanged
        elif hardState is not None:
            result.stateChanged = await self._reload(hardState, presentity)
        if result.stateChanged:
            await self._sphereSeen(presentity)
        watching: set[tuple[str, str]] = set()
        for subscription in await self.store.subscriptions(presentity, event):
            if subscription.status not in (ACTIVE, PENDING, WAITING):
                continue
            result.subscriptions += 1
            watching.add((subscription.watcherUsername, subscription.watcherDomain))
            await self._subscription(subscription, result, held)
        for row in await self.store.watchers(presentity, event):
            if (row.watcherUsername, row.watcherDomain) in watching:
                continue
            decision = await self.policy.authorise(
                presentity, row.watcherUsername, row.watcherDomain, event
            )
            if (row.status, row.reason) != (decision.status, decision.reason):
                row.status, row.reason = decision.status, decision.reason
                await self.store.putWatcher(row)
                result.watchers += 1
        if result.changed or result.renotified or result.watchers:
            self.log.info(
                "{presentity} re-authorised: {changed} changed status"
                " ({rejected} rejected), {renotified} see something else",
                presentity=presentity,
                changed=result.changed,
                rejected=result.rejected,
                renotified=result.renotified,
            )
        return result

    async def _before(
        self, subscription: Subscription, held: object
    ) -> Decision | None:
        """What the rules held before the change decided for a subscription.

        Only for one whose decision was not kept: a row read back from the
        database in shared storage (``fallback2db``), where every read is a
        new record. Without it every such active watcher would be notified
        on every re-authorisation, whether or not its view changed. The
        held rules' decision counts only when it gives the status and reason
        stored in the row (what the watcher was last told); otherwise none.
        """
        decide = getattr(self.policy, "authoriseHeld", None)
        if decide is None:
            return None
        before: Decision = await decide(
            held,
            subscription.presentity,
            subscription.watcherUsername,
            subscription.watcherDomain,
            subscription.event,
        )
        if (before.status, before.reason) != (subscription.status, subscription.reason):
            return None
        return before

    async def _subscription(
        self, subscription: Subscription, result: ReauthoriseResult, held: object
    ) -> None:
        decision = await self.policy.authorise(
            subscription.presentity,
            subscription.watcherUsername,
            subscription.watcherDomain,
            subscription.event,
        )
        before = subscription.decision
        if before is None and held is not None:
            before = await self._before(subscription, held)
        if decision.status == TERMINATED:
            removed = await self.store.removeSubscription(subscription.key)
            if removed is not None:
                subscription.localCSeq = max(subscription.localCSeq, removed.localCSeq)
            subscription.status, subscription.reason = TERMINATED, decision.reason
            subscription.decision = decision
            result.changed += 1
            result.rejected += 1
            self.notifier.send(subscription, terminated=decision.reason or "rejected")
            await self._watcherChanged(subscription, "rejected")
            return
        statusChanged = decision.status != subscription.status
        seesOther = before is None or (
            (before.permissions, before.politeBlock)
            != (decision.permissions, decision.politeBlock)
        )
        if not statusChanged and not seesOther:
            if result.stateChanged and subscription.status == ACTIVE:
                # RFC 4827: the hard state is part of the presentity's
                # document; a change of it is a change of state to notify.
                result.renotified += 1
                self.notifier.send(subscription)
            return
        subscription.status, subscription.reason = decision.status, decision.reason
        subscription.decision = decision
        await self.store.putSubscription(subscription)
        if statusChanged:
            result.changed += 1
            self.notifier.send(subscription)
            event = "approved" if decision.status == ACTIVE else "subscribe"
            await self._watcherChanged(subscription, event)
        elif seesOther and decision.status == ACTIVE:
            result.renotified += 1
            self.notifier.send(subscription)

    def hardStateOf(self, event: str) -> IHardState | None:
        """The hard state source of an event's package, if it has one."""
        package = self.packages.get(event)
        source = getattr(package, "hardState", None)
        return source if IHardState.providedBy(source) else None

    async def refreshState(
        self, presentity: str, event: str = "presence"
    ) -> tuple[int, int]:
        """Read the hard state again and notify every watcher of the state.

        OpenSIPS's ``refreshWatchers`` type 1, "the published state
        changed": the hard state (when the package has one) is read again
        first. Found changed, it is a re-authorisation (`reauthorise`): a
        sphere in the hard state may change what the rules' ``sphere``
        conditions decide (RFC 4745 section 7.2), so every watcher is
        decided again, the changes of status notified, and every active
        watcher told the new state. Unchanged (or not readable), every
        active or pending subscription gets a NOTIFY with the state
        composed now, as without a hard state.

        Returns:
            How many subscriptions the presentity has for the event, and how
            many of them changed status (none when the hard state did not
            change).
        """
        hardState = self.hardStateOf(event)
        if hardState is not None and await self._reload(hardState, presentity):
            result = await self.reauthorise(presentity, event, stateChanged=True)
            return result.subscriptions, result.changed
        return await self.notifier.presentityChanged(presentity, event), 0

    async def _watcherChanged(self, subscription: Subscription, event: str) -> None:
        if self.onWatcherChange is not None:
            await self.onWatcherChange(subscription, event)
