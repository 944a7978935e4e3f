"""Compute futures: contract spec, variation margin, margin calls, final settlement."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.derivatives.futures import FuturesClearingHouse, FuturesContract, gpu_hour_future

EXPIRY = date(2024, 3, 29)
D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 4), date(2024, 3, 5)


def house(initial=5_000, maintenance=4_000, band=None, reference=None, **accounts):
    listing = {k: v for k, v in (("price_band_pct", band), ("reference_price", reference)) if v is not None}
    ch = FuturesClearingHouse(gpu_hour_future("GPUH24", EXPIRY, initial_margin_cents=initial,
                                              maintenance_margin_cents=maintenance, **listing))
    for name, cash in accounts.items():
        ch.open_account(name, cash)
    return ch


def test_contract_spec_tick_value_and_price_grid():
    c = gpu_hour_future("GPUH24", EXPIRY)  # 100 GPU-hours, $0.01 ticks
    assert c.tick_value_cents == 100  # $0.01 * 100 GPU-hours = $1
    assert c.price_to_ticks("2.50") == 250 and c.ticks_to_price(250) == Decimal("2.50")
    assert c.notional_cents(250, contracts=-3) == 75_000  # 3 * $250
    with pytest.raises(ValueError, match="multiple of tick"):
        c.price_to_ticks("2.505")
    with pytest.raises(TypeError, match="float"):
        c.price_to_ticks(2.5)
    with pytest.raises(ValueError, match="positive"):
        c.price_to_ticks("0")
    # settlement prices round half-even to the tick
    assert c.round_to_ticks("2.505") == 250 and c.round_to_ticks("2.515") == 252
    assert c.round_to_ticks("2.5051") == 251


def test_contract_rejects_fractional_tick_value_and_inverted_margins():
    with pytest.raises(ValueError, match="not whole"):
        FuturesContract("X", 1, Decimal("0.001"), EXPIRY, 100, 50)  # a tenth of a cent per tick
    with pytest.raises(ValueError, match="maintenance margin"):
        FuturesContract("X", 100, Decimal("0.01"), EXPIRY, 100, 200)


def test_variation_margin_marks_trades_from_trade_price_and_carried_positions_from_settlement():
    ch = house(alice=50_000, bob=50_000, carol=50_000)
    ch.trade("alice", "bob", 2, "2.50")
    s1 = ch.mark_to_market(D1, "2.60")
    assert s1.variation_margin == {"alice": 2_000, "bob": -2_000, "carol": 0}  # 2 * 10 ticks * $1
    ch.trade("carol", "alice", 1, "2.70")  # alice closes one at 2.70
    s2 = ch.mark_to_market(D2, "2.55")
    # alice: carried 2 from 2.60 and sold 1 at 2.70 -> 1*(255-260) ... = 2*(255-260) + 1*(270-255) = 5 ticks
    assert s2.variation_margin == {"alice": 500, "bob": 1_000, "carol": -1_500}
    assert ch.equity_cents("alice") == 52_500 and ch.position("alice") == 1
    assert ch.open_interest() == (2, 2)


def test_margin_call_exactly_when_equity_below_maintenance_and_amount_restores_initial():
    ch = house(long=5_000, short=100_000)
    ch.trade("long", "short", 1, "2.50")
    at_maintenance = ch.mark_to_market(D1, "2.40")  # -10 ticks = -$10: equity 4000 == maintenance
    assert ch.equity_cents("long") == 4_000 and at_maintenance.margin_calls == ()
    below = ch.mark_to_market(D2, "2.39")  # equity 3900 < 4000
    (call,) = below.margin_calls
    assert (call.account, call.amount_cents, call.equity_cents) == ("long", 1_100, 3_900)
    assert call.equity_cents + call.amount_cents == ch.initial_requirement_cents("long")
    assert ch.outstanding_margin_call_cents("long") == 1_100
    ch.deposit("long", 600)
    assert ch.outstanding_margin_call_cents("long") == 500
    recovered = ch.mark_to_market(D3, "2.50")  # the market came back: the call lapses
    assert recovered.margin_calls == () and ch.outstanding_margin_call_cents("long") == 0


def test_initial_margin_gates_risk_increasing_trades_only():
    ch = house(a=5_000, b=5_000)
    ch.trade("a", "b", 1, "2.50")
    with pytest.raises(ValueError, match="initial margin"):
        ch.trade("a", "b", 1, "2.50")  # would need 10_000
    ch.trade("b", "a", 1, "2.50")  # closing needs no margin
    assert ch.open_interest() == (0, 0)
    assert ch.withdraw("a", 5_000) == 0  # flat again: everything is excess


def test_withdraw_limited_to_excess():
    ch = house(a=6_000, b=5_000)
    ch.trade("a", "b", 1, "2.50")
    assert ch.withdraw("a", 1_000) == 5_000
    with pytest.raises(ValueError, match="exceeds excess"):
        ch.withdraw("a", 1)


def test_trade_validation():
    ch = house(a=10_000, b=10_000)
    with pytest.raises(ValueError, match="differ"):
        ch.trade("a", "a", 1, "2.50")
    with pytest.raises(ValueError, match="contracts"):
        ch.trade("a", "b", 0, "2.50")
    with pytest.raises(ValueError, match="unknown account"):
        ch.trade("a", "zed", 1, "2.50")
    ch.mark_to_market(D2, "2.50")
    with pytest.raises(ValueError, match="not after"):
        ch.mark_to_market(D1, "2.50")
    with pytest.raises(ValueError, match="after expiry"):
        ch.mark_to_market(EXPIRY + timedelta(days=1), "2.50")
    with pytest.raises(ValueError, match="before expiry"):
        ch.final_settlement("2.50", day=D3)


def test_final_settlement_cash_settles_and_closes_positions():
    ch = house(a=20_000, b=20_000)
    ch.trade("a", "b", 3, "2.50")
    ch.mark_to_market(D1, "2.45")
    final = ch.final_settlement("3.004")  # rounds to 3.00
    assert final.day == EXPIRY and final.final_price_ticks == 300
    assert final.variation_margin == {"a": 3 * 55 * 100, "b": -3 * 55 * 100}
    assert final.closed_positions == {"a": 3, "b": -3}
    assert final.balances == {"a": 20_000 + 3 * 50 * 100, "b": 20_000 - 3 * 50 * 100}
    assert ch.open_interest() == (0, 0) and ch.position("a") == 0
    assert ch.withdraw("a", final.balances["a"]) == 0  # nothing is held back after expiry
    with pytest.raises(ValueError, match="expired"):
        ch.trade("a", "b", 1, "3.00")
    with pytest.raises(ValueError, match="already been finally settled"):
        ch.mark_to_market(EXPIRY, "3.00")


def test_final_settlement_replaces_the_mark_to_market_of_the_expiry_day():
    """The final settlement is the expiry day's settlement: after that day's mark it pays only the rest,
    so the day's variation margin adds up to one settlement at the final price."""
    marked, direct = house(band=20, a=50_000, b=50_000), house(band=20, a=50_000, b=50_000)
    for ch in (marked, direct):
        ch.trade("a", "b", 3, "2.50")
        ch.mark_to_market(D1, "2.45")
    marked.mark_to_market(EXPIRY, "2.80")
    for ch in (marked, direct):
        ch.trade("a", "b", 1, "2.90")  # after the expiry day's mark
    final = marked.final_settlement("3.00")  # default day: the expiry
    assert final.day == EXPIRY and final.closed_positions == {"a": 4, "b": -4}
    assert final.variation_margin == {"a": (3 * 20 + 1 * 10) * 100, "b": -(3 * 20 + 1 * 10) * 100}
    assert final.balances == direct.final_settlement("3.00").balances
    assert final.balances == {"a": 50_000 + (3 * 50 + 1 * 10) * 100, "b": 50_000 - (3 * 50 + 1 * 10) * 100}
    assert sum(final.balances.values()) == 100_000
    with pytest.raises(ValueError, match="already been finally settled"):
        marked.final_settlement("3.00")


def test_open_account_refuses_a_bad_deposit_without_creating_the_account():
    ch = house()
    with pytest.raises(ValueError, match="deposit must be >= 0"):
        ch.open_account("a", -5)
    with pytest.raises(TypeError, match="deposit must be an integer"):
        ch.open_account("a", 1.5)
    assert ch.accounts == {}
    assert ch.open_account("a", 100).balance_cents == 100


ACCOUNTS = ["a", "b", "c", "d"]
trade_st = st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.integers(1, 20), st.integers(100, 900))
day_st = st.tuples(st.lists(trade_st, max_size=6), st.integers(100, 900))


def pending_cents(name, day_fills, carried, last_settle, last_price):
    """Variation margin the next settlement would pay ``name`` for its carried position and the day's fills, at
    the lower of the last settlement price and the latest trade price (an oracle without the house's state)."""
    def at(mark):
        ticks = carried[name] * (mark - (last_settle or 0))
        for buyer, seller, qty, price in day_fills:
            ticks += qty * (mark - price) * ((name == buyer) - (name == seller))
        return ticks * 100
    return min(at(m) for m in {last_settle, last_price} - {None})


@settings(max_examples=60, deadline=None)
@given(st.lists(day_st, min_size=1, max_size=12), st.integers(1, 2_000))
def test_conservation_open_interest_margin_calls_and_final_pnl(days, final_ticks):
    """Random trading over several days, then expiry.

    Oracle for the P&L: each account's total cash change must equal
    sum(signed_qty * (final - trade_price)) * tick_value over its trades,
    computed here without the daily marks at all.
    """
    ch = house(initial=500, maintenance=300)
    deposits = {name: 10_000_000 for name in ACCOUNTS}
    for name, cash in deposits.items():
        ch.open_account(name, cash)
    expected_pnl_ticks = dict.fromkeys(ACCOUNTS, 0)
    fills = []
    day = date(2024, 3, 1)
    last_settle = None
    carried = dict.fromkeys(ACCOUNTS, 0)
    for trades, settle in days:
        todays = []
        for buyer, seller, qty, price in trades:
            if buyer == seller:
                continue
            try:
                ch.trade(buyer, seller, qty, price * Decimal("0.01"))
            except ValueError as exc:  # out of the band, or a big loser may no longer afford more risk
                if "price band" in str(exc):
                    assert last_settle is not None and abs(price - last_settle) * 10 > last_settle
                    continue
                assert "initial margin" in str(exc)
                # the refusal is right: equity after the trade (cash + pending variation margin at the lower of
                # the last settlement and this trade's price, recomputed from today's fills) is short of margin
                day_fills = todays + [(buyer, seller, qty, price)]
                assert any(
                    abs(ch.position(n) + sign * qty) > abs(ch.position(n))
                    and ch.accounts[n].balance_cents + pending_cents(n, day_fills, carried, last_settle, price)
                    < abs(ch.position(n) + sign * qty) * 500
                    for n, sign in ((buyer, 1), (seller, -1))
                )
                continue
            fills.append((buyer, seller, qty, price))
            todays.append((buyer, seller, qty, price))
        result = ch.mark_to_market(day, settle * Decimal("0.01"))
        last_settle, carried = settle, {n: ch.position(n) for n in ACCOUNTS}
        assert sum(result.variation_margin.values()) == 0
        longs, shorts = ch.open_interest()
        assert longs == shorts
        called = {c.account for c in result.margin_calls}
        for name in ACCOUNTS:
            below = ch.equity_cents(name) < ch.maintenance_requirement_cents(name)
            assert (name in called) == below
        assert sum(ch.equity_cents(n) for n in ACCOUNTS) == sum(deposits.values())
        day += timedelta(days=1)
    final = ch.final_settlement(final_ticks * Decimal("0.01"))
    for buyer, seller, qty, price in fills:
        expected_pnl_ticks[buyer] += qty * (final_ticks - price)
        expected_pnl_ticks[seller] -= qty * (final_ticks - price)
    for name in ACCOUNTS:
        assert final.balances[name] - deposits[name] == expected_pnl_ticks[name] * ch.contract.tick_value_cents
        assert ch.position(name) == 0
    assert ch.open_interest() == (0, 0)
    assert sum(final.variation_margin.values()) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10), st.integers(0, 30_000), st.lists(st.integers(150, 350), min_size=1, max_size=8))
def test_margin_call_iff_below_maintenance_with_thin_accounts(qty, extra, settles):
    """Accounts funded close to the requirement, so calls actually happen."""
    ch = house(long=qty * 5_000 + extra, short=qty * 5_000 + extra)
    ch.trade("long", "short", qty, "2.50")
    day = date(2024, 3, 1)
    for settle in settles:
        result = ch.mark_to_market(day, settle * Decimal("0.01"))
        calls = {c.account: c for c in result.margin_calls}
        for name in ("long", "short"):
            equity, maint = ch.equity_cents(name), qty * 4_000
            assert (name in calls) == (equity < maint)
            if name in calls:
                assert calls[name].amount_cents == qty * 5_000 - equity > 0
        day += timedelta(days=1)


# ---------------------------------------------------------------- review findings: pending variation margin,
# price band, trading ends at expiry


def test_withdrawal_counts_the_loss_of_a_position_closed_since_the_last_settlement():
    ch = house(a=50_000, b=1_000_000, c=1_000_000)
    ch.trade("a", "b", 10, "2.00")
    ch.mark_to_market(D1, "2.00")
    ch.trade("c", "a", 10, "1.80")  # a closes at a loss of 20 ticks * 10 contracts * $1 = 20,000 cents, unpaid
    with pytest.raises(ValueError, match="exceeds excess margin 30000"):
        ch.withdraw("a", 50_000)  # the whole balance would leave before the loss is paid
    assert ch.position("a") == 0 and ch.pending_variation_margin_cents("a") == -20_000
    assert ch.equity_cents("a") == 30_000 and ch.excess_cents("a") == 30_000
    assert ch.withdraw("a", 30_000) == 20_000
    settled = ch.mark_to_market(D2, "1.80")
    assert settled.variation_margin["a"] == -20_000 and ch.accounts["a"].balance_cents == 0  # never negative


def test_withdrawal_counts_the_unsettled_loss_of_an_open_position_at_the_latest_trade():
    ch = house(a=60_000, b=1_000_000, c=1_000_000, d=1_000_000)
    ch.trade("a", "b", 10, "2.00")  # before the first settlement: marked at the trade price
    assert ch.excess_cents("a") == 10_000
    ch.trade("c", "d", 1, "1.90")  # the market moved: a's long is 10 ticks * 10 contracts down
    assert ch.pending_variation_margin_cents("a") == -10_000 and ch.excess_cents("a") == 0
    with pytest.raises(ValueError, match="exceeds excess"):
        ch.withdraw("a", 1)


def test_an_unsettled_gain_counts_for_margin_but_cannot_be_withdrawn_before_it_is_paid():
    ch = house(a=50_000, b=1_000_000, c=1_000_000)
    ch.trade("b", "a", 10, "2.00")  # a short 10
    ch.mark_to_market(D1, "2.00")
    ch.trade("a", "c", 10, "1.80")  # a buys back 20 ticks lower: +20,000, paid at the next settlement
    assert ch.pending_variation_margin_cents("a") == 20_000 and ch.equity_cents("a") == 70_000
    assert ch.excess_cents("a") == 50_000  # the balance, not the gain
    ch.trade("a", "b", 14, "1.80")  # 14 * 5,000 = 70,000 of initial margin: the gain counts
    assert ch.position("a") == 14


def test_trade_margin_check_counts_pending_variation_margin():
    ch = house(a=50_000, b=1_000_000, c=1_000_000)
    ch.trade("a", "b", 10, "2.00")
    ch.mark_to_market(D1, "2.00")
    ch.trade("c", "a", 10, "1.80")  # flat, 20,000 lost and not yet paid: equity 30,000
    with pytest.raises(ValueError, match=r"equity 30000 .*pending variation margin -20000.* < initial margin 35000"):
        ch.trade("a", "b", 7, "1.80")
    ch.trade("a", "b", 6, "1.80")  # 30,000 needed
    # a trade's own price counts at the last settlement price: buying above it is a loss from the start
    ch2 = house(a=50_000, b=1_000_000)
    ch2.trade("a", "b", 1, "2.00")
    ch2.mark_to_market(D1, "2.00")
    with pytest.raises(ValueError, match="initial margin"):
        ch2.trade("a", "b", 9, "2.20")  # 10 * 5,000 needed, 9 * 20 ticks * $1 = 18,000 lost at 2.00
    ch2.trade("a", "b", 9, "2.00")
    assert ch2.position("a") == 10


def test_wash_trade_at_an_absurd_price_is_outside_the_price_band():
    ch = house(reference="2.00", x=20_000, y=20_000)
    assert ch.price_band_ticks() == (180, 220)
    with pytest.raises(ValueError, match=r"outside the price band 1.80..2.20 \(10% around the reference price\)"):
        ch.trade("x", "y", 1, "999999999")
    with pytest.raises(ValueError, match="outside the price band"):
        ch.trade("x", "y", 1, "2.21")
    ch.trade("x", "y", 1, "2.20")
    ch.trade("y", "x", 1, "1.80")
    ch.mark_to_market(D1, "2.50")  # the band follows the last settlement price
    assert ch.price_band_ticks() == (225, 275)
    with pytest.raises(ValueError, match="around the last settlement price"):
        ch.trade("x", "y", 1, "2.20")
    ch.trade("x", "y", 1, "2.75")
    assert all(a.balance_cents >= 0 for a in ch.accounts.values())


def test_price_band_after_the_first_settlement_without_a_reference_and_its_width_is_configurable():
    ch = house(x=1_000_000, y=1_000_000)
    assert ch.price_band_ticks() is None  # no reference price: no band until the first settlement
    ch.trade("x", "y", 1, "2.00")
    ch.mark_to_market(D1, "2.00")
    with pytest.raises(ValueError, match="outside the price band"):
        ch.trade("x", "y", 1, "999999999")
    wide = house(band=50, x=1_000_000, y=1_000_000)
    wide.trade("x", "y", 1, "2.00")
    wide.mark_to_market(D1, "2.00")
    assert wide.price_band_ticks() == (100, 300)
    wide.trade("x", "y", 1, "3.00")
    with pytest.raises(ValueError, match="price_band_pct must be <= 100"):
        gpu_hour_future("X", EXPIRY, price_band_pct=101)
    with pytest.raises(ValueError, match="multiple of tick"):
        gpu_hour_future("X", EXPIRY, reference_price="2.005")


def test_trades_are_refused_after_expiry_even_before_the_final_settlement():
    ch = house(a=100_000, b=100_000)
    ch.trade("a", "b", 1, "2.00", day=EXPIRY)  # the expiry day is the last trading day
    assert ch.trades[-1].day == EXPIRY
    with pytest.raises(ValueError, match="after expiry 2024-03-29 of GPUH24: trading has ended"):
        ch.trade("a", "b", 1, "2.00", day=EXPIRY + timedelta(days=1))
    with pytest.raises(TypeError, match="day must be a date"):
        ch.trade("a", "b", 1, "2.00", day="2024-03-01")
    ch.mark_to_market(D2, "2.00")
    with pytest.raises(ValueError, match="before the last settlement day"):
        ch.trade("a", "b", 1, "2.00", day=D1)
    ch.trade("a", "b", 1, "2.00", day=D2)
    assert ch.position("a") == 2 and len(ch.trades) == 2


def test_another_tenants_trade_never_moves_the_mark_of_an_accounts_margin():
    """Contracts are open to every tenant, each trading between its own accounts (ids `tenant/account`). The
    latest trade price that values unsettled margin was the contract's: tenant B, trading one lot between its
    own accounts at the top of the price band, cut tenant A's equity by 20,000 cents and what A could withdraw,
    at no cost to B. Each tenant's own latest trade marks its accounts."""
    ch = house(**{"tA/a": 150_000 + 50_000, "tA/b": 1_000_000, "tB/p": 1_000_000, "tB/q": 1_000_000})
    ch.trade("tA/b", "tA/a", 10, "2.00")  # tA/a short 10
    ch.mark_to_market(D1, "2.00")
    before = (ch.equity_cents("tA/a"), ch.excess_cents("tA/a"))
    ch.trade("tB/p", "tB/q", 1, "2.20")  # the top of the 10 % band, between B's own accounts
    assert (ch.equity_cents("tA/a"), ch.excess_cents("tA/a")) == before == (200_000, 150_000)
    assert ch.pending_variation_margin_cents("tB/p") == -20 * 100  # B's own accounts are marked at B's trade
    ch.trade("tA/a", "tA/b", 1, "2.10")  # A's own trade moves A's mark: 9 short lots 10 ticks up, one bought back
    assert ch.pending_variation_margin_cents("tA/a") == -10 * 100 * 10
    settled = ch.mark_to_market(D2, "2.10")
    assert sum(settled.variation_margin.values()) == 0 and ch.last_trade_by_book == {}
    # a trade across tenants would value each side at another mark (before any settlement, equity nobody pays)
    with pytest.raises(ValueError, match="different tenants"):
        ch.trade("tA/a", "tB/p", 1, "2.10")


def test_a_house_saved_before_books_is_read_with_the_contracts_latest_trade():
    import pickle

    ch = house(a=200_000, b=1_000_000)
    ch.trade("b", "a", 10, "2.00")
    ch.mark_to_market(D1, "2.00")
    ch.trade("a", "b", 1, "2.10")
    state = dict(ch.__dict__)
    del state["last_trade_by_book"]  # as pickled by the version before books
    state["last_trade_ticks"] = 210
    old = FuturesClearingHouse.__new__(FuturesClearingHouse)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.last_trade_by_book == {}
    assert restored.pending_variation_margin_cents("a") == ch.pending_variation_margin_cents("a")
