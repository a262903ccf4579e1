"""The cluster's counters in ``/metrics`` and ``get_statistics``."""

from __future__ import annotations

from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from presence.admin.metrics import MetricsResource
from presence.testing import pidf
from test.cluster.harness import Node, Watcher
from test.cluster.test_cluster import ClusterTestCase


def families(node: Node) -> dict[str, float]:
    """The cluster's samples in the node's ``/metrics`` text, by name."""
    resource = MetricsResource(node.stack.statistics)
    text = generate_latest(resource.registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("presence_cluster_")
    }


class ClusterMetricsTests(ClusterTestCase):
    """Take-overs, signals, refused claims, members alive."""

    async def test_countersAfterTakeOver(self) -> None:
        """Two members, a signal, then one dies and the other takes over."""
        a, b = await self.nodes("a", "b")
        await a.beat()
        await b.beat()
        self.assertEqual(
            b.stack.statistics.counters().flat()["cluster:members_alive"], 2
        )
        alice = Watcher("alice", "192.0.2.20")
        await self.subscribed(a, alice)
        bob = Watcher("bob", "192.0.2.30")
        publish = bob.publishBytes(pidf("open"))
        self.assertEqual((await self.cluster.request(b, bob, publish)).code, 200)
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 2)
        await self.cluster.settle()
        stale: Any = await a.stack.store.subscription(
            (alice.callId, alice.toTag or "", alice.tag, "presence", "")
        )
        await a.crash()
        for _ in range(4):
            await b.beat()
        await self.cluster.until(lambda: len(self.cluster.to(alice.address)) == 3)
        await self.cluster.settle()
        flat = b.stack.statistics.counters().flat()
        self.assertEqual(
            {k: v for k, v in flat.items() if k.startswith("cluster:")},
            {
                "cluster:takeovers": 1,
                "cluster:signals_sent": 1,
                "cluster:signals_received": 0,
                "cluster:signals_failed": 0,
                "cluster:heartbeats": 6,
                "cluster:listen_reconnects": 0,
                "cluster:members_alive": 1,
                "cluster:claims_refused": 0,
                "cluster:forwarded": 1,
            },
        )
        self.assertEqual(
            a.stack.statistics.counters().flat()["cluster:signals_received"], 1
        )
        samples = families(b)
        self.assertEqual(samples["presence_cluster_takeovers_total"], 1)
        self.assertEqual(samples["presence_cluster_signals_sent_total"], 1)
        self.assertEqual(samples["presence_cluster_listen_reconnects_total"], 0)
        self.assertEqual(samples["presence_cluster_members_alive"], 1)
        # Back under its id with the dead member's stale copy: its claim is
        # refused by the fence.
        assert stale is not None
        # b's signal went to the dead process, not to the new one.
        b.member.stats.delivered.pop("a")
        again = self.cluster.node("a", "192.0.2.1")
        await again.start()
        again.stack.notifier.send(stale)
        await self.cluster.settle()
        self.assertEqual(families(again)["presence_cluster_claims_refused_total"], 1)
        self.assertEqual(len(self.cluster.to(alice.address)), 3)

    async def test_noClusterNoSamples(self) -> None:
        """Outside a cluster there is no ``cluster:`` value at all."""
        from presence.testing import Server

        server = Server()
        self.addCleanup(server.close)
        flat = server.stack.statistics.counters().flat()
        self.assertEqual([k for k in flat if k.startswith("cluster:")], [])
