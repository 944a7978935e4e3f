"""Cash-settled compute futures: positions, daily mark-to-market and margining.

Pure domain code: no Dagster, no HTTP, no I/O.

Money is integer minor units (cents) and prices are integer ticks, so every
variation-margin amount is ``contracts * price_change_in_ticks * tick_value``
with ``tick_value`` an integer number of cents: a product of integers, exact.
Because every trade has one buyer and one seller, the net position of the
clearing house is zero and the variation margin of all accounts sums to
exactly zero every day; no cent is created or lost to rounding.

Rounding rule (the only one): a settlement price that arrives as a decimal
(e.g. a volume-weighted average) is rounded to the nearest tick with
ROUND_HALF_EVEN, so no side is systematically favoured. Trade prices are never
rounded: a trade off the tick grid is an error in the caller and is rejected.

Margin rules (exchange style):

* initial requirement = ``|position| * initial_margin`` per contract, needed
  before a trade that increases an account's risk;
* maintenance requirement = ``|position| * maintenance_margin``;
* after each daily settlement, an account whose equity is *strictly* below its
  maintenance requirement gets a margin call for the amount that restores its
  equity to the *initial* requirement (not just to maintenance, which would
  re-trigger on the next small move).

Between settlements an account's equity is its cash balance plus its *pending*
variation margin: what the next settlement would pay or take for its trades
since the last one (realised P&L of positions closed since then included) and
for its open position. Pending variation margin is valued at two marks, the
last settlement price (before the first settlement the listing's reference
price, if it has one) and the latest trade price since the last settlement
among the account's own tenant's trades (another tenant's trades never move
it), and the *lower* of the two counts, so summed over accounts it is never
positive: no account can spend a gain another account has not yet paid. The
initial-margin check of a trade uses the equity the account would have after
the trade; a withdrawal may take only ``min(balance, equity) - initial
requirement`` (``excess_cents``): a loss not yet settled stays, and a gain not
yet settled cannot leave before it is paid.

Price band: a trade's price must lie within ``price_band_pct`` percent
(default 10) of the last settlement price, or before the first settlement of
the listing's ``reference_price``; a contract listed without a reference price
has no band until its first settlement. Trading ends at expiry: a trade dated
(``day``) after the contract's expiry, or before its last settlement day, is
refused, as is any trade once the final settlement is posted.

Errors: a value of the wrong type (a float price, a non-integer contract
count, a non-date day) raises ``TypeError``; a well-typed but invalid value
(off-grid price, insufficient margin, a day out of order) raises
``ValueError`` with a message naming the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

__all__ = [
    "AccountState",
    "DailySettlement",
    "FinalSettlement",
    "FuturesClearingHouse",
    "FuturesContract",
    "DEFAULT_PRICE_BAND_PCT",
    "MarginCall",
    "Trade",
    "gpu_hour_future",
]

PriceLike = Decimal | str | int
DEFAULT_PRICE_BAND_PCT = 10  # a trade may be at most 10% away from the last settlement (or reference) price


def _int(name: str, value: int, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _decimal(name: str, value: PriceLike) -> Decimal:
    # Floats are refused: Decimal(0.1) is 0.1000000000000000055..., so a float
    # price could silently land off the tick grid or round the wrong way.
    if isinstance(value, (float, bool)):
        raise TypeError(f"{name} must be a Decimal, str or int (not float/bool), got {value!r}")
    try:
        result = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{name} is not a valid number: {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


@dataclass(frozen=True)
class FuturesContract:
    """Specification of one cash-settled futures contract.

    ``tick_size`` is the price increment in currency units per unit of the
    underlying (e.g. ``Decimal("0.01")`` dollars per GPU-hour) and
    ``contract_size`` the units per contract (e.g. 100 GPU-hours), so one
    tick on one contract is worth ``tick_size * contract_size * 100`` cents,
    which must be a whole number of cents.

    ``reference_price`` (optional, on the tick grid) centres the price band
    before the first settlement; ``price_band_pct`` (an integer 1..100) is the
    band's half-width in percent of the last settlement (or reference) price.
    """

    symbol: str
    contract_size: int
    tick_size: Decimal
    expiry: date
    initial_margin_cents: int
    maintenance_margin_cents: int
    underlying: str = "GPU-hour"
    currency: str = "USD"
    minor_units_per_unit: int = 100
    reference_price: Decimal | None = None
    price_band_pct: int = DEFAULT_PRICE_BAND_PCT

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("symbol must be non-empty")
        _int("contract_size", self.contract_size, minimum=1)
        _int("minor_units_per_unit", self.minor_units_per_unit, minimum=1)
        tick = _decimal("tick_size", self.tick_size)
        if tick <= 0:
            raise ValueError(f"tick_size must be > 0, got {self.tick_size!r}")
        object.__setattr__(self, "tick_size", tick)
        tick_value = tick * self.contract_size * self.minor_units_per_unit
        if tick_value != tick_value.to_integral_value():
            raise ValueError(
                f"tick value {tick_value} minor units is not whole: choose tick_size * contract_size "
                f"that is a multiple of 1/{self.minor_units_per_unit}"
            )
        im = _int("initial_margin_cents", self.initial_margin_cents, minimum=0)
        mm = _int("maintenance_margin_cents", self.maintenance_margin_cents, minimum=0)
        if mm > im:
            raise ValueError(f"maintenance margin {mm} must not exceed initial margin {im}")
        if not isinstance(self.expiry, date):
            raise TypeError(f"expiry must be a date, got {self.expiry!r}")
        band = _int("price_band_pct", self.price_band_pct, minimum=1)
        if band > 100:
            raise ValueError(f"price_band_pct must be <= 100, got {band}")
        if self.reference_price is not None:
            object.__setattr__(self, "reference_price", _decimal("reference_price", self.reference_price))
            self.price_to_ticks(self.reference_price)  # on the grid and positive

    @property
    def reference_price_ticks(self) -> int | None:
        return None if self.reference_price is None else self.price_to_ticks(self.reference_price)

    @property
    def tick_value_cents(self) -> int:
        """Minor units gained by a long of one contract when the price rises one tick."""
        return int(self.tick_size * self.contract_size * self.minor_units_per_unit)

    def price_to_ticks(self, price: PriceLike) -> int:
        """Exact conversion of a traded price; raises if it is not on the tick grid."""
        ticks = _decimal("price", price) / self.tick_size
        if ticks != ticks.to_integral_value():
            raise ValueError(f"price {price} is not a multiple of tick size {self.tick_size}")
        return self._positive_ticks(int(ticks), price)

    def round_to_ticks(self, price: PriceLike) -> int:
        """Settlement-price conversion: nearest tick, ties to even (the documented rounding rule)."""
        ticks = (_decimal("price", price) / self.tick_size).to_integral_value(rounding=ROUND_HALF_EVEN)
        return self._positive_ticks(int(ticks), price)

    def ticks_to_price(self, ticks: int) -> Decimal:
        return ticks * self.tick_size

    def notional_cents(self, price_ticks: int, contracts: int = 1) -> int:
        return abs(contracts) * price_ticks * self.tick_value_cents

    @staticmethod
    def _positive_ticks(ticks: int, price: PriceLike) -> int:
        if ticks <= 0:
            raise ValueError(f"price must be positive (at least one tick), got {price}")
        return ticks


def gpu_hour_future(symbol: str, expiry: date, *, contract_size: int = 100, tick_size: PriceLike = "0.01",
                    initial_margin_cents: int = 5_000, maintenance_margin_cents: int = 4_000,
                    reference_price: PriceLike | None = None,
                    price_band_pct: int = DEFAULT_PRICE_BAND_PCT) -> FuturesContract:
    """A GPU-hour futures contract: 100 GPU-hours, priced in dollars per GPU-hour, 1-cent ticks."""
    return FuturesContract(symbol, contract_size, Decimal(tick_size), expiry, initial_margin_cents,
                           maintenance_margin_cents, underlying="GPU-hour",
                           reference_price=None if reference_price is None else _decimal("reference_price",
                                                                                         reference_price),
                           price_band_pct=price_band_pct)


@dataclass(frozen=True)
class Trade:
    trade_id: int
    buyer: str
    seller: str
    contracts: int
    price_ticks: int
    day: date | None = None  # the trade date, when the caller gave one


@dataclass(frozen=True)
class MarginCall:
    account: str
    day: date
    amount_cents: int  # brings equity back to the initial requirement
    equity_cents: int
    maintenance_requirement_cents: int
    initial_requirement_cents: int


@dataclass(frozen=True)
class DailySettlement:
    day: date
    settlement_price_ticks: int
    variation_margin: dict[str, int]  # cents credited (+) or debited (-) per account; sums to 0
    margin_calls: tuple[MarginCall, ...]


@dataclass(frozen=True)
class FinalSettlement:
    day: date
    final_price_ticks: int
    variation_margin: dict[str, int]  # last mark from the previous settlement to the final price
    closed_positions: dict[str, int]  # position each account held, now zero
    balances: dict[str, int]  # cash each account holds after expiry (all withdrawable)


@dataclass
class AccountState:
    account: str
    balance_cents: int = 0
    position: int = 0  # signed contracts: > 0 long, < 0 short
    position_at_last_settlement: int = 0
    # Sum over today's trades of -signed_qty * price_ticks; with the position
    # change it turns the day's trades into variation margin (see _vm_ticks).
    trade_cash_ticks: int = 0
    margin_call_cents: int = 0  # outstanding call from the latest settlement


@dataclass
class FuturesClearingHouse:
    """Central counterparty for one contract: every trade is buyer vs seller, so longs always equal shorts.

    Variation margin for an account on a settlement day is
    ``pos_t*S_t - pos_prev*S_prev - sum(signed_qty*trade_price)`` ticks, i.e.
    carried positions are marked from yesterday's settlement and today's
    trades from their trade price. Summed over accounts each term vanishes
    (net position is zero, each trade's buyer and seller terms cancel), so
    conservation is exact by construction, not by reconciliation.
    """

    contract: FuturesContract
    accounts: dict[str, AccountState] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    settlements: list[DailySettlement] = field(default_factory=list)
    last_settlement_ticks: int | None = None
    last_settlement_day: date | None = None
    final: FinalSettlement | None = None
    # price of the latest trade since the last settlement, per book (an account's tenant, the part of its id
    # before the last "/"): one tenant's trades never move the mark another tenant's margin is valued at
    last_trade_by_book: dict[str, int] = field(default_factory=dict)
    last_trade_ticks: int | None = None  # a copy saved before books: the contract's latest trade, until a settlement

    def __setstate__(self, state: dict) -> None:  # a copy saved before ``last_trade_by_book``
        state.setdefault("last_trade_by_book", {})
        self.__dict__.update(state)

    @staticmethod
    def _book(account: str) -> str:
        return account.rpartition("/")[0]

    def _last_trade_for(self, account: str) -> int | None:
        return self.last_trade_by_book.get(self._book(account), self.last_trade_ticks)

    # ------------------------------------------------------------ accounts

    def open_account(self, account: str, deposit_cents: int = 0) -> AccountState:
        if not account:
            raise ValueError("account id must be non-empty")
        if account in self.accounts:
            raise ValueError(f"account {account!r} already exists")
        _int("deposit", deposit_cents, minimum=0)  # before the account exists: a refused open leaves nothing
        self.accounts[account] = state = AccountState(account)
        if deposit_cents:
            self.deposit(account, deposit_cents)
        return state

    def _account(self, account: str) -> AccountState:
        try:
            return self.accounts[account]
        except KeyError:
            raise ValueError(f"unknown account {account!r}") from None

    def deposit(self, account: str, cents: int) -> int:
        """Add cash; it pays down any outstanding margin call first. Returns the new balance."""
        _int("deposit", cents, minimum=1)
        state = self._account(account)
        state.balance_cents += cents
        state.margin_call_cents = max(0, state.margin_call_cents - cents)
        return state.balance_cents

    def withdraw(self, account: str, cents: int) -> int:
        """Remove cash; only the excess over the initial requirement may leave (see :meth:`excess_cents`)."""
        _int("withdrawal", cents, minimum=1)
        excess = self.excess_cents(account)
        if cents > excess:
            raise ValueError(f"withdrawal of {cents} exceeds excess margin {excess} for {account!r}")
        state = self._account(account)
        state.balance_cents -= cents
        return state.balance_cents

    # ------------------------------------------------------------ views

    def position(self, account: str) -> int:
        return self._account(account).position

    def open_interest(self) -> tuple[int, int]:
        """(total long contracts, total short contracts); equal by construction."""
        longs = sum(a.position for a in self.accounts.values() if a.position > 0)
        shorts = -sum(a.position for a in self.accounts.values() if a.position < 0)
        return longs, shorts

    def _marks(self, last_trade_ticks: int | None) -> set[int]:
        """Prices pending variation margin is valued at: the last settlement (or reference) price, the latest trade."""
        settled = self.last_settlement_ticks
        if settled is None:
            settled = self.contract.reference_price_ticks
        return {m for m in (settled, last_trade_ticks) if m is not None}

    def _pending_ticks(self, position: int, carried: int, trade_cash_ticks: int, marks: set[int]) -> int:
        prev = self.last_settlement_ticks or 0  # carried is 0 before the first settlement
        return min((position * m - carried * prev + trade_cash_ticks for m in marks), default=0)

    def pending_variation_margin_cents(self, account: str) -> int:
        """What the next settlement would pay (+) or take (-), at the lower of the two marks (see module doc)."""
        state = self._account(account)
        ticks = self._pending_ticks(state.position, state.position_at_last_settlement, state.trade_cash_ticks,
                                    self._marks(self._last_trade_for(account)))
        return ticks * self.contract.tick_value_cents

    def equity_cents(self, account: str) -> int:
        """Cash balance plus pending variation margin (zero right after a settlement)."""
        return self._account(account).balance_cents + self.pending_variation_margin_cents(account)

    def initial_requirement_cents(self, account: str) -> int:
        return abs(self._account(account).position) * self.contract.initial_margin_cents

    def maintenance_requirement_cents(self, account: str) -> int:
        return abs(self._account(account).position) * self.contract.maintenance_margin_cents

    def excess_cents(self, account: str) -> int:
        """What may be withdrawn: ``min(balance, equity) - initial requirement`` (an unsettled gain is not cash yet)."""
        balance = self._account(account).balance_cents
        return min(balance, self.equity_cents(account)) - self.initial_requirement_cents(account)

    def price_band_ticks(self) -> tuple[int, int] | None:
        """(lowest, highest) tradable price in ticks: ``price_band_pct`` around the last settlement price, or the
        reference price before the first settlement; None while there is neither."""
        centre = self.last_settlement_ticks
        if centre is None:
            centre = self.contract.reference_price_ticks
        if centre is None:
            return None
        width = Decimal(centre) * self.contract.price_band_pct / 100
        return max(1, math.ceil(centre - width)), math.floor(centre + width)

    def outstanding_margin_call_cents(self, account: str) -> int:
        return self._account(account).margin_call_cents

    # ------------------------------------------------------------ trading

    def trade(self, buyer: str, seller: str, contracts: int, price: PriceLike, day: date | None = None) -> Trade:
        """Register a matched trade; rejects a risk-increasing side lacking initial margin.

        ``day`` is the trade date: after the contract's expiry (or before its last settlement day) it is refused.
        The price must lie within the price band (see :meth:`price_band_ticks`). The margin check uses the
        equity each side would have after the trade, pending variation margin included."""
        if self.final is not None:
            raise ValueError(f"{self.contract.symbol} has expired and been settled; no more trades")
        if day is not None:
            if not isinstance(day, date):
                raise TypeError(f"day must be a date, got {day!r}")
            if day > self.contract.expiry:
                raise ValueError(f"trade date {day} is after expiry {self.contract.expiry} of "
                                 f"{self.contract.symbol}: trading has ended")
            if self.last_settlement_day is not None and day < self.last_settlement_day:
                raise ValueError(f"trade date {day} is before the last settlement day {self.last_settlement_day}")
        if buyer == seller:
            raise ValueError("buyer and seller must differ (a self-trade changes nothing but open interest)")
        if self._book(buyer) != self._book(seller):  # each book's accounts are marked at its own trades
            raise ValueError(f"buyer {buyer!r} and seller {seller!r} belong to different tenants: a trade is "
                             "between one tenant's accounts")
        _int("contracts", contracts, minimum=1)
        ticks = self.contract.price_to_ticks(price)
        band = self.price_band_ticks()
        if band is not None and not band[0] <= ticks <= band[1]:
            low, high = (self.contract.ticks_to_price(t) for t in band)
            centre = "last settlement" if self.last_settlement_ticks is not None else "reference"
            raise ValueError(f"price {price} is outside the price band {low}..{high} ({self.contract.price_band_pct}% "
                             f"around the {centre} price)")
        b, s = self._account(buyer), self._account(seller)
        marks = self._marks(ticks)  # this trade is the latest one once it is made
        for state, signed in ((b, contracts), (s, -contracts)):
            new_pos = state.position + signed
            if abs(new_pos) > abs(state.position):
                needed = abs(new_pos) * self.contract.initial_margin_cents
                pending = self._pending_ticks(new_pos, state.position_at_last_settlement,
                                              state.trade_cash_ticks - signed * ticks, marks)
                equity = state.balance_cents + pending * self.contract.tick_value_cents
                if equity < needed:
                    raise ValueError(
                        f"account {state.account!r} has equity {equity} (balance {state.balance_cents}, pending "
                        f"variation margin {equity - state.balance_cents}) < initial margin "
                        f"{needed} required for a position of {new_pos}"
                    )
        b.position += contracts
        b.trade_cash_ticks -= contracts * ticks
        s.position -= contracts
        s.trade_cash_ticks += contracts * ticks
        self.last_trade_by_book[self._book(buyer)] = ticks
        trade = Trade(len(self.trades) + 1, buyer, seller, contracts, ticks, day)
        self.trades.append(trade)
        return trade

    # ------------------------------------------------------------ settlement

    def _vm_ticks(self, state: AccountState, settle_ticks: int) -> int:
        prev = self.last_settlement_ticks or 0  # position_at_last_settlement is 0 before the first one
        return state.position * settle_ticks - state.position_at_last_settlement * prev + state.trade_cash_ticks

    def _check_day(self, day: date, final: bool = False) -> None:
        if self.final is not None:
            raise ValueError(f"{self.contract.symbol} has already been finally settled")
        if not isinstance(day, date):
            raise TypeError(f"day must be a date, got {day!r}")
        last = self.last_settlement_day
        # The final settlement is the expiry day's settlement: it may follow that day's mark-to-market,
        # and then pays variation margin only from that mark (and the later trades) to the final price.
        replaces_expiry_mark = final and day == last == self.contract.expiry
        if last is not None and day <= last and not replaces_expiry_mark:
            raise ValueError(f"settlement day {day} is not after the last one {last}")

    def _pay_variation_margin(self, settle_ticks: int) -> dict[str, int]:
        tick_value = self.contract.tick_value_cents
        vm: dict[str, int] = {}
        for name, state in self.accounts.items():
            vm[name] = self._vm_ticks(state, settle_ticks) * tick_value
            state.balance_cents += vm[name]
            state.position_at_last_settlement = state.position
            state.trade_cash_ticks = 0
        self.last_trade_ticks = None
        self.last_trade_by_book.clear()
        total = sum(vm.values())
        if total != 0:  # impossible unless the state was edited by hand
            raise AssertionError(f"variation margin does not net to zero: {total}")
        return vm

    def mark_to_market(self, day: date, settlement_price: PriceLike) -> DailySettlement:
        """Daily settlement: pay variation margin at the settlement price, then issue margin calls."""
        self._check_day(day)
        if day > self.contract.expiry:
            raise ValueError(f"{day} is after expiry {self.contract.expiry}: use final_settlement")
        settle = self.contract.round_to_ticks(settlement_price)
        vm = self._pay_variation_margin(settle)
        calls = []
        for name, state in self.accounts.items():
            equity = state.balance_cents
            maintenance = self.maintenance_requirement_cents(name)
            initial = self.initial_requirement_cents(name)
            if equity < maintenance:
                call = MarginCall(name, day, initial - equity, equity, maintenance, initial)
                calls.append(call)
                state.margin_call_cents = call.amount_cents
            else:
                # A new settlement supersedes yesterday's call: if the market
                # came back, the account is no longer under-margined.
                state.margin_call_cents = 0
        self.last_settlement_ticks, self.last_settlement_day = settle, day
        result = DailySettlement(day, settle, vm, tuple(calls))
        self.settlements.append(result)
        return result

    def final_settlement(self, final_price: PriceLike, day: date | None = None) -> FinalSettlement:
        """Cash-settle at expiry: last variation margin at the final price, then all positions close.

        It is the expiry day's settlement: after a mark-to-market of that day it replaces its price, paying
        variation margin only from that mark (and later trades) to the final price, never twice."""
        day = self.contract.expiry if day is None else day
        self._check_day(day, final=True)
        if day < self.contract.expiry:
            raise ValueError(f"final settlement on {day} is before expiry {self.contract.expiry}")
        final_ticks = self.contract.round_to_ticks(final_price)
        vm = self._pay_variation_margin(final_ticks)
        closed = {}
        for name, state in self.accounts.items():
            closed[name] = state.position
            state.position = state.position_at_last_settlement = 0
            state.margin_call_cents = 0
        self.last_settlement_ticks, self.last_settlement_day = final_ticks, day
        self.final = FinalSettlement(day, final_ticks, vm, closed,
                                     {n: s.balance_cents for n, s in self.accounts.items()})
        return self.final
