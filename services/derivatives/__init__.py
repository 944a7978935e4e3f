"""Derivatives pricing and margining: pure domain code (no Dagster, no HTTP).

* ``options``: Black-Scholes-Merton, Black-76, Greeks, implied volatility, CRR trees.
* ``futures``: cash-settled compute futures with integer-cent margining.
* ``span``: SPAN-like 16-scenario portfolio margin.
* ``structured``: structured notes priced as the sum of their legs.
"""

from .futures import (
    DailySettlement,
    FinalSettlement,
    FuturesClearingHouse,
    FuturesContract,
    MarginCall,
    Trade,
    gpu_hour_future,
)
from .options import (
    Greeks,
    OptionType,
    black76_greeks,
    black76_implied_volatility,
    black76_price,
    bsm_greeks,
    bsm_price,
    crr_price,
    implied_volatility,
)
from .span import FuturesPosition, OptionPosition, SpanParameters, SpanResult, span_margin
from .structured import (
    StructuredPrice,
    price_principal_protected_note,
    price_reverse_convertible,
    solve_ppn_participation,
    solve_reverse_convertible_coupon,
)

__all__ = [
    "DailySettlement",
    "FinalSettlement",
    "FuturesClearingHouse",
    "FuturesContract",
    "FuturesPosition",
    "Greeks",
    "MarginCall",
    "OptionPosition",
    "OptionType",
    "SpanParameters",
    "SpanResult",
    "StructuredPrice",
    "Trade",
    "black76_greeks",
    "black76_implied_volatility",
    "black76_price",
    "bsm_greeks",
    "bsm_price",
    "crr_price",
    "gpu_hour_future",
    "implied_volatility",
    "price_principal_protected_note",
    "price_reverse_convertible",
    "solve_ppn_participation",
    "solve_reverse_convertible_coupon",
    "span_margin",
]
