"""Tests for `presence.core.limits`: the rate, subscription, publication limits."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from presence.auth.identity import DIGEST, Identity, TrustedPeers
from presence.core.limits import OVERFLOW, SourceRateLimit, watcherOf
from presence.sip.errors import ServiceUnavailable
from presence.sip.limits import LimitStatistics
from presence.sip.message import SIPRequest, SIPResponse
from presence.sip.parser import parseDatagram
from presence.sip.transport import Peer
from presence.testing import UA, Server, Subscriber, pidf


class FakeTransaction:
    """What the rate limit reads of a server transaction: its peer."""

    def __init__(self, host: str) -> None:
        """A transaction from ``host``."""
        self.peer = Peer("UDP", host, 5060)
        self.terminated = False

    def terminate(self) -> None:
        """Record that the transaction was ended."""
        self.terminated = True


class SourceRateLimitTests(SynchronousTestCase):
    """A token bucket per source address: the rate, a burst of twice it."""

    def setUp(self) -> None:
        """A limit of 10 requests a second on a fake clock."""
        self.clock = Clock()
        self.stats = LimitStatistics()
        self.limit = SourceRateLimit(
            self.clock, 10, self.stats, TrustedPeers(["10.0.0.0/8"])
        )

    def outcome(self, host: str = "192.0.2.1") -> str:
        """``"passed"``, ``"refused"`` (503) or ``"dropped"`` for one request."""
        transaction = FakeTransaction(host)
        try:
            self.limit(None, transaction)  # type: ignore[arg-type]  # the peer is all it reads
        except ServiceUnavailable as e:
            self.assertEqual(e.headers, [("Retry-After", "2")])
            return "dropped" if transaction.terminated else "refused"
        self.assertFalse(transaction.terminated)
        return "passed"

    def outcomes(self, count: int, host: str = "192.0.2.1") -> dict[str, int]:
        """How many of ``count`` requests at once had each outcome."""
        out = {"passed": 0, "refused": 0, "dropped": 0}
        for _ in range(count):
            out[self.outcome(host)] += 1
        return out

    def test_burst(self) -> None:
        """Twice the rate passes at once; then 503s, counted."""
        self.assertEqual(self.outcomes(21), {"passed": 20, "refused": 1, "dropped": 0})
        self.assertEqual(self.stats.rateLimited, 1)

    def test_refill(self) -> None:
        """Tokens come back at the rate: half a second gives 5 more."""
        self.outcomes(20)
        self.clock.advance(0.5)
        self.assertEqual(self.outcomes(5)["passed"], 5)
        self.assertEqual(self.outcome(), "refused")

    def test_steadyAtTheRate(self) -> None:
        """A source sending at the rate is never refused."""
        for _ in range(100):
            self.assertEqual(self.outcome(), "passed")
            self.clock.advance(0.1)
        self.assertEqual(self.stats.rateLimited, 0)

    def test_farOverDropped(self) -> None:
        """Beyond four times the rate the excess is dropped, unanswered.

        In one second at 50 requests (five times the rate) after a pause:
        the burst of 20 passes, 30 are answered 503 (three times the rate),
        and the rest are dropped: their transactions end with no response.
        """
        self.assertEqual(
            self.outcomes(60), {"passed": 20, "refused": 30, "dropped": 10}
        )
        self.assertEqual((self.stats.rateLimited, self.stats.rateDropped), (30, 10))

    def test_steadyFourTimesAnswered(self) -> None:
        """At four times the rate, every request is answered (some with 503)."""
        self.outcomes(20)
        counts = {"passed": 0, "refused": 0, "dropped": 0}
        for _ in range(400):
            self.clock.advance(1 / 40)
            counts[self.outcome()] += 1
        self.assertEqual(counts["dropped"], 0)
        self.assertEqual(counts["passed"], 100)

    def test_perSource(self) -> None:
        """Another address has its own bucket."""
        self.outcomes(30)
        self.assertEqual(self.outcomes(20, "192.0.2.2")["passed"], 20)

    def test_trustedExempt(self) -> None:
        """A trusted peer (a proxy in front) is never limited."""
        self.assertEqual(self.outcomes(1000, "10.1.2.3")["passed"], 1000)
        self.assertEqual(self.limit.sources, 0)

    def test_idleForgotten(self) -> None:
        """A source idle long enough to be full again is forgotten."""
        self.outcomes(5)
        self.outcomes(5, "192.0.2.2")
        self.clock.advance(1)
        self.outcome("192.0.2.2")
        self.clock.advance(1.5)
        self.assertEqual(self.limit.sweep(), 1)
        self.assertEqual(self.limit.sources, 1)

    def test_sweptOnTheClock(self) -> None:
        """A check after ``sweepInterval`` sweeps: memory stays bounded."""
        for i in range(100):
            self.outcome(f"192.0.2.{i}")
        self.assertEqual(self.limit.sources, 100)
        self.clock.advance(self.limit.sweepInterval)
        self.outcome("198.51.100.1")
        self.assertEqual(self.limit.sources, 1)

    def test_boundedSources(self) -> None:
        """Beyond ``maxSources`` new sources share one bucket."""
        limit = SourceRateLimit(self.clock, 10, self.stats, maxSources=3)
        self.limit = limit
        for i in range(3):
            self.outcome(f"192.0.2.{i}")
        self.assertEqual(self.outcomes(30, "198.51.100.1")["passed"], 20)
        self.assertEqual(self.outcome("198.51.100.2"), "refused")
        self.assertEqual(limit.sources, 4)
        self.assertIn(OVERFLOW, limit._buckets)

    def test_positiveRate(self) -> None:
        """A rate of 0 is no limit, and is not built."""
        self.assertRaises(ValueError, SourceRateLimit, self.clock, 0, self.stats)


class RateLimitedServerTests(SynchronousTestCase):
    """The rate limit in the server: 503 with Retry-After; responses free."""

    def setUp(self) -> None:
        """A server allowing one request a second from each source."""
        self.server = Server(sourceRateLimit=1)
        self.addCleanup(self.server.close)

    def test_503WithRetryAfter(self) -> None:
        """The third SUBSCRIBE at once gets 503 with Retry-After.

        RFC 3261 section 21.5.4: "The server MAY indicate when the client
        should retry the request in a Retry-After header field."
        """
        alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.assertEqual(alice.subscribe().code, 200)
        self.assertEqual(alice.subscribe("sip:carol@example.com").code, 200)
        refused = alice.subscribe("sip:dave@example.com")
        self.assertEqual(refused.code, 503)
        self.assertEqual(refused.header("retry-after"), "2")
        self.assertEqual(refused.phrase, "too many requests from your address")
        bob = UA(self.server, "bob", "192.0.2.21", 5071)
        self.assertEqual(bob.publish(pidf()).code, 200)
        self.server.advance(1)
        self.assertEqual(alice.subscribe("sip:dave@example.com").code, 200)

    def test_farOverUnanswered(self) -> None:
        """Beyond four times the rate a request gets no response at all."""
        bob = UA(self.server, "bob", "192.0.2.21", 5071)
        codes = [bob.publish(pidf()).code for _ in range(5)]
        self.assertEqual(codes, [200, 200, 503, 503, 503])
        bob.send(bob.request("OPTIONS", "sip:example.com"))
        self.assertEqual(bob.received(), [])
        assert self.server.stack.limits is not None
        self.assertEqual(self.server.stack.limits.rateDropped, 1)

    def test_beforeRouting(self) -> None:
        """Requests refused before routing (405 here) are limited too."""
        bob = UA(self.server, "bob", "192.0.2.21", 5071)
        codes = []
        for _ in range(6):
            bob.send(bob.request("INVITE", "sip:carol@example.com"))
            codes += [m.code for m in bob.received() if isinstance(m, SIPResponse)]
        self.assertEqual(codes, [405, 405, 503, 503, 503])

    def test_malformedLimited(self) -> None:
        """A request that failed to parse but could be answered is limited too."""
        bob = UA(self.server, "bob", "192.0.2.21", 5071)
        codes = []
        for _ in range(6):
            data = bob.request("OPTIONS", "sip:example.com", [("X-Bad", "cafe")])
            bob.send(data.replace(b"cafe", b"caf\xe9"))
            codes += [m.code for m in bob.received() if isinstance(m, SIPResponse)]
        self.assertEqual(codes, [400, 400, 503, 503, 503])

    def test_responsesNotCounted(self) -> None:
        """Responses to the server's NOTIFYs take no token."""
        alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.assertEqual(alice.subscribe().code, 200)
        [notify] = alice.notifies()
        for _ in range(10):
            alice.answer(notify)
        self.assertEqual(alice.subscribe("sip:carol@example.com").code, 200)
        assert self.server.stack.limits is not None
        self.assertEqual(self.server.stack.limits.rateLimited, 0)


class SubscriptionLimitTests(SynchronousTestCase):
    """``max_subscriptions_per_watcher``: 403 beyond it, fetches free."""

    def setUp(self) -> None:
        """A server allowing each watcher two subscriptions; alice has them."""
        self.server = Server(maxSubscriptionsPerWatcher=2)
        self.addCleanup(self.server.close)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.first = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.assertEqual(self.first.subscribe("sip:bob@example.com").code, 200)
        self.assertEqual(self.alice.subscribe("sip:carol@example.com").code, 200)

    @property
    def stats(self) -> LimitStatistics:
        """The server's limit counters."""
        stats = self.server.stack.limits
        assert stats is not None
        return stats

    def assertRefused(self, response: SIPResponse) -> None:
        """A 403 saying why."""
        self.assertEqual(
            (response.code, response.phrase),
            (403, "too many subscriptions for this watcher (limit 2)"),
        )

    def test_beyondRefused(self) -> None:
        """The third subscription is refused; the two others stand."""
        other = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.assertRefused(other.subscribe("sip:dave@example.com"))
        self.assertEqual(self.stats.subscriptionsRefused, 1)
        self.assertEqual(len(self.server.store._subscriptions), 2)
        self.assertEqual(self.alice.subscribe(refresh=True).code, 200)

    def test_fetchAllowed(self) -> None:
        """A fetch (Expires 0) creates nothing and is served."""
        other = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.assertEqual(other.subscribe("sip:dave@example.com", expires=0).code, 200)

    def test_otherWatcher(self) -> None:
        """Another watcher has a count of its own."""
        erin = Subscriber(self.server, "erin", "192.0.2.22", 5072)
        self.assertEqual(erin.subscribe("sip:dave@example.com").code, 200)

    def test_endedFreesOne(self) -> None:
        """A subscription ended by its watcher leaves room for another."""
        self.assertEqual(self.alice.subscribe(expires=0, refresh=True).code, 200)
        other = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.assertEqual(other.subscribe("sip:dave@example.com").code, 200)

    def test_expiredFreesOne(self) -> None:
        """A subscription that expired leaves room for another."""
        self.server.advance(601)
        other = Subscriber(self.server, "alice", "192.0.2.20", 5070)
        self.assertEqual(other.subscribe("sip:dave@example.com").code, 200)
        self.assertEqual(other.subscribe("sip:erin@example.com").code, 200)


class IdentityWatcherTests(SynchronousTestCase):
    """The watcher counted is the identity, not the From."""

    def test_assertedIdentity(self) -> None:
        """Through a trusted proxy, subscriptions count per asserted user."""
        server = Server(maxSubscriptionsPerWatcher=1, trustedPeers=("192.0.2.50",))
        self.addCleanup(server.close)

        def subscribe(fromUser: str, asserted: str, presentity: str) -> int:
            ua = Subscriber(server, fromUser, "192.0.2.50", 5060)
            pai = [("P-Asserted-Identity", f"<sip:{asserted}@example.com>")]
            return ua.subscribe(presentity, extra=pai).code

        self.assertEqual(subscribe("x", "alice", "sip:bob@example.com"), 200)
        self.assertEqual(subscribe("y", "alice", "sip:carol@example.com"), 403)
        self.assertEqual(subscribe("x", "erin", "sip:carol@example.com"), 200)


class WatcherOfTests(SynchronousTestCase):
    """Whose subscription a SUBSCRIBE would make."""

    def test_fromWithoutIdentity(self) -> None:
        """Without an identity, the From's user and domain (lower case)."""
        ua = UA(Server(), "alice")
        request = parseDatagram(ua.request("SUBSCRIBE", "sip:bob@Example.COM"))
        assert isinstance(request, SIPRequest)
        self.assertEqual(watcherOf(request, None), ("alice", "example.com"))

    def test_identityWins(self) -> None:
        """The identity the checks established, whatever From says."""
        ua = UA(Server(), "alice")
        request = parseDatagram(ua.request("SUBSCRIBE", "sip:bob@example.com"))
        assert isinstance(request, SIPRequest)
        identity = Identity("mallory", "example.org", DIGEST)
        self.assertEqual(watcherOf(request, identity), ("mallory", "example.org"))


class PublicationLimitTests(SynchronousTestCase):
    """``max_publications_per_presentity``: 403 for one more initial PUBLISH."""

    def setUp(self) -> None:
        """A server allowing two publications each; bob has two."""
        self.server = Server(maxPublicationsPerPresentity=2)
        self.addCleanup(self.server.close)
        self.bob = UA(self.server, "bob", "192.0.2.21", 5071)
        self.etags: list[str] = []
        for _ in range(2):
            response = self.bob.publish(pidf())
            self.assertEqual(response.code, 200)
            etag = response.header("sip-etag")
            assert etag is not None
            self.etags.append(etag)

    def test_beyondRefused(self) -> None:
        """A third initial PUBLISH is refused, saying why."""
        response = self.bob.publish(pidf())
        self.assertEqual(
            (response.code, response.phrase),
            (403, "too many publications for this presentity (limit 2)"),
        )
        stats = self.server.stack.limits
        assert stats is not None
        self.assertEqual(stats.publicationsRefused, 1)

    def test_refreshAllowed(self) -> None:
        """Refreshing and modifying existing publications is served."""
        self.assertEqual(self.bob.publish(etag=self.etags[0]).code, 200)
        self.assertEqual(self.bob.publish(pidf(), etag=self.etags[1]).code, 200)

    def test_removedFreesOne(self) -> None:
        """Once one is removed, a new one is accepted."""
        self.assertEqual(self.bob.publish(etag=self.etags[0], expires=0).code, 200)
        self.assertEqual(self.bob.publish(pidf()).code, 200)

    def test_otherPresentity(self) -> None:
        """Another presentity has a count of its own."""
        carol = UA(self.server, "carol", "192.0.2.22", 5072)
        self.assertEqual(carol.publish(pidf()).code, 200)
