"""Deferreds that wait for something to happen, for the ``when...`` methods."""

from __future__ import annotations

from twisted.internet.defer import Deferred


class Waiters:
    """The Deferreds waiting for one thing, fired together when it happens.

    A waiter that was cancelled (or timed out) meanwhile is passed over.
    """

    def __init__(self) -> None:
        """Start with no one waiting."""
        self._waiting: list[Deferred[None]] = []

    def wait(self) -> Deferred[None]:
        """A Deferred that fires at the next `fire` (or fails at `fail`)."""
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def fire(self) -> None:
        """Fire every waiter with ``None``; later ones wait for the next time."""
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.callback(None)

    def fail(self, error: BaseException) -> None:
        """Fail every waiter with ``error``."""
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.errback(error)
