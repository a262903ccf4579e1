"""One server's membership of the cluster: signals, heartbeat, take-over.

`ClusterMember` listens on a channel of its own (`channelOf` its server id)
on a dedicated PostgreSQL connection, and sends the signals the notifier
asks for (`signalPresentity`, `signalSubscription`) with ``pg_notify`` on
the owner's channel. Every ``node_timeout / 3`` seconds it writes its
heartbeat row through that same connection (so a member whose listening
connection is down stops beating and is taken over: it could not hear its
signals) and takes over the subscriptions of every member silent for
``node_timeout`` seconds (`presence.storage.sql.SQLStore.takeOver`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from presence._async import detach
from presence.storage.errors import StorageError
from presence.storage.postgres import PostgresListener, PostgresStore
from presence.storage.records import Subscription, SubscriptionKey
from presence.storage.statements import (
    CREATE_CLUSTER,
    CREATE_SHARING_INDEX,
    HEARTBEAT,
    LEAVE_CLUSTER,
)
from presence.storage.waiters import Waiters

#: The longest server id: OpenSIPS's ``sharing_tag`` is ``VARCHAR(32)``.
MAX_SERVER_ID: Final = 32

#: The advisory lock that serialises the creation of the cluster's table.
_SETUP_LOCK: Final = "SELECT pg_advisory_xact_lock(7246001)"


def defaultServerId(hostname: str, port: int, unique: str = "") -> str:
    """The server id when none is configured: ``host:port``.

    The host name's first label and the first listening port, so that two
    servers on one machine differ by port and a restarted server gets its
    own id back. A server on port 0 (any free port, so no stable address)
    adds ``unique``, ``host:0.unique``: a new id at each start. Longer than
    `MAX_SERVER_ID`: shortened, with a hash of the whole kept at the end.
    """
    name = f"{hostname.split('.', 1)[0] or 'presence'}:{port}"
    if port == 0:
        name += f".{unique}"
    if len(name) <= MAX_SERVER_ID:
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{name[: MAX_SERVER_ID - 9]}~{digest}"


def channelOf(serverId: str) -> str:
    """The ``LISTEN`` channel of a server: an identifier whatever the id."""
    return "presence_" + hashlib.sha1(serverId.encode("utf-8")).hexdigest()[:24]


def presentityPayload(presentity: str, event: str) -> str:
    """A signal that a presentity's state of an event changed."""
    return json.dumps(["p", presentity, event], separators=(",", ":"))


def subscriptionPayload(key: SubscriptionKey) -> str:
    """A signal that one subscription must be notified."""
    return json.dumps(["s", *key], separators=(",", ":"))


def parsePayload(
    payload: str,
) -> tuple[str, str] | SubscriptionKey | None:
    """A signal's presentity and event, or subscription key; None if bad."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    if len(value) == 3 and value[0] == "p":
        return (value[1], value[2])
    if len(value) == 6 and value[0] == "s":
        return (value[1], value[2], value[3], value[4], value[5])
    return None


class ClusterStatistics:
    """Counters of the cluster member.

    Attributes:
        signalsSent: signals sent to other members.
        signalsReceived: signals received (well formed).
        signalsFailed: signals that could not be sent (the database).
        heartbeats: heartbeats written.
        takenOver: subscriptions taken over from silent members.
        relistened: times the listening connection was re-established.
        membersAlive: the members alive at the last heartbeat, this one
            included (0 before the first).
        delivered: signals the database accepted, by the member they went
            to.
        inFlight: signals being sent now.
    """

    def __init__(self) -> None:
        """Every counter at zero."""
        self.delivered: dict[str, int] = {}
        self.inFlight = 0
        self.signalsSent = 0
        self.signalsReceived = 0
        self.signalsFailed = 0
        self.heartbeats = 0
        self.takenOver = 0
        self.relistened = 0
        self.membersAlive = 0


class ClusterMember(Service):
    """This server in the cluster: what it tells others, and hears from them."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        store: PostgresStore,
        serverId: str,
        address: str,
        nodeTimeout: float,
        onPresentity: Callable[[str, str], Coroutine[Any, Any, Any]],
        onSubscription: Callable[[SubscriptionKey], Coroutine[Any, Any, Any]],
        onTakenOver: Callable[[Sequence[Subscription]], Coroutine[Any, Any, Any]],
        onResync: Callable[[], Coroutine[Any, Any, Any]],
        createTables: bool = True,
    ) -> None:
        """Join the cluster of the servers on ``store``'s database.

        Args:
            clock: what the heartbeat runs on and its times are read from.
            store: the shared store (its pool sends the signals; its
                `listener` receives them).
            serverId: this server's id, the ``sharing_tag`` it writes.
            address: what the ``cluster`` row says this server is.
            nodeTimeout: seconds of silence after which a member is dead.
            onPresentity: called with a presentity and an event another
                member changed.
            onSubscription: called with the key of a subscription another
                member asked this one to notify.
            onTakenOver: called with the subscriptions taken over.
            onResync: called after the listening connection came back, or
                at the first heartbeat after the service starts when this id
                beat before (a restart): signals sent meanwhile are lost, so
                every owned subscription is notified.
            createTables: create the ``cluster`` table if it is missing.
        """
        self.clock = clock
        self.store = store
        self.serverId = serverId
        self.address = address
        self.nodeTimeout = nodeTimeout
        self.interval = nodeTimeout / 3
        self.channel = channelOf(serverId)
        self.onPresentity = onPresentity
        self.onSubscription = onSubscription
        self.onTakenOver = onTakenOver
        self.onResync = onResync
        self.createTables = createTables
        self.stats = ClusterStatistics()
        self.listener: PostgresListener = store.listener(self._notified, self._lost)
        self._loop: LoopingCall | None = None
        self._current: Deferred[Any] | None = None
        self._beating = False
        self._listened = False
        self._down = False
        self._restarted = False
        self._listening = Waiters()
        self._lostWaiters = Waiters()
        self._beats = Waiters()
        self._activity = Waiters()
        #: Signals received and being acted on now.
        self.handling = 0

    def counters(self) -> dict[str, int]:
        """The counters, by their ``get_statistics`` names (group ``cluster``)."""
        stats = self.stats
        return {
            "takeovers": stats.takenOver,
            "signals_sent": stats.signalsSent,
            "signals_received": stats.signalsReceived,
            "signals_failed": stats.signalsFailed,
            "heartbeats": stats.heartbeats,
            "listen_reconnects": stats.relistened,
            "members_alive": stats.membersAlive,
        }

    # -- what the notifier calls ---------------------------------------------

    def signalPresentity(self, owner: str, presentity: str, event: str) -> None:
        """Tell ``owner`` that a presentity's state changed."""
        self._signal(owner, presentityPayload(presentity, event))

    def signalSubscription(self, owner: str, key: SubscriptionKey) -> None:
        """Ask ``owner`` to notify one of its subscriptions."""
        self._signal(owner, subscriptionPayload(key))

    async def _guarded(self, call: Coroutine[Any, Any, Any]) -> None:
        """Run what a signal asks; the database failing is not a bug."""
        self.handling += 1
        try:
            await call
        except StorageError as e:
            self.log.debug("cluster signal not acted on: {error}", error=str(e))
        finally:
            self.handling -= 1
            self._activity.fire()

    def whenActive(self) -> Deferred[None]:
        """Fires after the next signal sent, or received and acted on."""
        return self._activity.wait()

    def _signal(self, owner: str, payload: str) -> None:
        self.stats.signalsSent += 1
        detach(self._send(owner, payload), self.log, "cluster signal")

    async def _send(self, owner: str, payload: str) -> None:
        self.stats.inFlight += 1
        try:
            await self.store.signal(channelOf(owner), payload)
            self.stats.delivered[owner] = self.stats.delivered.get(owner, 0) + 1
        except StorageError as e:
            # The owner's next take-over or resync notifies it anyway.
            self.stats.signalsFailed += 1
            self.log.debug(
                "signal to {owner} not sent: {error}", owner=owner, error=str(e)
            )
        finally:
            self.stats.inFlight -= 1
            self._activity.fire()

    # -- what the database tells us ------------------------------------------

    def _notified(self, channel: str, payload: str) -> None:
        if channel != self.channel:
            return
        signal = parsePayload(payload)
        if signal is None:
            self.log.warn(
                "ignoring a malformed cluster signal {payload!r}", payload=payload
            )
            return
        self.stats.signalsReceived += 1
        if len(signal) == 2:
            presentity, event = signal[0], signal[1]
            call = self.onPresentity(presentity, event)
            detach(self._guarded(call), self.log, "cluster signal")
        else:
            call = self.onSubscription(signal)
            detach(self._guarded(call), self.log, "cluster signal")

    def _lost(self) -> None:
        self.log.warn(
            "cluster: the LISTEN connection to PostgreSQL broke; listening again"
            " at the next heartbeat"
        )
        self._lostWaiters.fire()

    # -- the service ---------------------------------------------------------

    async def join(self) -> None:
        """Listen and beat once; what the store waits for before it serves.

        Raises:
            StorageError: the database could not be reached; the store
                retries.
        """
        while self._beating and self._current is not None:
            await self._current
        self._beating = True
        try:
            await self._beat(strict=True)
        finally:
            self._beating = False
            self._beats.fire()

    def startService(self) -> None:
        """Beat every ``node_timeout / 3`` seconds (at once if not joined)."""
        super().startService()
        self._loop = LoopingCall(self.beat)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=not self._listened)

    def stopService(self) -> Deferred[None]:
        """Leave: the row says silent at once, so survivors take over now."""
        super().stopService()
        self.stopBeating()
        return detach(self._leave(), self.log, "leaving the cluster")

    def stopBeating(self) -> None:
        """Stop the heartbeat, as a crash would (no goodbye, no close)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    async def _leave(self) -> None:
        if self._beating and self._current is not None:
            await self._current
        try:
            await self.listener.query(LEAVE_CLUSTER, {"server_id": self.serverId})
        except StorageError:
            pass
        self.listener.close()

    def whenListening(self) -> Deferred[None]:
        """Fires when the member listens (again, after a loss: the next time)."""
        return self._listening.wait()

    def whenLost(self) -> Deferred[None]:
        """Fires the next time the listening connection breaks."""
        return self._lostWaiters.wait()

    def whenBeaten(self) -> Deferred[None]:
        """Fires after the next heartbeat and take-over are done."""
        return self._beats.wait()

    @property
    def beating(self) -> bool:
        """Whether a heartbeat (and its take-over) is under way."""
        return self._beating

    @property
    def listening(self) -> bool:
        """Whether the listening connection is up."""
        return self.listener.alive

    def beat(self) -> None:
        """One heartbeat, unless the last is still running; never raises."""
        if self._beating:
            return
        self._beating = True
        d = detach(self._beat(), self.log, "cluster heartbeat")
        d.addBoth(self._beaten)
        self._current = d

    def _beaten(self, _: object) -> None:
        self._beating = False
        self._beats.fire()

    async def _beat(self, strict: bool = False) -> None:
        try:
            if not self.listener.alive:
                await self._listen()
            now = self.clock.seconds()
            rows = await self.listener.query(
                HEARTBEAT,
                {
                    "server_id": self.serverId,
                    "address": self.address,
                    "now": now,
                    "cutoff": now - self.nodeTimeout,
                },
            )
            self.stats.heartbeats += 1
            previous = rows[0][0] if rows else None
            if rows:
                self.stats.membersAlive = int(rows[0][1]) + 1
            if self.stats.heartbeats == 1 and previous is not None:
                # This id beat before this process: what was signalled to
                # it while it was down is lost. Resent once it serves.
                self._restarted = True
            if previous is not None and float(previous) == 0:
                # LEAVE_CLUSTER's mark: the last process under this id
                # stopped cleanly, and its subscriptions were taken over.
                self.log.info(
                    "cluster: this server ({server}) joins again after a clean"
                    " stop: the subscriptions it had are the survivors' now",
                    server=self.serverId,
                )
            elif previous is not None and now - float(previous) > self.nodeTimeout:
                self.log.warn(
                    "cluster: this server ({server}) was silent for {seconds:.0f} s,"
                    " longer than node_timeout: the subscriptions taken over"
                    " meanwhile are the survivors' now",
                    server=self.serverId,
                    seconds=now - float(previous),
                )
            taken = await self.store.takeOver(now - self.nodeTimeout, now)
        except StorageError as e:
            if strict:
                raise
            if not self._down:
                self._down = True
                self.log.warn("cluster heartbeat failed: {error}", error=str(e))
            return
        if self._down:
            self._down = False
            self.log.info("cluster heartbeat resumed")
        if self._restarted and self.running:
            self._restarted = False
            self.log.info(
                "cluster: {server} restarted; notifying what it still owns",
                server=self.serverId,
            )
            await self.onResync()
        if taken:
            self.stats.takenOver += len(taken)
            self.log.info(
                "cluster: {n} subscriptions taken over from silent members",
                n=len(taken),
            )
            await self.onTakenOver(taken)

    async def _listen(self) -> None:
        setup = [_SETUP_LOCK, CREATE_CLUSTER, CREATE_SHARING_INDEX]
        await self.listener.start(self.channel, setup if self.createTables else [])
        again = self._listened
        self._listened = True
        self.log.info(
            "cluster: {server} listening on {channel}",
            server=self.serverId,
            channel=self.channel,
        )
        self._listening.fire()
        if again:
            self.stats.relistened += 1
            # What was signalled while the connection was down is lost:
            # every subscription owned is notified.
            await self.onResync()
