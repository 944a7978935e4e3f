"""Trading API: a thin FastAPI layer over :class:`services.trading.exchange.Exchange`.

Accounts, orders, fills and follows belong to a tenant: another tenant's
resources answer 404 (their existence is not revealed). The social leaderboard
is per tenant too (copy trading is within one): a caller sees its own tenant's
traders, ranked among themselves. Book depth and the public trade tape are
market data, readable by any authenticated caller, and carry no account
identifiers.

Placing an order is made safe to send again by a client order id (FIX's ClOrdID): ``client_order_id`` in the body,
or the ``Idempotency-Key`` header, which names the order the same way. The account's kept orders hold it (in the
journalled command, so a restart keeps it); a placement repeating it answers the order that placement made, as it
stands now (201, ``Idempotent-Replayed: true``), and places nothing; the same id with other order fields is a 422.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Annotated, Callable, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.common.app import ServiceContext, create_service_app
from services.common.auth import Principal
from services.common.idempotency import HEADER, REPLAYED
from services.common.problems import Problem
from services.trading.engine import SIDE_NAMES, TIF_NAMES, Order
from services.trading.exchange import CASH, CLIENT_ORDER_ID, ClientOrderIdReused, Exchange, ExchangeError

AccountId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Symbol = Annotated[str, Path(min_length=1, max_length=16, pattern=r"^[A-Z0-9_.-]+$")]
MAX_LOTS = 10**9
TITLES = {404: "Not Found", 409: "Conflict", 503: "Service Unavailable"}
MAX_TICKS = 10**12
ClientOrderId = Annotated[str | None, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$", description=(
    "Optional, the client's id for the order (FIX ClOrdID; e.g. a UUID): 1 to 64 visible ASCII characters, unique "
    "per account among its kept orders. A placement repeating it (a retry after a lost answer) answers the order it "
    "placed, as it stands now, and places nothing; the same id with other order fields is a 422 "
    "client-order-id-reused."))]


class Strict(BaseModel):
    # strict: JSON true, "100" or 2.0 is not silently a quantity or an amount of money
    model_config = ConfigDict(extra="forbid", strict=True)


class AccountIn(Strict):
    account_id: AccountId


class BalanceOut(BaseModel):
    asset: str
    free: int
    locked: int


class AccountOut(BaseModel):
    account_id: str
    tenant: str
    balances: list[BalanceOut]


class TransferIn(Strict):
    asset: str = Field(min_length=1, max_length=16, description="USD (minor units) or an instrument (lots)")
    amount: int = Field(ge=1, le=10**15)


class OrderIn(Strict):
    account_id: AccountId
    instrument: str = Field(min_length=1, max_length=16)
    side: Literal["BUY", "SELL"]
    type: Literal["LIMIT", "MARKET"] = "LIMIT"
    quantity: int = Field(ge=1, le=MAX_LOTS, description="lots")
    price_ticks: int | None = Field(default=None, ge=1, le=MAX_TICKS)
    time_in_force: Literal["GTC", "IOC", "FOK"] = "GTC"
    client_order_id: ClientOrderId = None


def order_key(key: str | None = Header(default=None, alias=HEADER, description=(
        "Optional, the order's client_order_id as a header (the same value as the body's, if both are sent): a "
        "placement repeating it answers the order it placed, as it stands now, with Idempotent-Replayed: true, and "
        "places nothing; with other order fields it is a 422 idempotency-key-reused."))) -> str | None:
    """FastAPI dependency: the request's ``Idempotency-Key`` (None without one), a valid client order id."""
    if key is not None and not CLIENT_ORDER_ID.match(key):
        raise Problem(400, "Bad Request", f"{HEADER} names the order here (its client_order_id): 1 to 64 visible "
                      "ASCII characters", "invalid-idempotency-key")
    return key


class AmendIn(Strict):
    quantity: int | None = Field(default=None, ge=1, le=MAX_LOTS, description=(
        "new total quantity in lots, filled lots included (as a FIX cancel/replace's OrderQty): the order "
        "keeps quantity - filled_quantity open; it must exceed filled_quantity"))
    price_ticks: int | None = Field(default=None, ge=1, le=MAX_TICKS)


class OrderOut(BaseModel):
    order_id: int
    account_id: str
    instrument: str
    side: str
    type: str
    price_ticks: int | None
    quantity: int
    open_quantity: int
    filled_quantity: int
    cancelled_quantity: int
    time_in_force: str
    status: str
    client_order_id: str | None = None


class FillOut(BaseModel):
    trade_id: int
    ts: int
    instrument: str
    price_ticks: int
    quantity: int
    account_id: str
    order_id: int
    side: str
    fee: int
    liquidity: str


class Level(BaseModel):
    price_ticks: int
    quantity: int


class BookOut(BaseModel):
    instrument: str
    bids: list[Level]
    asks: list[Level]


class TapeTrade(BaseModel):
    trade_id: int
    ts: int
    price_ticks: int
    quantity: int
    aggressor_side: str


class FollowIn(Strict):
    follower_account_id: AccountId
    leader_account_id: AccountId
    multiplier: float = Field(default=1.0, gt=0, le=10)
    max_exposure: int = Field(default=10**9, ge=1, le=10**15, description="minor units")


class FollowOut(BaseModel):
    follower_account_id: str
    leader_account_id: str
    multiplier: float
    max_exposure: int


MAX_BATCH = 5000


class BatchPlace(Strict):
    op: Literal["place"]
    ref: str = Field(min_length=1, max_length=64, description="caller's id, for cancels later in the batch")
    account_id: AccountId
    instrument: str = Field(min_length=1, max_length=16)
    side: Literal["BUY", "SELL"]
    type: Literal["LIMIT", "MARKET"] = "LIMIT"
    quantity: int = Field(ge=1, le=MAX_LOTS)
    price_ticks: int | None = Field(default=None, ge=1, le=MAX_TICKS)
    time_in_force: Literal["GTC", "IOC", "FOK"] = "GTC"
    client_order_id: ClientOrderId = None


class BatchCancel(Strict):
    op: Literal["cancel"]
    ref: str | None = Field(default=None, min_length=1, max_length=64, description="ref of a place in this batch")
    order_id: int | None = Field(default=None, ge=1, le=2**62)


class BatchIn(Strict):
    commands: list[Annotated[BatchPlace | BatchCancel, Field(discriminator="op")]] = Field(
        min_length=1, max_length=MAX_BATCH)


class BatchResult(BaseModel):
    index: int
    ref: str | None
    order_id: int | None
    status: str | None
    filled_quantity: int | None
    error: str | None = None


class BatchTrade(BaseModel):
    trade_id: int
    instrument: str
    price_ticks: int
    quantity: int
    order_id: int = Field(description="the caller's order in the trade (never the counterparty's: another "
                                      "tenant's order ids are not revealed)")
    side: str = Field(description="that order's side")
    aggressor_side: str


class BatchOut(BaseModel):
    results: list[BatchResult]
    trades: list[BatchTrade] = Field(description=(
        "trades this batch produced that involve the caller's orders, one entry per order of the caller's in "
        "each: a trade between two of the caller's own accounts appears twice (its BUY and its SELL order)"))


class LeaderboardRow(BaseModel):
    pnl_rank: int
    account_id: int
    display_name: str | None = None
    tenant_id: str | None = None
    pnl: float
    traded_notional: float | None = None


def calendar_date(value: str | None) -> str | None:
    """A YYYY-MM-DD that is a real day: 2024-02-30 is a 422, not a query the lake cannot answer."""
    if value is not None:
        dt.date.fromisoformat(value)  # its ValueError is a validation error
    return value


def external(account_id: str) -> str:
    """The tenant-local account id (the exchange prefixes ids with their tenant). Account ids never contain '/'
    (AccountId), a tenant's name may ("acme/emea"): the last '/' separates them."""
    return account_id.rpartition("/")[2]


def order_out(order: Order, client_order_id: str | None = None) -> OrderOut:
    return OrderOut(order_id=order.order_id, account_id=external(str(order.account)), instrument=order.instrument,
                    side=SIDE_NAMES[order.side], type="MARKET" if order.price is None else "LIMIT",
                    price_ticks=order.price, quantity=order.qty, open_quantity=order.open_qty,
                    filled_quantity=order.filled_qty, cancelled_quantity=order.cancelled_qty,
                    time_in_force=TIF_NAMES[order.tif], status=order.status, client_order_id=client_order_id)


def create_trading_app(ctx: ServiceContext, exchange: Exchange,
                       leaderboard: Callable[[str, str | None, int], list[dict]] | None = None) -> FastAPI:
    """``leaderboard(tenant, date, limit)``: that tenant's rows only, ranked within it (pnl_rank from 1)."""
    app = create_service_app(ctx, "platformQ trading", "Orders, accounts, market data and copy trading.")
    app.state.exchange = exchange  # the venue this app serves (for the process that runs it)
    reader = ctx.require("orders:read")
    writer = ctx.require("orders:write")
    account_reader = ctx.require("accounts:read")
    account_writer = ctx.require("accounts:write")
    market = ctx.require("market:read")

    # Account ids are per tenant: the exchange sees "<tenant>/<account_id>", so one
    # tenant can neither reach nor even detect another tenant's accounts.
    def internal(principal: Principal, account_id: str) -> str:
        return f"{principal.tenant}/{account_id}"

    def own_account(principal: Principal, account_id: str):
        account = exchange.accounts.get(internal(principal, account_id))
        if account is None or account.tenant != principal.tenant:
            raise Problem(404, "Not Found", f"unknown account {account_id!r}", "unknown-account")
        return account

    def own_order(principal: Principal, order_id: int) -> Order:
        order = exchange.engine.orders.get(order_id)  # a closed order older than the kept history is gone too
        if order is None or exchange.accounts[order.account].tenant != principal.tenant:
            raise Problem(404, "Not Found", f"unknown order {order_id}", "unknown-order")
        return order

    def out(order: Order) -> OrderOut:
        return order_out(order, exchange.client_order_id(order.order_id))

    def problem(exc: ExchangeError) -> Problem:
        # 503 (journal-unavailable, journal-conflict): the command was undone, nothing applied; a client may send
        # it again (services' clients retry a POST on 503 only)
        return Problem(exc.status, TITLES.get(exc.status, "Unprocessable Content"), str(exc), exc.kind)

    def run(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ExchangeError as exc:
            raise problem(exc) from None

    def account_out(account) -> AccountOut:
        with exchange.lock:  # a concurrent command may add an asset to the balances
            # read again under the lock: a batch undone meanwhile (a journal outage) puts back copies of the
            # accounts, and the object read before it holds the undone trades' balances
            account = exchange.accounts.get(account.account_id, account)
            balances = [BalanceOut(asset=a, free=b.free, locked=b.locked)
                        for a, b in sorted(account.balances.items())]
        return AccountOut(account_id=external(account.account_id), tenant=account.tenant, balances=balances)

    @app.post("/v1/accounts", status_code=201, response_model=AccountOut, tags=["accounts"])
    def open_account(body: AccountIn, principal: Principal = Depends(account_writer)):
        if internal(principal, body.account_id) in exchange.accounts:
            raise Problem(409, "Conflict", f"account {body.account_id!r} already exists", "account-exists")
        return account_out(run(exchange.open_account, principal.tenant, internal(principal, body.account_id)))

    @app.get("/v1/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
    def get_account(account_id: Annotated[str, Path(max_length=64)], principal: Principal = Depends(account_reader)):
        return account_out(own_account(principal, account_id))

    @app.post("/v1/accounts/{account_id}/deposits", response_model=AccountOut, tags=["accounts"])
    def deposit(account_id: Annotated[str, Path(max_length=64)], body: TransferIn,
                principal: Principal = Depends(account_writer)):
        account = own_account(principal, account_id)
        return account_out(run(exchange.deposit, account.account_id, body.asset, body.amount))

    @app.post("/v1/accounts/{account_id}/withdrawals", response_model=AccountOut, tags=["accounts"])
    def withdraw(account_id: Annotated[str, Path(max_length=64)], body: TransferIn,
                 principal: Principal = Depends(account_writer)):
        account = own_account(principal, account_id)
        return account_out(run(exchange.withdraw, account.account_id, body.asset, body.amount))

    @app.post("/v1/orders", status_code=201, response_model=OrderOut, tags=["orders"])
    def place(body: OrderIn, response: Response, principal: Principal = Depends(writer),
              key: str | None = Depends(order_key)):
        """With a ``client_order_id`` (or an ``Idempotency-Key``, which is the order's client order id) the
        account's kept orders hold, the answer is that order as it stands now (``Idempotent-Replayed: true``)."""
        account = own_account(principal, body.account_id)
        if body.type == "LIMIT" and body.price_ticks is None:
            raise Problem(422, "Unprocessable Content", "a LIMIT order needs price_ticks", "missing-price")
        if body.type == "MARKET" and body.price_ticks is not None:
            raise Problem(422, "Unprocessable Content", "a MARKET order takes no price_ticks", "unexpected-price")
        client_order_id = body.client_order_id
        if key is not None:
            if client_order_id is not None and client_order_id != key:
                raise Problem(422, "Unprocessable Content", f"{HEADER} and client_order_id differ: send one, or the "
                              "same value in both", "idempotency-key-mismatch")
            client_order_id = key
        tif = body.time_in_force if body.type == "LIMIT" or body.time_in_force == "FOK" else "IOC"
        with exchange.lock:  # answered as placed: no other command (perhaps undone later) changes it first
            if client_order_id is None:
                return out(run(exchange.place, account.account_id, body.instrument, body.side, body.quantity,
                               body.price_ticks, tif))
            try:
                order, placed = exchange.place_named(account.account_id, body.instrument, body.side, body.quantity,
                                                     body.price_ticks, tif, client_order_id)
            except ClientOrderIdReused as exc:
                if key is None:
                    raise problem(exc) from None
                raise Problem(422, "Unprocessable Content", f"this {HEADER} names order {exc.order_id}, placed with "
                              "other order fields: use a new key for a new order", "idempotency-key-reused") from None
            except ExchangeError as exc:
                raise problem(exc) from None
            if not placed:
                response.headers[REPLAYED] = "true"
            return out(order)

    @app.post("/v1/orders/batch", response_model=BatchOut, tags=["orders"])
    def batch(body: BatchIn, principal: Principal = Depends(writer), key: str | None = Header(
            default=None, alias=HEADER, description=(
                "Optional; taken only when every place of the batch names its order by a client_order_id (which is "
                "what makes the batch safe to send again: its places answer their orders, a cancel already done "
                "fails alone), refused otherwise (400 idempotency-key-unsupported), not ignored."))):
        """Run many commands in order, journalled in one write; each succeeds or fails on its own. A batch is sent
        again safely when each place names its order by a ``client_order_id``."""
        if key is not None and any(c.op == "place" and c.client_order_id is None for c in body.commands):
            # refused, not ignored: a client sending one takes the batch as safe to send again
            raise Problem(400, "Bad Request", f"a batch takes an {HEADER} only when each place names its order by a "
                          "client_order_id (then a batch sent again answers those orders)",
                          "idempotency-key-unsupported")
        named = Counter(c.account_id for c in body.commands if c.op == "place" and c.client_order_id is not None)
        over = sorted(a for a, n in named.items() if exchange.history is not None and n > exchange.history)
        if over:
            # an account keeps the ids of its last `history` orders: a batch sent again starts with a cut that
            # forgets the oldest of this batch's, and would place them again
            raise Problem(422, "Unprocessable Content", f"a batch may name at most {exchange.history} orders of one "
                          f"account by client_order_id (the orders an account keeps), {max(named.values())} for "
                          f"{', '.join(repr(a) for a in over)}: split the batch", "too-many-client-order-ids")
        try:
            return run_batch(principal, body)
        except ExchangeError as exc:  # the journal did not take the batch (it was undone), or this process is fenced
            raise problem(exc) from None

    def run_batch(principal: Principal, body: BatchIn) -> BatchOut:
        results, refs = [], {}
        with exchange.batch():  # holds the exchange lock throughout: no other command interleaves
            first_trade = len(exchange.engine.trades)
            for i, c in enumerate(body.commands):
                try:
                    if c.op == "place":
                        account = own_account(principal, c.account_id)
                        if (c.type == "LIMIT") != (c.price_ticks is not None):
                            raise Problem(422, "Unprocessable Content", "LIMIT needs price_ticks, MARKET takes none")
                        tif = c.time_in_force if c.type == "LIMIT" or c.time_in_force == "FOK" else "IOC"
                        # a repeated client_order_id answers its order, placing nothing (a batch sent again)
                        order = run(exchange.place, account.account_id, c.instrument, c.side, c.quantity,
                                    c.price_ticks, tif, c.client_order_id)
                        refs[c.ref] = order.order_id
                    else:
                        order_id = refs.get(c.ref) if c.ref is not None else c.order_id
                        if order_id is None:
                            raise Problem(422, "Unprocessable Content", "cancel needs a known ref or an order_id")
                        order = own_order(principal, order_id)
                        order = run(exchange.cancel, order.account, order_id)
                    results.append(BatchResult(index=i, ref=c.ref, order_id=order.order_id, status=order.status,
                                               filled_quantity=order.filled_qty))
                except Problem as exc:
                    results.append(BatchResult(index=i, ref=c.ref, order_id=None, status=None, filled_quantity=None,
                                               error=exc.detail or exc.title))
            mine = {a.account_id for a in exchange.accounts.values() if a.tenant == principal.tenant}
            # only the caller's own side(s) of each trade: the counterparty's order id belongs to its tenant
            trades = [BatchTrade(trade_id=t[0], instrument=t[2], price_ticks=t[3], quantity=t[4], order_id=order_id,
                                 side=side, aggressor_side=SIDE_NAMES[t[9]])
                      for t in exchange.engine.trades[first_trade:]
                      for order_id, account, side in ((t[5], t[7], "BUY"), (t[6], t[8], "SELL")) if account in mine]
        return BatchOut(results=results, trades=trades)

    @app.get("/v1/orders/by-client-order-id", response_model=OrderOut, tags=["orders"])
    def get_client_order(account_id: Annotated[str, Query(max_length=64)],
                         client_order_id: Annotated[str, Query(min_length=1, max_length=64)],
                         principal: Principal = Depends(reader)):
        """The account's order with this client order id, while the account's kept orders hold it."""
        account = own_account(principal, account_id)
        with exchange.lock:
            order = exchange.client_order(account.account_id, client_order_id)
            if order is None:
                raise Problem(404, "Not Found", f"no kept order of account {account_id!r} has client order id "
                              f"{client_order_id!r}", "unknown-order")
            return out(order)

    @app.get("/v1/orders/{order_id}", response_model=OrderOut, tags=["orders"])
    def get_order(order_id: Annotated[int, Path(ge=1, le=2**62)], principal: Principal = Depends(reader)):
        # under the lock, as every read: a command or batch in progress has applied what its journal write may
        # still undo (a fill answered here, then a 503 to its sender and the order back to NEW)
        with exchange.lock:
            return out(own_order(principal, order_id))

    @app.get("/v1/orders", response_model=list[OrderOut], tags=["orders"])
    def list_orders(account_id: Annotated[str, Query(max_length=64)], open_only: bool = False,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100, principal: Principal = Depends(reader)):
        """The account's last ``limit`` orders, oldest first (open ones only if asked). The service keeps each
        account's last 1,000 orders (PLATFORMQ_TRADING_HISTORY) and any older one still open; older closed orders
        are in the lake (bronze.orders)."""
        account = own_account(principal, account_id)
        with exchange.lock:  # orders change under concurrent requests: read them consistently
            return [out(o) for o in exchange.orders_of(account.account_id, open_only, limit)]

    @app.delete("/v1/orders/{order_id}", response_model=OrderOut, tags=["orders"])
    def cancel(order_id: Annotated[int, Path(ge=1, le=2**62)], principal: Principal = Depends(writer)):
        with exchange.lock:  # answered as cancelled, not as a later command (perhaps undone) left it
            order = own_order(principal, order_id)
            return out(run(exchange.cancel, order.account, order_id))

    @app.patch("/v1/orders/{order_id}", response_model=OrderOut, tags=["orders"])
    def amend(order_id: Annotated[int, Path(ge=1, le=2**62)], body: AmendIn, principal: Principal = Depends(writer)):
        """Change price and/or total quantity; the exchange amends the open quantity (total - filled)."""
        order = own_order(principal, order_id)
        if body.quantity is None and body.price_ticks is None:
            raise Problem(422, "Unprocessable Content", "give quantity and/or price_ticks", "empty-amendment")
        with exchange.lock:  # no fill between reading the filled quantity and amending
            # read again under the lock: an undone command (a journal outage) rebuilds the engine's orders, so the
            # object read before it may no longer be the order's, and its filled quantity stale
            order = own_order(principal, order_id)
            open_qty = None
            if body.quantity is not None:
                if body.quantity <= order.filled_qty:
                    raise Problem(422, "Unprocessable Content", f"quantity {body.quantity} does not exceed the "
                                  f"{order.filled_qty} lots already filled", "quantity-not-above-filled")
                open_qty = body.quantity - order.filled_qty
            return out(run(exchange.amend, order.account, order_id, open_qty, body.price_ticks))

    @app.get("/v1/fills", response_model=list[FillOut], tags=["orders"])
    def fills(account_id: Annotated[str, Query(max_length=64)], limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              principal: Principal = Depends(reader)):
        """The account's last ``limit`` fills, oldest first. The service keeps each account's last 1,000
        (PLATFORMQ_TRADING_HISTORY); older fills are in the lake (bronze.fills)."""
        account = own_account(principal, account_id)
        rows = exchange.fills_of(account.account_id, limit)
        return [FillOut(trade_id=f.trade_id, ts=f.ts, instrument=f.instrument, price_ticks=f.price,
                        quantity=f.quantity, account_id=external(f.account_id), order_id=f.order_id, side=f.side,
                        fee=f.fee, liquidity=f.liquidity) for f in rows]

    @app.get("/v1/instruments", response_model=list[str], tags=["market data"])
    def instruments(principal: Principal = Depends(market)):
        return exchange.instruments

    @app.get("/v1/instruments/{symbol}/book", response_model=BookOut, tags=["market data"])
    def book(symbol: Symbol, depth: Annotated[int, Query(ge=1, le=100)] = 10, principal: Principal = Depends(market)):
        if symbol not in exchange.engine.books:
            raise Problem(404, "Not Found", f"unknown instrument {symbol!r}", "unknown-instrument")
        with exchange.lock:  # a consistent book, not one changing under concurrent orders
            b = exchange.engine.books[symbol]
            bids, asks = b.bids.depth(depth), b.asks.depth(depth)
        return BookOut(instrument=symbol, bids=[Level(price_ticks=p, quantity=q) for p, q in bids],
                       asks=[Level(price_ticks=p, quantity=q) for p, q in asks])

    @app.get("/v1/instruments/{symbol}/trades", response_model=list[TapeTrade], tags=["market data"])
    def tape(symbol: Symbol, limit: Annotated[int, Query(ge=1, le=1000)] = 100, principal: Principal = Depends(market)):
        if symbol not in exchange.engine.books:
            raise Problem(404, "Not Found", f"unknown instrument {symbol!r}", "unknown-instrument")
        trades = exchange.trades_of(symbol, limit)
        return [TapeTrade(trade_id=t[0], ts=t[1], price_ticks=t[3], quantity=t[4],
                          aggressor_side=SIDE_NAMES[t[9]]) for t in trades]

    @app.post("/v1/copy-trading/follows", status_code=201, response_model=FollowOut, tags=["copy trading"])
    def follow(body: FollowIn, principal: Principal = Depends(writer)):
        follower = own_account(principal, body.follower_account_id)
        leader = own_account(principal, body.leader_account_id)
        f = run(exchange.follow, follower.account_id, leader.account_id, body.multiplier, body.max_exposure)
        return FollowOut(follower_account_id=external(f.follower), leader_account_id=external(f.leader),
                         multiplier=f.multiplier, max_exposure=f.max_exposure)

    @app.delete("/v1/copy-trading/follows/{follower_account_id}/{leader_account_id}", status_code=204,
                tags=["copy trading"])
    def unfollow(follower_account_id: Annotated[str, Path(max_length=64)],
                 leader_account_id: Annotated[str, Path(max_length=64)], principal: Principal = Depends(writer)):
        follower = own_account(principal, follower_account_id)
        run(exchange.unfollow, follower.account_id, internal(principal, leader_account_id))

    @app.get("/v1/leaderboard", response_model=list[LeaderboardRow], tags=["social"])
    def get_leaderboard(date: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$"),
                                        AfterValidator(calendar_date)] = None,
                        limit: Annotated[int, Query(ge=1, le=100)] = 10, principal: Principal = Depends(market)):
        """The caller's tenant's traders by PnL on ``date`` (else the tenant's latest day), ranked within it."""
        if leaderboard is None:
            raise Problem(503, "Service Unavailable", "no leaderboard source configured", "no-leaderboard")
        # fails closed: a row of another tenant (or of none) from the source is never served
        return [LeaderboardRow(**row) for row in leaderboard(principal.tenant, date, limit)
                if row.get("tenant_id") == principal.tenant]

    return app


__all__ = ["CASH", "create_trading_app"]
