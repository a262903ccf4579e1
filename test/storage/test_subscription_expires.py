"""Subscription-State ``expires`` is never above what the last 2xx granted.

RFC 6665 section 4.2.2: "If the "Subscription-State" value is "active", it
means that the subscription has been accepted and (in general) has been
authorized. [...] the "expires" parameter [...] indicates the time
remaining on the subscription". Section 4.1.2.1: the 2xx's Expires "indicates
the actual duration for which the subscription will remain active (unless
refreshed)". So after a 2xx that granted G seconds at time T, a NOTIFY sent
at time t may say at most ``T + G - t``: never 601 after 600, whatever
fraction of a second the clocks are at and however the store keeps times.

The property is checked for random grant times, clock offsets (fractional
seconds) and refresh points, against the memory store (memory and cache
mode), the row conversion the SQL stores use (a whole-seconds ``expires``
column: SQLite of cache mode, PostgreSQL of shared mode), and a few
adversarial examples through a real SQLite file and a real PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from presence.core.notify import Notifier
from presence.packages.interfaces import PackageRegistry
from presence.status import PENDING
from presence.storage.interfaces import IPresenceStore
from presence.storage.memory import MemoryStore
from presence.storage.postgres import PostgresStore
from presence.storage.records import Subscription
from presence.storage.rows import subscriptionFromRow, subscriptionRow
from presence.storage.sqlite import SQLiteStore
from presence.storage.statements import ACTIVE_WATCHERS
from test.support.postgres import PostgresPerClass
from test.support.records import aliceSubscription

#: Where the clocks start: a Unix time of today's order.
EPOCH = 1_700_000_000

#: One grant: the seconds granted, then when NOTIFYs are sent after it (as
#: fractions of the grant) and when the next refresh comes (a fraction).
_grant = st.tuples(
    st.integers(min_value=1, max_value=7200),
    st.lists(
        st.floats(min_value=0, max_value=1, exclude_max=True), min_size=1, max_size=4
    ),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)

#: A subscription's life: the clock's fraction of a second at the first
#: SUBSCRIBE, and its grants (the first, then refreshes).
_life = st.tuples(
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.lists(_grant, min_size=1, max_size=4),
)

Life = tuple[float, list[tuple[int, list[float], float]]]

#: Examples run through the real databases: fractions just above a whole
#: second, just below, and none.
ADVERSARIAL: list[Life] = [
    (0.3, [(600, [0.0, 0.0001], 0.5), (600, [0.0, 0.9999], 0.0)]),
    (0.9999, [(60, [0.0, 0.5], 0.99), (3600, [0.0], 0.0)]),
    (0.0, [(600, [0.0, 0.25], 0.1), (1, [0.0, 0.5], 0.0)]),
    (0.0001, [(7200, [0.0, 0.999999], 0.0)]),
]


def stateOf(notifier: Notifier, subscription: Subscription) -> str:
    """The Subscription-State the notifier would send for ``subscription`` now."""
    d = Deferred.fromCoroutine(
        notifier._state(cast(Any, None), subscription, None)  # the value under test
    )
    result: list[tuple[str, Any]] = []
    d.addCallback(result.append)
    assert result, "composing a pending state does not wait"
    return result[0][0]


def expiresOf(state: str) -> int:
    """The ``expires`` of a ``pending;expires=N`` Subscription-State."""
    head, _, value = state.partition(";expires=")
    assert head == "pending", state
    return int(value)


def notifierOn(clock: Clock, store: IPresenceStore) -> Notifier:
    """A notifier whose Subscription-State values are read (nothing is sent)."""
    return Notifier(clock, store, PackageRegistry(), cast(Any, None), cast(Any, None))


async def checkLife(
    life: Life,
    clock: Clock,
    put: Callable[[Subscription], Awaitable[None]],
    read: Callable[[], Awaitable[Subscription]],
    failure: Callable[[str], None],
) -> None:
    """Grant, refresh and notify as ``life`` says; check every NOTIFY.

    Args:
        life: the fraction of a second at the start and the grants.
        clock: the notifier's clock, moved here.
        put: writes the subscription as a 2xx granted it.
        read: reads it back as the notifier would (from the store).
        failure: called with what went wrong.
    """
    offset, grants = life
    now = EPOCH + offset
    clock.advance(now - clock.seconds())
    notifier = notifierOn(clock, cast(Any, None))
    for granted, notifyAt, refreshAt in grants:
        # The 2xx grants ``granted`` seconds from now (as subscribe.py does).
        end = clock.seconds() + granted
        await put(aliceSubscription(status=PENDING, expires=end))
        for fraction in sorted(notifyAt):
            at = clock.seconds()
            clock.advance(max(0.0, end - granted + fraction * granted - at))
            subscription = await read()
            expires = expiresOf(stateOf(notifier, subscription))
            remaining = end - clock.seconds()
            if expires > remaining or expires < 0:
                failure(
                    f"expires={expires} with {remaining!r} s remaining of"
                    f" {granted} granted at {end - granted!r}"
                )
        refresh = end - granted + refreshAt * granted
        clock.advance(max(0.0, refresh - clock.seconds()))


def runSync(coroutine: Any) -> None:
    """Run a coroutine that never waits (the memory store, rows)."""
    done: list[object] = []
    d = Deferred.fromCoroutine(coroutine)
    d.addBoth(done.append)
    assert done, "did not finish synchronously"
    if isinstance(done[0], BaseException):
        raise done[0]
    failure = getattr(done[0], "raiseException", None)
    if failure is not None:
        failure()


class PropertyTests(SynchronousTestCase):
    """The property over random lives, memory store and SQL rows."""

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(_life)
    def test_memoryStore(self, life: Life) -> None:
        """The memory store (memory mode, and cache mode's reads)."""
        clock = Clock()
        store = MemoryStore()
        key = aliceSubscription().key

        async def read() -> Subscription:
            found = await store.subscription(key)
            assert found is not None
            return found

        runSync(checkLife(life, clock, store.putSubscription, read, self.fail))

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(_life)
    def test_sqlRows(self, life: Life) -> None:
        """A row of whole seconds, as SQLite and PostgreSQL keep it.

        The ``expires`` column is an integer (OpenSIPS's schema): what the
        notifier reads back from either database is `subscriptionFromRow` of
        `subscriptionRow`.
        """
        clock = Clock()
        kept: list[tuple[Any, ...]] = []

        async def put(subscription: Subscription) -> None:
            row = subscriptionRow(subscription)
            assert isinstance(row["expires"], int)
            kept[:] = [tuple(row[c] for c in ACTIVE_WATCHERS.columns)]

        async def read() -> Subscription:
            return subscriptionFromRow(kept[0])

        runSync(checkLife(life, clock, put, read, self.fail))


class _RealStoreTests:
    """The adversarial examples through a real database."""

    store: Any

    async def test_adversarial(self) -> None:
        """Every NOTIFY's expires at most the time remaining."""
        failures: list[str] = []
        key = aliceSubscription().key
        for life in ADVERSARIAL:

            async def read() -> Subscription:
                found = await self.store.subscription(key)
                assert found is not None
                return cast(Subscription, found)

            await checkLife(
                life, Clock(), self.store.putSubscription, read, failures.append
            )
        cast(TestCase, self).assertEqual(failures, [])


class SQLiteTests(_RealStoreTests, TestCase):
    """Cache mode's SQLite file (what it reloads at start)."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """A new SQLite file with the schema."""
        path = self.mktemp()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.store = SQLiteStore(path, reactor=reactor)
        await self.store.start()
        self.addCleanup(self.store.stop)
        await self.store.ensureSchema(create=True)


class PostgresTests(PostgresPerClass, _RealStoreTests, TestCase):
    """Shared mode's PostgreSQL (every NOTIFY's state is read from it)."""

    async def setUp(self) -> None:  # type: ignore[override]  # trial awaits it
        """The class's database with the schema, no subscription."""
        self.store = PostgresStore(self.pg.dsn, reactor=reactor)
        await self.store.start()
        self.addCleanup(self.store.stop)
        await self.store.ensureSchema(create=True)
        assert self.store.runner is not None
        await self.store.runner.runInteraction([("DELETE FROM active_watchers", {})])
