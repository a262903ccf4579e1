"""The expiry sweep: a storage outage pauses it, logged once, and it resumes."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from presence.core.expiry import ExpirySweeper
from presence.storage.errors import StorageError
from presence.storage.memory import MemoryStore


class FlakyStore(MemoryStore):
    """A memory store whose sweeps fail while ``down`` is set."""

    down = False

    async def expiredPublications(self, now: float) -> list[Any]:
        """Fail while down."""
        if self.down:
            raise StorageError("database unreachable")
        return await super().expiredPublications(now)


class ExpirySweeperTests(SynchronousTestCase):
    """The sweeper runs every second and survives storage outages."""

    def test_outageLoggedOnce(self) -> None:
        """Ten failed sweeps log one warning, and recovery is logged once."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]
        clock = Clock()
        store = FlakyStore()
        sweeper = ExpirySweeper(clock, store, notifier=None)  # type: ignore[arg-type]
        sweeper.startService()
        self.addCleanup(sweeper.stopService)
        store.down = True
        for _ in range(10):
            clock.advance(1)
        store.down = False
        clock.advance(1)
        mine = [
            e
            for e in events
            if e.get("log_namespace") == "presence.core.expiry.ExpirySweeper"
        ]
        levels = [e["log_level"].name for e in mine]
        self.assertEqual(levels, ["warn", "info"])
        self.assertEqual(self.flushLoggedErrors(), [])
