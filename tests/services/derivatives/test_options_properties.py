"""No-arbitrage properties of the option pricers, checked with hypothesis, plus input validation."""

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.derivatives.options import (
    OptionType,
    black76_greeks,
    black76_implied_volatility,
    black76_price,
    bsm_greeks,
    bsm_price,
    crr_price,
    implied_volatility,
)

spots = st.floats(10.0, 500.0)
moneyness = st.floats(0.5, 2.0)
rates = st.floats(-0.02, 0.10)
yields = st.floats(0.0, 0.08)
vols = st.floats(0.05, 1.0)
times = st.floats(0.02, 3.0)
kinds = st.sampled_from(["call", "put"])


@given(spots, moneyness, rates, yields, vols, times)
def test_bsm_put_call_parity(spot, m, r, q, vol, t):
    k = spot * m
    c, p = bsm_price("call", spot, k, r, vol, t, q), bsm_price("put", spot, k, r, vol, t, q)
    assert c - p == pytest.approx(spot * math.exp(-q * t) - k * math.exp(-r * t), abs=1e-10 * spot)


@given(spots, moneyness, rates, vols, times)
def test_black76_put_call_parity(f, m, r, vol, t):
    k = f * m
    c, p = black76_price("call", f, k, r, vol, t), black76_price("put", f, k, r, vol, t)
    assert c - p == pytest.approx(math.exp(-r * t) * (f - k), abs=1e-10 * f)


@given(spots, moneyness, rates, yields, vols, times)
def test_bsm_price_bounds(spot, m, r, q, vol, t):
    k = spot * m
    fwd_spot, pv_k = spot * math.exp(-q * t), k * math.exp(-r * t)
    eps = 1e-10 * spot
    c, p = bsm_price("call", spot, k, r, vol, t, q), bsm_price("put", spot, k, r, vol, t, q)
    assert max(fwd_spot - pv_k, 0.0) - eps <= c <= fwd_spot + eps
    assert max(pv_k - fwd_spot, 0.0) - eps <= p <= pv_k + eps


@given(spots, moneyness, rates, yields, vols, times, st.floats(0.01, 0.5))
def test_monotonic_in_spot_strike_and_vol(spot, m, r, q, vol, t, bump):
    k, eps = spot * m, 1e-10 * spot
    call = lambda s=spot, k=k, v=vol: bsm_price("call", s, k, r, v, t, q)
    put = lambda s=spot, k=k, v=vol: bsm_price("put", s, k, r, v, t, q)
    up = 1.0 + bump
    assert call(s=spot * up) >= call() - eps and put(s=spot * up) <= put() + eps
    assert call(k=k * up) <= call() + eps and put(k=k * up) >= put() - eps
    assert call(v=vol * up) >= call() - eps and put(v=vol * up) >= put() - eps
    # Greeks agree in sign with the monotonicity: a wrong sign flips these.
    gc, gp = bsm_greeks("call", spot, k, r, vol, t, q), bsm_greeks("put", spot, k, r, vol, t, q)
    assert gc.delta >= 0 >= gp.delta and gc.gamma >= 0 and gc.vega >= 0
    assert gc.delta - gp.delta == pytest.approx(math.exp(-q * t), rel=1e-9)  # parity, differentiated


@given(spots, moneyness, rates, yields, vols, times, kinds)
def test_greeks_match_finite_differences(spot, m, r, q, vol, t, kind):
    k = spot * m
    g = bsm_greeks(kind, spot, k, r, vol, t, q)
    price = lambda s=spot, v=vol, rr=r, tt=t: bsm_price(kind, s, k, rr, v, tt, q)
    h = 1e-4
    assume(price() > 1e-6 * spot)
    fd_delta = (price(s=spot * (1 + h)) - price(s=spot * (1 - h))) / (2 * spot * h)
    fd_vega = (price(v=vol + h) - price(v=vol - h)) / (2 * h)
    fd_rho = (price(rr=r + h) - price(rr=r - h)) / (2 * h)
    fd_theta = -(price(tt=t + h * t) - price(tt=t - h * t)) / (2 * h * t)
    tol = 1e-5 * spot
    assert g.delta == pytest.approx(fd_delta, abs=1e-5)
    assert g.vega == pytest.approx(fd_vega, abs=tol)
    assert g.rho == pytest.approx(fd_rho, abs=tol * max(t, 1))
    assert g.theta == pytest.approx(fd_theta, abs=tol * max(1 / t, 1))


@given(spots, moneyness, rates, vols, times, kinds)
def test_black76_equals_bsm_with_yield_equal_rate(f, m, r, vol, t, kind):
    k = f * m
    assert black76_price(kind, f, k, r, vol, t) == pytest.approx(bsm_price(kind, f, k, r, vol, t, r), abs=1e-10 * f)
    g76, g = black76_greeks(kind, f, k, r, vol, t), bsm_greeks(kind, f, k, r, vol, t, r)
    assert g76.delta == pytest.approx(g.delta, abs=1e-10)
    assert g76.rho == pytest.approx(-t * black76_price(kind, f, k, r, vol, t), abs=1e-10 * f)


@settings(max_examples=40, deadline=None)
@given(spots, moneyness, rates, yields, st.floats(0.1, 0.8), st.floats(0.1, 2.0), kinds)
def test_american_at_least_european_and_intrinsic(spot, m, r, q, vol, t, kind):
    k, steps = spot * m, 150
    assume(abs(r - q) * math.sqrt(t / steps) < vol)  # keeps the tree's probability inside (0, 1)
    american = crr_price(kind, spot, k, r, vol, t, q, steps=steps)
    european_tree = crr_price(kind, spot, k, r, vol, t, q, steps=steps, american=False)
    intrinsic = max(spot - k, 0.0) if kind == "call" else max(k - spot, 0.0)
    assert american >= european_tree - 1e-12 * spot
    assert american >= intrinsic - 1e-12 * spot
    assert european_tree == pytest.approx(bsm_price(kind, spot, k, r, vol, t, q), abs=0.01 * spot)


def test_american_call_without_dividends_is_european_and_put_is_worth_more():
    eu_tree = crr_price("call", 100, 100, 0.05, 0.25, 1.0, steps=400, american=False)
    assert crr_price("call", 100, 100, 0.05, 0.25, 1.0, steps=400) == pytest.approx(eu_tree, abs=1e-12)
    put_premium = crr_price("put", 100, 100, 0.05, 0.25, 1.0, steps=400) - crr_price(
        "put", 100, 100, 0.05, 0.25, 1.0, steps=400, american=False)
    assert put_premium > 0.1  # early exercise of a put with positive rates is worth something
    # with a dividend yield, early exercise of a call is valuable too
    assert crr_price("call", 100, 90, 0.02, 0.2, 1.0, 0.08, steps=400) > crr_price(
        "call", 100, 90, 0.02, 0.2, 1.0, 0.08, steps=400, american=False) + 0.05


@given(spots, moneyness, rates, yields, vols, times, kinds)
def test_implied_vol_round_trip(spot, m, r, q, vol, t, kind):
    k = spot * m
    price = bsm_price(kind, spot, k, r, vol, t, q)
    fwd_spot, pv_k = spot * math.exp(-q * t), k * math.exp(-r * t)
    lower = max(fwd_spot - pv_k, 0.0) if kind == "call" else max(pv_k - fwd_spot, 0.0)
    assume(price - lower > 1e-9 * spot)  # otherwise the price carries no information about vol
    iv = implied_volatility(price, kind, spot, k, r, t, q)
    assert bsm_price(kind, spot, k, r, iv, t, q) == pytest.approx(price, abs=1e-11 * spot)
    vega = bsm_greeks(kind, spot, k, r, vol, t, q).vega
    if vega > 1e-3 * spot:
        assert iv == pytest.approx(vol, abs=1e-7)


@given(spots, moneyness, rates, vols, times, kinds)
def test_black76_implied_vol_round_trip(f, m, r, vol, t, kind):
    k = f * m
    price = black76_price(kind, f, k, r, vol, t)
    lower = math.exp(-r * t) * max(f - k if kind == "call" else k - f, 0.0)
    assume(price - lower > 1e-9 * f)
    iv = black76_implied_volatility(price, kind, f, k, r, t)
    assert black76_price(kind, f, k, r, iv, t) == pytest.approx(price, abs=1e-11 * f)
    if black76_greeks(kind, f, k, r, vol, t).vega > 1e-3 * f:
        assert iv == pytest.approx(vol, abs=1e-7)


@pytest.mark.parametrize(
    "price,kind,reason",
    [
        (4.0, "call", "bounds"),  # below intrinsic S e^-qT - K e^-rT ~ 14.9
        (100.5, "call", "bounds"),  # above the spot itself
        (0.0, "put", "bounds"),
        (-1.0, "put", "bounds"),
        (95.0, "put", "bounds"),  # above K e^-rT ~ 85.6
        (float("nan"), "call", "finite"),
    ],
)
def test_implied_vol_rejects_arbitrage_prices(price, kind, reason):
    with pytest.raises(ValueError, match=reason):
        implied_volatility(price, kind, 100.0, 90.0, 0.05, 1.0)


def test_implied_vol_extreme_but_valid_prices():
    # deep OTM (price ~ 1e-6) and near-upper-bound prices still invert
    for vol in (0.05, 3.0):
        p = bsm_price("call", 100, 160, 0.01, vol, 0.25)
        assert implied_volatility(p, "call", 100, 160, 0.01, 0.25) == pytest.approx(vol, rel=1e-6)


@pytest.mark.parametrize(
    "args,match",
    [
        (("call", -1, 100, 0.05, 0.2, 1.0), "spot"),
        (("call", 100, 0, 0.05, 0.2, 1.0), "strike"),
        (("call", 100, 100, 0.05, 0.0, 1.0), "vol"),
        (("call", 100, 100, 0.05, 0.2, -0.5), "time"),
        (("call", 100, 100, float("inf"), 0.2, 1.0), "rate"),
        (("straddle", 100, 100, 0.05, 0.2, 1.0), "option_type"),
    ],
)
def test_invalid_inputs_raise_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        bsm_price(*args)
    with pytest.raises(ValueError, match=match.replace("spot", "forward")):
        black76_price(*args)


def test_crr_validation():
    with pytest.raises(ValueError, match="steps"):
        crr_price("put", 100, 100, 0.05, 0.2, 1.0, steps=0)
    with pytest.raises(ValueError, match="probability"):
        crr_price("put", 100, 100, 0.5, 0.01, 1.0, steps=2)  # carry far above vol: p > 1
    assert OptionType.parse("CALL") is OptionType.CALL
