"""The storage layer's counters: flushes of the cache and database errors.

Plain integers, raised where the events happen (the storage service times
each flush, the SQL store counts each failed statement) and read by the
administration interface.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

#: The upper bounds, in seconds, of the buckets of flush durations; the last
#: bucket, above the last bound, is +Inf.
FLUSH_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StorageStatistics:
    """Counters of the cache's flushes and of the database.

    Attributes:
        flushes: flushes of the cache that had rows to write.
        flushFailures: those that could not write them all.
        rowsFlushed: rows written by the flushes.
        flushDurations: how many flushes took at most each bound of
            `FLUSH_BUCKETS` and not the bound before, the last for those
            above the last bound.
        flushSeconds: the flush durations added up.
        errors: statements the database refused or could not run
            (disconnections included).
    """

    def __init__(self) -> None:
        """Start every counter at zero."""
        self.flushes = 0
        self.flushFailures = 0
        self.rowsFlushed = 0
        self.flushDurations = [0] * (len(FLUSH_BUCKETS) + 1)
        self.flushSeconds = 0.0
        self.errors = 0

    def flushed(self, seconds: float, rows: int, failed: bool) -> None:
        """Count a flush.

        Args:
            seconds: how long it took.
            rows: how many rows it wrote.
            failed: whether some rows were left for the next flush.
        """
        self.flushes += 1
        self.flushFailures += failed
        self.rowsFlushed += rows
        self.flushDurations[bisect_left(FLUSH_BUCKETS, seconds)] += 1
        self.flushSeconds += seconds
