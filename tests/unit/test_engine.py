"""Matching engine: behaviour tests and hypothesis-checked invariants."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.trading.engine import BUY, FOK, GTC, IOC, SELL, MatchingEngine, OrderStatus, RejectedOrder

X = "X"


def engine():
    return MatchingEngine([X])


def test_limit_orders_rest_and_cross_at_resting_price():
    e = engine()
    ask = e.submit(X, 1, SELL, 10, 101)
    assert ask.status == OrderStatus.NEW and e.books[X].best_ask() == 101
    bid = e.submit(X, 2, BUY, 4, 105)  # aggressive buy pays the resting 101, not its own 105
    assert bid.status == OrderStatus.FILLED
    assert e.trades[-1][3] == 101 and e.trades[-1][4] == 4
    assert ask.status == OrderStatus.PARTIALLY_FILLED and ask.open_qty == 6


def test_price_time_priority_fifo_within_level_and_better_price_first():
    e = engine()
    first = e.submit(X, 1, SELL, 5, 100)
    second = e.submit(X, 2, SELL, 5, 100)
    better = e.submit(X, 3, SELL, 5, 99)
    e.submit(X, 9, BUY, 8, 100)
    sells = [t[6] for t in e.trades]
    assert sells == [better.order_id, first.order_id]
    assert first.open_qty == 2 and second.open_qty == 5


def test_market_order_never_rests_and_expires_remainder():
    e = engine()
    e.submit(X, 1, SELL, 3, 100)
    m = e.submit(X, 2, BUY, 10, None)
    assert m.filled_qty == 3 and m.cancelled_qty == 7 and m.status == OrderStatus.EXPIRED
    assert e.books[X].best_bid() is None


def test_ioc_fills_what_it_can_then_expires():
    e = engine()
    e.submit(X, 1, SELL, 3, 100)
    o = e.submit(X, 2, BUY, 5, 100, IOC)
    assert (o.filled_qty, o.cancelled_qty, o.open_qty) == (3, 2, 0)
    assert e.books[X].best_bid() is None


def test_fok_is_all_or_nothing():
    e = engine()
    e.submit(X, 1, SELL, 3, 100)
    e.submit(X, 1, SELL, 3, 102)
    rejected = e.submit(X, 2, BUY, 5, 101, FOK)  # only 3 available at <= 101
    assert rejected.status == OrderStatus.REJECTED and not e.trades
    filled = e.submit(X, 2, BUY, 5, 102, FOK)
    assert filled.status == OrderStatus.FILLED and sum(t[4] for t in e.trades) == 5


def test_cancel_removes_liquidity_and_rejects_twice():
    e = engine()
    o = e.submit(X, 1, BUY, 5, 99)
    e.cancel(o.order_id)
    assert o.status == OrderStatus.CANCELLED and e.books[X].best_bid() is None
    with pytest.raises(RejectedOrder):
        e.cancel(o.order_id)
    e.submit(X, 2, SELL, 5, 99)
    assert not e.trades  # the cancelled bid never trades


@pytest.mark.parametrize("kwargs, message", [
    ({"qty": 0}, "quantity"), ({"qty": 1.5}, "quantity"), ({"price": -1}, "price"),
    ({"price": 10.5}, "price"), ({"side": 3}, "side"), ({"tif": 9}, "time in force"),
])
def test_invalid_orders_are_rejected_with_reason_and_not_journalled(kwargs, message):
    e = engine()
    args = {"instrument": X, "account": 1, "side": BUY, "qty": 1, "price": 100, **kwargs}
    with pytest.raises(RejectedOrder, match=message):
        e.submit(**args)
    assert e.journal == []


def test_unknown_instrument_rejected():
    with pytest.raises(RejectedOrder, match="unknown instrument"):
        engine().submit("NOPE", 1, BUY, 1, 1)


commands = st.lists(
    st.one_of(
        st.tuples(st.just("limit"), st.sampled_from([BUY, SELL]), st.integers(95, 105), st.integers(1, 20),
                  st.sampled_from([GTC, GTC, GTC, IOC, FOK])),
        st.tuples(st.just("market"), st.sampled_from([BUY, SELL]), st.integers(1, 30)),
        st.tuples(st.just("cancel"), st.integers(0, 200)),
        st.tuples(st.just("amend"), st.integers(0, 200), st.one_of(st.none(), st.integers(1, 25)),
                  st.one_of(st.none(), st.integers(95, 105))),
    ),
    max_size=250,
)


def run(cmds, entry=None, e=None):
    """Apply commands (to ``e``, or a new engine); ``entry`` records each order's queue-entry sequence (for FIFO
    checks)."""
    e = engine() if e is None else e
    entry = {} if entry is None else entry
    for step, c in enumerate(cmds):
        if c[0] == "limit":
            o = e.submit(X, len(e.orders) % 7, c[1], c[3], c[2], c[4])
            entry[o.order_id] = step
        elif c[0] == "market":
            e.submit(X, len(e.orders) % 5, c[1], c[2], None)
        elif c[0] == "amend":
            order = e.orders.get(c[1])
            if order is not None and order.open_qty and not (
                    (c[2] is None or c[2] == order.open_qty) and (c[3] is None or c[3] == order.price)):
                loses_priority = (c[3] is not None and c[3] != order.price) or (c[2] is not None and c[2] > order.open_qty)
                e.amend(c[1], c[2], c[3])
                if loses_priority:
                    entry[c[1]] = step
        else:
            order = e.orders.get(c[1])
            if order is not None and order.open_qty:
                e.cancel(c[1])
        bid, ask = e.books[X].best_bid(), e.books[X].best_ask()
        assert bid is None or ask is None or bid < ask, "book crossed"
    return e


@settings(max_examples=150, deadline=None)
@given(commands)
def test_invariants_hold_for_any_command_stream(cmds):
    entry = {}
    e = run(cmds, entry)
    orders = e.orders
    amended = {ev[2] for ev in e.journal if ev[0] == "A"}  # their limit may have moved since they traded
    for o in orders.values():
        assert o.qty == o.filled_qty + o.open_qty + o.cancelled_qty
        if o.tif != GTC or o.price is None:
            assert o.open_qty == 0, "IOC/FOK/market orders never rest"
    for trade_id, ts, inst, price, qty, buy_id, sell_id, buy_acct, sell_acct, _ in e.trades:
        buy, sell = orders[buy_id], orders[sell_id]
        assert buy.price is None or price <= buy.price or buy_id in amended
        assert sell.price is None or price >= sell.price or sell_id in amended
        assert qty > 0
        assert buy_acct != sell_acct, "self-trade prevention"
    filled = {}
    for t in e.trades:
        filled[t[5]] = filled.get(t[5], 0) + t[4]
        filled[t[6]] = filled.get(t[6], 0) + t[4]
    for oid, o in orders.items():
        assert filled.get(oid, 0) == o.filled_qty
    # FIFO: within each resting level, queue order is (re-)entry order
    for side in (e.books[X].bids, e.books[X].asks):
        for price, level in side.levels.items():
            live = [entry[o.order_id] for o in level if o.open_qty]
            assert live == sorted(live)
            assert side.level_qty[price] == sum(o.open_qty for o in level)


@settings(max_examples=100, deadline=None)
@given(commands)
def test_journal_replay_rebuilds_identical_state(cmds):
    e = run(cmds)
    replayed = MatchingEngine.replay(list(e.journal), [X])
    assert replayed.state() == e.state()
    assert replayed.journal == e.journal


def test_fifo_is_strict_across_partial_fills():
    e = engine()
    a = e.submit(X, 1, BUY, 5, 100)
    b = e.submit(X, 2, BUY, 5, 100)
    e.submit(X, 3, SELL, 7, 100)
    assert (a.filled_qty, b.filled_qty) == (5, 2)


def test_amend_down_keeps_priority_and_price_change_loses_it():
    e = engine()
    a = e.submit(X, 1, SELL, 10, 100)
    b = e.submit(X, 2, SELL, 10, 100)
    e.amend(a.order_id, qty=4)  # reduce: stays first
    assert (a.open_qty, a.cancelled_qty, a.qty) == (4, 0, 4)  # the new total: a reduction cancels nothing
    e.submit(X, 3, BUY, 4, 100)
    assert e.trades[-1][6] == a.order_id
    c = e.submit(X, 4, SELL, 5, 100)
    e.amend(b.order_id, qty=12)  # increase: goes behind c
    assert b.qty == 12 and b.open_qty == 12
    e.submit(X, 5, BUY, 5, 100)
    assert e.trades[-1][6] == c.order_id
    e.amend(b.order_id, price=99)
    e.submit(X, 6, BUY, 1, 100)
    assert e.trades[-1][3] == 99 and e.trades[-1][6] == b.order_id


def test_amend_to_crossing_price_trades_immediately():
    e = engine()
    bid = e.submit(X, 1, BUY, 5, 99)
    e.submit(X, 2, SELL, 3, 101)
    e.amend(bid.order_id, price=101)
    assert bid.filled_qty == 3 and bid.open_qty == 2 and e.books[X].best_bid() == 101


def test_self_trade_prevention_expires_the_taker():
    e = engine()
    own = e.submit(X, 7, SELL, 5, 100)
    other = e.submit(X, 8, SELL, 5, 101)
    taker = e.submit(X, 7, BUY, 8, 101)
    assert taker.status == OrderStatus.EXPIRED and taker.filled_qty == 0 and taker.cancelled_qty == 8
    assert own.open_qty == 5 and other.open_qty == 5 and not e.trades
    fok = e.submit(X, 7, BUY, 5, 101, FOK)  # own liquidity does not count for FOK
    assert fok.status == OrderStatus.REJECTED
    off = MatchingEngine([X], self_trade_prevention=False)
    off.submit(X, 7, SELL, 5, 100)
    assert off.submit(X, 7, BUY, 5, 100).status == OrderStatus.FILLED


@settings(max_examples=100, deadline=None)
@given(commands, commands)
def test_resting_books_and_the_commands_after_them_rebuild_the_same_engine(before, after):
    """What a failed batch's undo starts from once the exchange has cut the engine's journal: the books as they
    stood (live orders, priority, id sequences), no history. Replaying what followed must give the same books,
    the same states for every order it knows, and the same trades after that point."""
    e = run(before)
    resting = e.resting()
    assert resting.orders == len(e.open_orders())
    mark = len(e.journal)
    run(after, e=e)  # the second stream, on top of the first's books
    rebuilt = MatchingEngine.from_resting(resting, [X])
    rebuilt.apply_journal(e.journal[mark:])
    assert rebuilt.books[X].snapshot() == e.books[X].snapshot()
    for side in ("bids", "asks"):
        assert getattr(rebuilt.books[X], side).depth() == getattr(e.books[X], side).depth()
    assert rebuilt.trades == e.trades[resting.trades:]
    assert (rebuilt._next_order_id, rebuilt._next_trade_id) == (e._next_order_id, e._next_trade_id)
    assert {oid: o.as_tuple() + (o.ts,) for oid, o in rebuilt.orders.items()} == {
        oid: e.orders[oid].as_tuple() + (e.orders[oid].ts,) for oid in rebuilt.orders}
    # every order it does not know was closed before the cut: nothing after it could have changed it
    assert all(not e.orders[oid].open_qty for oid in set(e.orders) - set(rebuilt.orders) if oid < resting.next_order_id)


@settings(max_examples=100, deadline=None)
@given(commands, commands)
def test_compacting_the_books_changes_nothing_a_command_sees(before, after):
    """What a long-lived venue does at each cut of its log: the cancelled orders still queued in their levels and
    the stale heap entries go. The same commands after it give the same trades, books and orders as without it."""
    plain, compacted = run(before), run(before)
    queued = sum(len(level) for half in (compacted.books[X].bids, compacted.books[X].asks)
                 for level in half.levels.values())
    dropped = compacted.compact()
    for half in (compacted.books[X].bids, compacted.books[X].asks):
        assert all(order.open_qty for level in half.levels.values() for order in level)
        assert sorted(half.heap) == sorted(price * half.sign for price in half.levels)  # one entry per level
    assert dropped == queued - len(compacted.open_orders())
    run(after, e=plain)
    run(after, e=compacted)
    assert compacted.state() == plain.state()
    assert compacted.trades == plain.trades


def test_a_deep_level_whose_orders_are_cancelled_keeps_no_dead_orders_after_compaction():
    """A level away from the trading whose oldest orders are cancelled as new ones join it never empties, so
    the lazy removal (at the front, when matching reaches it) never comes: the cancelled orders stayed queued."""
    e = engine()
    ids = [e.submit(X, 1, BUY, 1, 90).order_id for _ in range(50)]
    for order_id in ids[:-1]:
        e.cancel(order_id)
        e.submit(X, 1, BUY, 1, 90)
    level = e.books[X].bids.levels[90]
    assert len(level) == 99 and e.books[X].bids.level_qty[90] == 50  # 49 dead orders still queued
    assert e.compact() == 49
    assert len(e.books[X].bids.levels[90]) == 50 and e.compact() == 0
    assert e.submit(X, 2, SELL, 50, 90).filled_qty == 50  # the 50 live ones, in their order
    assert 90 not in e.books[X].bids.levels
