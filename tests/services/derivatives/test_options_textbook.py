"""Option pricing against published textbook values (Hull, Options, Futures and Other Derivatives)."""

import pytest

from services.derivatives.options import black76_price, bsm_greeks, bsm_price, crr_price


def test_hull_bsm_example_call_and_put():
    # Hull Example 15.6: S=42, K=40, r=10%, sigma=20%, T=0.5 -> c=4.76, p=0.81
    assert bsm_price("call", 42, 40, 0.10, 0.20, 0.5) == pytest.approx(4.76, abs=5e-3)
    assert bsm_price("put", 42, 40, 0.10, 0.20, 0.5) == pytest.approx(0.81, abs=5e-3)


def test_hull_greeks_example():
    # Hull's running Greeks example: S=49, K=50, r=5%, sigma=20%, T=20 weeks.
    t = 20 / 52
    assert bsm_price("call", 49, 50, 0.05, 0.20, t) == pytest.approx(2.40, abs=5e-3)
    g = bsm_greeks("call", 49, 50, 0.05, 0.20, t)
    assert g.delta == pytest.approx(0.522, abs=5e-4)
    assert g.gamma == pytest.approx(0.066, abs=5e-4)
    assert g.theta == pytest.approx(-4.31, abs=5e-3)  # per year
    assert g.vega == pytest.approx(12.1, abs=5e-2)  # per 1.00 of vol
    assert g.rho == pytest.approx(8.91, abs=5e-3)  # per 1.00 of rate


def test_hull_black76_put_on_futures():
    # Hull: European put on futures, F=K=20, r=9%, sigma=25%, T=4 months -> 1.12
    assert black76_price("put", 20, 20, 0.09, 0.25, 4 / 12) == pytest.approx(1.12, abs=5e-3)


def test_hull_american_put_five_step_tree():
    # Hull's CRR tree: S=K=50, r=10%, sigma=40%, T=5 months, 5 steps -> 4.49
    assert crr_price("put", 50, 50, 0.10, 0.40, 5 / 12, steps=5) == pytest.approx(4.49, abs=5e-3)


def test_european_crr_converges_to_bsm():
    exact = bsm_price("put", 100, 110, 0.04, 0.3, 1.0, 0.02)
    errors = [abs(crr_price("put", 100, 110, 0.04, 0.3, 1.0, 0.02, steps=n, american=False) - exact)
              for n in (50, 200, 2000)]
    assert errors[-1] < 2e-3
    assert errors[-1] < errors[0]
