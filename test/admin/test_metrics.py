"""Tests for presence.admin.metrics: the snapshot, its names, the collector."""

from __future__ import annotations

from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from presence.admin.metrics import MetricsResource
from presence.storage.errors import StorageError
from presence.testing import UA, Server, pidf


class MetricsTests(SynchronousTestCase):
    """What a server on fake transports reports."""

    def setUp(self) -> None:
        """A server in memory and a publisher."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.bob = UA(self.server, "bob", "192.0.2.21", 5071)
        self.statistics = self.server.stack.statistics

    def families(self) -> dict[str, Any]:
        """The metrics as /metrics would render them now, parsed."""
        resource = MetricsResource(self.statistics)
        resource.collector.current = self.successResultOf(
            self.defer(self.statistics.snapshot())
        )
        text = generate_latest(resource.registry).decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def defer(self, coroutine: Any) -> Any:
        """A Deferred of a coroutine."""
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(coroutine)

    def test_afterPublishes(self) -> None:
        """Two PUBLISH: counted by method and status, timed, and stored."""
        self.bob.publish(pidf())
        self.bob.publish(pidf())
        families = self.families()
        [sample] = families["presence_requests"].samples
        self.assertEqual(
            (sample.name, sample.labels, sample.value),
            ("presence_requests_total", {"method": "PUBLISH", "code": "200"}, 2),
        )
        buckets = [
            s
            for s in families["presence_request_handling_seconds"].samples
            if s.name.endswith("_bucket")
        ]
        self.assertEqual(buckets[0].labels["le"], "0.0005")
        self.assertEqual([s.value for s in buckets][-1], 2)
        self.assertEqual(families["presence_publications"].samples[0].value, 2)
        self.assertEqual(families["presence_sip_messages_received"].samples[0].value, 2)
        self.assertEqual(
            families["presence_database_flush_seconds"].samples[-1].value, 0
        )

    def test_limitRefusals(self) -> None:
        """What the limits refused: ``limits:NAME`` and a labelled counter."""
        server = Server(maxPublicationsPerPresentity=1)
        self.addCleanup(server.close)
        bob = UA(server, "bob", "192.0.2.21", 5071)
        self.assertEqual(bob.publish(pidf()).code, 200)
        self.assertEqual(bob.publish(pidf()).code, 403)
        statistics = server.stack.statistics
        flat = statistics.counters().flat()
        self.assertEqual(flat["limits:publicationsRefused"], 1)
        self.assertEqual(flat["limits:rateLimited"], 0)
        resource = MetricsResource(statistics)
        resource.collector.current = statistics.counters()
        text = generate_latest(resource.registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = {
            s.labels["limit"]: s.value
            for s in families["presence_limit_refusals"].samples
            if s.name.endswith("_total")
        }
        self.assertEqual(samples["publicationsRefused"], 1)

    def test_flatNames(self) -> None:
        """get_statistics names every value group:name."""
        self.bob.publish(pidf())
        flat = self.successResultOf(self.defer(self.statistics.snapshot())).flat()
        self.assertEqual(flat["requests:PUBLISH:200"], 1)
        self.assertEqual(flat["publications:presence"], 1)
        for name in [
            "sip:received",
            "sip:tcp_connections",
            "notify:sent",
            "notify:retransmitted",
            "notify:outstanding",
            "database:flushes",
            "database:errors",
            "database:pending_rows",
            "database:serving",
            "xcap:fetches",
            "handling:PUBLISH:count",
            "handling:PUBLISH:seconds",
        ]:
            self.assertIn(name, flat)

    def test_storeUnreadable(self) -> None:
        """Without the store's rows, the counters are still there."""

        async def broken() -> Any:
            raise StorageError("down")

        self.statistics.store.eventCounts = broken  # type: ignore[method-assign]
        snapshot = self.successResultOf(self.defer(self.statistics.snapshot()))
        self.assertIsNone(snapshot.counts)
        families = self.families()
        self.assertNotIn("presence_subscriptions", families)
        self.assertIn("presence_requests", families)
