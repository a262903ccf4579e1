"""Test cases the unit tests of the core and the packages share."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from presence.sip.message import SIPRequest
from presence.testing import UA, Server, Subscriber


class BobAndAliceTestCase(SynchronousTestCase):
    """An in-memory server, a publisher (bob) and a watcher (alice)."""

    def setUp(self) -> None:
        """Start the server and the two user agents."""
        self.server = Server()
        self.addCleanup(self.server.close)
        self.bob = UA(self.server, "bob", "192.0.2.21", 5071)
        self.alice = Subscriber(self.server, "alice", "192.0.2.20", 5070)

    def subscribed(self, watcher: Subscriber | None = None, **kw: object) -> SIPRequest:
        """Subscribe to bob, answer the first NOTIFY and return it."""
        watcher = watcher or self.alice
        response = watcher.subscribe(**kw)  # type: ignore[arg-type]
        self.assertEqual(response.code, 200)
        [notify] = watcher.notifies()
        watcher.answer(notify)
        return notify
