"""NOTIFY: built from a subscription's dialog, sent through client transactions.

RFC 6665 section 4.2.2. At most one NOTIFY is outstanding per dialog, so
that they go in CSeq order; a newer state of a subscription asked for
meanwhile replaces any queued one, and is read from the store when it is
sent, so a burst of changes costs one NOTIFY in flight and one after it. A
481, a timeout, a transport error or a response that ends the dialog usage
(RFC 5057) removes the subscription.

In shared mode with a cluster (`ClusterLink`), only a subscription's owner
(its ``sharingTag``) sends its NOTIFYs: the state of one owned by another
server is signalled to that server, which reads it from the database. A
NOTIFY goes over the connection its SUBSCRIBE came on while that is open.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from presence._async import detach
from presence.core.dispatcher import SERVER
from presence.packages.interfaces import (
    IEventPackage,
    IWatcherInfoPackage,
    PackageRegistry,
)
from presence.sip.dialog import requestInDialog
from presence.sip.errors import SIPParseError
from presence.sip.message import SIPURI, SIPResponse
from presence.sip.transaction import TransactionLayer
from presence.sip.transport import (
    Peer,
    SIPStreamProtocol,
    SIPTransports,
    TransportError,
)
from presence.status import ACTIVE, PENDING
from presence.storage.errors import StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import (
    DialogKey,
    Publication,
    Subscription,
    SubscriptionKey,
)
from presence.storage.statements import CLAIM_ROWS
from presence.storage.waiters import Waiters
from presence.xcap.policy import IPrivacyPolicy

#: Responses to NOTIFY that end the subscription (RFC 6665 4.2.2, RFC 5057
#: section 5.1: these end the dialog usage).
ENDING_CODES: Final = frozenset(
    {404, 405, 408, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 503, 604}
)


#: How many CSeqs one statement of a fan-out claims in shared mode (the
#: store's ``CLAIM_ROWS``).
CLAIM_BATCH: Final = CLAIM_ROWS


def aorOf(presentityURI: str) -> str:
    """The address of record of a presentity URI: ``sip:a@b`` -> ``a@b``."""
    return presentityURI.partition(":")[2] if ":" in presentityURI else presentityURI


class NotifyStatistics:
    """Counters of the notifier.

    Attributes:
        sent: NOTIFYs sent (each once, whatever its retransmissions).
        accepted: NOTIFYs answered with a 2xx.
        failed: NOTIFYs answered otherwise, timed out, not deliverable, or
            not sent because the store was unavailable.
        coalesced: newer states that replaced one already queued.
        forwarded: states of subscriptions owned by another server of the
            cluster, signalled to it instead of sent.
        claimsRefused: NOTIFYs not sent in a cluster because the claim of
            their CSeq was refused: the subscription is no longer this
            server's (moved, taken over: the fence) or is gone.
    """

    def __init__(self) -> None:
        """Start every counter at zero."""
        self.sent = 0
        self.accepted = 0
        self.failed = 0
        self.coalesced = 0
        self.forwarded = 0
        self.claimsRefused = 0


class ClusterLink(Protocol):
    """What the notifier needs of the cluster (`presence.cluster.member`)."""

    @property
    def serverId(self) -> str:
        """This server's id: the ``sharingTag`` of what it owns."""

    def signalPresentity(self, owner: str, presentity: str, event: str) -> None:
        """Tell ``owner`` that a presentity's state changed."""

    def signalSubscription(self, owner: str, key: SubscriptionKey) -> None:
        """Ask ``owner`` to notify one of its subscriptions."""


class Notifier:
    """Sends NOTIFYs for subscriptions, one outstanding per subscription."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: IPresenceStore,
        packages: PackageRegistry,
        transactions: TransactionLayer,
        transports: SIPTransports,
        onRemoved: Callable[[Subscription, str], Any] | None = None,
        stats: NotifyStatistics | None = None,
        policy: IPrivacyPolicy | None = None,
        cluster: ClusterLink | None = None,
    ) -> None:
        """Notify through ``transactions``, reading state from ``store``.

        Args:
            clock: the clock the remaining expiry is read from.
            store: where subscriptions and publications are read.
            packages: the event packages that compose the bodies.
            transactions: what NOTIFYs are sent through.
            transports: what routes them.
            onRemoved: called with a subscription the notifier removed (a
                481, a timeout...) and why.
            stats: where the NOTIFYs are counted (a new `NotifyStatistics`
                when not given).
            policy: asked for the decision (permissions, polite block) of an
                active subscription whose row carries none, because it was
                read from the database rather than made by this process;
                none: such a subscription sees everything.
            cluster: the cluster in shared mode: only what this server owns
                is sent here, the rest is signalled to its owner.
        """
        self.clock = clock
        self.store = store
        self.packages = packages
        self.transactions = transactions
        self.transports = transports
        self.stats = stats if stats is not None else NotifyStatistics()
        # Dialogs with a NOTIFY in flight, and what waits in each for it.
        self._busy: set[DialogKey] = set()
        self._queued: dict[
            DialogKey, dict[SubscriptionKey, tuple[Subscription, str | None]]
        ] = {}
        # The connection each dialog's SUBSCRIBE came on (stream transports),
        # for the NOTIFYs of a state read from the database.
        self._connections: dict[DialogKey, Any] = {}
        self.onRemoved = onRemoved
        self.policy = policy
        self.cluster = cluster
        self._idle = Waiters()
        # Fan-outs (`presentityChanged`) are numbered as they begin; a new
        # subscription notes the number current when its handling began
        # (`mark`), and the fan-outs begun before that skip it: its first
        # NOTIFY reads a state at least as new as theirs.
        self._epoch = 0
        self._fanOuts: dict[int, int] = {}
        self._begun: dict[SubscriptionKey, int] = {}

    @property
    def outstanding(self) -> int:
        """How many NOTIFYs are in flight."""
        return len(self._busy)

    @property
    def queued(self) -> int:
        """How many newer states wait for the NOTIFY in flight to finish."""
        return sum(len(waiting) for waiting in self._queued.values())

    def whenIdle(self) -> Deferred[None]:
        """Fires the next time no NOTIFY is in flight or queued."""
        return self._idle.wait()

    def mark(self) -> int:
        """The point a new subscription's handling begins at (for `begin`)."""
        return self._epoch

    def begin(self, key: SubscriptionKey, started: int) -> None:
        """A new subscription is about to be stored; its handling began at ``started``.

        Its first NOTIFY reads the authorisation and the state after
        ``started`` (the `mark` taken before either was read): the fan-outs
        that began before that and are still reading the subscriptions
        skip it, since what they notify was written before they began.
        Called before the subscription is written, so that no fan-out can
        read it first.
        """
        if self._fanOuts and min(self._fanOuts) < started:
            self._begun[key] = started

    def _prune(self) -> None:
        """Forget the marks no fan-out under way can need."""
        if not self._begun:
            return
        if not self._fanOuts:
            self._begun.clear()
            return
        oldest = min(self._fanOuts)
        for key in [k for k, e in self._begun.items() if e <= oldest]:
            del self._begun[key]

    def ownerElsewhere(self, subscription: Subscription) -> str | None:
        """The other server that owns a subscription, or ``None`` if it is ours."""
        if self.cluster is None:
            return None
        owner = subscription.sharingTag
        if owner is None or owner == self.cluster.serverId:
            return None
        return owner

    def send(
        self,
        subscription: Subscription,
        terminated: str | None = None,
        publications: Sequence[Publication] | None = None,
        claimed: bool = False,
    ) -> None:
        """Send the current state of a subscription, or its end.

        Args:
            subscription: the subscription (its current row, or the removed
                row when ``terminated`` is given).
            terminated: the reason of a final NOTIFY (``timeout``,
                ``deactivated``, ``noresource``, ``rejected``...), or ``None``
                for the current state.
            publications: the presentity's publications, read just now by
                the caller, so that a change notified to thousands of
                watchers reads them once; ``None`` reads them at send time.
            claimed: the subscription's ``localCSeq`` is already this
                NOTIFY's, taken in the store (a new subscription's first
                NOTIFY in shared mode), and ``publications`` its state.
        """
        key = subscription.key
        dialog = subscription.dialogKey
        if terminated is None:
            owner = self.ownerElsewhere(subscription)
            if owner is not None:
                assert self.cluster is not None
                self.stats.forwarded += 1
                self._forgetChanges(subscription)
                self.cluster.signalSubscription(owner, key)
                return
            if self.cluster is not None and subscription.connection is not None:
                # Rows read from the database have no connection: keep it.
                self._connections[dialog] = subscription.connection
        elif self._connections:
            connection = self._connections.pop(dialog, None)
            if subscription.connection is None:
                subscription.connection = connection
        if dialog in self._busy:
            waiting = self._queued.setdefault(dialog, {})
            previous = waiting.get(key)
            if previous is not None:
                self.stats.coalesced += 1
                if previous[1] is not None and terminated is None:
                    return
            waiting[key] = (subscription, terminated)
            return
        self._busy.add(dialog)
        detach(
            self._run(subscription, terminated, publications, claimed),
            self.log,
            "NOTIFY",
        )

    def _forgetChanges(self, subscription: Subscription) -> None:
        """Drop what a package kept for a NOTIFY another server will send."""
        package = self.packages.get(subscription.event)
        if IWatcherInfoPackage.providedBy(package):
            package.forget(subscription)

    def _stale(self, subscription: Subscription) -> None:
        """Another server saw the changes: the next body carries full state."""
        package = self.packages.get(subscription.event)
        stale = getattr(package, "stale", None)
        if stale is not None:
            stale(subscription)

    async def remoteSubscription(self, key: SubscriptionKey) -> None:
        """Another server asked us to notify a subscription we own."""
        subscription = await self.store.subscription(key)
        if subscription is None or subscription.status not in (ACTIVE, PENDING):
            return
        if self.ownerElsewhere(subscription) is not None:
            return
        if self.policy is not None:
            # Another server re-authorised (or saw a watcher change): the
            # rules this one kept may be older than the ones it read.
            self.policy.forget(subscription.presentity)
        self._stale(subscription)
        self.send(subscription)

    async def resend(self, subscriptions: Sequence[Subscription]) -> None:
        """Notify subscriptions this server just became the owner of.

        Those taken over from a silent server, or every one owned after the
        cluster's signals may have been lost: their state may have changed
        unseen, so each gets a NOTIFY with its state now, in full.
        """
        for subscription in subscriptions:
            if subscription.status in (ACTIVE, PENDING):
                self._stale(subscription)
                self.send(subscription)

    async def presentityChanged(
        self, presentity: str, event: str, signal: bool = True
    ) -> int:
        """Notify every active or pending subscription to a presentity's event.

        Args:
            presentity: the presentity URI.
            event: the event package.
            signal: in a cluster, tell the other owners of subscriptions
                too (once each); false when another server told us.

        Returns:
            How many subscriptions the presentity's event has.
        """
        number = self._epoch
        self._epoch += 1
        self._fanOuts[number] = self._fanOuts.get(number, 0) + 1
        try:
            subscriptions = await self.store.subscriptions(presentity, event)
        finally:
            self._fanOuts[number] -= 1
            if not self._fanOuts[number]:
                del self._fanOuts[number]
        begun = self._begun
        if begun:
            # Subscriptions whose handling began after this fan-out did:
            # the state their first NOTIFY read was written before.
            subscriptions = [s for s in subscriptions if begun.get(s.key, -1) <= number]
            self._prune()
        if not subscriptions:
            return 0
        owners: dict[str, None] = {}
        mine: list[Subscription] = []
        for subscription in subscriptions:
            if subscription.status not in (ACTIVE, PENDING):
                continue
            owner = self.ownerElsewhere(subscription)
            if owner is None:
                mine.append(subscription)
            else:
                owners[owner] = None
        if signal and self.cluster is not None:
            for owner in owners:
                self.stats.forwarded += 1
                self.cluster.signalPresentity(owner, presentity, event)
        if len(mine) == 1 and self.cluster is not None:
            # One watcher in shared mode: its claim reads the publications
            # in the same round trip.
            self.send(mine[0])
        elif mine:
            publications = await self.store.publications(aorOf(presentity), event)
            claimMany = getattr(self.store, "claimOwnedMany", None)
            if self.cluster is not None and claimMany is not None:
                # Shared mode: the claims are queries, awaited; the collector
                # is not held off across them.
                await self._fanOutClaimed(mine, publications, claimMany)
                return len(subscriptions)
            # The cyclic collector waits until every NOTIFY is on its way:
            # what the sends allocate would otherwise start several full
            # collections over every subscription's objects in one fan-out
            # (most of its CPU for 5,000 watchers: bench/fanout.py), and it
            # holds no cycle of garbage the collection after it cannot free.
            collecting = gc.isenabled()
            if collecting:
                gc.disable()
            try:
                for subscription in mine:
                    self.send(subscription, publications=publications)
            finally:
                if collecting:
                    gc.enable()
        return len(subscriptions)

    async def _fanOutClaimed(
        self,
        subscriptions: Sequence[Subscription],
        publications: Sequence[Publication],
        claimMany: Callable[[Sequence[SubscriptionKey]], Any],
    ) -> None:
        """The owner's NOTIFYs of a change, their CSeqs claimed in batches.

        Shared mode, several watchers: instead of one claim per NOTIFY, one
        statement claims the CSeqs of up to `CLAIM_BATCH` subscriptions
        (``claimOwnedMany``, fenced like ``claimNotify``), and each claimed
        one is sent with its CSeq. Only one subscription per dialog, and only
        in a dialog with no NOTIFY outstanding, is claimed so: the dialog is
        taken (as `send` takes it) before the claim, so that whatever is
        asked for it meanwhile queues behind this NOTIFY and claims a later
        CSeq. The others (a dialog busy, a second subscription of a dialog)
        go through `send` and queue as before. The batches' claims are all
        sent at once, each batch's NOTIFYs going out as its claim returns.
        """
        rest: list[Subscription] = []
        batches: list[dict[DialogKey, Subscription]] = [{}]
        for subscription in subscriptions:
            dialog = subscription.dialogKey
            if dialog in self._busy:
                rest.append(subscription)
                continue
            if subscription.connection is not None:
                self._connections[dialog] = subscription.connection
            if len(batches[-1]) == CLAIM_BATCH:
                batches.append({})
            batches[-1][dialog] = subscription
            self._busy.add(dialog)
        # Every batch's claim is sent at once: the database claims the next
        # batches while this process sends the NOTIFYs of the first.
        claims = [
            Deferred.fromCoroutine(self._claimAndSend(batch, publications, claimMany))
            for batch in batches
            if batch
        ]
        for subscription in rest:
            self.send(subscription, publications=publications)
        for claim in claims:
            await claim

    async def _claimAndSend(
        self,
        batch: dict[DialogKey, Subscription],
        publications: Sequence[Publication],
        claimMany: Callable[[Sequence[SubscriptionKey]], Any],
    ) -> None:
        """Claim one batch of `_fanOutClaimed` (its dialogs taken); send each."""
        try:
            claimed: list[Subscription] = await claimMany(
                [subscription.key for subscription in batch.values()]
            )
        except StorageError as e:
            self.stats.failed += len(batch)
            self.log.debug(
                "{count} NOTIFYs not sent: storage unavailable ({error})",
                count=len(batch),
                error=str(e),
            )
            claimed = []
        else:
            self.stats.claimsRefused += len(batch) - len(claimed)
        for current in claimed:
            dialog = current.dialogKey
            subscription = batch.pop(dialog, None)
            if subscription is None:  # not asked for: cannot happen
                continue
            current.connection = (
                subscription.connection
                or current.connection
                or self._connections.get(dialog)
            )
            detach(self._run(current, None, publications, True), self.log, "NOTIFY")
        for dialog in batch:
            # Refused (moved, taken over, gone) or not claimed: nothing sent;
            # what queued in the dialog meanwhile goes now.
            self._release(dialog)

    def _release(self, dialog: DialogKey) -> None:
        """A dialog taken for a NOTIFY that was not sent: the next one, or free."""
        waiting = self._queued.get(dialog)
        if waiting:
            key = next(iter(waiting))
            subscription, terminated = waiting.pop(key)
            if not waiting:
                del self._queued[dialog]
            detach(self._run(subscription, terminated, None), self.log, "NOTIFY")
            return
        self._queued.pop(dialog, None)
        self._busy.discard(dialog)
        if not self._busy:
            self._idle.fire()

    async def _run(
        self,
        subscription: Subscription,
        terminated: str | None,
        publications: Sequence[Publication] | None,
        claimed: bool = False,
    ) -> None:
        dialog = subscription.dialogKey
        try:
            while True:
                try:
                    await self._notifyOnce(
                        subscription, terminated, publications, claimed
                    )
                except StorageError as e:
                    self.stats.failed += 1
                    self.log.debug(
                        "NOTIFY to {watcher} not sent: storage unavailable ({error})",
                        watcher=subscription.watcher,
                        error=str(e),
                    )
                waiting = self._queued.get(dialog)
                if not waiting:
                    break
                # The next waiting in the dialog, oldest first.
                key = next(iter(waiting))
                subscription, terminated = waiting.pop(key)
                if not waiting:
                    del self._queued[dialog]
                # A newer state: read the publications when it is sent.
                publications = None
                claimed = False
        finally:
            self._busy.discard(dialog)
            self._queued.pop(dialog, None)
            if not self._busy:
                self._idle.fire()

    async def _notifyOnce(
        self,
        subscription: Subscription,
        terminated: str | None,
        publications: Sequence[Publication] | None = None,
        claimed: bool = False,
    ) -> None:
        package = self.packages.get(subscription.event)
        if package is None:
            return
        if claimed and terminated is None:
            cseq = subscription.localCSeq
        elif terminated is None:
            # In a cluster, nothing unless the subscription is still ours.
            claimWith = getattr(self.store, "claimWithPublications", None)
            if self.cluster is not None and publications is None and claimWith:
                # The CSeq and the state in one round trip.
                current, publications = await claimWith(
                    subscription.key, aorOf(subscription.presentity)
                )
            else:
                current = await self.store.claimNotify(subscription.key)
            if current is None:
                if self.cluster is not None:
                    self.stats.claimsRefused += 1
                return
            current.connection = (
                subscription.connection
                or current.connection
                or self._connections.get(current.dialogKey)
            )
            subscription = current
            cseq = subscription.localCSeq
        else:
            cseq = subscription.localCSeq + 1
            subscription.localCSeq = cseq
        state, body = await self._state(package, subscription, terminated, publications)
        headers: list[tuple[str, str]] = [
            ("contact", f"<{subscription.localContact}>"),
            ("event", _eventHeader(subscription)),
            ("subscription-state", state),
            ("user-agent", SERVER),
        ]
        data = b""
        if body is not None:
            headers.append(("content-type", body.contentType))
            data = body.data
        try:
            request, nextHop = requestInDialog(
                "NOTIFY",
                subscription.contact,
                subscription.recordRoute,
                subscription.toHeader,
                subscription.fromHeader,
                subscription.callId,
                cseq,
                headers,
                data,
            )
        except SIPParseError as e:
            # A stored row this server did not write (shared database).
            self.log.warn(
                "cannot build a NOTIFY to {watcher}: {error}",
                watcher=subscription.watcher,
                error=e.reason,
            )
            await self._remove(subscription, "unroutable", terminated)
            return
        try:
            target = await self._target(subscription, nextHop)
        except TransportError as e:
            self.log.warn(
                "cannot route NOTIFY to {watcher}: {error}",
                watcher=subscription.watcher,
                error=str(e),
            )
            await self._remove(subscription, "unroutable", terminated)
            return
        self.stats.sent += 1
        response = await self.transactions.request(request, target)
        await self._outcome(subscription, response, terminated)

    async def _state(
        self,
        package: IEventPackage,
        subscription: Subscription,
        terminated: str | None,
        publications: Sequence[Publication] | None = None,
    ) -> tuple[str, Any]:
        """The Subscription-State value and the body for a NOTIFY."""
        # The time remaining, never more than was granted (RFC 6665 section
        # 4.2.2): the database keeps whole seconds rounded up, so rounding
        # the difference up again would give 601 for a 600 just granted.
        remaining = max(0, math.floor(subscription.expires - self.clock.seconds()))
        body = None
        if subscription.status == ACTIVE:
            if publications is None:
                publications = await self.store.publications(
                    aorOf(subscription.presentity), subscription.event
                )
            if (
                subscription.decision is None
                and self.policy is not None
                and package.needsAuthorisation
            ):
                decision = await self.policy.authorise(
                    subscription.presentity,
                    subscription.watcherUsername,
                    subscription.watcherDomain,
                    subscription.event,
                )
                if decision.status != ACTIVE:
                    # The rules changed and nobody re-authorised yet: show
                    # nothing (the offline body) until the status follows.
                    decision = dataclasses.replace(decision, politeBlock=True)
                subscription.decision = decision
            version = subscription.version
            body = package.notifyBody(
                subscription.presentity, subscription, publications
            )
            if inspect.isawaitable(body):
                body = await body
            if subscription.version != version and terminated is None:
                putVersion = getattr(self.store, "putVersion", None)
                if self.cluster is not None and putVersion is not None:
                    # The version alone: a refresh at another server may
                    # have changed the row since it was read.
                    await putVersion(subscription.key, subscription.version)
                else:
                    await self.store.putSubscription(subscription)
        if terminated is not None:
            return f"terminated;reason={terminated}", body
        if subscription.status == ACTIVE:
            return f"active;expires={remaining}", body
        if subscription.status == PENDING:
            return f"pending;expires={remaining}", None
        reason = subscription.reason or "rejected"
        return f"terminated;reason={reason}", None

    async def _target(self, subscription: Subscription, nextHop: Any) -> Peer:
        connection = subscription.connection
        if isinstance(connection, SIPStreamProtocol) and connection.connected:
            assert connection.peer is not None
            peer = connection.peer
            return Peer(peer.transport, peer.host, peer.port, connection)
        if not isinstance(nextHop, SIPURI):
            raise TransportError(f"cannot send to a {nextHop.scheme} URI")
        return await self.transports.resolve(nextHop)

    async def _outcome(
        self, subscription: Subscription, response: SIPResponse, terminated: str | None
    ) -> None:
        code = response.code
        if 200 <= code < 300:
            self.stats.accepted += 1
            return
        self.stats.failed += 1
        if terminated is not None:
            self.log.debug(
                "final NOTIFY to {watcher} for {presentity} got {statusCode}",
                watcher=subscription.watcher,
                presentity=subscription.presentity,
                statusCode=code,
            )
            return
        if code in ENDING_CODES:
            self.log.info(
                "NOTIFY to {watcher} for {presentity} got {statusCode}:"
                " subscription removed",
                watcher=subscription.watcher,
                presentity=subscription.presentity,
                statusCode=code,
            )
            await self._remove(subscription, f"notify-{code}", terminated)
        else:
            self.log.info(
                "NOTIFY to {watcher} for {presentity} got {statusCode}",
                watcher=subscription.watcher,
                presentity=subscription.presentity,
                statusCode=code,
            )

    async def _remove(
        self, subscription: Subscription, why: str, terminated: str | None
    ) -> None:
        waiting = self._queued.get(subscription.dialogKey)
        if waiting is not None:
            waiting.pop(subscription.key, None)
        if terminated is not None:
            return
        self._connections.pop(subscription.dialogKey, None)
        removed = await self.store.removeSubscription(subscription.key)
        if removed is not None and self.onRemoved is not None:
            await self.onRemoved(removed, why)


def _eventHeader(subscription: Subscription) -> str:
    name = subscription.event
    if subscription.eventId:
        return f"{name};id={subscription.eventId}"
    return name
