"""Python's full garbage collection in a trading service process, after a short and a long history, with the heap
frozen at each cut of the engine's log (what `platformq serve` does) or not: the mean and the longest of
probes spread over a cycle between two cuts. Run in its own interpreter (freezing
is process-wide): ``python -m tests.bench.gc_pause settle|plain SHORT LONG``; prints one JSON line."""

import collections
import gc
import json
import random
import sys
import time


def mean_full_collection(reps: int = 3) -> float:
    gc.collect()  # the garbage of the moment; what follows is the walk itself
    started = time.perf_counter()
    for _ in range(reps):
        gc.collect()
    return (time.perf_counter() - started) / reps


class Database:
    """A served exchange's journal is a database table: nothing of it stays in the process (a MemoryJournal would
    hold every command, which the service never does)."""

    def append(self, command: dict) -> int:
        return 0

    def append_many(self, commands: list[dict]) -> None:
        pass


def trade(exchange, accounts: list[str], rng: random.Random, resting: collections.deque, orders: int,
          keep: int) -> int:
    """``orders`` limit orders around 100 from random accounts; at most ``keep`` rest (the oldest are cancelled).
    Returns the commands sent."""
    commands = 0
    for _ in range(orders):
        order = exchange.place(rng.choice(accounts), "ACME", rng.choice(("BUY", "SELL")), rng.randint(1, 5),
                               rng.randint(95, 105))
        commands += 1
        if order.open_qty:
            resting.append(order.order_id)
        while len(resting) > keep:
            oldest = exchange.engine.orders[resting.popleft()]
            if oldest.open_qty:
                exchange.cancel(oldest.account, oldest.order_id)
                commands += 1
    return commands


def main(mode: str, short: int, long: int) -> dict:
    import services.trading.api  # noqa: F401  (the served process has the web stack loaded too)
    from services.common import heap
    from services.trading.exchange import REBASE_COMMANDS, Exchange

    exchange = Exchange(["ACME"], journal=Database(), on_cut=heap.settle if mode == "settle" else None)
    accounts = [f"acct{i}" for i in range(8)]
    for account in accounts:
        exchange.open_account("t1", account)
        exchange.deposit(account, "USD", 10**15)
        exchange.deposit(account, "ACME", 10**12)
    if mode == "settle":
        heap.settle()  # once the service has started
    rng, resting, done, out = random.Random(5), collections.deque(), 0, {}
    for mark in (short, long):
        while done < mark:
            done += trade(exchange, accounts, rng, resting, 1000, keep=2000)
        # what a collection walks depends on where it lands in the cycle between two cuts: probe across one
        probes = []
        for _ in range(10):
            done += trade(exchange, accounts, rng, resting, REBASE_COMMANDS // 15, keep=2000)
            probes.append(mean_full_collection())
        out[mark] = {"mean": sum(probes) / len(probes), "max": max(probes)}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
