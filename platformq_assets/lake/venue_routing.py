"""Send a simulated session's orders to the trading service and check it matched them the same way.

The simulation decides what its agents send (it needs the book to decide), and
the trading service — through its Dagster resource — receives exactly that
order flow in batches. The service's trades must equal the simulation's: same
instruments, prices, quantities and counterparties, order by order.
"""

from collections import Counter

from resources.services import ServiceClientResource, ServiceError
from services.trading.engine import CMD_CANCEL, CMD_NEW, SIDE_NAMES, TIF_NAMES

BATCH = 2000
FUNDING_USD = 10**14  # minor units: the agents are not budget-constrained in the simulation
FUNDING_LOTS = 10**9


def clear_resting_orders(trading, account: str, page: int = 1000) -> int:
    """Cancel every open order of ``account``, a page at a time until none is left (a page held at most 1,000).
    A cancel answered 409 order-not-open is one that already happened: the client resent it after its answer was
    lost, or the order filled meanwhile."""
    cancelled = 0
    while True:
        orders = trading.request("GET", "/v1/orders", params={"account_id": account, "open_only": True,
                                                              "limit": page})
        before = cancelled
        for order in orders:
            try:
                trading.request("DELETE", f"/v1/orders/{order['order_id']}")
                cancelled += 1
            except ServiceError as exc:
                if exc.status != 409 or not str(exc.problem.get("type", "")).endswith("/order-not-open"):
                    raise
        if len(orders) < page or cancelled == before:  # none left, or none of these could be cancelled
            return cancelled


def sim_account(account: int) -> str:
    return f"sim-{account}"


def route_session(trading: ServiceClientResource, journal: list[tuple], instruments, accounts: list[int]) -> dict:
    """Replay the session's commands through the trading service; return what it traded."""
    existing = set()
    for account in accounts:
        name = sim_account(account)
        try:
            state = trading.request("GET", f"/v1/accounts/{name}")
            existing.add(name)
        except Exception:  # noqa: BLE001 - a missing account is a 404 ServiceError
            state = trading.request("POST", "/v1/accounts", json_body={"account_id": name})
        balances = {b["asset"]: b["free"] for b in state["balances"]}
        if balances.get("USD", 0) < FUNDING_USD // 10:
            trading.request("POST", f"/v1/accounts/{name}/deposits", json_body={"asset": "USD", "amount": FUNDING_USD})
        for instrument in instruments:
            if balances.get(instrument, 0) < FUNDING_LOTS // 10:
                trading.request("POST", f"/v1/accounts/{name}/deposits",
                                json_body={"asset": instrument, "amount": FUNDING_LOTS})
        if name in existing:  # a crashed earlier run may have left orders resting: clear them first
            clear_resting_orders(trading, name)

    engine_ids: dict[int, int] = {}  # service order id -> simulation order id
    service_ids: dict[int, int] = {}  # simulation order id -> service order id
    trades, rejected, next_sim_id = [], 0, 1
    commands, refs = [], []
    for event in journal:
        if event[0] == CMD_NEW:
            _, _ts, instrument, account, side, qty, price, tif = event
            command = {"op": "place", "ref": str(next_sim_id), "account_id": sim_account(account),
                       "instrument": instrument, "side": SIDE_NAMES[side], "quantity": qty,
                       "time_in_force": TIF_NAMES[tif]}
            if price is None:
                command["type"] = "MARKET"
            else:
                command["price_ticks"] = price
            commands.append(command)
            refs.append(next_sim_id)
            next_sim_id += 1
        elif event[0] == CMD_CANCEL:
            sim_id = event[2]
            if sim_id in service_ids:
                commands.append({"op": "cancel", "order_id": service_ids[sim_id]})
            else:
                commands.append({"op": "cancel", "ref": str(sim_id)})
            refs.append(None)
        if len(commands) >= BATCH:
            rejected += _flush(trading, commands, refs, service_ids, engine_ids, trades)
            commands, refs = [], []
    if commands:
        rejected += _flush(trading, commands, refs, service_ids, engine_ids, trades)
    return {"trades": trades, "rejected": rejected, "orders": next_sim_id - 1}


def _flush(trading, commands, refs, service_ids, engine_ids, trades) -> int:
    response = trading.request("POST", "/v1/orders/batch", json_body={"commands": commands})
    rejected = 0
    for result, sim_id in zip(response["results"], refs):
        if sim_id is not None and result["order_id"] is not None:
            service_ids[sim_id] = result["order_id"]
            engine_ids[result["order_id"]] = sim_id
        if result["error"]:
            rejected += 1
    # one entry per trade and side of ours: every simulated account is ours (one tenant), so a trade between two
    # of them comes as its BUY and its SELL entry; a side that is not ours has no entry (and no order id here)
    sides: dict[int, dict] = {}
    for t in response["trades"]:
        trade = sides.setdefault(t["trade_id"], {"key": (t["instrument"], t["price_ticks"], t["quantity"])})
        trade[t["side"]] = engine_ids.get(t["order_id"])
    for _, t in sorted(sides.items()):
        trades.append((*t["key"], t.get("BUY"), t.get("SELL")))
    return rejected


def trades_match(simulated: list[tuple], routed: list[tuple]) -> tuple[bool, dict]:
    """Simulated engine trades (as tuples) vs the service's, compared as multisets."""
    expected = Counter((t[2], t[3], t[4], t[5], t[6]) for t in simulated)
    got = Counter(routed)
    missing, extra = expected - got, got - expected
    return not missing and not extra, {"simulated_trades": sum(expected.values()), "service_trades": sum(got.values()),
                                       "missing": sum(missing.values()), "unexpected": sum(extra.values())}
