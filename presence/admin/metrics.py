"""The server's statistics, read from the layers' own counters; ``/metrics``.

Each layer counts what happens in it with plain integers and dicts: the
transports (`presence.sip.transport.Statistics`), the transaction layer
(`presence.sip.transaction.TransactionStatistics`), the dispatcher
(`presence.core.statistics.RequestStatistics`), the notifier
(`presence.core.notify.NotifyStatistics`) and the storage service and SQL
store (`presence.storage.statistics.StorageStatistics`). Nothing on the hot
path touches a Prometheus object. This module reads them all when asked:

- `ServerStatistics` takes a `Snapshot` of every counter, with the rows of
  the store by event (one query in shared mode), and names each value for
  ``get_statistics`` (`Snapshot.flat`).
- `PresenceCollector` turns a snapshot into Prometheus metric families, in a
  ``CollectorRegistry`` of its own.
- `MetricsResource` serves them at ``/metrics`` in the text format (or
  OpenMetrics, if the scraper asks for it), in the reactor thread: the
  counters are read where they are written, never from another thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from presence.core.notify import Notifier
from presence.core.statistics import HANDLING_BUCKETS, RequestStatistics
from presence.sip.limits import LimitStatistics
from presence.sip.transaction import TransactionLayer
from presence.sip.transport import SIPTransports
from presence.storage.cached import CachedStore
from presence.storage.errors import StorageError
from presence.storage.interfaces import IPresenceStore
from presence.storage.records import EventCounts
from presence.storage.service import StorageService
from presence.storage.statistics import FLUSH_BUCKETS

#: The prefix of every metric name.
PREFIX: Final = "presence"

#: Counters of the transports and the transaction layer: the name in
#: ``get_statistics`` (group ``sip``), the metric (without ``_total``), the
#: help text.
SIP_COUNTERS: Final = (
    ("received", "sip_messages_received", "SIP messages received."),
    ("sent", "sip_messages_sent", "SIP messages sent (retransmissions too)."),
    ("dropped", "sip_messages_dropped", "SIP messages dropped unanswered."),
    ("malformed", "sip_messages_malformed", "SIP messages that did not parse."),
    ("keepalives", "sip_keepalives", "CRLF keep-alives received."),
    ("send_errors", "sip_send_errors", "Messages that could not be sent."),
    ("server_transactions", "sip_server_transactions", "Server transactions."),
    ("client_transactions", "sip_client_transactions", "Client transactions."),
    (
        "retransmissions_absorbed",
        "sip_retransmissions_absorbed",
        "Retransmitted requests answered with the last response.",
    ),
    (
        "responses_retransmitted",
        "sip_responses_retransmitted",
        "Final responses to INVITE retransmitted (Timer G).",
    ),
    (
        "transaction_timeouts",
        "sip_transaction_timeouts",
        "Client transactions ended by Timer F.",
    ),
    ("stray_responses", "sip_stray_responses", "Responses matching no transaction."),
    ("tcp_connections_opened", "tcp_connections_opened", "TCP connections opened."),
)

#: Counters of the notifier: ``get_statistics`` name (group ``notify``),
#: metric, help.
NOTIFY_COUNTERS: Final = (
    ("sent", "notifies_sent", "NOTIFYs sent (each once)."),
    ("accepted", "notifies_accepted", "NOTIFYs answered with a 2xx."),
    (
        "failed",
        "notifies_failed",
        "NOTIFYs answered otherwise, timed out, undeliverable or not sent.",
    ),
    (
        "retransmitted",
        "notifies_retransmitted",
        "NOTIFY retransmissions over UDP (Timer E).",
    ),
    ("coalesced", "notifies_coalesced", "Newer states that replaced a queued one."),
)

#: Counters of the cluster (shared mode on PostgreSQL): ``get_statistics``
#: name (group ``cluster``), metric, help. ``members_alive`` is a gauge.
CLUSTER_COUNTERS: Final = (
    (
        "takeovers",
        "cluster_takeovers",
        "Subscriptions taken over from members silent for node_timeout.",
    ),
    ("signals_sent", "cluster_signals_sent", "Signals sent to other members."),
    (
        "signals_received",
        "cluster_signals_received",
        "Signals received from other members (well formed).",
    ),
    (
        "signals_failed",
        "cluster_signals_failed",
        "Signals that could not be sent (the database).",
    ),
    ("heartbeats", "cluster_heartbeats", "Heartbeats written."),
    (
        "listen_reconnects",
        "cluster_listen_reconnects",
        "Times the LISTEN connection was re-established.",
    ),
    (
        "claims_refused",
        "cluster_claims_refused",
        "NOTIFYs not sent: the CSeq claim was refused (no longer owned, or gone).",
    ),
    (
        "forwarded",
        "cluster_forwarded",
        "States of subscriptions owned by another member, signalled to it.",
    ),
)


class ClusterCounters(Protocol):
    """What the statistics read of the cluster member."""

    def counters(self) -> dict[str, int]:
        """Its counters by ``get_statistics`` name."""


#: Counters of the storage: ``get_statistics`` name (group ``database``),
#: metric, help.
DATABASE_COUNTERS: Final = (
    ("flushes", "database_flushes", "Flushes of the cache that had rows to write."),
    ("flush_failures", "database_flush_failures", "Flushes that left rows behind."),
    ("rows_flushed", "database_rows_flushed", "Rows written by the flushes."),
    ("errors", "database_errors", "Statements the database refused or lost."),
)


@dataclass
class Snapshot:
    """Every counter and gauge of the server at one moment.

    Attributes:
        sip: the transport and transaction counters, by their
            ``get_statistics`` names (`SIP_COUNTERS`).
        tcpConnections: TCP connections open.
        serverTransactions: server transactions alive.
        clientTransactions: client transactions alive.
        requests: ``(method, status)`` -> requests answered so.
        handling: method -> handling time buckets (one count per bucket of
            `HANDLING_BUCKETS`, then +Inf) and their sum in seconds.
        notify: the notifier's counters by `NOTIFY_COUNTERS` name.
        notifiesOutstanding: NOTIFYs waiting for their response.
        notifiesQueued: newer states waiting behind those.
        database: the storage counters by `DATABASE_COUNTERS` name.
        flushDurations: flushes per bucket of `FLUSH_BUCKETS`, then +Inf.
        flushSeconds: the flush durations added up.
        pendingRows: changed rows not yet written (cache mode).
        serving: whether the server serves requests (the store is usable).
        counts: the rows of the store by event, or ``None`` when the store
            could not be read.
        xcapFetches: XCAP documents fetched (the external XCAP mode's requests).
        limits: what each limit refused, by `LimitStatistics` attribute name
            (``rateLimited``, ``connectionsRefused``...).
        cluster: the cluster's counters by `CLUSTER_COUNTERS` name, and
            ``members_alive``; empty when the server is not in a cluster.
    """

    sip: dict[str, int]
    tcpConnections: int
    serverTransactions: int
    clientTransactions: int
    requests: dict[tuple[str, int], int]
    handling: dict[str, tuple[list[int], float]]
    notify: dict[str, int]
    notifiesOutstanding: int
    notifiesQueued: int
    database: dict[str, int]
    flushDurations: list[int]
    flushSeconds: float
    pendingRows: int
    serving: bool
    counts: EventCounts | None = None
    xcapFetches: int = 0
    limits: dict[str, int] = field(default_factory=dict)
    cluster: dict[str, int] = field(default_factory=dict)

    def flat(self) -> dict[str, int | float]:
        """Every value under an OpenSIPS-style ``group:name``.

        ``sip:received``, ``requests:PUBLISH:200``, ``handling:PUBLISH:count``
        and ``handling:PUBLISH:seconds``, ``notify:sent``,
        ``subscriptions:presence``, ``database:flushes``, ``xcap:fetches``...
        (the README lists them all).
        """
        out: dict[str, int | float] = {}
        for name, value in self.sip.items():
            out[f"sip:{name}"] = value
        out["sip:tcp_connections"] = self.tcpConnections
        out["sip:active_server_transactions"] = self.serverTransactions
        out["sip:active_client_transactions"] = self.clientTransactions
        for (method, code), count in sorted(self.requests.items()):
            out[f"requests:{method}:{code}"] = count
        for method, (buckets, seconds) in sorted(self.handling.items()):
            out[f"handling:{method}:count"] = sum(buckets)
            out[f"handling:{method}:seconds"] = seconds
        for name, value in self.notify.items():
            out[f"notify:{name}"] = value
        out["notify:outstanding"] = self.notifiesOutstanding
        out["notify:queued"] = self.notifiesQueued
        if self.counts is not None:
            for group, counts in (
                ("publications", self.counts.publications),
                ("subscriptions", self.counts.subscriptions),
                ("watchers", self.counts.watchers),
            ):
                for event, count in sorted(counts.items()):
                    out[f"{group}:{event}"] = count
        for name, value in self.database.items():
            out[f"database:{name}"] = value
        out["database:flush_seconds"] = self.flushSeconds
        out["database:pending_rows"] = self.pendingRows
        out["database:serving"] = int(self.serving)
        out["xcap:fetches"] = self.xcapFetches
        for name, value in sorted(self.limits.items()):
            out[f"limits:{name}"] = value
        for name, value in self.cluster.items():
            out[f"cluster:{name}"] = value
        return out


class ServerStatistics:
    """Reads the counters of every layer of one server."""

    log = Logger()

    def __init__(
        self,
        transports: SIPTransports,
        transactions: TransactionLayer,
        requests: RequestStatistics,
        notifier: Notifier,
        storage: StorageService,
        store: IPresenceStore,
        xcapFetches: Callable[[], int] = lambda: 0,
        limits: LimitStatistics | None = None,
        cluster: ClusterCounters | None = None,
    ) -> None:
        """Read the counters of these objects.

        Args:
            transports: the SIP transports.
            transactions: the transaction layer.
            requests: the dispatcher's counters.
            notifier: the notifier (its counters, and what it has in flight).
            storage: the storage service (flushes, database errors).
            store: the store the rows are counted in.
            xcapFetches: how many XCAP documents were fetched (requests of
                the external XCAP mode's client).
            limits: what the limits refused.
            cluster: the cluster member in shared mode on PostgreSQL.
        """
        self.transports = transports
        self.transactions = transactions
        self.requests = requests
        self.notifier = notifier
        self.storage = storage
        self.store = store
        self.xcapFetches = xcapFetches
        self.limits = limits
        self.cluster = cluster

    def counters(self) -> Snapshot:
        """Every counter now, without the store's rows (no I/O)."""
        transport = self.transports.stats
        layer = self.transactions.stats
        notify = self.notifier.stats
        storage = self.storage.stats
        store = self.storage.store
        return Snapshot(
            sip={
                "received": transport.received,
                "sent": transport.sent,
                "dropped": transport.dropped,
                "malformed": transport.malformed,
                "keepalives": transport.keepAlives,
                "send_errors": transport.sendErrors,
                "server_transactions": layer.serverTransactions,
                "client_transactions": layer.clientTransactions,
                "retransmissions_absorbed": layer.retransmissionsAbsorbed,
                "responses_retransmitted": layer.responsesRetransmitted,
                "transaction_timeouts": layer.timeouts,
                "stray_responses": layer.strayResponses,
                "tcp_connections_opened": transport.connectionsOpened,
            },
            tcpConnections=len(self.transports.connections),
            serverTransactions=len(self.transactions.server),
            clientTransactions=len(self.transactions.client),
            requests=dict(self.requests.responses),
            handling={
                method: (list(buckets), self.requests.handlingSeconds[method])
                for method, buckets in self.requests.handling.items()
            },
            notify={
                "sent": notify.sent,
                "accepted": notify.accepted,
                "failed": notify.failed,
                # The server's only client requests are its NOTIFYs.
                "retransmitted": layer.requestsRetransmitted,
                "coalesced": notify.coalesced,
            },
            notifiesOutstanding=self.notifier.outstanding,
            notifiesQueued=self.notifier.queued,
            database={
                "flushes": storage.flushes,
                "flush_failures": storage.flushFailures,
                "rows_flushed": storage.rowsFlushed,
                "errors": storage.errors,
            },
            flushDurations=list(storage.flushDurations),
            flushSeconds=storage.flushSeconds,
            pendingRows=store.pending if isinstance(store, CachedStore) else 0,
            serving=self.storage.serving,
            xcapFetches=self.xcapFetches(),
            limits=self.limits.asDict() if self.limits is not None else {},
            cluster=self._clusterCounters(),
        )

    def _clusterCounters(self) -> dict[str, int]:
        if self.cluster is None:
            return {}
        counters = self.cluster.counters()
        counters["claims_refused"] = self.notifier.stats.claimsRefused
        counters["forwarded"] = self.notifier.stats.forwarded
        return counters

    async def snapshot(self) -> Snapshot:
        """Every counter now, and the rows of the store by event.

        The rows are left out (``counts`` is ``None``) when the store cannot
        be read: the counters are most wanted when the database is down.
        """
        snapshot = self.counters()
        try:
            snapshot.counts = await self.store.eventCounts()
        except StorageError as e:
            self.log.warn("statistics without the store's rows: {error}", error=e)
        return snapshot


def _histogram(
    name: str,
    documentation: str,
    bounds: tuple[float, ...],
    labels: list[str],
    series: list[tuple[list[str], list[int], float]],
) -> HistogramMetricFamily:
    """A histogram family from per-bucket counts (not cumulative)."""
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, counts, total in series:
        cumulative, running = [], 0
        for bound, count in zip((*bounds, float("inf")), counts, strict=True):
            running += count
            cumulative.append(("+Inf" if math.isinf(bound) else repr(bound), running))
        family.add_metric(values, cumulative, total)
    return family


class PresenceCollector(Collector):
    """The server's metrics, from a `Snapshot`, for a ``CollectorRegistry``.

    Attributes:
        current: the snapshot the next collection reads; when ``None``, one
            is taken at once, without the store's rows.
    """

    def __init__(self, statistics: ServerStatistics) -> None:
        """Collect from ``statistics``."""
        self.statistics = statistics
        self.current: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        """The metric families (see the README for every name)."""
        snapshot = self.current or self.statistics.counters()
        p = PREFIX
        requests = CounterMetricFamily(
            f"{p}_requests",
            "Requests answered, by method and final status.",
            labels=["method", "code"],
        )
        for (method, code), count in sorted(snapshot.requests.items()):
            requests.add_metric([method, str(code)], count)
        yield requests
        yield _histogram(
            f"{p}_request_handling_seconds",
            "Time from a request's arrival to its final response, by method.",
            HANDLING_BUCKETS,
            ["method"],
            [
                ([method], buckets, total)
                for method, (buckets, total) in sorted(snapshot.handling.items())
            ],
        )
        for groupValues, names in (
            (snapshot.sip, SIP_COUNTERS),
            (snapshot.notify, NOTIFY_COUNTERS),
            (snapshot.database, DATABASE_COUNTERS),
        ):
            for key, metric, documentation in names:
                yield CounterMetricFamily(
                    f"{p}_{metric}", documentation, value=groupValues[key]
                )
        if snapshot.cluster:
            for key, metric, documentation in CLUSTER_COUNTERS:
                yield CounterMetricFamily(
                    f"{p}_{metric}", documentation, value=snapshot.cluster[key]
                )
            yield GaugeMetricFamily(
                f"{p}_cluster_members_alive",
                "Members of the cluster alive at the last heartbeat (this one too).",
                value=snapshot.cluster["members_alive"],
            )
        yield CounterMetricFamily(
            f"{p}_xcap_fetches",
            "XCAP documents fetched (the external XCAP mode's requests).",
            value=snapshot.xcapFetches,
        )
        refused = CounterMetricFamily(
            f"{p}_limit_refusals",
            "Requests and connections a limit refused, by limit.",
            labels=["limit"],
        )
        for name, value in sorted(snapshot.limits.items()):
            refused.add_metric([name], value)
        yield refused
        yield _histogram(
            f"{p}_database_flush_seconds",
            "Time each flush of the cache took.",
            FLUSH_BUCKETS,
            [],
            [([], snapshot.flushDurations, snapshot.flushSeconds)],
        )
        if snapshot.counts is not None:
            for name, counts, documentation in (
                ("subscriptions", snapshot.counts.subscriptions, "Subscriptions"),
                ("publications", snapshot.counts.publications, "Publications"),
                ("watchers", snapshot.counts.watchers, "Rows of the watchers table"),
            ):
                gauge = GaugeMetricFamily(
                    f"{p}_{name}", f"{documentation}, by event.", labels=["event"]
                )
                for event, count in sorted(counts.items()):
                    gauge.add_metric([event], count)
                yield gauge
        for metric, value, documentation in (
            ("tcp_connections", snapshot.tcpConnections, "TCP connections open."),
            (
                "notifies_outstanding",
                snapshot.notifiesOutstanding,
                "NOTIFYs waiting for their response.",
            ),
            (
                "notifies_queued",
                snapshot.notifiesQueued,
                "Newer states queued behind an outstanding NOTIFY.",
            ),
            (
                "database_pending_rows",
                snapshot.pendingRows,
                "Changed rows not yet written to the database (cache mode).",
            ),
            (
                "serving",
                int(snapshot.serving),
                "1 while the server serves requests, 0 while it answers 503.",
            ),
        ):
            yield GaugeMetricFamily(f"{p}_{metric}", documentation, value=value)
        transactions = GaugeMetricFamily(
            f"{p}_sip_transactions", "SIP transactions alive.", labels=["kind"]
        )
        transactions.add_metric(["server"], snapshot.serverTransactions)
        transactions.add_metric(["client"], snapshot.clientTransactions)
        yield transactions


class MetricsResource(Resource):
    """``/metrics``: the collector's families in Prometheus's text format.

    Not ``prometheus_client.twisted.MetricsResource``: that one collects in
    the reactor's thread pool, which would read the counters while the
    reactor thread changes them, and takes the global reactor.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, statistics: ServerStatistics) -> None:
        """Serve the metrics of ``statistics``."""
        super().__init__()
        self.statistics = statistics
        self.collector = PresenceCollector(statistics)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def render_GET(self, request: Request) -> int:
        """Take a snapshot (reading the store), then write the metrics."""
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))
        d = Deferred.fromCoroutine(self._render(request, finished))
        d.addErrback(lambda f: self.log.failure("/metrics failed", f))
        return NOT_DONE_YET

    async def _render(self, request: Request, finished: list[bool]) -> None:
        snapshot = await self.statistics.snapshot()
        if finished[0]:
            return
        accept = request.getHeader("accept") or ""
        encoder, contentType = choose_encoder(accept)
        self.collector.current = snapshot
        try:
            body = encoder(self.registry)
        except Exception:
            self.log.failure("cannot render the metrics")
            request.setResponseCode(500)
            request.setHeader("content-type", "text/plain; charset=utf-8")
            body = b"cannot render the metrics: see the server's log\n"
        else:
            request.setHeader("content-type", contentType)
        finally:
            self.collector.current = None
        request.write(body)
        request.finish()
