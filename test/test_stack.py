"""Tests for presence.stack: the objects buildStack builds and how they are wired."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from presence.config import Config
from presence.core.dispatcher import SERVER
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
        self.assertIs(dispatcher.handlers["SUBSCRIBE"], self.stack.subscribe)
        self.assertIs(dispatcher.handlers["PUBLISH"], self.stack.publish)
        self.assertIs(dispatcher.handlers["REGISTER"], self.stack.registrar)
        self.assertIs(self.stack.transactions.user, dispatcher)
        self.assertEqual(len(dispatcher.checks), 1)

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
