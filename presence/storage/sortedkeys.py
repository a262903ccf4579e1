"""An ordered set of keys for the memory store's paged listings.

The memory store keeps its rows in dicts, which have no order to resume a
listing from. `SortedKeys` keeps the keys of one table in order so that a
page of the keys after a given one costs O(log n + page) however many rows
there are, and an insertion or a removal costs O(log n) comparisons and a
move of at most a few hundred pointers: the keys are held in a list of short
sorted lists (as the ``sortedcontainers`` package does), never in one long
list whose every insertion would move a million pointers.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=tuple[str, ...])

#: Keys per inner list once split; a list is split in two past twice this.
LOAD: Final = 256


class SortedKeys(Generic[K]):
    """Keys kept in order; each key at most once."""

    def __init__(self) -> None:
        """Start empty."""
        self._lists: list[list[K]] = []
        self._maxes: list[K] = []
        self._size = 0

    def __len__(self) -> int:
        """How many keys are kept."""
        return self._size

    def add(self, key: K) -> None:
        """Add a key that is not kept yet."""
        maxes = self._maxes
        if not maxes:
            self._lists.append([key])
            maxes.append(key)
            self._size += 1
            return
        i = bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1
            chunk = self._lists[i]
            chunk.append(key)
            maxes[i] = key
        else:
            chunk = self._lists[i]
            insort(chunk, key)
        self._size += 1
        if len(chunk) > 2 * LOAD:
            rest = chunk[LOAD:]
            del chunk[LOAD:]
            maxes[i] = chunk[-1]
            self._lists.insert(i + 1, rest)
            maxes.insert(i + 1, rest[-1])

    def discard(self, key: K) -> None:
        """Remove a key, if kept."""
        maxes = self._maxes
        i = bisect_left(maxes, key)
        if i == len(maxes):
            return
        chunk = self._lists[i]
        j = bisect_left(chunk, key)
        if j == len(chunk) or chunk[j] != key:
            return
        del chunk[j]
        self._size -= 1
        if not chunk:
            del self._lists[i]
            del maxes[i]
        elif j == len(chunk):
            maxes[i] = chunk[-1]

    def after(self, key: K | None) -> Iterator[K]:
        """The keys above ``key`` (every key for ``None``), in order.

        The store must not change while the iterator is in use.
        """
        lists = self._lists
        if key is None:
            i, j = 0, 0
        else:
            i = bisect_right(self._maxes, key)
            if i == len(lists):
                return
            j = bisect_right(lists[i], key)
        for n in range(i, len(lists)):
            chunk = lists[n]
            for m in range(j if n == i else 0, len(chunk)):
                yield chunk[m]
