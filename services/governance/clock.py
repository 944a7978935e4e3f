"""Injected clocks. Time points are integer seconds, as OpenZeppelin's ``CLOCK_MODE() == "mode=timestamp"``."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from .errors import ClockError

CLOCK_MODE = "mode=timestamp"


@runtime_checkable
class Clock(Protocol):
    def now(self) -> int:
        """The current time point, integer seconds; must never decrease."""


class ManualClock:
    """A clock that only moves when told to (tests, simulations, replay)."""

    __slots__ = ("_now",)

    def __init__(self, start: int = 0):
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ClockError(f"start must be an int >= 0, got {start!r}")
        self._now = start

    def now(self) -> int:
        return self._now

    def advance(self, seconds: int) -> int:
        """Move forward by ``seconds`` (>= 0); returns the new time."""
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
            raise ClockError(f"can only advance by an int >= 0, got {seconds!r}")
        self._now += seconds
        return self._now

    def set(self, timestamp: int) -> int:
        """Jump to ``timestamp`` (>= now); returns it."""
        if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < self._now:
            raise ClockError(f"cannot move the clock from {self._now} back to {timestamp!r}")
        self._now = timestamp
        return timestamp

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now})"


class SystemClock:
    """Wall-clock seconds since the epoch (``int(time.time())``), forced monotonic."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def now(self) -> int:
        t = int(time.time())
        if t < self._last:  # wall clock stepped back: hold the last value
            return self._last
        self._last = t
        return t
