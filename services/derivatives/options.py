"""European and American option pricing: Black-Scholes-Merton, Black-76, CRR trees.

Pure domain code: no Dagster, no HTTP, no I/O; standard library plus numpy
(numpy only for the binomial tree's vectorised backward induction).

Conventions, chosen to match QuantLib so that it can serve as a test oracle:

* ``rate`` and ``dividend_yield`` are continuously compounded annual rates and
  may be zero or negative (real curves go negative); ``time`` is in years.
* ``vega`` is per 1.00 of volatility (not per vol point), ``rho`` per 1.00 of
  rate, ``theta`` per year of calendar time (``-dV/dT``): divide by 100, 100 and
  365 for the "per point / per day" figures that trading screens show.
* Black-76 rho holds the futures price fixed (``-T * V``): the futures price is
  an observable of its own, so a rate shock does not move it.

The normal CDF uses ``math.erfc`` rather than ``erf`` because ``0.5*(1+erf(x))``
cancels catastrophically for very negative ``x``, which would make deep
out-of-the-money prices (and therefore implied volatilities) meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = [
    "Greeks",
    "OptionType",
    "black76_greeks",
    "black76_implied_volatility",
    "black76_price",
    "bsm_greeks",
    "bsm_price",
    "crr_price",
    "implied_volatility",
    "norm_cdf",
    "norm_pdf",
]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class OptionType(str, Enum):
    CALL = "call"
    PUT = "put"

    @classmethod
    def parse(cls, value: OptionType | str) -> OptionType:
        """Accept the enum or a case-insensitive ``"call"``/``"put"`` string."""
        if isinstance(value, OptionType):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"option_type must be 'call' or 'put', got {value!r}") from None


@dataclass(frozen=True)
class Greeks:
    """First and second order sensitivities (units in the module docstring)."""

    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def norm_pdf(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


# ---------------------------------------------------------------- validation


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _validate(spot: float, strike: float, rate: float, vol: float, time: float, dividend_yield: float,
              spot_name: str = "spot") -> tuple[float, float, float, float, float, float]:
    return (
        _positive(spot_name, spot),
        _positive("strike", strike),
        _finite("rate", rate),
        _positive("vol", vol),
        _positive("time", time),
        _finite("dividend_yield", dividend_yield),
    )


# ---------------------------------------------------------------- closed forms


def _d1_d2(forward: float, strike: float, vol: float, time: float) -> tuple[float, float]:
    std = vol * math.sqrt(time)
    d1 = (math.log(forward / strike) + 0.5 * std * std) / std
    return d1, d1 - std


def _black(kind: OptionType, forward: float, strike: float, discount: float, vol: float, time: float) -> float:
    """Undiscounted-forward Black formula: both BSM and Black-76 reduce to it."""
    d1, d2 = _d1_d2(forward, strike, vol, time)
    if kind is OptionType.CALL:
        value = discount * (forward * norm_cdf(d1) - strike * norm_cdf(d2))
    else:
        value = discount * (strike * norm_cdf(-d2) - forward * norm_cdf(-d1))
    # Rounding can push a value that is mathematically >= 0 to -1e-17; a
    # negative option price would break every downstream bound check.
    return max(value, 0.0)


def bsm_price(option_type: OptionType | str, spot: float, strike: float, rate: float, vol: float, time: float,
              dividend_yield: float = 0.0) -> float:
    """European option on an asset paying a continuous dividend yield (Merton 1973)."""
    kind = OptionType.parse(option_type)
    spot, strike, rate, vol, time, q = _validate(spot, strike, rate, vol, time, dividend_yield)
    forward = spot * math.exp((rate - q) * time)
    return _black(kind, forward, strike, math.exp(-rate * time), vol, time)


def black76_price(option_type: OptionType | str, forward: float, strike: float, rate: float, vol: float,
                  time: float) -> float:
    """European option on a futures/forward price, premium paid up front (Black 1976)."""
    kind = OptionType.parse(option_type)
    forward, strike, rate, vol, time, _ = _validate(forward, strike, rate, vol, time, 0.0, spot_name="forward")
    return _black(kind, forward, strike, math.exp(-rate * time), vol, time)


def bsm_greeks(option_type: OptionType | str, spot: float, strike: float, rate: float, vol: float, time: float,
               dividend_yield: float = 0.0) -> Greeks:
    kind = OptionType.parse(option_type)
    spot, strike, r, vol, time, q = _validate(spot, strike, rate, vol, time, dividend_yield)
    sqrt_t = math.sqrt(time)
    dq, dr = math.exp(-q * time), math.exp(-r * time)
    d1, d2 = _d1_d2(spot * math.exp((r - q) * time), strike, vol, time)
    pdf = norm_pdf(d1)
    gamma = dq * pdf / (spot * vol * sqrt_t)
    vega = spot * dq * pdf * sqrt_t
    decay = -spot * dq * pdf * vol / (2.0 * sqrt_t)
    if kind is OptionType.CALL:
        delta = dq * norm_cdf(d1)
        theta = decay - r * strike * dr * norm_cdf(d2) + q * spot * dq * norm_cdf(d1)
        rho = strike * time * dr * norm_cdf(d2)
    else:
        delta = -dq * norm_cdf(-d1)
        theta = decay + r * strike * dr * norm_cdf(-d2) - q * spot * dq * norm_cdf(-d1)
        rho = -strike * time * dr * norm_cdf(-d2)
    return Greeks(delta=delta, gamma=gamma, vega=vega, theta=theta, rho=rho)


def black76_greeks(option_type: OptionType | str, forward: float, strike: float, rate: float, vol: float,
                   time: float) -> Greeks:
    """Greeks with respect to the futures price; rho holds the futures price fixed."""
    kind = OptionType.parse(option_type)
    forward, strike, r, vol, time, _ = _validate(forward, strike, rate, vol, time, 0.0, spot_name="forward")
    sqrt_t = math.sqrt(time)
    dr = math.exp(-r * time)
    d1, _d2 = _d1_d2(forward, strike, vol, time)
    pdf = norm_pdf(d1)
    value = _black(kind, forward, strike, dr, vol, time)
    delta = dr * norm_cdf(d1) if kind is OptionType.CALL else -dr * norm_cdf(-d1)
    gamma = dr * pdf / (forward * vol * sqrt_t)
    vega = forward * dr * pdf * sqrt_t
    theta = r * value - forward * dr * pdf * vol / (2.0 * sqrt_t)
    rho = -time * value
    return Greeks(delta=delta, gamma=gamma, vega=vega, theta=theta, rho=rho)


# ---------------------------------------------------------------- implied volatility


def _solve_vol(target: float, lower: float, upper: float, price_at, vega_at, tol: float, max_iter: int) -> float:
    """Safeguarded Newton inside a shrinking bisection bracket (Numerical Recipes' rtsafe).

    Price is strictly increasing in vol, from the no-arbitrage lower bound at
    vol -> 0 to the upper bound at vol -> inf, so a bracket always exists for a
    price strictly between the bounds. Plain Newton diverges for deep
    in/out-of-the-money options (vega ~ 0 far from the root); bisection alone
    is slow. Newton is taken only when it lands inside the bracket and is
    shrinking the error fast enough, otherwise we bisect, so convergence is
    guaranteed and quadratic near the root.
    """
    if not (lower < target < upper):
        raise ValueError(
            f"price {target!r} violates no-arbitrage bounds: it must lie strictly between "
            f"{lower!r} (vol -> 0) and {upper!r} (vol -> infinity)"
        )
    lo, hi = 0.0, 1.0
    while price_at(hi) < target:  # grow the bracket: vol of 1e4 is beyond any real market
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise ValueError(f"price {target!r} is too close to its upper bound {upper!r} to imply a volatility")
    sigma = 0.5 * (lo + hi)
    step_old = step = hi - lo
    for _ in range(max_iter):
        diff = price_at(sigma) - target
        if diff == 0.0:
            return sigma
        if diff > 0.0:
            hi = sigma
        else:
            lo = sigma
        vega = vega_at(sigma)
        newton_ok = vega > 0.0 and lo < sigma - diff / vega < hi and abs(2.0 * diff) < abs(step_old * vega)
        step_old = step
        if newton_ok:
            step = diff / vega
            sigma -= step
        else:
            step = 0.5 * (hi - lo)
            sigma = lo + step
        if abs(step) < tol or hi - lo < tol * 1e-3:
            return sigma
    raise ValueError(f"implied volatility did not converge in {max_iter} iterations (price {target!r})")


def implied_volatility(price: float, option_type: OptionType | str, spot: float, strike: float, rate: float,
                       time: float, dividend_yield: float = 0.0, *, tol: float = 1e-12, max_iter: int = 200) -> float:
    """Black-Scholes-Merton volatility that reproduces ``price``.

    Raises ``ValueError`` when the price is outside the open no-arbitrage
    interval (call: ``max(S e^-qT - K e^-rT, 0) < C < S e^-qT``; put:
    ``max(K e^-rT - S e^-qT, 0) < P < K e^-rT``): no volatility, however
    extreme, produces such a price, so any number returned would be a lie.
    """
    kind = OptionType.parse(option_type)
    price = _finite("price", price)
    spot, strike, rate, _, time, q = _validate(spot, strike, rate, 1.0, time, dividend_yield)
    fwd_spot, pv_strike = spot * math.exp(-q * time), strike * math.exp(-rate * time)
    if kind is OptionType.CALL:
        lower, upper = max(fwd_spot - pv_strike, 0.0), fwd_spot
    else:
        lower, upper = max(pv_strike - fwd_spot, 0.0), pv_strike
    return _solve_vol(
        price, lower, upper,
        lambda s: bsm_price(kind, spot, strike, rate, s, time, q),
        lambda s: bsm_greeks(kind, spot, strike, rate, s, time, q).vega,
        tol, max_iter,
    )


def black76_implied_volatility(price: float, option_type: OptionType | str, forward: float, strike: float,
                               rate: float, time: float, *, tol: float = 1e-12, max_iter: int = 200) -> float:
    """Black-76 volatility that reproduces ``price`` (bounds as for BSM with ``q = r``)."""
    kind = OptionType.parse(option_type)
    price = _finite("price", price)
    forward, strike, rate, _, time, _ = _validate(forward, strike, rate, 1.0, time, 0.0, spot_name="forward")
    disc = math.exp(-rate * time)
    if kind is OptionType.CALL:
        lower, upper = disc * max(forward - strike, 0.0), disc * forward
    else:
        lower, upper = disc * max(strike - forward, 0.0), disc * strike
    return _solve_vol(
        price, lower, upper,
        lambda s: black76_price(kind, forward, strike, rate, s, time),
        lambda s: black76_greeks(kind, forward, strike, rate, s, time).vega,
        tol, max_iter,
    )


# ---------------------------------------------------------------- binomial tree


def crr_price(option_type: OptionType | str, spot: float, strike: float, rate: float, vol: float, time: float,
              dividend_yield: float = 0.0, *, steps: int = 500, american: bool = True) -> float:
    """Cox-Ross-Rubinstein binomial tree; American exercise checked at every node.

    ``u = exp(vol*sqrt(dt))``, ``d = 1/u``, ``p = (exp((r-q)dt) - d)/(u - d)``:
    the classic (Hull) parameterisation, which recombines and is exact for the
    risk-neutral mean of each step. Error is O(1/steps) and oscillates between
    odd and even step counts. With ``american=False`` it converges to
    ``bsm_price``, which the tests use to check the tree itself.

    Raises ``ValueError`` when ``p`` falls outside (0, 1): that happens when
    steps are too coarse for the carry ``r - q`` relative to ``vol`` and the
    tree would admit arbitrage.
    """
    kind = OptionType.parse(option_type)
    spot, strike, rate, vol, time, q = _validate(spot, strike, rate, vol, time, dividend_yield)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    dt = time / steps
    log_u = vol * math.sqrt(dt)
    u, d = math.exp(log_u), math.exp(-log_u)
    p = (math.exp((rate - q) * dt) - d) / (u - d)
    if not 0.0 < p < 1.0:
        raise ValueError(
            f"risk-neutral probability {p:.6g} is outside (0, 1): use more steps "
            f"(dt={dt:.3g} is too coarse for carry {rate - q:.3g} at vol {vol:.3g})"
        )
    disc = math.exp(-rate * dt)
    sign = 1.0 if kind is OptionType.CALL else -1.0

    def exercise(level: int) -> np.ndarray:
        # Node j at level i has price S*u^(i-2j): recomputed rather than
        # multiplied step by step so that rounding does not accumulate.
        prices = spot * np.exp((level - 2.0 * np.arange(level + 1)) * log_u)
        return np.maximum(sign * (prices - strike), 0.0)

    values = exercise(steps)
    for level in range(steps - 1, -1, -1):
        values = disc * (p * values[:-1] + (1.0 - p) * values[1:])
        if american:
            np.maximum(values, exercise(level), out=values)
    return float(values[0])
