"""Option pricing against QuantLib, a test-only oracle (a dev requirement: absent, the module fails to import)."""

import math

import pytest

from services.derivatives.options import (
    black76_greeks,
    black76_implied_volatility,
    black76_price,
    bsm_greeks,
    bsm_price,
    crr_price,
    implied_volatility,
)

import QuantLib as ql  # noqa: E402 - a dev requirement: the oracle must be there

TODAY = ql.Date(15, 1, 2024)
DC = ql.Actual365Fixed()

CASES = [
    # spot, strike, rate, dividend_yield, vol, days
    (100.0, 100.0, 0.05, 0.00, 0.20, 365),
    (100.0, 80.0, 0.03, 0.02, 0.35, 180),
    (50.0, 65.0, -0.01, 0.04, 0.50, 730),
    (250.0, 240.0, 0.08, 0.01, 0.15, 30),
    (10.0, 14.0, 0.00, 0.00, 0.90, 1000),
]
TYPES = [("call", ql.Option.Call), ("put", ql.Option.Put)]


@pytest.fixture(autouse=True)
def _evaluation_date():
    ql.Settings.instance().evaluationDate = TODAY


def _process(spot, rate, q, vol):
    flat = lambda r: ql.YieldTermStructureHandle(ql.FlatForward(TODAY, r, DC, ql.Continuous))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(TODAY, ql.NullCalendar(), vol, DC))
    return ql.BlackScholesMertonProcess(ql.QuoteHandle(ql.SimpleQuote(spot)), flat(q), flat(rate), vts)


def _option(kind, strike, days, exercise="european"):
    ex = ql.EuropeanExercise(TODAY + days) if exercise == "european" else ql.AmericanExercise(TODAY, TODAY + days)
    return ql.VanillaOption(ql.PlainVanillaPayoff(kind, strike), ex)


@pytest.mark.parametrize("name,kind", TYPES)
@pytest.mark.parametrize("spot,strike,rate,q,vol,days", CASES)
def test_bsm_price_and_greeks_match_quantlib(name, kind, spot, strike, rate, q, vol, days):
    opt = _option(kind, strike, days)
    opt.setPricingEngine(ql.AnalyticEuropeanEngine(_process(spot, rate, q, vol)))
    t = days / 365.0
    g = bsm_greeks(name, spot, strike, rate, vol, t, q)
    assert bsm_price(name, spot, strike, rate, vol, t, q) == pytest.approx(opt.NPV(), rel=1e-12, abs=1e-12)
    assert g.delta == pytest.approx(opt.delta(), rel=1e-10, abs=1e-12)
    assert g.gamma == pytest.approx(opt.gamma(), rel=1e-10, abs=1e-12)
    assert g.vega == pytest.approx(opt.vega(), rel=1e-10, abs=1e-10)
    assert g.theta == pytest.approx(opt.theta(), rel=1e-10, abs=1e-10)
    assert g.rho == pytest.approx(opt.rho(), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name,kind", TYPES)
@pytest.mark.parametrize("spot,strike,rate,q,vol,days", CASES)
def test_black76_matches_quantlib(name, kind, spot, strike, rate, q, vol, days):
    """Black-76 is BSM with the futures price as spot and dividend yield = rate.

    QuantLib's BSM rho holds q fixed; Black-76 rho moves both (the futures
    price is held fixed), so it is QuantLib's rho plus its dividend rho.
    """
    forward, t = spot, days / 365.0
    disc = math.exp(-rate * t)
    assert black76_price(name, forward, strike, rate, vol, t) == pytest.approx(
        ql.blackFormula(kind, strike, forward, vol * math.sqrt(t), disc), rel=1e-12, abs=1e-12)
    opt = _option(kind, strike, days)
    opt.setPricingEngine(ql.AnalyticEuropeanEngine(_process(forward, rate, rate, vol)))
    g = black76_greeks(name, forward, strike, rate, vol, t)
    assert g.delta == pytest.approx(opt.delta(), rel=1e-10, abs=1e-12)
    assert g.gamma == pytest.approx(opt.gamma(), rel=1e-10, abs=1e-12)
    assert g.vega == pytest.approx(opt.vega(), rel=1e-10, abs=1e-10)
    assert g.theta == pytest.approx(opt.theta(), rel=1e-10, abs=1e-10)
    assert g.rho == pytest.approx(opt.rho() + opt.dividendRho(), rel=1e-9, abs=1e-10)


@pytest.mark.parametrize("name,kind", TYPES)
@pytest.mark.parametrize("spot,strike,rate,q,vol,days", CASES)
def test_implied_vol_matches_quantlib(name, kind, spot, strike, rate, q, vol, days):
    t = days / 365.0
    price = bsm_price(name, spot, strike, rate, vol, t, q)
    opt = _option(kind, strike, days)
    process = _process(spot, rate, q, 0.3)
    ql_vol = opt.impliedVolatility(price, process, 1e-12, 500, 1e-4, 5.0)
    assert implied_volatility(price, name, spot, strike, rate, t, q) == pytest.approx(ql_vol, abs=1e-8)
    assert implied_volatility(price, name, spot, strike, rate, t, q) == pytest.approx(vol, abs=1e-9)
    b76 = black76_price(name, spot, strike, rate, vol, t)
    ql_std = ql.blackFormulaImpliedStdDev(kind, strike, spot, b76, math.exp(-rate * t), 0.0, 0.3, 1e-14, 500)
    assert black76_implied_volatility(b76, name, spot, strike, rate, t) == pytest.approx(
        ql_std / math.sqrt(t), abs=1e-8)


@pytest.mark.parametrize("name,kind", TYPES)
@pytest.mark.parametrize("spot,strike,rate,q,vol,days", CASES)
def test_american_crr_matches_quantlib(name, kind, spot, strike, rate, q, vol, days):
    """QuantLib's "crr" tree uses the additive drift probability ``1/2 + drift/(2 dx)``
    instead of Hull's ``(e^{(r-q)dt} - d)/(u - d)``; the two differ by O(1/steps)
    per node, so at 1000 steps they agree to a few 1e-4 of the price, and both
    sit close to a fine finite-difference solution of the same American option.
    """
    steps, t = 1000, days / 365.0
    process = _process(spot, rate, q, vol)
    opt = _option(kind, strike, days, exercise="american")
    opt.setPricingEngine(ql.BinomialVanillaEngine(process, "crr", steps))
    ql_tree = opt.NPV()
    opt.setPricingEngine(ql.FdBlackScholesVanillaEngine(process, 800, 800))
    ql_fd = opt.NPV()
    mine = crr_price(name, spot, strike, rate, vol, t, q, steps=steps)
    assert mine == pytest.approx(ql_tree, rel=5e-4, abs=1e-4 * spot)
    assert mine == pytest.approx(ql_fd, rel=2e-3, abs=2e-3 * spot)
