"""SPAN-like scenario margin for futures and options on one underlying futures price.

Pure domain code: no Dagster, no HTTP, no I/O.

The portfolio is revalued under the 16 standard SPAN risk scenarios: the
futures price moves by 0, +-1/3, +-2/3 and +-3/3 of the *price scan range*,
each with volatility shifted up and down by the *volatility scan range*
(14 scenarios), plus two extreme moves of +-2x the price scan range at
unchanged volatility of which only 35% of the loss counts. Extreme moves
exist for deep out-of-the-money short options, whose loss is negligible
inside the range but explodes just beyond it; counting only a fraction of
them reflects that they are rare.

Options are revalued with Black-76 at the scenario futures price and
volatility; futures move linearly. The scan risk is the largest scenario
loss, never below zero (a portfolio that gains in every scenario still
posts nothing negative). An optional short-option minimum per short option
contract protects against the case where scenarios happen to show no loss for
short options (e.g. hedged out), as real SPAN does.

Money here is float: SPAN is an analytic risk estimate, not a ledger; the
clearing house rounds the requirement into integer cents when it books it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .options import OptionType, black76_price

__all__ = [
    "SPAN_SCENARIOS",
    "FuturesPosition",
    "OptionPosition",
    "SpanParameters",
    "SpanResult",
    "SpanScenario",
    "scenario_loss",
    "span_margin",
]

# Volatility never goes below this floor in the "vol down" scenarios: Black-76
# is undefined at zero volatility, and 0.1% is below any traded market.
MIN_SCENARIO_VOL = 1e-3


@dataclass(frozen=True)
class SpanScenario:
    number: int  # 1..16, the standard SPAN ordering
    price_move: float  # fraction of the price scan range
    vol_move: int  # +1 up, -1 down, 0 unchanged
    cover_fraction: float  # share of the loss that counts

    @property
    def label(self) -> str:
        vol = {1: "vol up", -1: "vol down", 0: "vol unchanged"}[self.vol_move]
        sign = "up" if self.price_move > 0 else "down"
        if self.vol_move == 0:  # 15 and 16, the extreme moves: any multiple, 1x or below included
            price = f"price {sign} extreme {abs(self.price_move):g}x range"
        elif self.price_move == 0:
            price = "price unchanged"
        else:
            price = f"price {sign} {round(abs(self.price_move) * 3)}/3 range"
        return f"{self.number}: {price}, {vol}" + (
            f" ({self.cover_fraction:.0%} covered)" if self.cover_fraction != 1.0 else ""
        )


def _standard_scenarios(extreme_multiple: float = 2.0, extreme_cover: float = 0.35) -> tuple[SpanScenario, ...]:
    scenarios = []
    for price_move in (0.0, 1 / 3, -1 / 3, 2 / 3, -2 / 3, 1.0, -1.0):
        for vol_move in (1, -1):
            scenarios.append(SpanScenario(len(scenarios) + 1, price_move, vol_move, 1.0))
    scenarios.append(SpanScenario(15, extreme_multiple, 0, extreme_cover))
    scenarios.append(SpanScenario(16, -extreme_multiple, 0, extreme_cover))
    return tuple(scenarios)


SPAN_SCENARIOS: tuple[SpanScenario, ...] = _standard_scenarios()


@dataclass(frozen=True)
class SpanParameters:
    """Risk parameters the clearing house publishes per underlying.

    ``price_scan_range`` is in price units (per unit of underlying),
    ``volatility_scan_range`` in absolute volatility (0.05 = 5 vol points).
    """

    price_scan_range: float
    volatility_scan_range: float
    extreme_move_multiple: float = 2.0
    extreme_cover_fraction: float = 0.35
    short_option_minimum: float = 0.0  # per short option contract, in money

    def __post_init__(self) -> None:
        for name in ("price_scan_range", "extreme_move_multiple"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for name in ("volatility_scan_range", "short_option_minimum"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0 <= self.extreme_cover_fraction <= 1:
            raise ValueError(f"extreme_cover_fraction must be in [0, 1], got {self.extreme_cover_fraction!r}")

    def scenarios(self) -> tuple[SpanScenario, ...]:
        if self.extreme_move_multiple == 2.0 and self.extreme_cover_fraction == 0.35:
            return SPAN_SCENARIOS
        return _standard_scenarios(self.extreme_move_multiple, self.extreme_cover_fraction)


@dataclass(frozen=True)
class FuturesPosition:
    quantity: int  # signed contracts
    contract_size: float = 1.0


@dataclass(frozen=True)
class OptionPosition:
    """Option on the futures price: signed contracts, European, Black-76 valued."""

    quantity: int
    option_type: OptionType | str
    strike: float
    time: float  # years to expiry
    vol: float  # current implied volatility
    contract_size: float = 1.0

    def value(self, futures_price: float, rate: float, vol: float | None = None) -> float:
        """Value of the whole position (signed) at a futures price and volatility."""
        unit = black76_price(self.option_type, futures_price, self.strike, rate,
                             self.vol if vol is None else vol, self.time)
        return self.quantity * self.contract_size * unit


Position = FuturesPosition | OptionPosition


@dataclass(frozen=True)
class SpanResult:
    margin: float  # max(scan_risk, short_option_minimum)
    scan_risk: float  # max(0, worst scenario loss)
    worst_scenario: SpanScenario
    worst_loss: float  # may be negative when the portfolio gains everywhere
    short_option_minimum: float
    scenario_losses: tuple[tuple[SpanScenario, float], ...]  # weighted loss (+) per scenario


def scenario_loss(positions: Sequence[Position], futures_price: float, rate: float, params: SpanParameters,
                  scenario: SpanScenario) -> float:
    """Weighted loss (positive = the portfolio loses money) in one scenario."""
    move = scenario.price_move * params.price_scan_range
    shocked = futures_price + move
    if shocked <= 0:
        raise ValueError(
            f"scenario {scenario.number} moves the futures price to {shocked:g} <= 0: "
            f"the price scan range {params.price_scan_range:g} is too large for price {futures_price:g}"
        )
    pnl = 0.0
    for pos in positions:
        if isinstance(pos, FuturesPosition):
            pnl += pos.quantity * pos.contract_size * move
        else:
            vol = max(pos.vol + scenario.vol_move * params.volatility_scan_range, MIN_SCENARIO_VOL)
            pnl += pos.value(shocked, rate, vol) - pos.value(futures_price, rate)
    return -pnl * scenario.cover_fraction


def span_margin(positions: Iterable[Position], futures_price: float, rate: float,
                params: SpanParameters) -> SpanResult:
    """Scenario margin: the worst weighted loss over the 16 scenarios, floored at zero."""
    positions = list(positions)
    if not (math.isfinite(futures_price) and futures_price > 0):
        raise ValueError(f"futures_price must be > 0, got {futures_price!r}")
    for pos in positions:
        if not isinstance(pos, (FuturesPosition, OptionPosition)):
            raise TypeError(f"unsupported position {pos!r}")
        if isinstance(pos.quantity, bool) or not isinstance(pos.quantity, int):
            raise TypeError(f"quantity must be an integer number of contracts, got {pos.quantity!r}")
    losses = tuple((s, scenario_loss(positions, futures_price, rate, params, s)) for s in params.scenarios())
    # Ties go to the lowest scenario number, so the reported scenario is stable.
    worst, worst_loss = max(losses, key=lambda item: (item[1], -item[0].number))
    scan_risk = max(worst_loss, 0.0)
    short_contracts = sum(-p.quantity for p in positions if isinstance(p, OptionPosition) and p.quantity < 0)
    som = short_contracts * params.short_option_minimum
    return SpanResult(max(scan_risk, som), scan_risk, worst, worst_loss, som, losses)
