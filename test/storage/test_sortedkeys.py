"""Tests for presence.storage.sortedkeys, the memory store's ordered keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from presence.storage import sortedkeys
from presence.storage.sortedkeys import SortedKeys

keys = st.tuples(st.text(max_size=3), st.text(max_size=2))


class SortedKeysTests(SynchronousTestCase):
    """Keys stay in order through additions and removals."""

    @given(st.lists(st.tuples(st.booleans(), keys), max_size=200), keys)
    def test_likeASortedSet(
        self, operations: list[tuple[bool, tuple[str, str]]], probe: tuple[str, str]
    ) -> None:
        """After any additions and removals, it holds what a sorted set would."""
        ordered: SortedKeys[tuple[str, str]] = SortedKeys()
        reference: set[tuple[str, str]] = set()
        for add, key in operations:
            if add and key not in reference:
                ordered.add(key)
                reference.add(key)
            elif not add:
                ordered.discard(key)
                reference.discard(key)
        self.assertEqual(list(ordered.after(None)), sorted(reference))
        self.assertEqual(len(ordered), len(reference))
        self.assertEqual(
            list(ordered.after(probe)), [k for k in sorted(reference) if k > probe]
        )

    def test_splits(self) -> None:
        """Many keys are held in many short lists, still in order."""
        ordered: SortedKeys[tuple[str]] = SortedKeys()
        made = [(f"{(n * 7919) % 10000:05d}",) for n in range(10000)]
        for key in made:
            ordered.add(key)
        self.assertEqual(list(ordered.after(None)), sorted(made))
        self.assertGreater(len(ordered._lists), 10000 // (2 * sortedkeys.LOAD))
        for key in made[::2]:
            ordered.discard(key)
        self.assertEqual(list(ordered.after(("05000",))), sorted(made[1::2])[2500:])
