"""The one helper that runs a coroutine nobody awaits."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")


def detach(coro: Coroutine[Any, Any, T], log: Logger, what: str) -> Deferred[T | None]:
    """Run ``coro`` to completion on its own, logging any failure.

    Args:
        coro: the coroutine to run.
        log: where a failure is logged, with its traceback.
        what: a few words saying what failed, for the log line.

    Returns:
        A Deferred that fires with the coroutine's result, or ``None`` after a
        failure was logged; it never fails.
    """

    def failed(failure: Failure) -> None:
        log.failure("{what} failed", failure, what=what)
        return None

    d: Deferred[T | None] = Deferred.fromCoroutine(coro)
    d.addErrback(failed)
    return d
