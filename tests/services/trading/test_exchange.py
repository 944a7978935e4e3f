"""Exchange: balances, fees, locking, amend, STP, copy trading, journal restore."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.trading.exchange import Balance, CASH, Exchange, ExchangeError, MemoryJournal, SqlJournal, copy_size
from services.trading.engine import BUY, SELL, OrderStatus

X = "X"


def exchange(journal=None, **fees):
    clock = iter(range(1, 10**9))
    return Exchange([X], journal=journal or MemoryJournal(), clock=lambda: next(clock), **fees)


def funded(journal=None, **fees):
    ex = exchange(journal, **fees)
    for name, tenant in (("a", "t1"), ("b", "t1"), ("c", "t2"), ("d", "t1")):
        ex.open_account(tenant, name)
        ex.deposit(name, CASH, 1_000_000)
        ex.deposit(name, X, 1_000)
    return ex


def conserved(ex):
    for asset, (held, net) in ex.conservation().items():
        assert held == net, asset


def test_trade_moves_cash_and_lots_with_fees():
    ex = funded()
    ex.place("a", X, "SELL", 10, 100)  # maker
    ex.place("b", X, "BUY", 10, 105)  # taker, pays 100 per lot
    a, b = ex.accounts["a"], ex.accounts["b"]
    notional = 1000
    assert b.balance(X).free == 1010 and a.balance(X).free == 990 and a.balance(X).locked == 0
    taker_fee, maker_fee = 1, 1  # ceil(1000 * 10bp) = 1, ceil(1000 * 5bp) = 1
    assert b.balance(CASH).free == 1_000_000 - notional - taker_fee and b.balance(CASH).locked == 0
    assert a.balance(CASH).free == 1_000_000 + notional - maker_fee
    assert ex.fees_collected[CASH] == 2
    conserved(ex)


def test_open_orders_lock_funds_and_cancel_releases_them():
    ex = funded()
    order = ex.place("a", X, "BUY", 100, 500)
    cash = ex.accounts["a"].balance(CASH)
    assert cash.locked == 100 * 500 + 50 + 100 and cash.free == 1_000_000 - cash.locked
    ex.cancel("a", order.order_id)
    assert cash.locked == 0 and cash.free == 1_000_000
    sell = ex.place("a", X, "SELL", 40, 900)
    assert ex.accounts["a"].balance(X).locked == 40
    ex.amend("a", sell.order_id, quantity=15)
    assert ex.accounts["a"].balance(X).locked == 15
    conserved(ex)


def test_a_partly_filled_buy_keeps_locked_only_what_its_open_lots_need():
    """Filled below its limit, a buy gives back the surplus at once, not when it is done."""
    ex = exchange()
    ex.open_account("t1", "buyer")
    ex.open_account("t1", "seller")
    ex.deposit("buyer", CASH, 100_200)  # exactly the reserve of 100 lots @ 1000: 100_000 + 100 fee + 100 slack
    ex.deposit("seller", X, 1_000)
    ex.place("seller", X, "SELL", 99, 500)
    order = ex.place("buyer", X, "BUY", 100, 1000)  # takes 99 @ 500 for 49_500 + 50 fee, 1 lot rests @ 1000
    cash = ex.accounts["buyer"].balance(CASH)
    assert order.open_qty == 1 and ex.reserved[order.order_id] == cash.locked == ex._buy_reserve(1000, 1) == 1002
    assert cash.free == 100_200 - 49_550 - 1002
    ex.withdraw("buyer", CASH, cash.free)  # the surplus is usable right away
    assert cash == Balance(free=0, locked=1002)
    conserved(ex)


def test_a_resting_buy_reserves_the_larger_of_the_maker_and_taker_fee():
    """With maker fees above taker fees a resting buy filled as maker must not overdraw its reserve."""
    ex = exchange(maker_fee_bps=20, taker_fee_bps=10)
    for name in ("a", "b"):
        ex.open_account("t1", name)
    ex.deposit("b", X, 1_000)
    need = 1_000_000 + 2_000 + 10  # 10 lots @ 100_000: notional + 20 bps + one unit per lot
    assert ex._buy_reserve(100_000, 10) == need
    ex.deposit("a", CASH, need)
    bid = ex.place("a", X, "BUY", 10, 100_000)
    cash = ex.accounts["a"].balance(CASH)
    ex.place("b", X, "SELL", 5, 100_000)  # a is filled as maker: 500_000 + 1_000 fee
    assert cash.locked == ex.reserved[bid.order_id] == ex._buy_reserve(100_000, 5) == 501_005
    assert cash.free == need - 501_000 - 501_005 == 5
    ex.place("b", X, "SELL", 5, 100_000)
    assert cash == Balance(free=10, locked=0) and bid.status == OrderStatus.FILLED
    conserved(ex)


def test_insufficient_funds_is_refused_and_nothing_changes():
    ex = funded()
    before = ex.state()
    with pytest.raises(ExchangeError, match="insufficient free USD"):
        ex.place("a", X, "BUY", 10_000, 1_000)
    with pytest.raises(ExchangeError, match="insufficient free X lots"):
        ex.place("a", X, "SELL", 5_000, 10)
    with pytest.raises(ExchangeError, match="no liquidity"):
        ex.place("a", X, "BUY", 5, None, "IOC")
    assert ex.state() == before and len(ex.journal.load()) == 12  # refusals are not journalled


def test_self_trade_prevention_expire_taker_through_the_exchange():
    ex = funded()
    ex.place("a", X, "SELL", 5, 100)
    taker = ex.place("a", X, "BUY", 5, 100)
    assert taker.status == OrderStatus.EXPIRED and not ex.engine.trades
    assert ex.accounts["a"].balance(CASH).locked == 0
    conserved(ex)


def test_copy_trading_sizes_by_equity_and_links_to_the_leader_fill():
    ex = funded()
    ex.deposit("d", CASH, 1_000_000)  # follower has 2x the leader's cash equity
    ex.follow("d", "a", multiplier=0.5, max_exposure=10_000_000)
    ex.place("c", X, "SELL", 100, 200)
    leader_order = ex.place("a", X, "BUY", 10, 200)
    assert leader_order.filled_qty == 10
    [link] = ex.copy_links
    leader_trade = [t for t in ex.engine.trades if t[5] == leader_order.order_id][0]
    assert link.leader_trade_id == leader_trade[0] and link.leader_account == "a"
    follower_order = ex.engine.orders[link.follower_order_id]
    assert follower_order.account == "d" and follower_order.filled_qty == 10  # 10 x 2 x 0.5
    assert follower_order.order_id > leader_order.order_id  # created after the leader's fill
    conserved(ex)


def test_copy_trading_copies_the_leaders_resting_fills_too(tmp_path):
    journal = SqlJournal(f"sqlite:///{tmp_path / 'journal.db'}")
    ex = funded(journal)
    ex.deposit("d", CASH, 1_000_000)  # ~2x the leader's equity, x 0.6: copies round down to the leader's lots
    ex.follow("d", "a", multiplier=0.6, max_exposure=10_000_000)
    ex.place("c", X, "SELL", 100, 400)  # liquidity away from the leader's prices: copies do not reach it
    ex.place("c", X, "BUY", 100, 50)
    bid = ex.place("a", X, "BUY", 4, 150)  # the leader rests a bid: no fill, no copy
    assert not ex.copy_links
    ex.place("b", X, "SELL", 8, 150)  # b hits it: the leader is filled as maker; b's other 4 rest at 150
    ask = ex.place("a", X, "SELL", 3, 300)
    ex.amend("b", ex.place("b", X, "BUY", 6, 250).order_id, price=300)  # b's amendment lifts the leader's ask
    # (and rests 3 at 300): each copy is an IOC limit at the leader's fill price, filled by b's rest
    maker_trades = [t for t in ex.engine.trades if t[5] == bid.order_id or t[6] == ask.order_id]
    assert [(t[4], t[9]) for t in maker_trades] == [(4, SELL), (3, BUY)]  # 4 bought, 3 sold, never the aggressor
    assert [link.leader_trade_id for link in ex.copy_links] == [t[0] for t in maker_trades]
    copies = [ex.engine.orders[link.follower_order_id] for link in ex.copy_links]
    assert [(o.account, o.side, o.filled_qty) for o in copies] == [("d", BUY, 4), ("d", SELL, 3)]
    assert ex.position("d", X) == 1_000 + 4 - 3
    conserved(ex)
    assert Exchange.restore([X], journal).state() == ex.state()
    journal.close()


def copy_trading_venue(*names, cash=10**8, lots=1_000):
    ex = exchange()
    for name in names:
        ex.open_account("t", name)
        ex.deposit(name, CASH, cash)
        if lots:
            ex.deposit(name, X, lots)
    return ex


def test_a_copy_orders_trades_are_not_copied_copies_go_one_level_deep():
    ex = copy_trading_venue("A", "F", "H", "L", "G", "MM")
    ex.follow("F", "A")  # F copies A
    ex.follow("H", "F")  # H copies F: F's copies must not be copied
    ex.follow("G", "L")  # G copies L: L's fill against F's copy must not be copied either
    ex.place("MM", X, "SELL", 10, 1000)  # A's order takes this
    ex.place("MM", X, "BUY", 100, 900)  # bids for the sell copies
    ask = ex.place("L", X, "SELL", 10, 1000)  # L rests an ask behind MM's at the same level
    ex.place("A", X, "BUY", 10, None, "IOC")  # A lifts MM; F's copy (an IOC limit at 1000) lifts L's ask
    [l_trade] = [t for t in ex.engine.trades if t[6] == ask.order_id]
    assert ex.engine.orders[l_trade[5]].account == "F" and ex.position("L", X) == 990
    assert [(link.leader_account, link.leader_trade_id) for link in ex.copy_links] == [("A", 1)]
    assert ex.position("G", X) == 1_000  # L's fill came from a copy: one level, no copy of it
    assert ex.position("H", X) == 1_000  # the copier's own fill is not copied
    conserved(ex)
    assert Exchange.restore([X], ex.journal).state() == ex.state()


def test_a_journal_of_rules_2_replays_its_copies_as_they_were_made():
    """Rules 2 made copies market orders and copied the resting fills a copy hit: a journal of rules 2 replays to
    the balances its venue had (each command under the rules it records), and its next commands follow rules 3."""
    ex = copy_trading_venue("A", "F", "L", "G", "MM")
    ex.follow("F", "A")
    ex.follow("G", "L")
    ex.place("MM", X, "SELL", 10, 1000)
    ex.place("MM", X, "BUY", 100, 900)
    ex.place("L", X, "SELL", 10, 1001)  # the next level: only a market copy reaches it
    old = MemoryJournal()
    old.append_many([{**c, "rules": 2} for c in ex.journal.load()])
    old.append({**ex.journal.load()[-1], "op": "place", "account": "A", "instrument": X, "side": "BUY",
                "quantity": 10, "price": None, "tif": "IOC", "rules": 2})
    replayed = Exchange.restore([X], old)
    assert replayed.position("F", X) == 1_010 and replayed.position("L", X) == 990  # F's market copy lifted L
    assert replayed.position("G", X) == 990  # and L's fill was copied, as rules 2 did
    conserved(replayed)
    replayed.place("MM", X, "SELL", 20, 1001)
    replayed.place("A", X, "BUY", 5, 1001)  # rules 3 from here: F's copy is a limit at 1001
    last_copy = replayed.engine.orders[replayed.copy_links[-1].follower_order_id]
    assert (last_copy.account, last_copy.price, last_copy.filled_qty > 0) == ("F", 1001, True)
    assert replayed.position("G", X) == 990
    assert Exchange.restore([X], replayed.journal).state() == replayed.state()


def test_copies_are_sized_by_equity_before_the_leaders_fill_and_sells_close_the_same_fraction():
    ex = copy_trading_venue("L", "F", cash=1_000_000, lots=0)
    for name in ("MM", "MM2"):
        ex.open_account("t", name)
        ex.deposit(name, CASH, 10**9)
    ex.deposit("MM", X, 10_000)
    ex.follow("F", "L")
    ex.place("MM", X, "SELL", 5_000, 1000)
    ex.place("MM2", X, "BUY", 5_000, 999)
    ex.place("L", X, "BUY", 333, None, "IOC")  # equal equity before the fill: F buys as many lots
    assert ex.position("L", X) == ex.position("F", X) == 333
    ex.place("L", X, "SELL", 111, None, "IOC")  # a third of L's position: a third of F's
    assert ex.position("L", X) == ex.position("F", X) == 222
    ex.place("L", X, "SELL", 222, None, "IOC")  # L closes: so does F
    assert ex.position("L", X) == ex.position("F", X) == 0
    conserved(ex)


def test_copy_equity_counts_positions_at_the_mark():
    ex = copy_trading_venue("L", "F", "MM", "MM2", cash=2_000_000, lots=0)
    ex.deposit("L", X, 1_000)
    ex.withdraw("L", CASH, 1_000_000)  # L: 1_000_000 cash + 1_000 lots; F: 2_000_000 cash
    ex.deposit("MM", X, 10_000)
    ex.follow("F", "L")
    ex.place("MM", X, "SELL", 1_000, 1000)
    ex.place("MM2", X, "BUY", 1, None, "IOC")  # the last trade marks X at 1000: L and F hold 2_000_000 each
    ex.place("L", X, "BUY", 100, None, "IOC")
    assert ex.position("F", X) == 100
    conserved(ex)


def test_copy_size_clamped_by_exposure_cap():
    assert copy_size(10, 200, 100, 1.0, position=0, side=1, price=100, max_exposure=1_000) == 10
    assert copy_size(10, 200, 100, 1.0, position=5, side=1, price=100, max_exposure=1_000) == 5
    assert copy_size(10, 100, 100, 1.0, position=10, side=2, price=100, max_exposure=500, leader_position=10) == 10
    assert copy_size(10, 100, 100, 1.0, position=30, side=2, price=100, max_exposure=500, leader_position=40) == 7
    assert copy_size(10, 0, 100, 1.0, position=0, side=1, price=100, max_exposure=10**9) == 0


def test_following_an_account_of_another_tenant_is_refused():
    ex = funded()
    with pytest.raises(ExchangeError, match="unknown account"):
        ex.follow("c", "a")


def test_restart_replays_to_identical_books_and_balances(tmp_path):
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    ex = funded(SqlJournal(url))
    ex.follow("d", "a", 1.0, 10**8)
    ex.place("c", X, "SELL", 30, 101)
    ex.place("c", X, "SELL", 30, 102)
    o = ex.place("a", X, "BUY", 20, 103)
    ex.place("b", X, "BUY", 15, 99)
    ex.amend("b", ex.engine.trades and max(ex.engine.orders), price=100)
    ex.cancel("c", 2) if ex.engine.orders[2].open_qty else None
    ex.withdraw("b", CASH, 1000)
    assert o.status == OrderStatus.FILLED
    restored = Exchange.restore([X], SqlJournal(url))
    assert restored.state() == ex.state()
    conserved(restored)


def test_a_restart_reads_the_journal_in_batches_not_whole(tmp_path):
    """A long-lived venue's journal is ~2x the state it replays to: a start must not hold all of it at once."""
    import tracemalloc

    url = f"sqlite:///{tmp_path / 'journal.db'}"
    ex = funded(SqlJournal(url))
    ex.deposit("a", X, 100_000)
    with ex.batch():  # 12,000 commands in one write: resting orders, half of them cancelled
        for i in range(6000):
            order = ex.place("ab"[i % 2], X, "BUY" if i % 2 else "SELL", 1, 100 + (i % 50) if i % 2 else 200 + i % 50)
            ex.cancel(order.account, order.order_id) if i % 3 else ex.amend(order.account, order.order_id, quantity=2)
    journal = SqlJournal(url)
    tracemalloc.start()
    try:
        whole = journal.load()
        held_whole = tracemalloc.get_traced_memory()[0]
        del whole
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        restored = Exchange.restore([X], journal)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert restored.state() == ex.state() and len(journal.load()) == 12_013
    # the replayed state plus a batch of 1,000 parsed commands, never the 12,013 beside it (~2.6x more)
    assert peak - after < 0.35 * held_whole, (peak - after, after - baseline, held_whole)


commands = st.lists(st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.sampled_from(["place", "place", "place", "cancel", "amend", "withdraw"]),
    st.sampled_from(["BUY", "SELL"]),
    st.integers(1, 60), st.one_of(st.none(), st.integers(90, 110)), st.sampled_from(["GTC", "IOC", "FOK"]),
    st.integers(1, 40)), max_size=80)


fee_schedules = st.sampled_from([{}, {"maker_fee_bps": 20, "taker_fee_bps": 10},
                                  {"maker_fee_bps": -2, "taker_fee_bps": 10}, {"maker_fee_bps": 0, "taker_fee_bps": 0}])


@settings(max_examples=60, deadline=None)
@given(commands, fee_schedules)
def test_balances_are_conserved_under_any_command_stream(cmds, fees):
    ex = funded(**fees)
    ex.follow("d", "a", 1.5, 50_000)
    for account, op, side, qty, price, tif, ref in cmds:
        try:
            if op == "place":
                ex.place(account, X, side, qty, price, tif if price is not None else "IOC")
            elif op == "cancel":
                ex.cancel(account, ref)
            elif op == "amend":
                ex.amend(account, ref, quantity=qty, price=price)
            else:
                ex.withdraw(account, CASH if side == "BUY" else X, qty * 100)
        except ExchangeError:
            pass
        conserved(ex)
        for acc in ex.accounts.values():
            for bal in acc.balances.values():
                assert bal.free >= 0 and bal.locked >= 0
        # locked balances are exactly what open orders need: their lots, or the reserve of their open quantity
        for acc in ex.accounts.values():
            mine = [o for o in ex.engine.orders.values() if o.account == acc.account_id and o.open_qty]
            assert acc.balance(X).locked == sum(o.open_qty for o in mine if o.side == SELL)
            assert acc.balance(CASH).locked == sum(ex._buy_reserve(o.price, o.open_qty) for o in mine if o.side == BUY)
        assert ex.reserved == {o.order_id: ex._buy_reserve(o.price, o.open_qty)
                               for o in ex.engine.orders.values() if o.side == BUY and o.open_qty}
    assert Exchange.restore([X], ex.journal, **fees).state() == ex.state()


@pytest.mark.slow
def test_a_journal_created_with_32_bit_seqs_is_widened_and_goes_past_2_to_the_31():
    """Postgres's integer ran out at 2,147,483,647 commands (~25 days at 1,000 a second): every write after it
    failed as journal-unavailable. A journal made by an earlier version is widened when the service opens it."""
    import json as json_module

    import sqlalchemy as sa

    from tests.integration.servers import PG_DSN, postgres_database

    last32 = 2**31 - 1
    with postgres_database() as db:
        url = PG_DSN.format(db=db)
        engine = sa.create_engine(url)
        with engine.begin() as conn:  # the table as the previous version created it, at its last 32-bit seq
            conn.execute(sa.text("CREATE TABLE exchange_journal (seq SERIAL PRIMARY KEY, command TEXT NOT NULL)"))
            conn.execute(sa.text("INSERT INTO exchange_journal VALUES (:seq, :command)"),
                         {"seq": last32, "command": json_module.dumps({"op": "deposit"})})
        journal = SqlJournal(url)
        assert [c["op"] for c in journal.stream()] == ["deposit"]
        assert journal.append({"op": "withdraw"}) == last32 + 1
        journal.append_many([{"op": "a"}, {"op": "b"}])
        with engine.connect() as conn:
            seqs = conn.execute(sa.text("SELECT seq FROM exchange_journal ORDER BY seq")).scalars().all()
            kind = conn.execute(sa.text("SELECT data_type FROM information_schema.columns WHERE "
                                        "table_name = 'exchange_journal' AND column_name = 'seq'")).scalar()
        assert seqs == [last32, last32 + 1, last32 + 2, last32 + 3] and kind == "bigint"
        assert [c["op"] for c in SqlJournal(url).stream()] == ["deposit", "withdraw", "a", "b"]
        engine.dispose()


@pytest.mark.slow
def test_restart_replays_from_a_postgres_journal():
    """The production journal store: Postgres (started by make test via infra/scripts/test-services.sh)."""
    from tests.integration.servers import PG_DSN, postgres_database

    with postgres_database() as db:
        url = PG_DSN.format(db=db)
        journal = SqlJournal(url)
        ex = funded(journal)
        ex.place("c", X, "SELL", 30, 101)
        ex.place("a", X, "BUY", 20, 103)
        with ex.batch():
            ex.place("b", X, "BUY", 5, 99)
            ex.place("d", X, "SELL", 5, 120)
        restored = Exchange.restore([X], SqlJournal(url))
        assert restored.state() == ex.state()
        conserved(restored)
        # a snapshot in Postgres (a bytea), and a start from it and the commands after it
        assert ex.snapshot() and journal.latest_snapshot()[0] == ex.journaled == 16
        ex.place("c", X, "BUY", 3, 101)
        from_snapshot = Exchange.restore([X], SqlJournal(url))
        assert from_snapshot.state() == ex.state() and from_snapshot.journaled == 17
        journal.close()


class FailingJournal(MemoryJournal):
    """A journal whose batch write fails (the database is down) when ``fail`` is set."""

    fail = False

    def append_many(self, commands):
        if self.fail:
            raise ConnectionError("journal database unavailable")
        super().append_many(commands)


def test_failed_batch_journal_write_leaves_the_live_state_as_before_the_batch():
    journal = FailingJournal()
    ex = funded(journal)
    ex.place("a", X, "SELL", 10, 100)
    ex.place("c", X, "BUY", 2, 100)  # history before the batch: a trade and a filled order
    ex.place("b", X, "BUY", 5, 90)
    before = ex.state()
    journal.fail = True
    with pytest.raises(ExchangeError, match="journal"):  # 503 journal-unavailable
        with ex.batch():
            ex.place("b", X, "BUY", 8, 100)  # trades against a's ask
            ex.cancel("b", 3)
            ex.deposit("d", CASH, 5)
    assert ex.state() == before
    conserved(ex)
    journal.fail = False
    assert Exchange.restore([X], journal).state() == before
    # Later commands build on the rolled-back state, so live and journal stay the same.
    ex.place("b", X, "BUY", 8, 100)
    ex.withdraw("a", CASH, ex.accounts["a"].balance(CASH).free)
    assert Exchange.restore([X], journal).state() == ex.state()


def test_refused_commands_leave_no_balance_row_a_restart_would_not_rebuild():
    journal = MemoryJournal()
    ex = Exchange([X], journal=journal)
    ex.open_account("t1", "a")
    ex.deposit("a", CASH, 1_000)
    for refused in (lambda: ex.place("a", X, "SELL", 5, 100),  # holds no lots of X
                    lambda: ex.withdraw("a", X, 1),
                    lambda: ex.place("a", X, "BUY", 50, 100)):  # more cash than it has
        with pytest.raises(ExchangeError):
            refused()
    assert set(ex.accounts["a"].balances) == {CASH}
    assert Exchange.restore([X], journal).state() == ex.state()


@pytest.mark.parametrize("rebase,history,snapshots", [  # history None: all kept; snapshots 0: none
    (None, None, 0), (8, None, 0), (8, 4, 0), (8, 4, 20)],
    ids=["log-from-start", "log-cut-often", "log-cut-often-history-trimmed", "trimmed-and-snapshots"])
@pytest.mark.parametrize("seed", range(8))
def test_failed_batch_rollback_matches_the_journal_after_random_history(seed, rebase, history, snapshots):
    """Random trading (fills, cancels, amends, copy trading) before and inside a batch whose journal write
    fails: the live state equals the pre-batch state and a restart's, and later commands agree too. Also when
    the engine's command log has been cut (the books saved, the log restarted) many times before the batch, and
    when each cut also trims the history to each account's last 4 orders and fills (a restart trims at other
    commands than the live exchange did: what is kept agrees), and when a snapshot is saved every 20 commands (a
    restart loads the newest and replays the commands after it)."""
    import random

    rng = random.Random(seed)
    journal = FailingJournal()
    kept = {"history": history, "snapshot_commands": snapshots}
    ex = funded(journal, **({"rebase_commands": rebase} if rebase else {}), **kept)
    ex.follow("d", "a", multiplier=0.5)

    def burst(n):
        for _ in range(n):
            who = rng.choice("abc")
            open_ids = [o.order_id for o in ex.engine.orders.values() if o.open_qty and o.account == who]
            roll = rng.random()
            try:
                if open_ids and roll < 0.2:
                    ex.cancel(who, rng.choice(open_ids))
                elif open_ids and roll < 0.3:
                    ex.amend(who, rng.choice(open_ids), quantity=rng.randint(1, 5))
                else:
                    ex.place(who, X, rng.choice(("BUY", "SELL")), rng.randint(1, 5), rng.randint(95, 105))
            except ExchangeError:
                pass

    burst(150)
    if rebase:  # cut at 8 commands or twice the resting orders: the log holds less than the history
        assert ex._base is not None and len(ex.engine.journal) < max(8, 2 * ex._base.orders) + 1
    before = ex.state()
    journal.fail = True
    with pytest.raises(ExchangeError, match="journal"):
        with ex.batch():
            burst(60)
    assert ex.state() == before
    conserved(ex)
    indexes_match_a_scan(ex)
    journal.fail = False
    burst(40)
    restored = Exchange.restore([X], journal, **kept)
    assert restored.state() == ex.state()
    indexes_match_a_scan(ex)
    indexes_match_a_scan(restored)
    if snapshots:  # restored from a snapshot taken after the failed batch; a whole replay agrees
        assert journal.snapshots and ex.journaled - snapshots - 60 < journal.latest_snapshot()[0] <= ex.journaled
        whole = MemoryJournal()
        whole.commands = journal.commands
        assert Exchange.restore([X], whole, **kept).state() == ex.state()
        assert Exchange.restore([X], whole, **kept).journaled == ex.journaled == len(journal.commands)
    if history:  # trimmed (at each cut; here once more): bounded by the accounts, not by the 250 commands
        before = ex.state()
        ex._trim_history()
        assert ex.state() == before  # trimming changes nothing that is kept
        for account in ex.accounts:  # beyond its last 4 orders, an account keeps only open ones
            assert all(order.open_qty for order in ex.orders_of(account)[:-history])
            assert len(ex.fills_of(account)) <= history
        assert len(ex.engine.orders) < 150 and len(ex.instrument_trades[X]) == history


def indexes_match_a_scan(ex):
    """The per-account order and fill indexes the API reads hold what a scan of the kept orders and trades finds."""
    orders = list(ex.engine.orders.values())
    tape = ex.instrument_trades.get(X, [])
    for account in ex.accounts:
        mine = [o for o in orders if o.account == account]
        assert ex.orders_of(account) == mine
        assert ex.orders_of(account, open_only=True, limit=3) == [o for o in mine if o.open_qty][-3:]
        # the account's sides of the trades on the tape, as its fills have them (older fills may be kept too)
        sides = [(t[0], order_id, side) for t in tape
                 for order_id, owner, side in ((t[5], t[7], "BUY"), (t[6], t[8], "SELL")) if owner == account]
        fills = ex.fills_of(account)
        assert [(f.trade_id, f.order_id, f.side) for f in fills if tape and f.trade_id >= tape[0][0]] == sides
        assert ex.fills_of(account, limit=2) == fills[-2:]
    assert ex.trades_of(X, 3) == tape[-3:] and [t[0] for t in tape] == sorted({t[0] for t in tape})
    if ex.history is None and ex._base is None:  # nothing was ever cut: the engine's trades are every trade
        assert tape == [t for t in ex.engine.trades if t[2] == X]


def test_a_journal_written_under_other_rules_is_refused_not_replayed_to_other_balances():
    """Copy sizing and the buy reserve changed (rules 2): a journal whose commands carry no rules (version 1)
    or others would replay to balances its venue never had."""
    from services.trading.exchange import RULES_VERSION, JournalRulesError

    ex = Exchange([X])
    ex.open_account("t1", "a")
    ex.deposit("a", CASH, 1_000_000)
    commands = ex.journal.load()
    assert {c["rules"] for c in commands} == {RULES_VERSION}
    assert Exchange.restore([X], ex.journal).state() == ex.state()
    older = MemoryJournal()
    older.append_many([{k: v for k, v in c.items() if k != "rules"} for c in commands])
    with pytest.raises(JournalRulesError, match="command 1 was applied under exchange rules 1"):
        Exchange.restore([X], older)


def test_a_long_running_exchange_keeps_a_bounded_history_and_serves_the_same_pages():
    """A served exchange runs for months: each cut of its log trims the closed history to each account's last
    ``history`` orders and fills and each instrument's last ``history`` trades. What it keeps is bounded by the
    accounts, not by the commands; every page up to ``history`` equals an exchange that keeps everything; old
    resting orders stay (readable, cancellable); a closed order older than the kept history is gone."""
    import collections
    import random

    from tests.bench.gc_pause import trade  # the bench's order flow: random limit orders on ACME around 100

    A = "ACME"

    def venue(history):
        ticks = iter(range(1, 10**9))
        ex = Exchange([A], rebase_commands=300, history=history, clock=lambda: next(ticks))
        for account in ("a", "b", "c"):
            ex.open_account("t1", account)
            ex.deposit(account, CASH, 10**12)
            ex.deposit(account, A, 10**9)
        ex.place("a", A, "BUY", 1, 50)  # rests far below the market for the whole run
        return ex

    kept, everything = venue(history=40), venue(history=None)
    sizes = []
    for ex in (kept, everything):
        rng, resting = random.Random(11), collections.deque()
        for _ in range(4):
            trade(ex, ["a", "b", "c"], rng, resting, 1500, keep=30)
            if ex is kept:
                book = ex.engine.books[A]
                queued = sum(len(level) for half in (book.bids, book.asks) for level in half.levels.values())
                sizes.append((len(ex.engine.orders), sum(map(len, ex.account_fills.values())),
                              len(ex.instrument_trades[A]), len(ex.engine.trades), queued))
    for part in ("balances", "books", "next_ids"):
        assert kept.state()[part] == everything.state()[part]
    assert len(everything.engine.orders) > 6000 and len(everything.instrument_trades[A]) > 2000
    for orders, fills, tape, engine_trades, queued in sizes:  # each round as small as the first, whatever the history
        # 3 accounts' 40 and the resting ones, plus what the commands since the last cut (at most ~300) added
        assert orders <= 3 * 40 + 31 + 300 and fills <= 3 * 40 + 2 * 300 and tape <= 40 + 300, sizes
        assert engine_trades <= 300  # the engine's own list restarts at each cut (the tape is the exchange's)
        assert queued <= 31 + 300  # the books hold their resting orders, and what was cancelled since the cut
    for account in ("a", "b", "c"):
        for limit in (1, 17, 40):
            for open_only in (False, True):
                page = [o.as_tuple() for o in kept.orders_of(account, open_only, limit)]
                assert len(page) == limit or open_only
                assert page == [o.as_tuple() for o in everything.orders_of(account, open_only, limit)]
            assert kept.fills_of(account, limit=limit) == everything.fills_of(account, limit=limit)
    assert kept.trades_of(A, 40) == everything.trades_of(A, 40)
    # the first order still rests: kept, and it can be cancelled; an old closed one is gone, as if never known
    first = kept.orders_of("a", open_only=True)[0]
    assert first.order_id == 1 and first.open_qty == 1
    assert kept.cancel("a", 1).status == OrderStatus.CANCELLED
    closed = next(o.order_id for o in everything.orders_of("b") if not o.open_qty)
    assert closed not in kept.engine.orders
    with pytest.raises(ExchangeError, match="unknown order"):
        kept.cancel("b", closed)
    with pytest.raises(ExchangeError, match="not open"):
        everything.cancel("b", closed)


def test_the_kept_history_is_a_positive_size_or_none():
    for bad in (0, -1, 2.5, "1000"):
        with pytest.raises(ValueError, match="history"):
            Exchange([X], history=bad)


def _venue_with_snapshots(url: str, commands: int, **kwargs):
    """The bench's order flow on ACME over a SQLite journal, with a snapshot every 500 commands."""
    import collections
    import random

    from tests.bench.gc_pause import trade

    ticks = iter(range(1, 10**9))
    ex = Exchange(["ACME"], journal=SqlJournal(url), rebase_commands=100, clock=lambda: next(ticks),
                  **{"snapshot_commands": 500, **kwargs})
    for account in ("a", "b", "c"):
        ex.open_account("t1", account)
        ex.deposit(account, CASH, 10**12)
        ex.deposit(account, "ACME", 10**9)
    ex.follow("c", "a", multiplier=0.5)
    trade(ex, ["a", "b"], random.Random(2), collections.deque(), commands, keep=40)
    return ex


class CountingJournal(SqlJournal):
    """Counts the commands a start reads."""

    read = 0

    def stream(self, after: int = 0, batch: int = 1000):
        for command in super().stream(after, batch):
            self.read += 1
            yield command


def test_a_start_loads_the_newest_snapshot_and_replays_only_the_commands_after_it(tmp_path):
    """A venue's journal grows every day; a start replayed all of it (a year of the demo's flow: over a minute).
    The exchange saves a snapshot of its (bounded) state every N journalled commands; a start loads the newest
    and replays what came after it, and reaches the state a replay of the whole journal does."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'journal.db'}"
    ex = _venue_with_snapshots(url, 3000)
    with sa.create_engine(url).connect() as conn:
        kept = conn.execute(sa.text("select commands from exchange_snapshot order by commands")).scalars().all()
    assert len(kept) == 2 and kept[1] - kept[0] >= 500 and ex.journaled - 600 < kept[1] <= ex.journaled, kept
    journal = CountingJournal(url)
    restored = Exchange.restore(["ACME"], journal)
    assert journal.read == ex.journaled - kept[1] < 600
    assert restored.state() == ex.state() and restored.journaled == ex.journaled
    conserved(restored)
    whole = MemoryJournal()
    whole.commands = SqlJournal(url).load()
    assert len(whole.commands) == ex.journaled
    assert Exchange.restore(["ACME"], whole).state() == restored.state()
    # the restored exchange goes on as the original would (the same commands, the same answers); each in a journal
    # of its own: one process owns a journal, the second writer on one would be fenced off
    for venue in (ex, restored):
        venue.journal = MemoryJournal()
        venue.clock = iter(range(10**9, 2 * 10**9)).__next__
        venue.place("b", "ACME", "SELL", 7, 95)
        venue.place("a", "ACME", "BUY", 9, 105)
    assert restored.state() == ex.state()


@pytest.mark.parametrize("spoil", ["corrupt", "other-format", "other-history", "unbalanced", "journal-emptied"])
def test_a_snapshot_that_cannot_be_used_is_passed_over_for_the_whole_journal(tmp_path, caplog, monkeypatch, spoil):
    import json
    import zlib

    import sqlalchemy as sa

    from services.trading import exchange as exchange_module

    url = f"sqlite:///{tmp_path / 'journal.db'}"
    ex = _venue_with_snapshots(url, 1200)
    commands, data = SqlJournal(url).latest_snapshot()
    kwargs = {}
    if spoil == "corrupt":
        data = data[: len(data) // 2]
    elif spoil == "unbalanced":
        state = json.loads(zlib.decompress(data))
        state["accounts"][0][2]["USD"][0] += 1  # one cent more than was deposited
        data = zlib.compress(json.dumps(state).encode())
    elif spoil == "other-format":
        monkeypatch.setattr(exchange_module, "SNAPSHOT_FORMAT", exchange_module.SNAPSHOT_FORMAT + 1)
    elif spoil == "other-history":
        kwargs = {"history": 2000}
    with sa.create_engine(url).begin() as conn:
        if spoil == "journal-emptied":  # by hand, the snapshots kept
            conn.execute(sa.text("delete from exchange_journal"))
        conn.execute(sa.text("update exchange_snapshot set data = :data where commands = :commands"),
                     {"data": data, "commands": commands})
    if spoil == "journal-emptied":  # and a new venue journals there, past the old snapshot's seq (SQLite reuses them)
        ex = Exchange(["ACME"], journal=SqlJournal(url))
        with ex.batch():
            for i in range(commands + 10):
                ex.open_account("t1", f"z{i}")
    journal = CountingJournal(url)
    with caplog.at_level("INFO", logger="platformq.trading"):
        restored = Exchange.restore(["ACME"], journal, snapshot_commands=0, **kwargs)
    assert journal.read == ex.journaled  # the whole journal
    assert f" {commands} commands" in caplog.text and "replaying the whole journal" in caplog.text
    if spoil != "other-history":
        assert restored.state() == ex.state()
    conserved(restored)


def test_a_snapshot_that_cannot_be_saved_is_logged_and_trading_goes_on(tmp_path, caplog):
    class NoRoom(SqlJournal):
        def save_snapshot(self, commands, data):
            raise OSError("disk full")

    url = f"sqlite:///{tmp_path / 'journal.db'}"
    ticks = iter(range(1, 10**9))
    ex = Exchange([X], journal=NoRoom(url), rebase_commands=10, snapshot_commands=20, clock=lambda: next(ticks))
    with caplog.at_level("WARNING", logger="platformq.trading"):
        for account in ("a", "b"):
            ex.open_account("t1", account)
            ex.deposit(account, CASH, 10**9)
            ex.deposit(account, X, 10**6)
        for i in range(40):
            ex.place("ab"[i % 2], X, "BUY" if i % 2 else "SELL", 1, 100)
    assert "was not saved (disk full)" in caplog.text and ex.journaled == 46
    assert SqlJournal(url).latest_snapshot() is None
    assert Exchange.restore([X], SqlJournal(url), snapshot_commands=0).state() == ex.state()


def test_a_start_that_replayed_a_long_journal_saves_a_snapshot_for_the_next(tmp_path):
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    ex = _venue_with_snapshots(url, 1500, snapshot_commands=0)  # written by a version without snapshots
    assert SqlJournal(url).latest_snapshot() is None
    first = Exchange.restore(["ACME"], SqlJournal(url), snapshot_commands=1000)
    assert SqlJournal(url).latest_snapshot()[0] == ex.journaled == first.journaled
    journal = CountingJournal(url)
    assert Exchange.restore(["ACME"], journal).state() == ex.state() and journal.read == 0


# -- review findings: copy-trading cycles and depth, amend totals, copy limits, one writer, journal outages --------

def ladder_venue(levels=400):
    """L rests ``levels`` one-lot asks at 101 and bids at 100 (the best of each side); F and T trade with it."""
    ex = Exchange([X], journal=MemoryJournal(), maker_fee_bps=0, taker_fee_bps=0)
    for name in ("L", "F", "T"):
        ex.open_account("t", name)
        ex.deposit(name, CASH, 2 * 10**9 if name == "F" else 10**9)
        ex.deposit(name, X, 10_000)
    for _ in range(levels):
        ex.place("L", X, "SELL", 1, 101)
        ex.place("L", X, "BUY", 1, 100)
    return ex


@pytest.mark.parametrize("chain", [("F", "L"), ("A", "B", "C")], ids=["two", "three"])
def test_a_follow_that_closes_a_cycle_is_refused(chain):
    ex = copy_trading_venue(*chain)
    for follower, leader in zip(chain, chain[1:]):
        ex.follow(follower, leader)
    journalled = ex.journaled
    with pytest.raises(ExchangeError, match="cycle") as refused:
        ex.follow(chain[-1], chain[0])  # the last would copy the first, who copies (through others) the last
    assert (refused.value.status, refused.value.kind) == (409, "follow-cycle")
    assert ex.journaled == journalled and chain[-1] not in ex.follows.get(chain[0], {})
    with pytest.raises(ExchangeError, match="itself"):
        ex.follow(chain[0], chain[0])


def test_copies_are_one_level_so_a_leaders_deep_book_cannot_recurse_or_poison_the_journal():
    """A copy order that hits the leader's resting orders is not copied again (copies go one level deep): a
    market buy against 400 of the leader's one-lot asks used to copy the copy's trade with the leader, back and
    forth, until RecursionError, with the command already journalled (so no restart could replay it)."""
    ex = ladder_venue()
    ex.follow("F", "L", 1.0, 10**15)
    ex.place("T", X, "BUY", 1, None)
    leader_trades = {t[0] for t in ex.engine.trades}
    assert len(ex.copy_links) == 1 and {link.leader_trade_id for link in ex.copy_links} <= leader_trades
    [copy_order] = [ex.engine.orders[link.follower_order_id] for link in ex.copy_links]
    assert copy_order.account == "F" and copy_order.side == SELL
    conserved(ex)
    assert Exchange.restore([X], ex.journal, maker_fee_bps=0, taker_fee_bps=0).state() == ex.state()


def test_a_command_that_fails_while_applied_is_undone_and_never_journalled(monkeypatch):
    """Apply, then journal: a command whose application raises (a bug, or RecursionError) leaves the live state
    and the journal as before it, so the exchange and its restarts go on."""
    ex = funded()
    ex.follow("d", "a", multiplier=1.0, max_exposure=10**9)
    ex.place("c", X, "SELL", 50, 100)
    ex.place("b", X, "BUY", 5, 90)
    before, journalled = ex.state(), len(ex.journal.commands)
    calls = []

    def broken_copy(*args):  # the leader's trade is settled, then the copy fails half-way
        calls.append(args)
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(ex, "_copy_fills", broken_copy)
    with pytest.raises(RecursionError):
        ex.place("a", X, "BUY", 10, 100)
    assert calls and ex.state() == before and len(ex.journal.commands) == journalled == ex.journaled
    conserved(ex)
    with pytest.raises(RecursionError):  # also inside a batch: the whole batch is undone, nothing journalled
        with ex.batch():
            ex.deposit("a", CASH, 7)
            ex.place("a", X, "BUY", 10, 100)
    assert ex.state() == before and len(ex.journal.commands) == journalled
    monkeypatch.undo()
    assert Exchange.restore([X], ex.journal).state() == ex.state()
    ex.place("a", X, "BUY", 10, 100)
    assert Exchange.restore([X], ex.journal).state() == ex.state()


def test_a_copy_is_a_limit_at_the_leaders_fill_price_so_the_exposure_cap_holds():
    ex = copy_trading_venue("L", "F", "M", cash=10**9, lots=0)
    ex.deposit("M", X, 10**6)
    ex.follow("F", "L", 1.0, max_exposure=10_000)  # F: at most 10,000 cents of X
    ex.place("M", X, "SELL", 10, 100)  # a thin ask at 100 ...
    ex.place("M", X, "SELL", 1000, 5000)  # ... and the next 50x higher
    ex.place("L", X, "BUY", 10, 100)  # the leader takes the whole level at 100
    fills = ex.fills_of("F")
    assert all(f.price <= 100 for f in fills)  # the copy found nothing at 100: it expired, unfilled
    assert ex.position("F", X) * 5000 <= 10_000 or not fills
    [copy_order] = [ex.engine.orders[link.follower_order_id] for link in ex.copy_links]
    assert copy_order.price == 100 and copy_order.status == OrderStatus.EXPIRED
    # with liquidity at the leader's price, the copy fills there, within the cap
    ex.place("M", X, "SELL", 30, 100)
    ex.place("L", X, "BUY", 10, 100)
    assert [(f.price, f.quantity) for f in ex.fills_of("F")] == [(100, 10)]
    assert ex.position("F", X) * 100 <= 10_000
    conserved(ex)
    assert Exchange.restore([X], ex.journal).state() == ex.state()


def test_an_amend_reports_the_new_total_quantity_and_cancels_nothing():
    ex = funded()
    sell = ex.place("a", X, "SELL", 10, 100)
    ex.amend("a", sell.order_id, quantity=6)  # open lots 6 (exchange amends the open quantity)
    assert (sell.qty, sell.open_qty, sell.cancelled_qty) == (6, 6, 0)
    ex.place("b", X, "BUY", 2, 100)
    ex.amend("a", sell.order_id, quantity=1, price=101)  # 2 filled, 1 open: the order is now of 3 lots
    assert (sell.qty, sell.open_qty, sell.filled_qty, sell.cancelled_qty) == (3, 1, 2, 0)
    ex.cancel("a", sell.order_id)
    assert (sell.qty, sell.cancelled_qty) == (3, 1)
    assert ex.accounts["a"].balance(X).locked == 0
    conserved(ex)
    assert Exchange.restore([X], ex.journal).state() == ex.state()


def two_writers(url):
    first, second = Exchange.restore([X], SqlJournal(url)), Exchange.restore([X], SqlJournal(url))  # two replicas
    first.open_account("t", "a")
    first.deposit("a", CASH, 1000)
    return first, second


def assert_second_writer_is_fenced(url):
    from services.trading.exchange import JournalConflict

    first, second = two_writers(url)
    with pytest.raises(JournalConflict) as refused:  # its first write finds the journal moved on
        second.open_account("t", "b")
    assert refused.value.status == 503 and refused.value.kind == "journal-conflict"
    assert "b" not in second.accounts and second.journaled == 0
    with pytest.raises(JournalConflict):  # and it takes no command any more, whatever the journal holds next
        second.open_account("t", "c")
    with pytest.raises(JournalConflict):
        with second.batch():
            second.open_account("t", "d")
    order = first.place("a", X, "BUY", 1, 10)  # the first writer goes on
    assert order.order_id == 1
    restored = Exchange.restore([X], SqlJournal(url))
    assert restored.state() == first.state() and set(restored.accounts) == {"a"}
    # a restart after the other's writes reads them and writes on top
    restored.open_account("t", "b")
    assert Exchange.restore([X], SqlJournal(url)).state() == restored.state()
    with pytest.raises(JournalConflict):
        first.cancel("a", order.order_id)  # the first is now the stale one
    assert restored.engine.orders[order.order_id].open_qty == 1


def test_a_second_writer_on_a_journal_is_fenced_off_sqlite(tmp_path):
    assert_second_writer_is_fenced(f"sqlite:///{tmp_path / 'journal.db'}")


@pytest.mark.slow
def test_a_second_writer_on_a_journal_is_fenced_off_postgres():
    from tests.integration.servers import PG_DSN, postgres_database

    with postgres_database() as db:
        assert_second_writer_is_fenced(PG_DSN.format(db=db))


def test_a_journal_outage_undoes_the_command_and_answers_unavailable():
    from services.trading.exchange import JournalUnavailable

    class Down(FailingJournal):
        def append(self, command):
            if self.fail:
                raise ConnectionError("journal database unavailable")
            return super().append(command)

    journal = Down()
    ex = funded(journal)
    ex.follow("d", "a")
    ex.place("c", X, "SELL", 50, 100)
    before = ex.state()
    journal.fail = True
    for command in (lambda: ex.place("a", X, "BUY", 10, 100), lambda: ex.deposit("a", CASH, 5),
                    lambda: ex.open_account("t1", "e"), lambda: ex.follow("b", "a"), lambda: ex.cancel("c", 1)):
        with pytest.raises(JournalUnavailable) as refused:
            command()
        assert (refused.value.status, refused.value.kind) == (503, "journal-unavailable")
        assert ex.state() == before and "e" not in ex.accounts and "b" not in ex.follows["a"]
    with pytest.raises(JournalUnavailable):
        with ex.batch():
            ex.place("a", X, "BUY", 10, 100)
    assert ex.state() == before
    conserved(ex)
    journal.fail = False
    ex.place("a", X, "BUY", 10, 100)
    assert Exchange.restore([X], journal).state() == ex.state()


def lose_replies(monkeypatch, journal, commit: bool, read: bool = True, times: int = 1):
    """The journal's next ``times`` writes fail as a dropped connection does: after committing (the reply is
    lost) or before; ``read=False``: the journal cannot be read after them either."""
    import contextlib

    import sqlalchemy as sa

    engine, begin, connect = journal._engine, journal._engine.begin, journal._engine.connect
    left, writing = [times], [False]

    @contextlib.contextmanager
    def written():
        writing[0] = True
        try:
            with begin() as conn:
                writing[0] = False
                yield conn
        finally:
            writing[0] = False

    @contextlib.contextmanager
    def dropped():
        if left[0] <= 0:
            with written() as conn:
                yield conn
            return
        left[0] -= 1
        with written() as conn:
            yield conn
            if not commit:
                conn.rollback()
        raise sa.exc.OperationalError("COMMIT", {}, OSError("server closed the connection unexpectedly"))

    def unreadable():
        if left[0] < times and not read and not writing[0]:
            raise sa.exc.OperationalError("SELECT", {}, OSError("could not connect to server"))
        return connect()

    monkeypatch.setattr(engine, "begin", dropped)
    monkeypatch.setattr(engine, "connect", unreadable)


def test_a_journal_write_whose_reply_is_lost_but_committed_stays_applied(tmp_path, monkeypatch):
    """Postgres committed, the connection dropped before the answer: the journal is read again, finds the
    command written, and the exchange keeps it applied and answers it (it answered 503 'nothing applied', fenced
    itself on the client's retry, and a restart then applied the command the client was told never happened)."""
    assert_a_lost_reply_of_a_write_is_checked(f"sqlite:///{tmp_path / 'journal.db'}", monkeypatch)


@pytest.mark.slow
def test_a_journal_write_whose_reply_is_lost_but_committed_stays_applied_postgres(monkeypatch):
    from tests.integration.servers import PG_DSN, postgres_database

    with postgres_database() as db:
        assert_a_lost_reply_of_a_write_is_checked(PG_DSN.format(db=db), monkeypatch)


def assert_a_lost_reply_of_a_write_is_checked(url, monkeypatch):
    from services.trading.exchange import JournalUnavailable

    ex = funded(SqlJournal(url))
    lose_replies(monkeypatch, ex.journal, commit=True)
    ex.deposit("a", CASH, 500)  # answered, not 503
    assert ex.accounts["a"].balance(CASH).free == 1_000_500 and ex.journaled == len(SqlJournal(url).load())
    lose_replies(monkeypatch, ex.journal, commit=True)
    with ex.batch():  # a batch too
        ex.deposit("a", CASH, 1)
        ex.place("a", X, "BUY", 2, 100)
    ex.place("b", X, "SELL", 1, 100)  # not fenced: the next write follows it
    assert Exchange.restore([X], SqlJournal(url)).state() == ex.state()
    # not committed: undone, 503, and the retry is taken (nothing of it is in the journal)
    lose_replies(monkeypatch, ex.journal, commit=False)
    before = ex.state()
    with pytest.raises(JournalUnavailable):
        ex.deposit("a", CASH, 7)
    assert ex.state() == before
    ex.deposit("a", CASH, 7)
    assert Exchange.restore([X], SqlJournal(url)).state() == ex.state()
    conserved(ex)
    ex.journal.close()


def test_a_lost_reply_that_cannot_be_checked_is_resolved_by_the_next_write(tmp_path, monkeypatch):
    """Neither the reply nor the read after it came back: the command is undone (503); the next write finds it
    written after all and the exchange stops (its state lacks a journalled command; a restart applies it) rather
    than calling it another writer's or writing past it."""
    from services.trading.exchange import JournalConflict, JournalUnavailable

    url = f"sqlite:///{tmp_path / 'journal.db'}"
    ex = funded(SqlJournal(url))
    lose_replies(monkeypatch, ex.journal, commit=True, read=False)
    with pytest.raises(JournalUnavailable):
        ex.deposit("a", CASH, 500)
    monkeypatch.undo()
    with pytest.raises(JournalConflict, match="answered as not written"):
        ex.deposit("a", CASH, 500)
    assert Exchange.restore([X], SqlJournal(url)).accounts["a"].balance(CASH).free == 1_000_500
    # the same, not committed: the next write goes in where it would have
    lose_replies(monkeypatch, ex.journal, commit=False, read=False)
    ex = Exchange.restore([X], SqlJournal(url))
    lose_replies(monkeypatch, ex.journal, commit=False, read=False)
    with pytest.raises(JournalUnavailable):
        ex.deposit("a", CASH, 1)
    monkeypatch.undo()
    ex.deposit("a", CASH, 2)
    assert Exchange.restore([X], SqlJournal(url)).state() == ex.state()


@pytest.mark.parametrize("rebase", [3, 1000])
def test_undone_commands_leave_the_state_a_restart_reaches(rebase):
    """Every kind of command, undone by a journal outage, leaves the live state as before it, its reserves too
    (an undone place left its order's reserve behind, under the id the next order then got), and equal to what
    the journal replays to."""
    from services.trading.exchange import JournalUnavailable

    class Down(MemoryJournal):
        fail = False

        def append(self, command):
            if self.fail:
                raise ConnectionError("journal database unavailable")
            return super().append(command)

    journal = Down()
    clock = iter(range(1, 10**9))
    ex = Exchange([X], journal=journal, clock=lambda: next(clock), rebase_commands=rebase)
    for name in "abcd":
        ex.open_account("t", name)
        ex.deposit(name, CASH, 1_000_000)
        ex.deposit(name, X, 1_000)
    ex.follow("d", "a", multiplier=1.0, max_exposure=10**6)

    def newest(account):
        return max((o.order_id for o in ex.engine.orders.values() if o.account == account and o.open_qty),
                   default=10**6)

    commands = [
        lambda: ex.place("a", X, "BUY", 5, 100),  # rests: a reserve
        lambda: ex.place("b", X, "SELL", 3, 101),  # rests: locked lots
        lambda: ex.place("c", X, "SELL", 2, 100, "IOC"),  # trades with a's buy
        lambda: ex.place("c", X, "BUY", 4, None, "IOC"),  # market: takes b's ask
        lambda: ex.place("a", X, "BUY", 9, 102),  # takes b's ask, copied by d
        lambda: ex.amend("a", newest("a"), quantity=8, price=99),
        lambda: ex.amend("b", newest("b"), quantity=6),
        lambda: ex.place("b", X, "SELL", 5, 99),  # takes a's amended buy
        lambda: ex.cancel("a", newest("a")),
        lambda: ex.cancel("b", newest("b")),
        lambda: ex.follow("c", "b", multiplier=2.0, max_exposure=10**5),
        lambda: ex.unfollow("d", "a"),
        lambda: ex.withdraw("c", CASH, 10),
    ]
    undone = 0
    for step in range(3):
        for command in commands:
            before, reserves = ex.state(), (dict(ex.reserved), dict(ex.sell_locked))
            journal.fail = True
            try:
                command()
            except JournalUnavailable:
                undone += 1
            except ExchangeError:
                pass  # refused before it was applied (an order no longer open)
            finally:
                journal.fail = False
            assert ex.state() == before and (ex.reserved, ex.sell_locked) == reserves
            try:  # and then applied, so the next one is undone on top of it
                command()
            except ExchangeError:
                pass  # refused by the state (an order closed by an earlier step)
            assert Exchange.restore([X], journal, rebase_commands=rebase).state() == ex.state()
    assert undone >= 30
    conserved(ex)
