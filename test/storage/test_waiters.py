"""The Deferreds the storage's ``when...`` methods hand out."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from presence.storage.errors import StorageError
from presence.storage.waiters import Waiters


class WaitersTests(SynchronousTestCase):
    """Waiters fire together, once, passing over the cancelled ones."""

    def test_fire(self) -> None:
        """Every waiter fires; one that waits afterwards waits for the next time."""
        waiters = Waiters()
        first, second = waiters.wait(), waiters.wait()
        self.assertNoResult(first)
        waiters.fire()
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        later = waiters.wait()
        self.assertNoResult(later)
        waiters.fire()
        self.successResultOf(later)

    def test_cancelled(self) -> None:
        """A waiter cancelled meanwhile is passed over."""
        waiters = Waiters()
        cancelled, kept = waiters.wait(), waiters.wait()
        cancelled.cancel()
        waiters.fire()
        self.failureResultOf(cancelled, CancelledError)
        self.successResultOf(kept)

    def test_fail(self) -> None:
        """Failing the waiters errbacks each with the error."""
        waiters = Waiters()
        waiting = waiters.wait()
        waiters.fail(StorageError("refused"))
        self.failureResultOf(waiting, StorageError)
        waiters.fire()
