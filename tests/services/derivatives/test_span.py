"""SPAN-like scenario margin: scenario set, worst-case loss, offsets, extreme moves."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.derivatives.options import black76_price
from services.derivatives.span import (
    SPAN_SCENARIOS,
    FuturesPosition,
    OptionPosition,
    SpanParameters,
    scenario_loss,
    span_margin,
)

F, R = 100.0, 0.03
PARAMS = SpanParameters(price_scan_range=6.0, volatility_scan_range=0.04)


def test_sixteen_standard_scenarios():
    assert len(SPAN_SCENARIOS) == 16 and [s.number for s in SPAN_SCENARIOS] == list(range(1, 17))
    regular = SPAN_SCENARIOS[:14]
    assert sorted({round(s.price_move * 3) for s in regular}) == [-3, -2, -1, 0, 1, 2, 3]
    assert all(s.vol_move in (1, -1) and s.cover_fraction == 1.0 for s in regular)
    assert {(s.price_move, s.vol_move, s.cover_fraction) for s in SPAN_SCENARIOS[14:]} == {(2.0, 0, 0.35),
                                                                                            (-2.0, 0, 0.35)}
    assert "extreme" in SPAN_SCENARIOS[14].label and "35%" in SPAN_SCENARIOS[14].label


@pytest.mark.parametrize("qty,worst_number", [(3, 13), (-3, 11)])
def test_futures_only_margin_is_full_scan_range(qty, worst_number):
    result = span_margin([FuturesPosition(qty, contract_size=100)], F, R, PARAMS)
    # 3 contracts * 100 units * 6.0 scan range; extreme 2x * 35% = 0.7 < 1 scan range
    assert result.margin == pytest.approx(1_800.0)
    assert result.worst_scenario.number == worst_number  # down (long) / up (short) 3/3, lowest number on ties


def test_scenario_loss_revalues_options_with_black76():
    short_call = OptionPosition(-2, "call", strike=105.0, time=0.25, vol=0.3, contract_size=10)
    sc = SPAN_SCENARIOS[10]  # up 3/3, vol up
    expected = 2 * 10 * (black76_price("call", F + 6.0, 105, R, 0.34, 0.25) - black76_price("call", F, 105, R, 0.3, 0.25))
    assert scenario_loss([short_call], F, R, PARAMS, sc) == pytest.approx(expected, rel=1e-12)
    assert span_margin([short_call], F, R, PARAMS).worst_scenario.number == 11


def test_extreme_move_drives_margin_for_deep_otm_short_option():
    short_wing = OptionPosition(-1, "put", strike=80.0, time=0.1, vol=0.2)
    result = span_margin([short_wing], F, R, PARAMS)
    assert result.worst_scenario.number == 16  # the -2x move, only 35% covered, still beats -3/3
    extreme = 0.35 * (black76_price("put", 88.0, 80, R, 0.2, 0.1) - black76_price("put", F, 80, R, 0.2, 0.1))
    assert result.margin == pytest.approx(extreme, rel=1e-12)


def test_hedges_offset_and_gains_never_give_negative_margin():
    assert span_margin([FuturesPosition(5), FuturesPosition(-5)], F, R, PARAMS).margin == 0.0
    long_call = OptionPosition(1, "call", 100.0, 0.5, 0.25)
    delta_hedge = FuturesPosition(-1)
    alone = span_margin([long_call], F, R, PARAMS).margin + span_margin([delta_hedge], F, R, PARAMS).margin
    together = span_margin([long_call, delta_hedge], F, R, PARAMS).margin
    assert together < alone
    # A delta-neutral long straddle (strike where d1 = 0) is long gamma: with no vol
    # shock every price move is a gain, so the worst "loss" is the zero-move
    # scenario and the margin is zero.
    k = F * math.exp(0.25**2 * 0.5 / 2)
    straddle = [OptionPosition(1, "call", k, 0.5, 0.25), OptionPosition(1, "put", k, 0.5, 0.25)]
    res = span_margin(straddle, F, R, SpanParameters(6.0, 0.0))
    assert res.margin == 0.0 and res.worst_scenario.number == 1
    assert all(loss < 0 for sc, loss in res.scenario_losses if sc.price_move != 0)
    # with a vol shock the long loses when vol falls; the short loses most on a full move with vol up
    res = span_margin(straddle, F, R, PARAMS)
    assert res.margin > 0 and res.worst_scenario.vol_move == -1
    short = span_margin([OptionPosition(-1, p.option_type, k, 0.5, 0.25) for p in straddle], F, R, PARAMS)
    assert short.margin > res.margin
    assert short.worst_scenario.vol_move == 1 and abs(short.worst_scenario.price_move) == 1.0


def test_portfolio_gaining_in_every_scenario_posts_zero_not_negative_margin():
    """Long short-dated gamma, short long-dated ATM vega, long long-dated wings (positive volga):
    sized (by a numeric search) so that all 16 scenarios are gains. The margin must floor at 0."""
    legs = [(124, "call", 100, 0.05), (-76, "put", 100, 0.05), (-295, "call", 100, 1.0), (-78, "put", 100, 1.0),
            (274, "call", 130, 1.0), (274, "put", 75, 1.0)]
    portfolio = [OptionPosition(q, kind, k, t, 0.3) for q, kind, k, t in legs]
    result = span_margin(portfolio, F, R, SpanParameters(3.0, 0.02))
    assert all(loss < 0 for _, loss in result.scenario_losses)
    assert result.worst_loss < 0 and result.scan_risk == 0.0 and result.margin == 0.0


def test_short_option_minimum_floors_margin():
    params = SpanParameters(6.0, 0.04, short_option_minimum=25.0)
    far_wing = OptionPosition(-4, "call", 400.0, 0.05, 0.2)  # worthless in every scenario
    result = span_margin([far_wing], F, R, params)
    assert result.scan_risk < 1e-6 and result.short_option_minimum == 100.0 and result.margin == 100.0


def test_validation():
    with pytest.raises(ValueError, match="price_scan_range"):
        SpanParameters(0.0, 0.04)
    with pytest.raises(ValueError, match="too large"):
        span_margin([FuturesPosition(1)], 10.0, R, SpanParameters(6.0, 0.04))  # -2x move -> negative price
    with pytest.raises(TypeError, match="integer"):
        span_margin([FuturesPosition(1.5)], F, R, PARAMS)


position_st = st.one_of(
    st.builds(FuturesPosition, st.integers(-10, 10), st.sampled_from([1.0, 100.0])),
    st.builds(OptionPosition, st.integers(-10, 10), st.sampled_from(["call", "put"]), st.floats(60.0, 140.0),
              st.floats(0.02, 2.0), st.floats(0.05, 0.9), st.sampled_from([1.0, 100.0])),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(position_st, max_size=6), st.floats(0.5, 20.0), st.floats(0.0, 0.2))
def test_margin_is_nonnegative_and_covers_every_scenario(positions, scan, vol_scan):
    params = SpanParameters(scan, vol_scan)
    result = span_margin(positions, F, R, params)
    assert result.margin >= 0.0
    assert len(result.scenario_losses) == 16
    for scenario, loss in result.scenario_losses:
        assert result.margin >= loss
        assert loss == pytest.approx(scenario_loss(positions, F, R, params, scenario), abs=1e-9)
    assert result.worst_loss == max(loss for _, loss in result.scenario_losses)
    assert result.margin == max(result.worst_loss, 0.0)  # no short-option minimum configured
    # scaling the whole portfolio scales the margin
    doubled = [type(p)(**{**p.__dict__, "quantity": 2 * p.quantity}) for p in positions]
    assert span_margin(doubled, F, R, params).margin == pytest.approx(2 * result.margin, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("multiple", [0.5, 1.0, 1.1, 2.0, 3.0])
def test_extreme_scenarios_are_labelled_with_their_own_move(multiple):
    """Scenarios 15/16 name their real move: a 1.1x extreme move was labelled "3/3 range", 0.5x "2/3 range"."""
    scenarios = SpanParameters(6.0, 0.04, extreme_move_multiple=multiple).scenarios()
    assert scenarios[14].label == f"15: price up extreme {multiple:g}x range, vol unchanged (35% covered)"
    assert scenarios[15].label == f"16: price down extreme {multiple:g}x range, vol unchanged (35% covered)"
    assert [s.label.split(": ")[1].split(",")[0] for s in scenarios[:14:2]] == [
        "price unchanged", "price up 1/3 range", "price down 1/3 range", "price up 2/3 range",
        "price down 2/3 range", "price up 3/3 range", "price down 3/3 range"]
