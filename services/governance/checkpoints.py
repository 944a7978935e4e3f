"""Checkpointed history of one integer value (OpenZeppelin ``Checkpoints.Trace208``).

Keys are time points and never decrease; pushing twice at the same key overwrites, so the history keeps
the *final* value of each time point. ``upper_lookup(t)`` is the value in force at the end of ``t``:
binary search, O(log n).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple

from .errors import CheckpointUnorderedInsertion


class Checkpoint(NamedTuple):
    key: int
    value: int


class Checkpoints:
    __slots__ = ("_keys", "_values")

    def __init__(self) -> None:
        self._keys: list[int] = []
        self._values: list[int] = []

    def push(self, key: int, value: int) -> tuple[int, int]:
        """Record ``value`` at ``key``; returns ``(old_value, new_value)``."""
        keys = self._keys
        if keys:
            last = keys[-1]
            old = self._values[-1]
            if key < last:
                raise CheckpointUnorderedInsertion(key, last)
            if key == last:
                self._values[-1] = value
                return old, value
        else:
            old = 0
        keys.append(key)
        self._values.append(value)
        return old, value

    def latest(self) -> int:
        return self._values[-1] if self._values else 0

    def upper_lookup(self, key: int) -> int:
        """Value of the last checkpoint whose key is <= ``key`` (0 when there is none)."""
        i = bisect_right(self._keys, key)
        return self._values[i - 1] if i else 0

    def at(self, pos: int) -> Checkpoint:
        return Checkpoint(self._keys[pos], self._values[pos])

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self):
        return map(Checkpoint, self._keys, self._values)

    def __repr__(self) -> str:
        return f"Checkpoints({list(zip(self._keys, self._values))})"
