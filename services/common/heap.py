"""Keep Python's full garbage collections short in a long-lived service process.

CPython's cyclic collector runs a full collection whenever the objects that survived earlier
collections have grown by a quarter, and each full collection walks every tracked object while
holding the GIL. A trading service keeps its whole history in memory, so that walk grows with the
venue's history (`make bench`: ~0.6 ms per 1,000 commands of history, ~4 s for a year of the demo's
order flow) and stalls every request of the process while it runs.

``settle()`` collects what is garbage now and moves every object still alive to the permanent
generation (``gc.freeze``), which later collections skip: restored state, imported modules and the
history so far are long-lived by construction. ``platformq serve`` settles once when the services
have started (their state restored) and the trading service again at each cut of its command log
(every ``REBASE_COMMANDS`` commands), so a full collection walks at most the objects made since the
last cut, however long the venue has run. The price: an object frozen while alive that later becomes
garbage *only through a reference cycle* is never reclaimed (what refcounting frees is freed as
before); measured per cut at well under 1 % of the history the cut adds.

Settling is process-wide, so only a process that is a service (``platformq serve``) turns it on;
tests and the in-process services of a Dagster run do not.

``collector_paused()`` is for a replay that only builds long-lived state (a trading service's start):
the heap grows by a quarter again and again, and each time the collector walks all of it, finding
nothing; paused, a start is ~28 % shorter (1.1 M commands: 10.7 s against 14.9 s, the young collection
that follows the replay included).
"""

import contextlib
import gc


def settle() -> int:
    """Collect the garbage now, then freeze what is left. Returns the objects frozen so far."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextlib.contextmanager
def collector_paused():
    """No automatic collection inside the block; afterwards the collector is as it was (a process that had
    it off keeps it off). Garbage made meanwhile waits for the next collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


__all__ = ["collector_paused", "settle"]
