"""Seeded agent-based market simulation over the matching engine.

One call simulates one trading day (a session of ``session_minutes``): the
instruments' reference prices walk between two real monthly observations
(see :mod:`services.trading.reference_data`) on a Brownian bridge, and three
kinds of agents trade around them through the real matching engine:

* market makers quote both sides around the reference price and re-quote;
* momentum traders send marketable IOC orders in the direction of recent moves;
* noise traders send random limit and market orders and cancel some later.

The simulation also injects labelled anomalies that later ML work learns
from: spoofing bursts (large orders placed then cancelled while a small
opposite order trades), wash-trade loops (two accounts of one tenant trading
with each other) and flash moves (the reference jumps and reverts).

Output is plain Python columns (no Arrow, no Dagster); the same inputs always
produce the same output. Resting orders are cancelled at the session close,
so every day is independent of the others.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random

from services.trading import reference_data
from services.trading.engine import (
    BUY,
    FOK,
    GTC,
    IOC,
    SELL,
    SIDE_NAMES,
    TIF_NAMES,
    MatchingEngine,
)

TICK = 0.01  # USD per tick
SESSION_OPEN_UTC = dt.time(14, 30)
ORDER_ID_STRIDE = 10_000_000  # global id = day_number * stride + engine id

TENANTS = (
    ("t-acme", "Acme Capital"),
    ("t-borealis", "Borealis Fund"),
    ("t-cygnus", "Cygnus Markets"),
)
FIRST_NAMES = ("Ada", "Bela", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jonas",
               "Kofi", "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq")
LAST_NAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Haddad", "Kowalski",
              "Murphy", "Rossi", "Yilmaz", "Schmidt", "Dubois", "Ivanova", "Nakamura", "Adeyemi")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    seed: int = 7
    start_date: dt.date = dt.date(2024, 1, 1)  # day_number 0
    instruments: tuple[str, ...] = ("AAPL", "AMZN", "GOOG", "IBM", "MSFT")
    session_minutes: int = 390
    market_makers: int = 3
    momentum_traders: int = 4
    noise_traders: int = 11
    # arrival rates, events per minute per instrument
    mm_requote_rate: float = 0.6
    momentum_rate: float = 0.5
    noise_rate: float = 2.0
    noise_cancel_prob: float = 0.35
    # daily volatility of the reference price around the bridge, as a fraction of price
    volatility: float = 0.01
    spoofing_bursts: int = 2
    wash_trade_loops: int = 2
    flash_moves: int = 1
    scale: float = 1.0  # multiplies every arrival rate

    def day_number(self, day: dt.date) -> int:
        return (day - self.start_date).days


@dataclasses.dataclass
class Account:
    account_id: int
    tenant_id: str
    tenant_name: str
    user_id: str
    full_name: str
    email: str
    agent_type: str
    initial_balance_minor: int


def accounts(config: SimulationConfig) -> list[Account]:
    """The venue's participants: one account per agent, spread over the tenants."""
    rng = random.Random(f"{config.seed}:accounts")
    kinds = (
        ["market_maker"] * config.market_makers
        + ["momentum"] * config.momentum_traders
        + ["noise"] * config.noise_traders
        + ["spoofer", "wash_a", "wash_b"]
    )
    out = []
    for i, kind in enumerate(kinds):
        tenant_id, tenant_name = TENANTS[i % len(TENANTS)]
        if kind == "wash_b":  # colluding pair lives in one tenant
            tenant_id, tenant_name = out[-1].tenant_id, out[-1].tenant_name
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        domain = tenant_id.removeprefix("t-") + ".example"
        out.append(
            Account(
                account_id=i + 1,
                tenant_id=tenant_id,
                tenant_name=tenant_name,
                user_id=f"u-{i + 1:04d}",
                full_name=f"{first} {last}",
                email=f"{first.lower()}.{last.lower()}{i + 1}@{domain}",
                agent_type=kind,
                initial_balance_minor=rng.choice((5, 10, 25, 50)) * 100_000_00,
            )
        )
    return out


@dataclasses.dataclass
class DayResult:
    day: dt.date
    orders: dict[str, list]
    fills: dict[str, list]
    reference_prices: dict[str, list]
    anomalies: dict[str, list]
    journal: list[tuple]
    trades: list[tuple]  # the engine's trades (see engine.TRADE_FIELDS), engine order ids

    @property
    def order_count(self) -> int:
        return len(self.orders["order_id"])


def _bridge(rng: random.Random, start: float, end: float, steps: int, vol: float) -> list[float]:
    """Brownian bridge in log space from start to end over ``steps`` points."""
    log_a, log_b = math.log(start), math.log(end)
    sigma = vol / math.sqrt(steps)
    walk = [0.0]
    for _ in range(steps - 1):
        walk.append(walk[-1] + rng.gauss(0.0, sigma))
    last = walk[-1]
    out = []
    for i, w in enumerate(walk):
        t = i / (steps - 1)
        out.append(math.exp(log_a + (log_b - log_a) * t + w - t * last))
    return out


_POISSON_PART = 500.0


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method, for a rate up to _POISSON_PART; a larger one (PLATFORMQ_SIM_SCALE in the hundreds) is the sum
    # of Poisson counts of its parts: exp(-lam) is 0.0 past ~745, where the product of uniforms stops only when it
    # underflows, so every count came out ~745 whatever the rate (noise orders stopped growing past scale ~370)
    k = 0
    while lam > _POISSON_PART:
        k += _poisson(rng, _POISSON_PART)
        lam -= _POISSON_PART
    limit, p = math.exp(-lam), 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def simulate_day(day: dt.date, config: SimulationConfig = SimulationConfig()) -> DayResult:
    day_number = config.day_number(day)
    if day_number < 0:
        raise ValueError(f"{day} is before the simulation start {config.start_date}")
    rng = random.Random(f"{config.seed}:{day.isoformat()}")
    participants = accounts(config)
    by_kind: dict[str, list[int]] = {}
    for a in participants:
        by_kind.setdefault(a.agent_type, []).append(a.account_id)

    minutes = config.session_minutes
    open_us = int(dt.datetime.combine(day, SESSION_OPEN_UTC, tzinfo=dt.timezone.utc).timestamp() * 1_000_000)
    minute_us = 60_000_000

    # ---- reference paths ------------------------------------------------
    ref: dict[str, list[float]] = {}
    ref_cols: dict[str, list] = {k: [] for k in (
        "ts_us", "instrument", "reference_price", "source", "source_start_month", "source_end_month",
        "source_start_price", "source_end_price", "flash_move")}
    flash_windows: dict[str, list[tuple[int, int, str]]] = {}
    anomalies: dict[str, list] = {k: [] for k in (
        "anomaly_id", "anomaly_type", "instrument", "start_ts_us", "end_ts_us", "account_ids")}

    def add_anomaly(kind: str, instrument: str, start_us: int, end_us: int, accts: list[int]) -> str:
        anomaly_id = f"{day.isoformat()}-{kind}-{len(anomalies['anomaly_id']) + 1}"
        anomalies["anomaly_id"].append(anomaly_id)
        anomalies["anomaly_type"].append(kind)
        anomalies["instrument"].append(instrument)
        anomalies["start_ts_us"].append(start_us)
        anomalies["end_ts_us"].append(end_us)
        anomalies["account_ids"].append(",".join(map(str, accts)))
        return anomaly_id

    def end_anomaly(anomaly_id: str, end_us: int) -> None:
        """The window closes at the anomaly's last event (known only once it has run)."""
        anomalies["end_ts_us"][anomalies["anomaly_id"].index(anomaly_id)] = end_us

    for symbol in config.instruments:
        (m0, p0), (m1, p1) = reference_data.anchors(symbol, day_number)
        path = _bridge(rng, p0, p1, minutes, config.volatility)
        flags = [None] * minutes
        ref[symbol] = path
        ref_cols_source = (m0, m1, p0, p1)
        for i, price in enumerate(path):
            ref_cols["ts_us"].append(open_us + i * minute_us)
            ref_cols["instrument"].append(symbol)
            ref_cols["reference_price"].append(round(price, 4))
            ref_cols["source"].append(reference_data.SOURCE)
            ref_cols["source_start_month"].append(ref_cols_source[0])
            ref_cols["source_end_month"].append(ref_cols_source[1])
            ref_cols["source_start_price"].append(ref_cols_source[2])
            ref_cols["source_end_price"].append(ref_cols_source[3])
            ref_cols["flash_move"].append(flags[i])

    # flash moves: the reference jumps over 2 minutes and reverts over 5
    for _ in range(config.flash_moves):
        symbol = rng.choice(config.instruments)
        start = rng.randrange(30, minutes - 30)
        jump = rng.choice((-1, 1)) * rng.uniform(0.03, 0.06)
        anomaly_id = add_anomaly("flash_move", symbol, open_us + start * minute_us, open_us + (start + 7) * minute_us,
                                 [])
        flash_windows.setdefault(symbol, []).append((start, start + 7, anomaly_id))
        path = ref[symbol]
        base = config.instruments.index(symbol) * minutes
        for k in range(7):
            shape = (k + 1) / 2 if k < 2 else (7 - k) / 5
            path[start + k] *= 1 + jump * min(1.0, shape)
            ref_cols["reference_price"][base + start + k] = round(path[start + k], 4)
            ref_cols["flash_move"][base + start + k] = anomaly_id

    # ---- event schedule ---------------------------------------------------
    # (minute, offset_us, kind, instrument, extra) sorted into one timeline
    events: list[tuple] = []
    scale = config.scale
    for symbol in config.instruments:
        for minute in range(minutes):
            for mm in by_kind.get("market_maker", ()):
                for _ in range(_poisson(rng, config.mm_requote_rate * scale)):
                    events.append((minute, rng.randrange(minute_us), "quote", symbol, mm))
            for _ in range(_poisson(rng, config.noise_rate * scale)):
                events.append((minute, rng.randrange(minute_us), "noise", symbol,
                               rng.choice(by_kind["noise"])))
            for _ in range(_poisson(rng, config.momentum_rate * scale)):
                events.append((minute, rng.randrange(minute_us), "momentum", symbol,
                               rng.choice(by_kind["momentum"])))
        # everyone quotes at the open so the book is two-sided from the start
        for mm in by_kind.get("market_maker", ()):
            events.append((0, 0, "quote", symbol, mm))
    for _ in range(config.spoofing_bursts):
        events.append((rng.randrange(20, minutes - 20), rng.randrange(minute_us), "spoof",
                       rng.choice(config.instruments), by_kind["spoofer"][0]))
    for _ in range(config.wash_trade_loops):
        events.append((rng.randrange(20, minutes - 20), rng.randrange(minute_us), "wash",
                       rng.choice(config.instruments), by_kind["wash_a"][0]))
    events.sort(key=lambda e: (e[0], e[1]))

    # ---- run the venue ----------------------------------------------------
    engine = MatchingEngine(config.instruments)
    labels: dict[int, tuple[str, str]] = {}  # engine order id -> (type, anomaly id)
    cancel_ts: dict[int, int] = {}
    quotes: dict[tuple[int, str], list[int]] = {}
    noise_open: dict[str, list[int]] = {s: [] for s in config.instruments}
    last_trade: dict[str, list[int]] = {s: [] for s in config.instruments}

    def ticks(price: float) -> int:
        return max(1, int(round(price / TICK)))

    def flash_label(symbol: str, minute: int):
        for start, end, anomaly_id in flash_windows.get(symbol, ()):
            if start <= minute < end:
                return ("flash_move", anomaly_id)
        return None

    def place(ts, symbol, account, side, qty, price, tif, label=None):
        order = engine.submit(symbol, account, side, qty, price, tif, ts)
        lab = label or flash_label(symbol, (ts - open_us) // minute_us)
        if lab:
            labels[order.order_id] = lab
        return order

    def cancel(ts, order_id):
        order = engine.orders[order_id]
        if order.open_qty:
            engine.cancel(order_id, ts)
            cancel_ts[order_id] = ts

    pending_wash: dict[str, list[int]] = {}

    def wash_loop(ts, symbol, account) -> bool:
        """Two accounts of one tenant trade back and forth inside the spread.

        Needs a spread of at least two ticks so the pair's price is strictly
        inside it (otherwise others' orders would be matched first); the loop
        waits for such a moment.
        """
        book = engine.books[symbol]
        bid, ask = book.best_bid(), book.best_ask()
        if bid is None or ask is None or ask - bid < 2:
            return False
        partner = by_kind["wash_b"][0]
        # the window is the loop's own timestamps (the event fires anywhere inside its minute)
        anomaly_id = add_anomaly("wash_trade", symbol, ts, ts, [account, partner])
        label = ("wash_trade", anomaly_id)
        seller, buyer = account, partner
        for j in range(rng.randint(3, 6)):
            bid, ask = book.best_bid(), book.best_ask()
            if bid is None or ask is None or ask - bid < 2:
                break
            price = bid + 1
            qty = rng.randint(10, 30)
            t = ts + j * 50_000
            resting = place(t, symbol, seller, SELL, qty, price, GTC, label)
            place(t + 1_000, symbol, buyer, BUY, qty, price, IOC, label)
            if resting.open_qty:
                cancel(t + 2_000, resting.order_id)
            end_anomaly(anomaly_id, t + 2_000)
            seller, buyer = buyer, seller
        return True

    for minute, offset, kind, symbol, account in events:
        ts = open_us + minute * minute_us + offset
        ref_ticks = ticks(ref[symbol][minute])
        book = engine.books[symbol]
        if kind == "quote":
            for order_id in quotes.pop((account, symbol), ()):
                cancel(ts, order_id)
            k = by_kind["market_maker"].index(account)
            half = max(1, int(ref_ticks * 0.0004 * (1 + k)))
            skew = rng.randint(-1, 1)
            ids = []
            for side, price in ((BUY, ref_ticks - half + skew), (SELL, ref_ticks + half + skew)):
                order = place(ts, symbol, account, side, rng.randint(5, 25), max(1, price), GTC)
                if order.open_qty:
                    ids.append(order.order_id)
            quotes[(account, symbol)] = ids
        elif kind == "noise":
            side = rng.choice((BUY, SELL))
            if rng.random() < 0.15:
                place(ts, symbol, account, side, rng.randint(1, 10), None, IOC)
            else:
                offset_ticks = int(rng.gauss(0, max(1.0, ref_ticks * 0.001)))
                price = ref_ticks - offset_ticks if side == BUY else ref_ticks + offset_ticks
                tif = FOK if rng.random() < 0.05 else (IOC if rng.random() < 0.1 else GTC)
                order = place(ts, symbol, account, side, rng.randint(1, 10), max(1, price), tif)
                if order.open_qty:
                    noise_open[symbol].append(order.order_id)
            if noise_open[symbol] and rng.random() < config.noise_cancel_prob:
                cancel(ts, noise_open[symbol].pop(rng.randrange(len(noise_open[symbol]))))
        elif kind == "momentum":
            history = last_trade[symbol]
            if len(history) >= 2 and history[-1] != history[0]:
                side = BUY if history[-1] > history[0] else SELL
                best = book.best_ask() if side == BUY else book.best_bid()
                if best is not None:
                    limit = best + 2 if side == BUY else max(1, best - 2)
                    place(ts, symbol, account, side, rng.randint(2, 12), limit, IOC)
        elif kind == "spoof":
            bid, ask = book.best_bid(), book.best_ask()
            if bid is None or ask is None:
                continue
            side = rng.choice((BUY, SELL))
            anomaly_id = add_anomaly("spoofing", symbol, ts, ts, [account])
            label = ("spoofing", anomaly_id)
            layered = []
            for j in range(rng.randint(5, 9)):
                price = bid - 1 - j % 3 if side == BUY else ask + 1 + j % 3
                order = place(ts + j * 1000, symbol, account, side, rng.randint(80, 200), max(1, price), GTC, label)
                layered.append(order.order_id)
            # the real intent: a small order on the other side that trades
            opposite = SELL if side == BUY else BUY
            touch = bid if opposite == SELL else ask
            place(ts + 20_000, symbol, account, opposite, rng.randint(2, 8), touch, IOC, label)
            for j, order_id in enumerate(layered):
                cancel(ts + 2_000_000 + j * 1000, order_id)
            end_anomaly(anomaly_id, ts + 2_000_000 + (len(layered) - 1) * 1000)
        elif kind == "wash":
            pending_wash.setdefault(symbol, []).append(account)
        if pending_wash.get(symbol) and wash_loop(ts + 1_000, symbol, pending_wash[symbol][0]):
            pending_wash[symbol].pop(0)
        trades = engine.trades
        if trades and trades[-1][2] == symbol:
            history = last_trade[symbol]
            history.append(trades[-1][3])
            if len(history) > 5:
                del history[0]

    close_ts = open_us + minutes * minute_us
    for order in engine.close_session(close_ts):
        cancel_ts[order.order_id] = close_ts

    # ---- columns ----------------------------------------------------------
    base_id = day_number * ORDER_ID_STRIDE
    orders: dict[str, list] = {k: [] for k in (
        "order_id", "ts_us", "instrument", "account_id", "side", "order_type", "time_in_force",
        "price_ticks", "qty_lots", "filled_lots", "cancelled_lots", "status", "cancelled_ts_us",
        "anomaly_type", "anomaly_id")}
    for order in engine.orders.values():
        label = labels.get(order.order_id)
        orders["order_id"].append(base_id + order.order_id)
        orders["ts_us"].append(order.ts)
        orders["instrument"].append(order.instrument)
        orders["account_id"].append(order.account)
        orders["side"].append(SIDE_NAMES[order.side])
        orders["order_type"].append("MARKET" if order.price is None else "LIMIT")
        orders["time_in_force"].append(TIF_NAMES[order.tif])
        orders["price_ticks"].append(order.price)
        orders["qty_lots"].append(order.qty)
        orders["filled_lots"].append(order.filled_qty)
        orders["cancelled_lots"].append(order.cancelled_qty)
        orders["status"].append(order.status)
        orders["cancelled_ts_us"].append(cancel_ts.get(order.order_id))
        orders["anomaly_type"].append(label[0] if label else None)
        orders["anomaly_id"].append(label[1] if label else None)

    fills: dict[str, list] = {k: [] for k in (
        "fill_id", "trade_id", "ts_us", "instrument", "account_id", "order_id", "side", "liquidity",
        "price_ticks", "qty_lots", "counterparty_account_id", "anomaly_type", "anomaly_id")}
    for trade_id, ts, symbol, price, qty, buy_id, sell_id, buy_acct, sell_acct, aggressor in engine.trades:
        global_trade = base_id + trade_id
        for side, order_id, acct, other in ((BUY, buy_id, buy_acct, sell_acct), (SELL, sell_id, sell_acct, buy_acct)):
            label = labels.get(order_id)
            fills["fill_id"].append(f"{global_trade}-{SIDE_NAMES[side][0]}")
            fills["trade_id"].append(global_trade)
            fills["ts_us"].append(ts)
            fills["instrument"].append(symbol)
            fills["account_id"].append(acct)
            fills["order_id"].append(base_id + order_id)
            fills["side"].append(SIDE_NAMES[side])
            fills["liquidity"].append("TAKER" if side == aggressor else "MAKER")
            fills["price_ticks"].append(price)
            fills["qty_lots"].append(qty)
            fills["counterparty_account_id"].append(other)
            fills["anomaly_type"].append(label[0] if label else None)
            fills["anomaly_id"].append(label[1] if label else None)

    return DayResult(day=day, orders=orders, fills=fills, reference_prices=ref_cols,
                     anomalies=anomalies, journal=engine.journal, trades=engine.trades)
