"""Tests for presence.stack: the objects buildStack builds and how they are wired."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from presence.auth.check import IdentityCheck
from presence.config import Config
from presence.core.dispatcher import SERVER
from presence.core.limits import PublicationLimit, SourceRateLimit, SubscriptionLimit
from presence.stack import buildStack


class BuildStackTests(SynchronousTestCase):
    """Collaborators are given to constructors."""

    def setUp(self) -> None:
        """Build a stack on an in-memory store and a fake reactor."""
        self.reactor = MemoryReactorClock()
        self.stack = buildStack(Config(database="memory"), self.reactor)

    def test_dispatcherRoutes(self) -> None:
        """The dispatcher routes to the handlers and checks readiness first."""
        dispatcher = self.stack.dispatcher
        self.assertEqual(
            dispatcher.allow,
            ["OPTIONS", "SUBSCRIBE", "PUBLISH", "REGISTER", "ACK", "CANCEL"],
        )
        subscribe = dispatcher.handlers["SUBSCRIBE"]
        publish = dispatcher.handlers["PUBLISH"]
        # Behind the limits of the default configuration.
        assert isinstance(subscribe, SubscriptionLimit)
        assert isinstance(publish, PublicationLimit)
        self.assertIs(subscribe.handler, self.stack.subscribe)
        self.assertIs(publish.handler, self.stack.publish)
        self.assertIs(dispatcher.handlers["REGISTER"], self.stack.registrar)
        self.assertIs(self.stack.transactions.user, dispatcher)
        # Readiness; the source rate limit is the gate, before everything.
        self.assertEqual(len(dispatcher.checks), 1)
        self.assertIsNotNone(self.stack.rateLimit)
        self.assertIs(dispatcher.gate, self.stack.rateLimit)

    def test_withoutLimits(self) -> None:
        """Each limit set to 0 is left out: the handlers are the core's own."""
        stack = buildStack(
            Config(
                database="memory",
                sourceRateLimit=0,
                maxSubscriptionsPerWatcher=0,
                maxPublicationsPerPresentity=0,
                maxTcpConnections=0,
                tcpReadTimeout=0,
            ),
            MemoryReactorClock(),
        )
        self.assertIs(stack.dispatcher.handlers["SUBSCRIBE"], stack.subscribe)
        self.assertIs(stack.dispatcher.handlers["PUBLISH"], stack.publish)
        self.assertEqual(len(stack.dispatcher.checks), 1)
        self.assertIsNone(stack.rateLimit)
        self.assertIsNone(stack.dispatcher.gate)
        self.assertIsNone(stack.transports.maxConnections)
        self.assertIsNone(stack.transports.readTimeout)

    def test_limitsShareOneStatistics(self) -> None:
        """Every limit counts into the stack's one statistics object."""
        stack = self.stack
        assert stack.rateLimit is not None
        self.assertIs(stack.rateLimit.stats, stack.limits)
        self.assertIs(stack.transports.limitStats, stack.limits)
        self.assertEqual(stack.transports.maxConnections, 1000)
        self.assertEqual(stack.transports.readTimeout, 10.0)
        self.assertEqual(stack.rateLimit.rate, 200.0)

    def test_advertisedFromThePackages(self) -> None:
        """Accept and Allow-Events are the registry's packages'."""
        dispatcher = self.stack.dispatcher
        self.assertIs(dispatcher.packages, self.stack.packages)
        self.assertEqual(
            dispatcher.allowEvents,
            ["presence", "presence.winfo", "message-summary", "dialog"],
        )
        self.assertEqual(
            dispatcher.accept,
            [
                "application/pidf+xml",
                "application/simple-message-summary",
                "application/dialog-info+xml",
            ],
        )

    def test_serverHeader(self) -> None:
        """The transaction layer names the server in every response."""
        self.assertEqual(self.stack.transactions.serverHeader, SERVER)

    def test_onTheReactorGiven(self) -> None:
        """The stack keeps the reactor it was built on."""
        self.assertIs(self.stack.reactor, self.reactor)
        self.assertIs(self.stack.transactions.clock, self.reactor)
        self.assertIs(self.stack.sweeper.clock, self.reactor)


class AuthWiringTests(SynchronousTestCase):
    """The identity check comes after readiness when it is asked for."""

    def test_authentication(self) -> None:
        """Authentication on adds the identity check with an authenticator."""
        stack = buildStack(
            Config(database="memory", authentication=True), MemoryReactorClock()
        )
        self.assertEqual(len(stack.dispatcher.checks), 2)
        check = stack.dispatcher.checks[1]
        assert isinstance(check, IdentityCheck)
        self.assertIs(check.authenticator, stack.authenticator)
        assert stack.authenticator is not None
        self.assertIs(stack.authenticator.credentials, stack.credentials)
        self.assertEqual(stack.authenticator.algorithms, ("SHA-256", "MD5"))

    def test_trustedPeersOnly(self) -> None:
        """Trusted peers alone: the check, without an authenticator."""
        stack = buildStack(
            Config(database="memory", trustedPeers=("10.0.0.0/8",)),
            MemoryReactorClock(),
        )
        [_, check] = stack.dispatcher.checks
        rate = stack.dispatcher.gate
        assert isinstance(rate, SourceRateLimit)
        self.assertIn("10.1.1.1", rate.trusted or ())
        assert isinstance(check, IdentityCheck)
        self.assertIsNone(check.authenticator)
        self.assertIn("10.1.1.1", check.trusted)
