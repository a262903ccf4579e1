"""Tests for presence.core.statistics and the dispatcher's counting."""

from __future__ import annotations

from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from presence.auth.identity import Identity
from presence.core.statistics import HANDLING_BUCKETS, RequestStatistics
from presence.sip.message import SIPRequest
from presence.sip.transaction import ServerTransaction
from presence.testing import UA, Server, pidf, requestBytes


class RequestStatisticsTests(SynchronousTestCase):
    """Requests are counted by method and status, and timed in buckets."""

    def test_counts(self) -> None:
        """Each final response counts once under its method and status."""
        stats = RequestStatistics()
        stats.answered("PUBLISH", 200, 0.0001)
        stats.answered("PUBLISH", 200, 0.002)
        stats.answered("PUBLISH", 412, 0.003)
        stats.answered("SUBSCRIBE", 200, 7.0)
        self.assertEqual(
            stats.responses,
            {("PUBLISH", 200): 2, ("PUBLISH", 412): 1, ("SUBSCRIBE", 200): 1},
        )
        publish = stats.handling["PUBLISH"]
        self.assertEqual(len(publish), len(HANDLING_BUCKETS) + 1)
        self.assertEqual(publish[0], 1)  # <= 0.5 ms
        self.assertEqual(publish[HANDLING_BUCKETS.index(0.0025)], 1)
        self.assertEqual(publish[HANDLING_BUCKETS.index(0.005)], 1)
        self.assertEqual(stats.handling["SUBSCRIBE"][-1], 1)  # above 5 s: +Inf
        self.assertAlmostEqual(stats.handlingSeconds["PUBLISH"], 0.0051)

    def test_boundInItsBucket(self) -> None:
        """A time equal to a bound counts in that bound's bucket (le)."""
        stats = RequestStatistics()
        stats.answered("OPTIONS", 200, 0.001)
        self.assertEqual(stats.handling["OPTIONS"][HANDLING_BUCKETS.index(0.001)], 1)

    def test_otherMethods(self) -> None:
        """Unknown methods are counted together, so they cannot grow the dict."""
        stats = RequestStatistics()
        for n in range(50):
            stats.answered(f"X{n}", 405, 0.0)
        self.assertEqual(stats.responses, {("other", 405): 50})


class DispatcherCountsTests(SynchronousTestCase):
    """The dispatcher counts every request it answers, when it answers."""

    def setUp(self) -> None:
        """A server on a fake clock and a publisher."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.bob = UA(self.server, "bob", "192.0.2.21", 5071)
        self.stats = self.server.stack.dispatcher.stats

    def test_publishes(self) -> None:
        """Three PUBLISH and a bad one: three 200 and one 412."""
        for _ in range(3):
            self.assertEqual(self.bob.publish(pidf()).code, 200)
        self.assertEqual(self.bob.publish(b"", etag="nope").code, 412)
        self.assertEqual(
            self.stats.responses, {("PUBLISH", 200): 3, ("PUBLISH", 412): 1}
        )
        self.assertEqual(sum(self.stats.handling["PUBLISH"]), 4)

    def test_malformedAndUnknown(self) -> None:
        """A request answered 400 before routing and a 405 are counted too."""
        self.server.receive(requestBytes("OPTIONS").replace(b"1 OPTIONS", b"1 INFO"))
        self.server.receive(requestBytes("FROB"))
        self.assertEqual(self.stats.responses, {("OPTIONS", 400): 1, ("other", 405): 1})

    def test_retransmissionNotCounted(self) -> None:
        """A retransmitted request, absorbed by its transaction, counts once."""
        data = requestBytes("OPTIONS")
        self.server.receive(data)
        self.server.receive(data)
        self.assertEqual(self.stats.responses, {("OPTIONS", 200): 1})

    def test_handlingTime(self) -> None:
        """The time runs from the request's arrival to its final response."""
        clock = self.server.reactor

        async def slow(
            request: SIPRequest,
            transaction: ServerTransaction,
            identity: Identity | None = None,
        ) -> None:
            await deferLater(clock, 0.02)
            transaction.respond(transaction.response(200))

        self.server.stack.dispatcher.handlers["MESSAGE"] = slow
        self.server.receive(requestBytes("MESSAGE"))
        self.assertEqual(self.stats.responses, {})
        clock.advance(0.02)
        self.assertEqual(self.stats.responses, {("MESSAGE", 200): 1})
        self.assertEqual(
            self.stats.handling["MESSAGE"][HANDLING_BUCKETS.index(0.025)], 1
        )
        self.assertAlmostEqual(self.stats.handlingSeconds["MESSAGE"], 0.02)
