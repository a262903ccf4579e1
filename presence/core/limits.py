"""The limits that keep one sender from taking the whole server.

- `SourceRateLimit`: the dispatcher's gate (run on every request before
  anything else, malformed ones included) allowing each source address
  ``source_rate_limit`` requests a second, with a burst of twice that, by a
  token bucket per address. A
  request over the rate is answered 503 with Retry-After; a source sending
  more than four times the rate has its excess dropped unanswered.
- `WatcherCounts` and `SubscriptionLimit`: at most
  ``max_subscriptions_per_watcher`` subscriptions per watcher; an initial
  SUBSCRIBE beyond it is answered 403.
- `PublicationLimit`: at most ``max_publications_per_presentity``
  publications per presentity and event package; an initial PUBLISH beyond
  it is answered 403.

The limits of the TCP transport (``max_tcp_connections``,
``tcp_read_timeout``) are in `presence.sip.transport`. Every limit counts
what it refused in one `presence.sip.limits.LimitStatistics`.
"""

from __future__ import annotations

import math
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from presence.auth.identity import Identity, TrustedPeers
from presence.core.publish import PublishHandler
from presence.core.subscribe import SubscribeHandler, presentityOf
from presence.sip.errors import Forbidden, ServiceUnavailable
from presence.sip.limits import LimitStatistics
from presence.sip.message import SIPURI, SIPRequest, unescape
from presence.sip.transaction import ServerTransaction
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import Subscription, SubscriptionKey

#: How many times the rate a source may send before its excess is dropped
#: rather than answered: up to this, every request gets a response (most of
#: the excess a 503); beyond it, answering would let a forged source address
#: turn the server into a reflector of 503s.
ANSWERED_FACTOR: Final = 4

#: The key of the one bucket every new source shares once `SourceRateLimit`
#: tracks ``maxSources`` addresses (forged addresses cannot grow it further).
OVERFLOW: Final = "*"


class SourceRateLimit:
    """The dispatcher's gate, limiting each source address to a rate.

    Each address has a token bucket: ``rate`` tokens a second, at most
    ``2 * rate`` saved up (the burst). A request takes a token and goes on.
    Without one, it takes a refusal token from a second bucket, filled at
    ``3 * rate`` a second (`ANSWERED_FACTOR` less the rate served), and is
    answered 503 with Retry-After; without either it is dropped: its
    transaction ends without a response, and a retransmission is checked
    again as a new request.

    Trusted peers (``trusted_peers``: a proxy in front of the server) are
    not limited. Only requests are checked: responses to the server's
    NOTIFYs never reach the dispatcher, nor do retransmissions, which the
    transaction layer absorbs. Every new request is, whether it parsed or
    not and whatever it will be answered.

    The buckets of sources idle long enough to be full again are forgotten
    every ``sweepInterval`` seconds (a sweep runs during a check, on the
    injected clock), and at most ``maxSources`` are kept: beyond that, new
    sources share one bucket until a sweep makes room.

    Attributes:
        rate: the requests a second one source may send.
        burst: the requests one source may send at once after a pause.
        stats: counts the requests refused (``rateLimited``) and dropped
            (``rateDropped``).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        stats: LimitStatistics,
        trusted: TrustedPeers | None = None,
        sweepInterval: float = 10.0,
        maxSources: int = 100_000,
    ) -> None:
        """Allow ``rate`` requests a second from each source address.

        Args:
            clock: the clock buckets fill by.
            rate: the requests a second from one source; more than 0.
            stats: where refusals are counted.
            trusted: the peers never limited.
            sweepInterval: seconds between sweeps of idle sources.
            maxSources: the most source addresses tracked at once.
        """
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.clock = clock
        self.rate = float(rate)
        self.burst = 2.0 * rate
        self.refusalRate = (ANSWERED_FACTOR - 1) * self.rate
        self.stats = stats
        self.trusted = trusted if trusted else None
        self.sweepInterval = sweepInterval
        self.maxSources = maxSources
        self.retryAfter = max(1, math.ceil(self.burst / self.rate))
        # A bucket is [tokens, refusal tokens, when last filled].
        self._buckets: dict[str, list[float]] = {}
        self._trustedHosts: dict[str, bool] = {}
        # After this many idle seconds both buckets are full: forgetting a
        # source then changes nothing.
        self._idle = max(self.burst / self.rate, 1.0)
        self._swept = clock.seconds()

    def __call__(self, request: SIPRequest, transaction: ServerTransaction) -> None:
        """Let a request through, or refuse it (see the class).

        Raises:
            ServiceUnavailable: its source is over the rate (503 with
                Retry-After), or far over it (the transaction is ended first,
                so that nothing is answered).
        """
        host = transaction.peer.host
        if self.trusted is not None and self._isTrusted(host):
            return
        now = self.clock.seconds()
        if now - self._swept >= self.sweepInterval:
            self.sweep()
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._newBucket(host, now)
        else:
            elapsed = now - bucket[2]
            if elapsed > 0:
                bucket[2] = now
                tokens = bucket[0] + elapsed * self.rate
                bucket[0] = tokens if tokens < self.burst else self.burst
                most = self.refusalRate
                refusals = bucket[1] + elapsed * most
                bucket[1] = refusals if refusals < most else most
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return
        if bucket[1] >= 1.0:
            bucket[1] -= 1.0
            self.stats.rateLimited += 1
            raise ServiceUnavailable(
                self.retryAfter, "too many requests from your address"
            )
        self.stats.rateDropped += 1
        transaction.terminate()
        raise ServiceUnavailable(self.retryAfter, "dropped: far over the rate")

    def _newBucket(self, host: str, now: float) -> list[float]:
        buckets = self._buckets
        if len(buckets) >= self.maxSources:
            self.sweep()
            if len(buckets) >= self.maxSources:
                shared = buckets.get(OVERFLOW)
                if shared is not None:
                    return shared
                host = OVERFLOW
        bucket = buckets[host] = [self.burst, self.refusalRate, now]
        return bucket

    def _isTrusted(self, host: str) -> bool:
        known = self._trustedHosts.get(host)
        if known is None:
            assert self.trusted is not None
            known = host in self.trusted
            if len(self._trustedHosts) >= 4096:
                self._trustedHosts.clear()
            self._trustedHosts[host] = known
        return known

    def sweep(self) -> int:
        """Forget the sources idle long enough to be full again.

        Returns:
            How many were forgotten.
        """
        now = self.clock.seconds()
        self._swept = now
        horizon = now - self._idle
        idle = [host for host, b in self._buckets.items() if b[2] <= horizon]
        for host in idle:
            del self._buckets[host]
        return len(idle)

    @property
    def sources(self) -> int:
        """How many source addresses are tracked now."""
        return len(self._buckets)


def watcherOf(request: SIPRequest, identity: Identity | None) -> tuple[str, str]:
    """Who a SUBSCRIBE's subscription belongs to, as (user, domain).

    The identity the request checks established, or else the user and
    domain of the From URI: the same pair the subscribe handler stores as
    the subscription's watcher.
    """
    if identity is not None:
        return identity.user, identity.domain
    uri = request.fromAddr.uri
    if isinstance(uri, SIPURI):
        return unescape(uri.user or ""), uri.host.lower()
    return "", ""


@implementer(IPresenceStore)
class WatcherCounts:
    """A store that counts each watcher's subscriptions as they come and go.

    It stands in front of the real store for every object that adds or
    removes subscriptions (the subscribe handler, the notifier, the expiry
    sweeper), and passes every call through, counting the subscriptions put
    under a new key and those removed or expired. A count is a dictionary
    look-up, whatever the backend.

    What it counts is what this process added: in cache mode the
    subscriptions reloaded from the database at a restart are not counted
    until they are refreshed (a restart can only make the limit more
    lenient); in shared mode (``fallback2db``) each server counts its own.

    Attributes:
        store: the store behind.
        counts: (user, domain) -> subscriptions.
    """

    def __init__(self, store: IPresenceStore) -> None:
        """Count the subscriptions put into ``store``."""
        self.store = store
        self.counts: dict[tuple[str, str], int] = {}
        self._watchers: dict[SubscriptionKey, tuple[str, str]] = {}

    def __getattr__(self, name: str) -> Any:
        """Everything not about subscriptions is the store's own."""
        return getattr(self.store, name)

    def count(self, watcher: tuple[str, str]) -> int:
        """How many subscriptions ``watcher`` has."""
        return self.counts.get(watcher, 0)

    async def putSubscription(self, subscription: Subscription) -> None:
        """See `IPresenceStore.putSubscription`."""
        await self.store.putSubscription(subscription)
        self._count(subscription)

    def _count(self, subscription: Subscription) -> None:
        key = subscription.key
        if key not in self._watchers:
            watcher = (subscription.watcherUsername, subscription.watcherDomain)
            self._watchers[key] = watcher
            self.counts[watcher] = self.counts.get(watcher, 0) + 1

    async def removeSubscription(self, key: SubscriptionKey) -> Subscription | None:
        """See `IPresenceStore.removeSubscription`."""
        removed = await self.store.removeSubscription(key)
        self._forget(key)
        return removed

    async def putWithPublications(
        self, subscription: Subscription, presentity: str
    ) -> list[Any]:
        """The SQL store's put with the publications, counted."""
        publications: list[Any] = await self.store.putWithPublications(  # type: ignore[attr-defined]
            subscription, presentity
        )
        self._count(subscription)
        return publications

    async def removeWithPublications(
        self, key: SubscriptionKey, presentity: str
    ) -> tuple[Subscription | None, list[Any]]:
        """The SQL store's removal with the publications, counted."""
        result: tuple[
            Subscription | None, list[Any]
        ] = await self.store.removeWithPublications(  # type: ignore[attr-defined]
            key, presentity
        )
        self._forget(key)
        return result

    async def expiredSubscriptions(self, now: float) -> list[Subscription]:
        """See `IPresenceStore.expiredSubscriptions`."""
        expired = await self.store.expiredSubscriptions(now)
        for subscription in expired:
            self._forget(subscription.key)
        return expired

    def _forget(self, key: SubscriptionKey) -> None:
        watcher = self._watchers.pop(key, None)
        if watcher is None:
            return
        left = self.counts[watcher] - 1
        if left:
            self.counts[watcher] = left
        else:
            del self.counts[watcher]


class SubscriptionLimit:
    """The SUBSCRIBE handler, refusing a watcher's subscription beyond a limit.

    An initial SUBSCRIBE (no To tag) whose watcher (`watcherOf`) already
    has ``limit`` subscriptions is answered 403 with a reason phrase saying
    so; a fetch (Expires 0) creates nothing and is always served, and so
    are refreshes and every request in an existing dialog.

    Subscriptions arriving together may pass the check before any of them
    is stored: the limit can be overshot by as many as are in flight.
    """

    def __init__(
        self,
        handler: SubscribeHandler,
        counts: WatcherCounts,
        limit: int,
        stats: LimitStatistics,
    ) -> None:
        """Guard ``handler`` with the ``counts`` it keeps up to date."""
        self.handler = handler
        self.counts = counts
        self.limit = limit
        self.stats = stats

    async def __call__(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        identity: Identity | None = None,
    ) -> None:
        """Refuse a subscription over the limit, or hand the request on.

        Raises:
            Forbidden: the watcher has ``limit`` subscriptions already.
        """
        if (
            request.toAddr.tag is None
            and request.expires != 0
            and self.counts.count(watcherOf(request, identity)) >= self.limit
        ):
            self.stats.subscriptionsRefused += 1
            raise Forbidden(
                f"too many subscriptions for this watcher (limit {self.limit})"
            )
        await self.handler(request, transaction, identity)


class PublicationLimit:
    """The PUBLISH handler, refusing a presentity's publication beyond a limit.

    An initial PUBLISH (no SIP-If-Match) for a presentity that already has
    ``limit`` publications of the same event package is answered 403 with
    a reason phrase saying so; refreshes, modifications and removals are
    always served. The count is the store's list of the presentity's
    publications: a dictionary look-up in memory and cache mode, a query in
    shared mode.
    """

    def __init__(
        self, handler: PublishHandler, limit: int, stats: LimitStatistics
    ) -> None:
        """Guard ``handler``, reading publications from its store."""
        self.handler = handler
        self.limit = limit
        self.stats = stats

    async def __call__(
        self,
        request: SIPRequest,
        transaction: ServerTransaction,
        identity: Identity | None = None,
    ) -> None:
        """Refuse a publication over the limit, or hand the request on.

        Raises:
            Forbidden: the presentity has ``limit`` publications of the
                package already.
        """
        if not request.hasHeader("sip-if-match"):
            package = self.handler.package(request)
            aor, _ = presentityOf(request, self.handler.domains)
            existing = await self.handler.store.publications(aor, package.name)
            if len(existing) >= self.limit:
                self.stats.publicationsRefused += 1
                raise Forbidden(
                    f"too many publications for this presentity (limit {self.limit})"
                )
        await self.handler(request, transaction, identity)
