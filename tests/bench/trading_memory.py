"""What the trading service holds in memory after a short and a long history of the same order flow, keeping each
account's last ``HISTORY`` orders and fills (the served default) or everything (before that bound). Traced with
tracemalloc from before the exchange is built, in its own interpreter:
``python -m tests.bench.trading_memory kept|all SHORT LONG``; prints one JSON line (bytes per mark)."""

import collections
import gc
import json
import random
import sys
import tracemalloc


def main(mode: str, short: int, long: int) -> dict:
    from services.trading.exchange import Exchange
    from tests.bench.gc_pause import Database, trade

    tracemalloc.start()
    exchange = Exchange(["ACME"], journal=Database(), **({} if mode == "kept" else {"history": None}))
    accounts = [f"acct{i}" for i in range(8)]
    for account in accounts:
        exchange.open_account("t1", account)
        exchange.deposit(account, "USD", 10**15)
        exchange.deposit(account, "ACME", 10**12)
    rng, resting, done, out = random.Random(5), collections.deque(), 0, {}
    for mark in (short, long):
        while done < mark:
            done += trade(exchange, accounts, rng, resting, 1000, keep=2000)
        gc.collect()
        out[mark] = {"bytes": tracemalloc.get_traced_memory()[0], "orders": len(exchange.engine.orders)}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
