"""A long-lived trading service keeps Python's full garbage collections short: the heap is frozen at each cut of
the engine's command log (services.common.heap), so a full collection walks only what was made since the last cut,
however long the venue has run. Each scenario runs in a fresh interpreter: freezing is process-wide."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCENARIO = r"""
import collections, gc, json, random, sys
from services.common import heap
from services.trading.exchange import Exchange
from tests.bench.gc_pause import trade

settle = sys.argv[1] == "settle"
# the history kept whole (history=None): it grows as a venue of many accounts' would while trimmed to each one's last
# 1,000 orders and fills, and what freezing saves a full collection is what the history holds
ex = Exchange(["ACME"], rebase_commands=500, on_cut=heap.settle if settle else None, history=None)
accounts = [f"a{i}" for i in range(4)]
for a in accounts:
    ex.open_account("t1", a); ex.deposit(a, "USD", 10**15); ex.deposit(a, "ACME", 10**12)
if settle:
    heap.settle()  # what `platformq serve` does once its services have started
rng, resting, out = random.Random(3), collections.deque(), []
for _ in range(3):
    trade(ex, accounts, rng, resting, 4000, keep=200)  # ~8 cuts a round
    gc.collect()
    out.append({"walked": len(gc.get_objects()), "frozen": gc.get_freeze_count()})
gc.unfreeze()
out.append({"garbage_frozen": gc.collect(), "orders": len(ex.engine.orders),
            "fills": sum(map(len, ex.account_fills.values()))})
print(json.dumps(out))
"""


def _run(mode: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", SCENARIO, mode], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs() -> dict[str, list[dict]]:
    return {mode: _run(mode) for mode in ("settle", "plain")}


def test_a_full_collection_walks_only_what_was_made_since_the_last_cut(runs):
    plain, settled = runs["plain"], runs["settle"]
    # without freezing, each round's history adds to what every full collection walks
    grown = plain[2]["walked"] - plain[0]["walked"]
    assert grown > 6_000, plain
    # frozen at each cut: the history goes to the permanent generation, the walk stays flat
    assert settled[2]["frozen"] - settled[0]["frozen"] > 0.8 * grown, settled
    assert settled[2]["walked"] <= settled[0]["walked"] + 1_000, settled
    assert settled[2]["walked"] < plain[2]["walked"] / 10, (settled, plain)
    # the same venue either way
    assert settled[3]["orders"] == plain[3]["orders"] and settled[3]["fills"] == plain[3]["fills"]


def test_freezing_at_the_cuts_strands_next_to_no_garbage(runs):
    """What is frozen while alive and later becomes garbage only through a reference cycle is never reclaimed
    while frozen: unfreezing and collecting counts it."""
    settled = runs["settle"]
    stranded = settled[3]["garbage_frozen"]
    assert stranded <= 0.01 * settled[2]["frozen"], settled
    assert runs["plain"][3]["garbage_frozen"] == 0  # nothing left over without freezing either


def test_a_served_trading_service_freezes_at_its_cuts_and_tests_do_not(tmp_path):
    from resources.services import build_local_app
    from services.common import heap

    served, _ = build_local_app("trading", str(tmp_path / "served"), settle_heap=True)
    assert served.state.exchange.on_cut is heap.settle
    in_process, _ = build_local_app("trading", str(tmp_path / "in_process"))
    assert in_process.state.exchange.on_cut is None


def _journal_of(orders: int):
    import collections
    import random

    from services.trading.exchange import Exchange, MemoryJournal
    from tests.bench.gc_pause import trade

    journal = MemoryJournal()
    exchange = Exchange(["ACME"], journal=journal)
    accounts = ["a0", "a1", "a2"]
    for account in accounts:
        exchange.open_account("t1", account)
        exchange.deposit(account, "USD", 10**15)
        exchange.deposit(account, "ACME", 10**12)
    trade(exchange, accounts, random.Random(1), collections.deque(), orders, keep=300)
    return exchange, journal


def test_a_restart_replays_with_the_collector_paused_and_leaves_it_as_it_was():
    """A replay only builds state that lives on; the collector, walking the growing heap, found nothing and took
    a third of a start. Paused for the replay, and afterwards as it was (on, or off if the process had it off)."""
    import gc

    from services.trading.exchange import Exchange, JournalRulesError, MemoryJournal

    exchange, journal = _journal_of(3000)
    collections_run = []

    def count(phase, info):
        if phase == "start":
            collections_run.append(info["generation"])

    gc.callbacks.append(count)
    try:
        restored = Exchange.restore(["ACME"], journal)
        during = list(collections_run)
        assert gc.isenabled()
        gc.disable()
        try:
            Exchange.restore(["ACME"], journal)
            assert not gc.isenabled()  # a process that had it off keeps it off
        finally:
            gc.enable()
        refused = MemoryJournal()
        for command in journal.load():
            refused.append({**command, "rules": 0})
        with pytest.raises(JournalRulesError):
            Exchange.restore(["ACME"], refused)
        assert gc.isenabled()  # and on again after a refused journal
    finally:
        gc.callbacks.remove(count)
    # at most the young collection that the first allocation after the replay sets off (15 without the pause)
    assert len(during) <= 1 and 2 not in during, f"{during}: collections during a replay of {len(journal.load())}"
    assert restored.state() == exchange.state()


def test_a_fill_in_memory_costs_under_half_a_dict():
    """The service keeps every fill: a dict per fill was a third of a venue day's state (2.2 of 6.7 MiB)."""
    import sys

    exchange, _ = _journal_of(600)
    fills = [fill for kept in exchange.account_fills.values() for fill in kept]
    assert len(fills) > 100
    kept = sum(sys.getsizeof(fill) for fill in fills) / len(fills)
    as_dicts = sum(sys.getsizeof(dict(zip(fill._fields, fill))) for fill in fills) / len(fills)
    assert kept <= 0.5 * as_dicts, (kept, as_dicts)
    newest = max(fill.trade_id for fill in fills)
    [last] = [fill for fill in fills if fill.trade_id == newest and fill.side == "SELL"]  # the buyer's comes first
    assert exchange.fills_of(last.account_id, limit=1) == [last]
    assert last.liquidity in ("MAKER", "TAKER")
