"""Structured products: price = sum of legs, par solving, sensitivities that follow from the legs."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.derivatives.options import bsm_price
from services.derivatives.structured import (
    price_principal_protected_note,
    price_reverse_convertible,
    solve_ppn_participation,
    solve_reverse_convertible_coupon,
)

N, S = 1_000.0, 50.0


def test_ppn_legs_and_known_values():
    note = price_principal_protected_note(N, S, 0.05, 0.2, 3.0, participation=0.8)
    bond, call = note.legs
    assert bond.value == pytest.approx(N * math.exp(-0.15), rel=1e-14)
    assert call.quantity == pytest.approx(0.8 * N / S)
    assert call.unit_price == pytest.approx(bsm_price("call", S, S, 0.05, 0.2, 3.0), rel=1e-14)
    assert note.price == pytest.approx(bond.value + call.value, rel=1e-14)


def test_ppn_participation_closed_form_and_fee():
    p = solve_ppn_participation(N, S, 0.05, 0.2, 3.0)
    expected = (N - N * math.exp(-0.15)) / (N / S * bsm_price("call", S, S, 0.05, 0.2, 3.0))
    assert p == pytest.approx(expected, rel=1e-12)
    with_fee = solve_ppn_participation(N, S, 0.05, 0.2, 3.0, target_price=0.98 * N)
    assert with_fee < p  # the issuer's 2% comes out of the option budget
    partial = solve_ppn_participation(N, S, 0.05, 0.2, 3.0, protection=0.9)
    assert partial > p  # less protection leaves more for upside
    # here a higher rate cheapens the bond faster than it lifts the call (not true of every note:
    # with partial protection or long dated high-rate notes the call's rho can win)
    assert solve_ppn_participation(N, S, 0.06, 0.2, 3.0) > p


def test_ppn_without_budget_raises():
    with pytest.raises(ValueError, match="no option budget"):
        solve_ppn_participation(N, S, -0.01, 0.2, 3.0)
    with pytest.raises(ValueError, match="protection"):
        price_principal_protected_note(N, S, 0.05, 0.2, 3.0, participation=1.0, protection=1.5)


ppn_inputs = st.tuples(
    st.floats(100.0, 1e6), st.floats(1.0, 1_000.0), st.floats(0.001, 0.12), st.floats(0.05, 0.8),
    st.floats(0.25, 10.0), st.floats(0.0, 0.06), st.floats(0.7, 1.0),
)


@given(ppn_inputs)
def test_ppn_at_par_with_solved_participation(inputs):
    notional, spot, r, vol, t, q, protection = inputs
    p = solve_ppn_participation(notional, spot, r, vol, t, q, protection)
    note = price_principal_protected_note(notional, spot, r, vol, t, p, q, protection)
    assert p > 0
    assert note.price == pytest.approx(notional, rel=1e-12)
    assert note.price_pct == pytest.approx(1.0, rel=1e-12)
    assert note.price == pytest.approx(sum(leg.value for leg in note.legs), rel=1e-12)
    for leg in note.legs:
        assert leg.value == pytest.approx(leg.quantity * leg.unit_price, rel=1e-12)
    # higher vol makes the call dearer (the bond is unchanged), so the holder participates less;
    # a higher dividend yield makes it cheaper, so more
    assert solve_ppn_participation(notional, spot, r, vol + 0.05, t, q, protection) < p
    assert solve_ppn_participation(notional, spot, r, vol, t, q + 0.01, protection) > p


def test_reverse_convertible_legs():
    note = price_reverse_convertible(N, S, 0.04, 0.3, 1.0, coupon_rate=0.10, strike_pct=0.9)
    principal, coupon, put = note.legs
    assert principal.value == pytest.approx(N * math.exp(-0.04))
    assert coupon.value == pytest.approx(100.0 * math.exp(-0.04))
    assert put.quantity == pytest.approx(-N / 45.0) and put.value < 0
    assert put.unit_price == pytest.approx(bsm_price("put", S, 45.0, 0.04, 0.3, 1.0))
    assert note.price == pytest.approx(principal.value + coupon.value + put.value, rel=1e-14)


rc_inputs = st.tuples(
    st.floats(100.0, 1e6), st.floats(1.0, 1_000.0), st.floats(0.0, 0.1), st.floats(0.05, 0.8),
    st.floats(0.25, 5.0), st.floats(0.0, 0.05), st.floats(0.6, 1.2),
)


@given(rc_inputs)
def test_reverse_convertible_par_coupon_and_vol_sensitivity(inputs):
    notional, spot, r, vol, t, q, k = inputs
    c = solve_reverse_convertible_coupon(notional, spot, r, vol, t, q, k)
    note = price_reverse_convertible(notional, spot, r, vol, t, c, q, k)
    assert note.price == pytest.approx(notional, rel=1e-10)
    assert note.price == pytest.approx(sum(leg.value for leg in note.legs), rel=1e-12)
    # the holder is short the put: more vol lowers the note and raises the fair coupon
    # (strictly, unless the put is so far out of the money that it is worth nothing either way)
    bumped = price_reverse_convertible(notional, spot, r, vol + 0.05, t, c, q, k).price
    bumped_coupon = solve_reverse_convertible_coupon(notional, spot, r, vol + 0.05, t, q, k)
    if -note.legs[2].value > 1e-6 * notional:
        assert bumped < note.price and bumped_coupon > c
    else:
        assert bumped <= note.price * (1 + 1e-12) and bumped_coupon >= c - 1e-12
    # and the coupon pays at least the risk-free rate (the put premium is positive)
    assert c * t >= math.expm1(r * t) - 1e-12


def test_reverse_convertible_validation():
    with pytest.raises(ValueError, match="coupon_rate"):
        price_reverse_convertible(N, S, 0.04, 0.3, 1.0, coupon_rate=-0.1)
    with pytest.raises(ValueError, match="time"):
        price_reverse_convertible(N, S, 0.04, 0.3, 0.0, coupon_rate=0.1)
