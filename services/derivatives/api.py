"""Derivatives API: a thin FastAPI layer over the pure cores in :mod:`services.derivatives`.

* Pricing (``derivatives:read``): European BSM with a dividend yield, Black-76 and
  American/European CRR trees with Greeks where a closed form defines them; implied
  volatility; principal-protected notes and reverse convertibles priced as the sum of
  their legs; SPAN-like portfolio margin for futures and options on one futures price.
* Futures clearing (``derivatives:write`` for state changes): one shared
  :class:`~services.derivatives.futures.FuturesClearingHouse` per listed contract.
  Contracts are market-wide (any caller lists or reads them); clearing accounts belong
  to a tenant. The clearing house sees ``"<tenant>/<account_id>"``, so a tenant can
  neither reach nor detect another tenant's accounts (404), trades only between its
  own accounts, and sees only its own accounts in settlement results.
* Settlement moves every tenant's cash in a contract (variation margin), so only the
  tenant that listed the contract (its operator) may post daily settlement prices
  and the final settlement at expiry;
  any other tenant gets 403. Without that rule any trader of any tenant could mark a
  shared contract at an arbitrary price and drain other tenants' accounts.

Every numeric input is bounded by the schema (no input can overflow, hang or 500),
prices of futures are decimal strings (the core refuses floats: they would land off
the tick grid), and a domain ``ValueError``/``TypeError``/``ArithmeticError`` is a 422
problem carrying the core's message. A result that is not a finite number (possible
only at the edges of the bounds, e.g. a CRR call whose tree overflows) is a 422 too.

The futures markets are durable when a :class:`~services.common.state_store.StateStore`
is given (``platformq serve``: SQLite under home, or ``PLATFORMQ_DERIVATIVES_STORE_URL``):
every change (a listing, an account, cash, a trade, a settlement) is saved before it is
answered, and a change the store does not take answers 503 ``state-store-unavailable``
and is undone in memory. Each contract is a part of its own in the store, and a request
saves only its contract, so a request costs the same with one contract listed or a year
of them. Reads and writes of the markets take one lock.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import math
import pickle
import threading
from decimal import Decimal
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from services.common.app import ServiceContext, create_service_app
from services.common.auth import Principal
from services.common import idempotency
from services.common.idempotency import fingerprint, idempotency_key
from services.common.problems import Problem
from services.common.state_store import KeyedDurableState, StateStore, StateStoreError
from services.derivatives.futures import (
    DEFAULT_PRICE_BAND_PCT,
    FinalSettlement,
    FuturesClearingHouse,
    FuturesContract,
)
from services.derivatives.options import (
    Greeks,
    black76_greeks,
    black76_implied_volatility,
    black76_price,
    bsm_greeks,
    bsm_price,
    crr_price,
    implied_volatility,
)
from services.derivatives.span import FuturesPosition, OptionPosition, SpanParameters, span_margin
from services.derivatives.structured import (
    StructuredPrice,
    price_principal_protected_note,
    price_reverse_convertible,
    solve_ppn_participation,
    solve_reverse_convertible_coupon,
)

# ---------------------------------------------------------------- bounds

MAX_PRICE = 1e9
MAX_CONTRACT_PAGE = 1000
# The pickled layout of a contract's Listing: bump it when the classes change, so an old copy is refused (2: one
# part per contract; 1, the whole markets in one row, is upgraded on start).
STATE_FORMAT = 2
Price = Annotated[float, Field(gt=0, lt=MAX_PRICE)]
Vol = Annotated[float, Field(gt=0, le=5, description="annualised volatility (0.2 = 20%)")]
Years = Annotated[float, Field(gt=0, le=50, description="years to expiry")]
Rate = Annotated[float, Field(ge=-1, le=1, description="continuously compounded annual rate")]
Yield = Annotated[float, Field(ge=-1, le=1, description="continuous dividend yield")]
Notional = Annotated[float, Field(gt=0, le=1e12)]
AccountId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
SymbolIn = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9_.-]+$")]
Symbol = Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[A-Z0-9_.-]+$")]
PathAccount = Annotated[str, Path(max_length=64)]
DecimalPrice = Annotated[str, Field(pattern=r"^[0-9]{1,9}(\.[0-9]{1,8})?$",
                                    description="decimal string, e.g. \"2.15\" (floats are refused: they are "
                                                "not exact on the tick grid)", examples=["2.15"])]
TickSize = Annotated[str, Field(pattern=r"^[0-9]{1,6}(\.[0-9]{1,8})?$", examples=["0.01"])]
Cents = Annotated[int, Field(ge=1, le=10**15, description="minor units (cents)")]
Contracts = Annotated[int, Field(ge=1, le=10**6)]
SignedContracts = Annotated[int, Field(ge=-10**6, le=10**6, description="signed contracts: > 0 long, < 0 short")]
ContractSize = Annotated[float, Field(gt=0, le=1e6)]
# Dates arrive as ISO strings, which strict mode would refuse (FastAPI validates the parsed JSON).
IsoDate = Annotated[dt.date, Field(strict=False)]


class Strict(BaseModel):
    # strict: JSON true, "100" or 2.0 is not silently a quantity or an amount of money
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# ---------------------------------------------------------------- options


class OptionPriceIn(Strict):
    model: Literal["bsm", "black76", "crr"] = Field(
        description="bsm: European Black-Scholes-Merton on a spot with a dividend yield; black76: European on a "
                    "futures price; crr: Cox-Ross-Rubinstein binomial tree (American by default)")
    option_type: Literal["call", "put"]
    underlying_price: Price = Field(description="spot (bsm, crr) or futures price (black76)")
    strike: Price
    rate: Rate
    vol: Vol
    time: Years
    dividend_yield: Yield | None = Field(default=None, description="bsm and crr only; default 0")
    steps: int | None = Field(default=None, ge=1, le=2000, description="crr only; default 500")
    american: bool | None = Field(default=None, description="crr only; default true (early exercise)")


class GreeksOut(BaseModel):
    """Per 1.00 of vol (vega) and rate (rho); theta per year (``-dV/dT``)."""

    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float


class OptionPriceOut(BaseModel):
    model: str
    option_type: str
    price: float
    greeks: GreeksOut | None = Field(description="closed-form Greeks (bsm, black76); null for crr")


class ImpliedVolIn(Strict):
    model: Literal["bsm", "black76"]
    option_type: Literal["call", "put"]
    price: Price = Field(description="observed option premium")
    underlying_price: Price = Field(description="spot (bsm) or futures price (black76)")
    strike: Price
    rate: Rate
    time: Years
    dividend_yield: Yield | None = Field(default=None, description="bsm only; default 0")


class ImpliedVolOut(BaseModel):
    model: str
    option_type: str
    implied_volatility: float


# ---------------------------------------------------------------- structured products


class _NoteIn(Strict):
    """Market inputs every structured note is priced from."""

    notional: Notional
    spot: Price
    rate: Rate
    vol: Vol
    time: Years
    dividend_yield: Yield = 0.0


class PrincipalProtectedNoteIn(_NoteIn):
    protection: float = Field(default=1.0, gt=0, le=1, description="fraction of notional repaid at maturity")
    participation: float | None = Field(default=None, ge=0, le=1000,
                                        description="upside participation; omitted: solved so the note prices "
                                                    "at target_price")
    target_price: float | None = Field(default=None, gt=0, le=1e13,
                                       description="price the solved participation hits (default: par)")


class ReverseConvertibleIn(_NoteIn):
    strike_pct: float = Field(default=1.0, gt=0, le=10, description="put strike as a fraction of spot")
    coupon_rate: float | None = Field(default=None, ge=0, le=100,
                                      description="annual simple coupon; omitted: solved so the note prices at par")


class LegOut(BaseModel):
    name: str
    quantity: float
    unit_price: float
    value: float


class StructuredOut(BaseModel):
    product: str
    notional: float
    price: float = Field(description="sum of the leg values")
    price_pct: float = Field(description="price / notional (1.0 = par)")
    legs: list[LegOut]
    participation: float | None = None
    coupon_rate: float | None = None


# ---------------------------------------------------------------- SPAN


class SpanParametersIn(Strict):
    price_scan_range: float = Field(gt=0, lt=MAX_PRICE, description="price units per unit of underlying")
    volatility_scan_range: float = Field(ge=0, le=5, description="absolute vol (0.05 = 5 points)")
    extreme_move_multiple: float = Field(default=2.0, gt=0, le=10)
    extreme_cover_fraction: float = Field(default=0.35, ge=0, le=1)
    short_option_minimum: float = Field(default=0.0, ge=0, lt=MAX_PRICE, description="per short option contract")


class FuturesPositionIn(Strict):
    kind: Literal["future"]
    quantity: SignedContracts
    contract_size: ContractSize = 1.0


class OptionPositionIn(Strict):
    kind: Literal["option"]
    quantity: SignedContracts
    option_type: Literal["call", "put"]
    strike: Price
    time: Years
    vol: Vol
    contract_size: ContractSize = 1.0


class SpanIn(Strict):
    futures_price: Price
    rate: Rate
    parameters: SpanParametersIn
    positions: list[Annotated[FuturesPositionIn | OptionPositionIn, Field(discriminator="kind")]] = Field(
        max_length=200)


class ScenarioOut(BaseModel):
    number: int
    label: str
    price_move: float = Field(description="fraction of the price scan range")
    vol_move: int
    cover_fraction: float
    loss: float = Field(description="weighted loss (+) in this scenario")


class SpanOut(BaseModel):
    margin: float
    scan_risk: float
    worst_scenario: ScenarioOut
    worst_loss: float
    short_option_minimum: float
    scenarios: list[ScenarioOut]


# ---------------------------------------------------------------- futures clearing


class ContractIn(Strict):
    symbol: SymbolIn
    expiry: IsoDate
    contract_size: int = Field(default=100, ge=1, le=10**6, description="units of the underlying per contract")
    tick_size: TickSize = Field(default="0.01", description="price increment per unit of the underlying")
    initial_margin_cents: int = Field(default=5_000, ge=0, le=10**12, description="per contract")
    maintenance_margin_cents: int = Field(default=4_000, ge=0, le=10**12, description="per contract")
    underlying: str = Field(default="GPU-hour", min_length=1, max_length=64)
    reference_price: DecimalPrice | None = Field(
        default=None, description="centre of the price band until the first settlement (without one, trades "
                                  "have no band until then)")
    price_band_pct: int = Field(default=DEFAULT_PRICE_BAND_PCT, ge=1, le=100,
                                description="a trade's price may be at most this many percent away from the last "
                                            "settlement price (before it, the reference price)")


class ContractOut(BaseModel):
    symbol: str
    underlying: str
    currency: str
    expiry: dt.date
    contract_size: int
    tick_size: str
    tick_value_cents: int
    initial_margin_cents: int
    maintenance_margin_cents: int
    open_interest: int = Field(description="long contracts (= short contracts) across the clearing house")
    last_settlement_price: str | None
    last_settlement_day: dt.date | None
    status: Literal["open", "settled"] = Field(description="settled: finally settled, every position closed")
    final_settlement_day: dt.date | None
    final_price: str | None
    reference_price: str | None
    price_band_pct: int
    price_band_low: str | None = Field(description="lowest price a trade may have now; null: no band yet")
    price_band_high: str | None = Field(description="highest price a trade may have now; null: no band yet")


class ContractPage(BaseModel):
    contracts: list[ContractOut] = Field(description="in symbol order")
    next_page_token: str | None = Field(description="pass as page_token for the next page; null on the last")


class FuturesAccountIn(Strict):
    account_id: AccountId
    deposit_cents: int = Field(default=0, ge=0, le=10**15)


class CashIn(Strict):
    amount_cents: Cents


class FuturesAccountOut(BaseModel):
    account_id: str
    symbol: str
    balance_cents: int = Field(description="cash, variation margin paid up to the last settlement")
    equity_cents: int = Field(description="balance plus the variation margin the next settlement would pay or "
                                          "take (at the lower of the last settlement and the latest trade price)")
    position: int
    initial_requirement_cents: int
    maintenance_requirement_cents: int
    excess_cents: int = Field(description="withdrawable: min(balance, equity) - initial requirement")
    margin_call_cents: int


class FuturesTradeIn(Strict):
    buyer_account_id: AccountId
    seller_account_id: AccountId
    contracts: Contracts
    price: DecimalPrice
    day: IsoDate | None = Field(default=None, description="the trade date: after the contract's expiry (or before "
                                                          "its last settlement day) the trade is refused")


class FuturesTradeOut(BaseModel):
    trade_id: int
    symbol: str
    buyer_account_id: str
    seller_account_id: str
    contracts: int
    price: str
    price_ticks: int
    day: dt.date | None


class SettlementIn(Strict):
    day: IsoDate
    settlement_price: DecimalPrice = Field(description="rounded to the nearest tick, ties to even")


class VariationMarginOut(BaseModel):
    account_id: str
    variation_margin_cents: int


class MarginCallOut(BaseModel):
    account_id: str
    amount_cents: int
    equity_cents: int
    maintenance_requirement_cents: int
    initial_requirement_cents: int


class FinalSettlementIn(Strict):
    final_price: DecimalPrice = Field(description="rounded to the nearest tick, ties to even")
    day: IsoDate | None = Field(default=None, description="on or after expiry; default the expiry date")


class ClosedPositionOut(BaseModel):
    account_id: str
    closed_position: int
    variation_margin_cents: int
    balance_cents: int = Field(description="all of it withdrawable: no position, no margin requirement")


class FinalSettlementOut(BaseModel):
    symbol: str
    day: dt.date
    final_price: str
    final_price_ticks: int
    accounts: list[ClosedPositionOut] = Field(description="the caller's tenant's accounts only")


class SettlementOut(BaseModel):
    symbol: str
    day: dt.date
    settlement_price: str
    settlement_price_ticks: int
    variation_margin: list[VariationMarginOut] = Field(description="the caller's tenant's accounts only")
    margin_calls: list[MarginCallOut] = Field(description="the caller's tenant's accounts only")


@dataclasses.dataclass
class Listing:
    """A listed contract: its clearing house and the tenant operating it (one part of the durable state)."""

    house: FuturesClearingHouse
    operator: str
    # answers kept by Idempotency-Key, saved with the change they answered (services/common/idempotency.py)
    idempotency: dict = dataclasses.field(default_factory=dict)

    def __setstate__(self, state: dict) -> None:  # a listing saved before keys were kept has none
        self.__dict__.update(state)
        self.__dict__.setdefault("idempotency", {})


class FuturesMarkets:
    """The clearing houses the API serves (one per listed contract) and the tenant operating each.

    ``listings`` is the durable state: one part per contract, so a request saves only its own contract.
    """

    def __init__(self):
        self.listings: dict[str, Listing] = {}
        self.lock = threading.RLock()

    def __setstate__(self, state: dict) -> None:  # a format-1 copy: the whole markets pickled, read by upgrade
        self.__dict__.update(state)
        self.lock = threading.RLock()

    @property
    def houses(self) -> dict[str, FuturesClearingHouse]:
        return {s: listing.house for s, listing in self.listings.items()}

    @property
    def operators(self) -> dict[str, str]:
        return {s: listing.operator for s, listing in self.listings.items()}

    def list_contract(self, contract: FuturesContract, operator_tenant: str) -> FuturesClearingHouse:
        with self.lock:
            if contract.symbol in self.listings:
                raise ValueError(f"contract {contract.symbol!r} is already listed")
            self.listings[contract.symbol] = Listing(FuturesClearingHouse(contract), operator_tenant)
            return self.listings[contract.symbol].house

    def state(self) -> dict:
        """A deep snapshot of every clearing house (tests compare them)."""
        with self.lock:
            return {s: (copy.deepcopy(h.accounts), len(h.trades), len(h.settlements), h.last_settlement_ticks)
                    for s, h in self.houses.items()}


def upgrade_state(format_version: int, data: bytes) -> dict[str, Listing]:
    """Format 1 (the whole FuturesMarkets in one row) as format 2's parts: one listing per contract."""
    if format_version != 1:
        raise StateStoreError(f"the derivatives state store holds format {format_version}, which this code "
                              f"cannot read (it reads {STATE_FORMAT} and upgrades 1)")
    old = pickle.loads(data).__dict__
    return {s: Listing(house, old["operators"][s]) for s, house in old["houses"].items()}


# ---------------------------------------------------------------- helpers


def _split(internal_id: str) -> tuple[str, str]:
    """(tenant, tenant-local id): account ids never contain '/', so the last '/' separates them."""
    tenant, _, local = internal_id.rpartition("/")
    return tenant, local


def _check_finite(value, where: str = "result"):
    """Refuse to answer with a non-finite number (JSON has none; it would be a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise Problem(422, "Unprocessable Content",
                      f"{where} is not a finite number for these inputs (they are at the edge of the model's "
                      "numerical range)", "non-finite-result")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")
    return value


def _domain(fn, *args, **kwargs):
    """Call the core; its ValueError/TypeError/ArithmeticError is the caller's 422."""
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(*args, **kwargs)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise Problem(422, "Unprocessable Content", str(exc) or type(exc).__name__, "domain-error") from None


def _greeks(g: Greeks) -> dict:
    return {"delta": g.delta, "gamma": g.gamma, "vega": g.vega, "theta": g.theta, "rho": g.rho}


def _structured(result: StructuredPrice, **extra) -> dict:
    return {"product": result.product, "notional": result.notional, "price": result.price,
            "price_pct": result.price_pct,
            "legs": [{"name": leg.name, "quantity": leg.quantity, "unit_price": leg.unit_price, "value": leg.value}
                     for leg in result.legs], **extra}


def _only(body: BaseModel, model: str, allowed: dict[str, tuple[str, ...]]) -> None:
    for name, models in allowed.items():
        if getattr(body, name) is not None and model not in models:
            raise Problem(422, "Unprocessable Content", f"{name} does not apply to model {model!r}",
                          "unexpected-parameter")


# ---------------------------------------------------------------- app


def create_derivatives_app(ctx: ServiceContext, markets: FuturesMarkets | None = None,
                           store: StateStore | None = None) -> FastAPI:
    """``markets``: the initial state when ``store`` holds none (default: no contracts); a stored copy wins."""
    app = create_service_app(ctx, "platformQ derivatives",
                             "Option pricing, structured products, SPAN margin and futures clearing.")
    markets = markets if markets is not None else FuturesMarkets()
    durable = KeyedDurableState(store, STATE_FORMAT, state=markets.listings, upgrade=upgrade_state)
    # One lock for every read and write of the markets: the clearing houses are not thread-safe and sync
    # endpoints run in a thread pool (a restore after a refused change replaces markets.lock; this one stays).
    lock = durable.lock
    app.state.markets = markets
    app.state.durable = durable
    reader = ctx.require("derivatives:read")
    writer = ctx.require("derivatives:write")

    # -------------------------------------------------------- pricing

    @app.post("/v1/options/price", response_model=OptionPriceOut, tags=["options"])
    def price_option(body: OptionPriceIn, principal: Principal = Depends(reader)):
        _only(body, body.model, {"dividend_yield": ("bsm", "crr"), "steps": ("crr",), "american": ("crr",)})
        q = body.dividend_yield or 0.0
        args = (body.option_type, body.underlying_price, body.strike, body.rate, body.vol, body.time)
        if body.model == "bsm":
            price, greeks = _domain(bsm_price, *args, q), _greeks(_domain(bsm_greeks, *args, q))
        elif body.model == "black76":
            price, greeks = _domain(black76_price, *args), _greeks(_domain(black76_greeks, *args))
        else:
            price = _domain(crr_price, *args, q, steps=body.steps or 500,
                            american=True if body.american is None else body.american)
            greeks = None
        return _check_finite({"model": body.model, "option_type": body.option_type, "price": price,
                              "greeks": greeks})

    @app.post("/v1/options/implied-volatility", response_model=ImpliedVolOut, tags=["options"])
    def implied_vol(body: ImpliedVolIn, principal: Principal = Depends(reader)):
        _only(body, body.model, {"dividend_yield": ("bsm",)})
        if body.model == "bsm":
            vol = _domain(implied_volatility, body.price, body.option_type, body.underlying_price, body.strike,
                          body.rate, body.time, body.dividend_yield or 0.0)
        else:
            vol = _domain(black76_implied_volatility, body.price, body.option_type, body.underlying_price,
                          body.strike, body.rate, body.time)
        return _check_finite({"model": body.model, "option_type": body.option_type, "implied_volatility": vol})

    @app.post("/v1/structured/principal-protected-note", response_model=StructuredOut, tags=["structured products"])
    def principal_protected_note(body: PrincipalProtectedNoteIn, principal: Principal = Depends(reader)):
        if body.participation is not None and body.target_price is not None:
            raise Problem(422, "Unprocessable Content", "give participation or target_price, not both",
                          "unexpected-parameter")
        market = (body.notional, body.spot, body.rate, body.vol, body.time)
        participation = body.participation
        if participation is None:
            participation = _domain(solve_ppn_participation, *market, body.dividend_yield, body.protection,
                                    body.target_price)
        result = _domain(price_principal_protected_note, *market, participation, body.dividend_yield,
                         body.protection)
        return _check_finite(_structured(result, participation=participation))

    @app.post("/v1/structured/reverse-convertible", response_model=StructuredOut, tags=["structured products"])
    def reverse_convertible(body: ReverseConvertibleIn, principal: Principal = Depends(reader)):
        market = (body.notional, body.spot, body.rate, body.vol, body.time)
        coupon = body.coupon_rate
        if coupon is None:
            coupon = _domain(solve_reverse_convertible_coupon, *market, body.dividend_yield, body.strike_pct)
        result = _domain(price_reverse_convertible, *market, coupon, body.dividend_yield, body.strike_pct)
        return _check_finite(_structured(result, coupon_rate=coupon))

    @app.post("/v1/margin/span", response_model=SpanOut, tags=["margin"])
    def span(body: SpanIn, principal: Principal = Depends(reader)):
        params = _domain(SpanParameters, **body.parameters.model_dump())
        positions = [FuturesPosition(p.quantity, p.contract_size) if p.kind == "future" else
                     OptionPosition(p.quantity, p.option_type, p.strike, p.time, p.vol, p.contract_size)
                     for p in body.positions]
        result = _domain(span_margin, positions, body.futures_price, body.rate, params)

        def scenario(s, loss):
            return {"number": s.number, "label": s.label, "price_move": s.price_move, "vol_move": s.vol_move,
                    "cover_fraction": s.cover_fraction, "loss": loss}

        return _check_finite({
            "margin": result.margin, "scan_risk": result.scan_risk,
            "worst_scenario": scenario(result.worst_scenario, result.worst_loss), "worst_loss": result.worst_loss,
            "short_option_minimum": result.short_option_minimum,
            "scenarios": [scenario(s, loss) for s, loss in result.scenario_losses]})

    # -------------------------------------------------------- futures clearing

    @contextlib.contextmanager
    def changing(symbol: str):
        """A change to one contract: saved before it is answered, undone (and 503) when the store refuses it."""
        try:
            with durable.change(symbol):
                yield
        except StateStoreError as exc:
            ctx.logger.error("derivatives state store: %s", exc)
            raise Problem(503, "Service Unavailable", str(exc), "state-store-unavailable") from None

    def listing_of(symbol: str) -> Listing:
        listing = markets.listings.get(symbol)
        if listing is None:
            raise Problem(404, "Not Found", f"unknown contract {symbol!r}", "unknown-contract")
        return listing

    def house_of(symbol: str) -> FuturesClearingHouse:
        return listing_of(symbol).house

    def once(symbol: str, principal: Principal, key: str | None, route: str, body: BaseModel, status: int, make):
        """``make()``'s answer, or (with an Idempotency-Key seen before) the first answer again, nothing changed.
        Inside ``changing(symbol)``: the kept answer is saved with the change it answers."""
        listing = listing_of(symbol)
        print_ = fingerprint(route, body)
        replayed = idempotency.replay(listing.idempotency, principal.tenant, key, print_)
        if replayed is not None:
            return replayed
        answer = make()
        idempotency.remember(listing.idempotency, principal.tenant, key, print_, status, answer)
        return answer

    def operated_house(symbol: str, principal: Principal, what: str) -> FuturesClearingHouse:
        """The contract's clearing house, for its operator tenant only (settling moves every tenant's cash)."""
        listing = listing_of(symbol)
        house = listing.house
        if listing.operator != principal.tenant:
            raise Problem(403, "Forbidden", f"only the tenant that listed {symbol} posts its {what}",
                          "not-contract-operator")
        return house

    # Account ids are per tenant: the clearing house sees "<tenant>/<account_id>".
    def internal(principal: Principal, account_id: str) -> str:
        return f"{principal.tenant}/{account_id}"

    def own_account(principal: Principal, house: FuturesClearingHouse, account_id: str) -> str:
        name = internal(principal, account_id)
        if "/" in account_id or name not in house.accounts:
            raise Problem(404, "Not Found", f"unknown account {account_id!r}", "unknown-account")
        return name

    def contract_out(house: FuturesClearingHouse) -> ContractOut:
        c = house.contract
        last = house.last_settlement_ticks
        band = house.price_band_ticks()
        return ContractOut(symbol=c.symbol, underlying=c.underlying, currency=c.currency, expiry=c.expiry,
                           contract_size=c.contract_size, tick_size=str(c.tick_size),
                           tick_value_cents=c.tick_value_cents, initial_margin_cents=c.initial_margin_cents,
                           maintenance_margin_cents=c.maintenance_margin_cents,
                           open_interest=house.open_interest()[0],
                           last_settlement_price=None if last is None else str(c.ticks_to_price(last)),
                           last_settlement_day=house.last_settlement_day,
                           status="open" if house.final is None else "settled",
                           final_settlement_day=None if house.final is None else house.final.day,
                           final_price=None if house.final is None else
                           str(c.ticks_to_price(house.final.final_price_ticks)),
                           reference_price=None if c.reference_price is None else str(c.reference_price),
                           price_band_pct=c.price_band_pct,
                           price_band_low=None if band is None else str(c.ticks_to_price(band[0])),
                           price_band_high=None if band is None else str(c.ticks_to_price(band[1])))

    def final_out(house: FuturesClearingHouse, result: FinalSettlement, principal: Principal) -> FinalSettlementOut:
        return FinalSettlementOut(
            symbol=house.contract.symbol, day=result.day, final_price_ticks=result.final_price_ticks,
            final_price=str(house.contract.ticks_to_price(result.final_price_ticks)),
            accounts=[ClosedPositionOut(account_id=_split(a)[1], closed_position=position,
                                        variation_margin_cents=result.variation_margin.get(a, 0),
                                        balance_cents=result.balances[a])
                      for a, position in result.closed_positions.items() if _split(a)[0] == principal.tenant])

    def account_out(house: FuturesClearingHouse, name: str) -> FuturesAccountOut:
        state = house.accounts[name]
        return FuturesAccountOut(account_id=_split(name)[1], symbol=house.contract.symbol,
                                 balance_cents=state.balance_cents, equity_cents=house.equity_cents(name),
                                 position=state.position,
                                 initial_requirement_cents=house.initial_requirement_cents(name),
                                 maintenance_requirement_cents=house.maintenance_requirement_cents(name),
                                 excess_cents=house.excess_cents(name), margin_call_cents=state.margin_call_cents)

    @app.post("/v1/futures/contracts", status_code=201, response_model=ContractOut, tags=["futures"])
    def list_contract(body: ContractIn, principal: Principal = Depends(writer)):
        contract = _domain(FuturesContract, body.symbol, body.contract_size, Decimal(body.tick_size), body.expiry,
                           body.initial_margin_cents, body.maintenance_margin_cents, underlying=body.underlying,
                           reference_price=None if body.reference_price is None else Decimal(body.reference_price),
                           price_band_pct=body.price_band_pct)
        with changing(body.symbol):
            if body.symbol in markets.listings:
                raise Problem(409, "Conflict", f"contract {body.symbol!r} is already listed", "contract-exists")
            return contract_out(markets.list_contract(contract, principal.tenant))

    @app.get("/v1/futures/contracts", response_model=ContractPage, tags=["futures"])
    def contracts(principal: Principal = Depends(reader),
                  status: Literal["open", "settled"] | None = None,
                  expires_by: Annotated[dt.date | None, Query(description="expiry on or before this day")] = None,
                  settled_on: Annotated[dt.date | None, Query(description="finally settled on this day")] = None,
                  operated: Annotated[bool, Query(description="only the contracts the caller's tenant "
                                                          "listed (and so settles)")] = False,
                  underlying: Annotated[str | None, Query(min_length=1, max_length=64,
                                                          description="only contracts on this underlying")] = None,
                  page_size: Annotated[int, Query(ge=1, le=MAX_CONTRACT_PAGE)] = 100,
                  page_token: Annotated[str | None, Query(min_length=1, max_length=16,
                                                          pattern=r"^[A-Z0-9_.-]+$")] = None):
        """Listed contracts (market-wide), in symbol order, a page at a time; the filters combine."""
        def wanted(listing: Listing) -> bool:
            house, final = listing.house, listing.house.final
            return ((status is None or status == ("open" if final is None else "settled"))
                    and (expires_by is None or house.contract.expiry <= expires_by)
                    and (settled_on is None or (final is not None and final.day == settled_on))
                    and (not operated or listing.operator == principal.tenant)
                    and (underlying is None or house.contract.underlying == underlying))

        with lock:
            symbols = sorted(s for s in markets.listings if page_token is None or s > page_token)
            page: list[ContractOut] = []
            for symbol in symbols:
                listing = markets.listings[symbol]
                if not wanted(listing):
                    continue
                if len(page) == page_size:  # one more matches: there is a next page
                    return ContractPage(contracts=page, next_page_token=page[-1].symbol)
                page.append(contract_out(listing.house))
            return ContractPage(contracts=page, next_page_token=None)

    @app.get("/v1/futures/contracts/{symbol}", response_model=ContractOut, tags=["futures"])
    def contract(symbol: Symbol, principal: Principal = Depends(reader)):
        with lock:
            return contract_out(house_of(symbol))

    @app.post("/v1/futures/{symbol}/accounts", status_code=201, response_model=FuturesAccountOut, tags=["futures"])
    def open_account(symbol: Symbol, body: FuturesAccountIn, principal: Principal = Depends(writer),
                     key: str | None = Depends(idempotency_key)):
        def make():
            house = house_of(symbol)
            name = internal(principal, body.account_id)
            if name in house.accounts:
                raise Problem(409, "Conflict", f"account {body.account_id!r} already exists in {symbol}",
                              "account-exists")
            _domain(house.open_account, name, body.deposit_cents)
            return account_out(house, name)

        with changing(symbol):
            return once(symbol, principal, key, f"accounts {symbol}", body, 201, make)

    @app.get("/v1/futures/{symbol}/accounts/{account_id}", response_model=FuturesAccountOut, tags=["futures"])
    def get_account(symbol: Symbol, account_id: PathAccount, principal: Principal = Depends(reader)):
        with lock:
            house = house_of(symbol)
            return account_out(house, own_account(principal, house, account_id))

    @app.post("/v1/futures/{symbol}/accounts/{account_id}/deposits", response_model=FuturesAccountOut,
              tags=["futures"])
    def deposit(symbol: Symbol, account_id: PathAccount, body: CashIn, principal: Principal = Depends(writer),
                key: str | None = Depends(idempotency_key)):
        def make():
            house = house_of(symbol)
            name = own_account(principal, house, account_id)
            _domain(house.deposit, name, body.amount_cents)
            return account_out(house, name)

        with changing(symbol):
            return once(symbol, principal, key, f"deposits {symbol} {account_id}", body, 200, make)

    @app.post("/v1/futures/{symbol}/accounts/{account_id}/withdrawals", response_model=FuturesAccountOut,
              tags=["futures"])
    def withdraw(symbol: Symbol, account_id: PathAccount, body: CashIn, principal: Principal = Depends(writer),
                 key: str | None = Depends(idempotency_key)):
        """Only the excess over the initial margin requirement may leave: ``min(balance, equity)`` less the
        requirement, so a loss not yet settled stays and a gain not yet settled is not paid out before it is."""
        def make():
            house = house_of(symbol)
            name = own_account(principal, house, account_id)
            _domain(house.withdraw, name, body.amount_cents)
            return account_out(house, name)

        with changing(symbol):
            return once(symbol, principal, key, f"withdrawals {symbol} {account_id}", body, 200, make)

    @app.post("/v1/futures/{symbol}/trades", status_code=201, response_model=FuturesTradeOut, tags=["futures"])
    def trade(symbol: Symbol, body: FuturesTradeIn, principal: Principal = Depends(writer),
              key: str | None = Depends(idempotency_key)):
        """Register a matched trade between two accounts of the caller's tenant.

        Refused (422) when its price is outside the contract's price band, when a side that adds risk lacks the
        initial margin (equity, pending variation margin included, after the trade), or when ``day`` (the trade
        date, like a settlement's ``day``) is after the contract's expiry."""
        def make():
            house = house_of(symbol)
            buyer = own_account(principal, house, body.buyer_account_id)
            seller = own_account(principal, house, body.seller_account_id)
            t = _domain(house.trade, buyer, seller, body.contracts, body.price, body.day)
            return FuturesTradeOut(trade_id=t.trade_id, symbol=symbol, buyer_account_id=_split(t.buyer)[1],
                                   seller_account_id=_split(t.seller)[1], contracts=t.contracts,
                                   price=str(house.contract.ticks_to_price(t.price_ticks)),
                                   price_ticks=t.price_ticks, day=t.day)

        with changing(symbol):
            return once(symbol, principal, key, f"trades {symbol}", body, 201, make)

    @app.post("/v1/futures/{symbol}/settlements", status_code=201, response_model=SettlementOut, tags=["futures"])
    def settle(symbol: Symbol, body: SettlementIn, principal: Principal = Depends(writer)):
        """Daily mark-to-market of the whole clearing house; only the contract's operator tenant may post it.

        The response lists variation margin and margin calls of the caller's own accounts only.
        """
        with changing(symbol):
            house = operated_house(symbol, principal, "settlements")
            result = _domain(house.mark_to_market, body.day, body.settlement_price)
            mine = principal.tenant
            return SettlementOut(
                symbol=symbol, day=result.day, settlement_price_ticks=result.settlement_price_ticks,
                settlement_price=str(house.contract.ticks_to_price(result.settlement_price_ticks)),
                variation_margin=[VariationMarginOut(account_id=_split(a)[1], variation_margin_cents=vm)
                                  for a, vm in result.variation_margin.items() if _split(a)[0] == mine],
                margin_calls=[MarginCallOut(account_id=_split(c.account)[1], amount_cents=c.amount_cents,
                                            equity_cents=c.equity_cents,
                                            maintenance_requirement_cents=c.maintenance_requirement_cents,
                                            initial_requirement_cents=c.initial_requirement_cents)
                              for c in result.margin_calls if _split(c.account)[0] == mine])

    @app.post("/v1/futures/{symbol}/final-settlement", status_code=201, response_model=FinalSettlementOut,
              tags=["futures"])
    def final_settle(symbol: Symbol, body: FinalSettlementIn, principal: Principal = Depends(writer)):
        """Cash settlement at expiry, once, by the contract's operator tenant: the last variation margin at the
        final price, then every position closes and margins are released. Later trades and settlements are 422.

        The response lists the caller's tenant's accounts only.
        """
        with changing(symbol):
            house = operated_house(symbol, principal, "final settlement")
            return final_out(house, _domain(house.final_settlement, body.final_price, body.day), principal)

    @app.get("/v1/futures/{symbol}/final-settlement", response_model=FinalSettlementOut, tags=["futures"])
    def final_settlement(symbol: Symbol, principal: Principal = Depends(reader)):
        """The contract's final settlement, for the caller's tenant's accounts; 404 while it is open."""
        with lock:
            house = house_of(symbol)
            if house.final is None:
                raise Problem(404, "Not Found", f"{symbol} has not been finally settled", "not-settled")
            return final_out(house, house.final, principal)

    return app


__all__ = ["FuturesMarkets", "create_derivatives_app"]
