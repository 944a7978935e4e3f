"""Baseline for the engine benchmark: a straightforward sorted-list order book.

Each side is a Python list kept sorted with ``bisect.insort`` (price, then
arrival), matching walks the list from the front and cancels search the list.
Same semantics as the real engine for limit/market orders and cancels.
"""

import bisect


class NaiveEngine:
    def __init__(self):
        self.bids = []  # (-price, seq, [order_id, qty])
        self.asks = []  # (price, seq, [order_id, qty])
        self.where = {}
        self.seq = 0
        self.trades = []

    def submit(self, side, qty, price=None):
        self.seq += 1
        oid = self.seq
        book, contra = (self.bids, self.asks) if side == 1 else (self.asks, self.bids)
        while qty and contra:
            key, _, resting = contra[0]
            best = key if side == 1 else -key
            if price is not None and ((side == 1 and best > price) or (side == 2 and best < price)):
                break
            fill = min(qty, resting[1])
            qty -= fill
            resting[1] -= fill
            self.trades.append((oid, resting[0], best, fill))
            if not resting[1]:
                contra.pop(0)
                del self.where[resting[0]]
        if qty and price is not None:
            entry = ((-price if side == 1 else price), oid, [oid, qty])
            bisect.insort(book, entry)
            self.where[oid] = side
        return oid

    def cancel(self, oid):
        side = self.where.pop(oid, None)
        if side is None:
            return False
        book = self.bids if side == 1 else self.asks
        for i, (_, _, resting) in enumerate(book):
            if resting[0] == oid:
                del book[i]
                return True
        return False
