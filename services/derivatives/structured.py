"""Structured products priced by replication: the price is the sum of its legs.

Pure domain code: no Dagster, no HTTP, no I/O.

Each product is decomposed into instruments we can already price (zero-coupon
bonds at a flat continuously compounded rate, Black-Scholes-Merton European
options), and the result keeps the legs so that a salesperson, a risk system
or a test can see where the value comes from. Positive leg values are assets
of the note holder, negative ones liabilities (options the holder has sold).

Prices are per note of ``notional`` (floats: a valuation, not a ledger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .options import OptionType, _finite, _positive, bsm_price

__all__ = [
    "Leg",
    "StructuredPrice",
    "price_principal_protected_note",
    "price_reverse_convertible",
    "solve_ppn_participation",
    "solve_reverse_convertible_coupon",
]


@dataclass(frozen=True)
class Leg:
    name: str
    quantity: float  # units held by the note holder (negative = sold)
    unit_price: float
    value: float  # quantity * unit_price


@dataclass(frozen=True)
class StructuredPrice:
    product: str
    notional: float
    price: float  # sum of leg values
    legs: tuple[Leg, ...]

    @property
    def price_pct(self) -> float:
        """Price as a fraction of notional (1.0 = par)."""
        return self.price / self.notional


def _legs_price(product: str, notional: float, legs: list[Leg]) -> StructuredPrice:
    return StructuredPrice(product, notional, math.fsum(leg.value for leg in legs), tuple(legs))


def _ppn_parts(notional: float, spot: float, rate: float, vol: float, time: float, dividend_yield: float,
               protection: float) -> tuple[Leg, float, float]:
    notional, spot = _positive("notional", notional), _positive("spot", spot)
    rate, time = _finite("rate", rate), _positive("time", time)
    protection = _finite("protection", protection)
    if not 0 < protection <= 1:
        raise ValueError(f"protection must be in (0, 1], got {protection!r}")
    discount = math.exp(-rate * time)
    bond = Leg("zero-coupon bond", protection * notional, discount, protection * notional * discount)
    call_unit = bsm_price(OptionType.CALL, spot, spot, rate, vol, time, dividend_yield)
    shares_per_note = notional / spot  # participation 1 = the note's notional invested at today's spot
    return bond, call_unit, shares_per_note


def price_principal_protected_note(notional: float, spot: float, rate: float, vol: float, time: float,
                                   participation: float, dividend_yield: float = 0.0,
                                   protection: float = 1.0) -> StructuredPrice:
    """Note paying ``protection*N + participation * N * max(S_T/S_0 - 1, 0)`` at maturity.

    Replication: a zero-coupon bond on the protected amount plus
    ``participation * N / S_0`` at-the-money calls.
    """
    participation = _finite("participation", participation)
    if participation < 0:
        raise ValueError(f"participation must be >= 0, got {participation!r}")
    bond, call_unit, shares = _ppn_parts(notional, spot, rate, vol, time, dividend_yield, protection)
    qty = participation * shares
    call = Leg("ATM call", qty, call_unit, qty * call_unit)
    return _legs_price("principal-protected note", float(notional), [bond, call])


def solve_ppn_participation(notional: float, spot: float, rate: float, vol: float, time: float,
                            dividend_yield: float = 0.0, protection: float = 1.0,
                            target_price: float | None = None) -> float:
    """Participation that makes the note worth ``target_price`` (par, ``notional``, by default).

    The budget for the call is what the bond leaves of the price; it has a
    closed form because the price is linear in participation. With
    zero/negative rates and full protection there is no budget at all, and
    that is reported as an error rather than a zero-participation product.
    An issuer who wants a fee passes ``target_price`` below par.
    """
    target = float(notional) if target_price is None else _positive("target_price", target_price)
    bond, call_unit, shares = _ppn_parts(notional, spot, rate, vol, time, dividend_yield, protection)
    budget = target - bond.value
    if budget <= 0:
        raise ValueError(
            f"the protected bond alone costs {bond.value:.6g} >= target price {target:.6g}: "
            "no option budget is left (rates too low or protection too high)"
        )
    return budget / (shares * call_unit)


def price_reverse_convertible(notional: float, spot: float, rate: float, vol: float, time: float,
                              coupon_rate: float, dividend_yield: float = 0.0,
                              strike_pct: float = 1.0) -> StructuredPrice:
    """Note paying ``N*(1 + coupon_rate*T)`` at maturity, minus the put payoff on ``N/K`` shares.

    The holder is long a bond (principal plus a simple-interest coupon, both
    paid at maturity) and short ``N/K`` European puts struck at
    ``K = strike_pct * S_0``: if the share ends below ``K`` the holder is
    repaid in (or the cash value of) ``N/K`` shares instead of the principal.
    The coupon is the premium for that put, so the price falls with volatility.
    """
    notional, spot = _positive("notional", notional), _positive("spot", spot)
    rate, time = _finite("rate", rate), _positive("time", time)
    coupon_rate = _finite("coupon_rate", coupon_rate)
    if coupon_rate < 0:
        raise ValueError(f"coupon_rate must be >= 0, got {coupon_rate!r}")
    strike = _positive("strike_pct", strike_pct) * spot
    discount = math.exp(-rate * time)
    principal = Leg("zero-coupon bond (principal)", notional, discount, notional * discount)
    coupon_amount = notional * coupon_rate * time
    coupon = Leg("coupon", coupon_amount, discount, coupon_amount * discount)
    put_unit = bsm_price(OptionType.PUT, spot, strike, rate, vol, time, dividend_yield)
    puts = -notional / strike
    put = Leg("short put", puts, put_unit, puts * put_unit)
    return _legs_price("reverse convertible", notional, [principal, coupon, put])


def solve_reverse_convertible_coupon(notional: float, spot: float, rate: float, vol: float, time: float,
                                     dividend_yield: float = 0.0, strike_pct: float = 1.0) -> float:
    """Annual simple coupon rate that prices the reverse convertible at par."""
    zero = price_reverse_convertible(notional, spot, rate, vol, time, 0.0, dividend_yield, strike_pct)
    shortfall = float(notional) - zero.price
    if shortfall < 0:
        raise ValueError("the note is worth more than par with no coupon (rates are negative): no coupon solves it")
    return shortfall / (float(notional) * time * math.exp(-float(rate) * time))
