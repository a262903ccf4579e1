"""The core's counters: requests answered, by method and status, and how fast.

Plain integers and dicts, raised on the hot path by the dispatcher; the
administration interface (``presence.admin.metrics``) reads them and turns them
into Prometheus metrics and ``get_statistics``. Nothing here knows of either.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

#: The upper bounds, in seconds, of the buckets of request handling times
#: (from the request opening its transaction to its final response). The
#: last bucket, above the last bound, is +Inf.
HANDLING_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

#: The methods counted under their own name; any other is ``"other"``, so that
#: a peer sending made-up methods cannot grow the counters without bound.
METHODS: Final = frozenset(
    {
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "INVITE",
        "MESSAGE",
        "NOTIFY",
        "OPTIONS",
        "PRACK",
        "PUBLISH",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "UPDATE",
    }
)


class RequestStatistics:
    """Requests answered, by method and final status, and their handling times.

    Attributes:
        responses: ``(method, status)`` -> how many requests got that final
            response.
        handling: method -> how many requests took at most each bound of
            `HANDLING_BUCKETS` and not the bound before (one count per
            bucket, not cumulative), the last for those above the last
            bound.
        handlingSeconds: method -> the handling times added up.
    """

    def __init__(self) -> None:
        """Start with nothing counted."""
        self.responses: dict[tuple[str, int], int] = {}
        self.handling: dict[str, list[int]] = {}
        self.handlingSeconds: dict[str, float] = {}

    def answered(self, method: str, code: int, seconds: float) -> None:
        """Count a request that got its final response ``seconds`` after it came.

        Args:
            method: the request's method.
            code: the status of its final response.
            seconds: how long it took.
        """
        if method not in METHODS:
            method = "other"
        key = (method, code)
        responses = self.responses
        responses[key] = responses.get(key, 0) + 1
        buckets = self.handling.get(method)
        if buckets is None:
            buckets = self.handling[method] = [0] * (len(HANDLING_BUCKETS) + 1)
            self.handlingSeconds[method] = 0.0
        buckets[bisect_left(HANDLING_BUCKETS, seconds)] += 1
        self.handlingSeconds[method] += seconds
