"""Trading API over HTTP (ASGI in process): auth, roles, tenancy, problem+json, audit, metrics."""

import sys
import threading
import time

import pytest
from fastapi.testclient import TestClient

from services.trading.api import create_trading_app
from services.trading.exchange import Exchange
from tests.services.problems import is_problem

X = "ACME"


@pytest.fixture
def setup(ctx):
    exchange = Exchange([X])
    boards = {"t1": [{"pnl_rank": 1, "account_id": 7, "display_name": "A***", "tenant_id": "t1", "pnl": 12.5}]}
    app = create_trading_app(ctx, exchange, leaderboard=lambda tenant, date, limit: boards.get(tenant, [])[:limit])
    keys = {
        "t1_trader": ctx.keys.create("alice", "t1", ["trader"]),
        "t1_viewer": ctx.keys.create("victor", "t1", ["viewer"]),
        "t1_auditor": ctx.keys.create("audrey", "t1", ["auditor"]),
        "t2_trader": ctx.keys.create("bob", "t2", ["trader"]),
    }
    client = TestClient(app, raise_server_exceptions=False)
    for who, account in (("t1_trader", "a1"), ("t2_trader", "b1")):
        h = {"X-API-Key": keys[who]}
        assert client.post("/v1/accounts", json={"account_id": account}, headers=h).status_code == 201
        client.post(f"/v1/accounts/{account}/deposits", json={"asset": "USD", "amount": 10_000_000}, headers=h)
        client.post(f"/v1/accounts/{account}/deposits", json={"asset": X, "amount": 1000}, headers=h)
    return client, keys, exchange


def h(keys, who):
    return {"X-API-Key": keys[who]}


def test_place_match_and_read_back(setup):
    client, keys, _ = setup
    sell = client.post("/v1/orders", json={"account_id": "b1", "instrument": X, "side": "SELL", "quantity": 5,
                                           "price_ticks": 1000}, headers=h(keys, "t2_trader"))
    assert sell.status_code == 201 and sell.json()["status"] == "NEW"
    buy = client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 5,
                                          "type": "MARKET"}, headers=h(keys, "t1_trader"))
    assert buy.status_code == 201 and buy.json()["status"] == "FILLED"
    fills = client.get("/v1/fills", params={"account_id": "a1"}, headers=h(keys, "t1_viewer")).json()
    assert [(f["price_ticks"], f["quantity"], f["liquidity"]) for f in fills] == [(1000, 5, "TAKER")]
    tape = client.get(f"/v1/instruments/{X}/trades", headers=h(keys, "t1_viewer")).json()
    assert tape[0]["price_ticks"] == 1000 and "account_id" not in tape[0]
    account = client.get("/v1/accounts/a1", headers=h(keys, "t1_viewer")).json()
    lots = {b["asset"]: b for b in account["balances"]}[X]
    assert lots["free"] == 1005


def test_amend_and_cancel(setup):
    client, keys, _ = setup
    o = client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 10,
                                        "price_ticks": 900}, headers=h(keys, "t1_trader")).json()
    amended = client.patch(f"/v1/orders/{o['order_id']}", json={"quantity": 4}, headers=h(keys, "t1_trader"))
    assert amended.json()["open_quantity"] == 4
    book = client.get(f"/v1/instruments/{X}/book", headers=h(keys, "t1_viewer")).json()
    assert book["bids"] == [{"price_ticks": 900, "quantity": 4}]
    cancelled = client.delete(f"/v1/orders/{o['order_id']}", headers=h(keys, "t1_trader"))
    assert cancelled.json()["status"] == "CANCELLED"
    again = client.delete(f"/v1/orders/{o['order_id']}", headers=h(keys, "t1_trader"))
    assert is_problem(again, 409)["detail"].startswith("order")


def test_amend_quantity_is_the_new_total_quantity_fix_style(setup):
    """As in a FIX cancel/replace, PATCH quantity counts the lots already filled: open = quantity - filled."""
    client, keys, _ = setup
    t1, t2 = h(keys, "t1_trader"), h(keys, "t2_trader")
    o = client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "SELL", "quantity": 10,
                                        "price_ticks": 1000}, headers=t1).json()
    client.post("/v1/orders", json={"account_id": "b1", "instrument": X, "side": "BUY", "quantity": 4,
                                    "price_ticks": 1000}, headers=t2)
    url = f"/v1/orders/{o['order_id']}"
    resent = client.patch(url, json={"quantity": 10, "price_ticks": 1001}, headers=t1).json()  # the shown quantity
    assert (resent["quantity"], resent["open_quantity"], resent["filled_quantity"]) == (10, 6, 4)
    assert resent["price_ticks"] == 1001
    reduced = client.patch(url, json={"quantity": 7}, headers=t1).json()
    assert (reduced["open_quantity"], reduced["filled_quantity"]) == (3, 4)
    for not_above_filled in (4, 3):
        r = client.patch(url, json={"quantity": not_above_filled}, headers=t1)
        assert "filled" in is_problem(r, 422)["detail"]
    assert client.get(url, headers=t1).json()["open_quantity"] == 3


def test_authentication_and_roles(setup):
    client, keys, _ = setup
    body = {"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 1, "price_ticks": 1}
    is_problem(client.post("/v1/orders", json=body), 401)
    is_problem(client.post("/v1/orders", json=body, headers={"X-API-Key": "pq_wrong"}), 401)
    is_problem(client.post("/v1/orders", json=body, headers={"Authorization": "Bearer not.a.jwt"}), 401)
    forbidden = is_problem(client.post("/v1/orders", json=body, headers=h(keys, "t1_viewer")), 403)
    assert "orders:write" in forbidden["detail"]
    is_problem(client.get("/audit", headers=h(keys, "t1_trader")), 403)
    # a JWT from the token endpoint works like the key it was exchanged for
    token = client.post("/auth/token", json={"api_key": keys["t1_trader"]}).json()["access_token"]
    ok = client.post("/v1/orders", json=body, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 201


def test_validation_errors_are_problems_not_500(setup):
    client, keys, _ = setup
    for body in ({"account_id": "a1"}, {"account_id": "a1", "instrument": X, "side": "HOLD", "quantity": 1},
                 {"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 0, "price_ticks": 5},
                 {"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 1, "type": "LIMIT"},
                 {"account_id": "a1", "instrument": "NOPE", "side": "BUY", "quantity": 1, "price_ticks": 5},
                 {"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 10**8, "price_ticks": 10**6}):
        r = client.post("/v1/orders", json=body, headers=h(keys, "t1_trader"))
        assert 400 <= r.status_code < 500
        is_problem(r, r.status_code)
    r = client.post("/v1/orders", content=b"{not json", headers={**h(keys, "t1_trader"),
                                                                 "content-type": "application/json"})
    is_problem(r, 422)


def test_tenant_isolation_on_every_route(setup):
    """Tenant 2 probes every tenant-scoped route with tenant 1's ids: always 404, nothing changes."""
    client, keys, exchange = setup
    own = client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 3,
                                          "price_ticks": 500, "client_order_id": "c-1"},
                      headers=h(keys, "t1_trader")).json()
    before = exchange.state()
    probes = {
        ("GET", "/v1/accounts/{account_id}"): dict(url="/v1/accounts/a1"),
        ("POST", "/v1/accounts/{account_id}/deposits"): dict(url="/v1/accounts/a1/deposits",
                                                             json={"asset": "USD", "amount": 5}),
        ("POST", "/v1/accounts/{account_id}/withdrawals"): dict(url="/v1/accounts/a1/withdrawals",
                                                                json={"asset": "USD", "amount": 5}),
        ("POST", "/v1/orders"): dict(url="/v1/orders", json={"account_id": "a1", "instrument": X, "side": "BUY",
                                                             "quantity": 1, "price_ticks": 5}),
        ("GET", "/v1/orders/{order_id}"): dict(url=f"/v1/orders/{own['order_id']}"),
        ("GET", "/v1/orders/by-client-order-id"): dict(url="/v1/orders/by-client-order-id",
                                                       params={"account_id": "a1", "client_order_id": "c-1"}),
        ("GET", "/v1/orders"): dict(url="/v1/orders", params={"account_id": "a1"}),
        ("DELETE", "/v1/orders/{order_id}"): dict(url=f"/v1/orders/{own['order_id']}"),
        ("PATCH", "/v1/orders/{order_id}"): dict(url=f"/v1/orders/{own['order_id']}", json={"quantity": 1}),
        ("POST", "/v1/orders/batch"): dict(url="/v1/orders/batch", json={"commands": [
            {"op": "place", "ref": "x", "account_id": "a1", "instrument": X, "side": "BUY", "quantity": 1,
             "price_ticks": 5}, {"op": "cancel", "order_id": own["order_id"]}]}),
        ("GET", "/v1/fills"): dict(url="/v1/fills", params={"account_id": "a1"}),
        ("POST", "/v1/copy-trading/follows"): dict(url="/v1/copy-trading/follows",
                                                   json={"follower_account_id": "b1", "leader_account_id": "a1"}),
        ("DELETE", "/v1/copy-trading/follows/{follower_account_id}/{leader_account_id}"):
            dict(url="/v1/copy-trading/follows/a1/b1"),
        ("GET", "/v1/leaderboard"): dict(url="/v1/leaderboard"),
    }
    tenant_routes = {(m, r.path) for r in client.app.routes for m in getattr(r, "methods", ())
                     if r.path.startswith("/v1/") and not r.path.startswith("/v1/instruments")  # market data
                     and (m, r.path) != ("POST", "/v1/accounts")}  # creates in the caller's own tenant
    assert tenant_routes == set(probes), "a new tenant-scoped route needs an isolation probe"
    for (method, path), kwargs in probes.items():
        r = client.request(method, **kwargs, headers=h(keys, "t2_trader"))
        if path == "/v1/orders/batch":  # per-command errors: every command refused as not found
            assert r.status_code == 200 and all(x["error"] and x["order_id"] is None for x in r.json()["results"])
            continue
        if path == "/v1/leaderboard":  # addressed by no id: the caller's own tenant's board, none of t1's traders
            assert r.status_code == 200 and r.json() == []
            continue
        is_problem(r, 404)
    assert exchange.state() == before
    # the same account id in another tenant is a different account, and creating it reveals nothing
    created = client.post("/v1/accounts", json={"account_id": "a1"}, headers=h(keys, "t2_trader"))
    assert created.status_code == 201 and created.json()["tenant"] == "t2"
    assert client.get("/v1/accounts/a1", headers=h(keys, "t1_viewer")).json()["tenant"] == "t1"


def test_audit_records_state_changes_per_tenant(setup):
    client, keys, _ = setup
    client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 1,
                                    "price_ticks": 5}, headers={**h(keys, "t1_trader"), "X-Request-ID": "req-42"})
    records = client.get("/audit", headers=h(keys, "t1_auditor")).json()
    mine = [r for r in records if r["correlation_id"] == "req-42"]
    assert mine and mine[0]["method"] == "POST" and mine[0]["status"] == 201 and mine[0]["subject"] == "alice"
    assert all(r["tenant"] == "t1" for r in records)
    metrics = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/v1/orders",status="201"}' in metrics


def test_rate_limit_answers_429_with_retry_after(ctx):
    from services.common.app import ServiceContext

    strict = ServiceContext("limited", rate=0.001, burst=3)
    app = create_trading_app(strict, Exchange([X]))
    key = strict.keys.create("eve", "t9", ["viewer"])
    client = TestClient(app)
    codes = [client.get("/v1/instruments", headers={"X-API-Key": key}).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = client.get("/v1/instruments", headers={"X-API-Key": key})
    assert is_problem(r, 429) and int(r.headers["Retry-After"]) >= 1


def test_api_keys_are_stored_only_as_hashes(setup, ctx):
    _, keys, _ = setup
    stored = ctx.keys.stored_hashes()
    assert all(len(s) == 64 for s in stored)
    assert not any(k in s or s in k for k in keys.values() for s in stored)


def test_leaderboard_and_health(setup):
    client, keys, _ = setup
    assert client.get("/health").json()["status"] == "ok"
    board = client.get("/v1/leaderboard", params={"limit": 1}, headers=h(keys, "t1_viewer")).json()
    assert [(r["pnl_rank"], r["account_id"]) for r in board] == [(1, 7)]
    is_problem(client.get("/v1/leaderboard", params={"date": "yesterday"}, headers=h(keys, "t1_viewer")), 422)


def test_leaderboard_date_must_be_a_calendar_date(ctx):
    asked = []
    app = create_trading_app(ctx, Exchange([X]), leaderboard=lambda tenant, date, limit: asked.append(date) or [])
    client = TestClient(app, raise_server_exceptions=False)
    viewer = {"X-API-Key": ctx.keys.create("victor", "t1", ["viewer"])}
    for wrong in ("2024-02-30", "2024-13-01", "2023-02-29", "20240102"):
        is_problem(client.get("/v1/leaderboard", params={"date": wrong}, headers=viewer), 422)
    assert client.get("/v1/leaderboard", params={"date": "2024-02-29"}, headers=viewer).json() == []
    assert asked == ["2024-02-29"]  # only valid dates reach the source, as YYYY-MM-DD


def test_leaderboard_asks_for_the_callers_tenant_and_serves_no_other(ctx):
    """The source is asked for the caller's tenant; a row of another tenant that it returns anyway is not served
    (fails closed, as the data API does)."""
    asked = []

    def source(tenant, date, limit):
        asked.append((tenant, date, limit))
        return [{"pnl_rank": 1, "account_id": 3, "tenant_id": "t2", "pnl": 9.0},
                {"pnl_rank": 1, "account_id": 7, "tenant_id": tenant, "pnl": 5.0},
                {"pnl_rank": 2, "account_id": 8, "tenant_id": None, "pnl": 1.0}]

    client = TestClient(create_trading_app(ctx, Exchange([X]), leaderboard=source), raise_server_exceptions=False)
    viewer = {"X-API-Key": ctx.keys.create("victor", "t1", ["viewer"])}
    board = client.get("/v1/leaderboard", params={"limit": 5}, headers=viewer).json()
    assert [(r["tenant_id"], r["account_id"]) for r in board] == [("t1", 7)]
    assert asked == [("t1", None, 5)]


def test_batch_places_and_cancels_in_order(setup):
    client, keys, exchange = setup
    r = client.post("/v1/orders/batch", headers=h(keys, "t1_trader"), json={"commands": [
        {"op": "place", "ref": "s1", "account_id": "a1", "instrument": X, "side": "SELL", "quantity": 5,
         "price_ticks": 1000},
        {"op": "place", "ref": "b1", "account_id": "a1", "instrument": X, "side": "BUY", "quantity": 2,
         "price_ticks": 1000},  # self-trade: expired by STP
        {"op": "cancel", "ref": "s1"},
        {"op": "place", "ref": "bad", "account_id": "a1", "instrument": X, "side": "BUY", "quantity": 1},
    ]})
    results = r.json()["results"]
    assert [x["status"] for x in results[:3]] == ["NEW", "EXPIRED", "CANCELLED"]
    assert results[3]["error"] and results[3]["order_id"] is None
    assert len(exchange.journal.load()) == 6 + 3  # set-up commands + the three accepted ones, one write


def test_reads_while_other_threads_trade_never_fail(setup):
    """Listing orders and book depth iterate the engine's dicts: under the exchange lock, or a
    concurrent place/cancel makes them fail ("dictionary changed size during iteration")."""
    client, keys, exchange = setup
    account = "t1/a1"
    exchange.deposit(account, "USD", 10**15)
    exchange.deposit(account, X, 10**9)
    for i in range(20000):  # long iterations, so a race is likely to hit one
        exchange.place(account, X, "BUY", 1, 1 + i % 300)
    stop = threading.Event()

    def trade():
        i = 0
        while not stop.is_set():
            i += 1
            order = exchange.place(account, X, "BUY" if i % 2 else "SELL", 1, 1 + i % 300 if i % 2 else 400 + i % 300)
            if i % 3 == 0:
                exchange.cancel(account, order.order_id)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    writer = threading.Thread(target=trade, daemon=True)
    writer.start()
    statuses = []
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            statuses.append(client.get("/v1/orders", params={"account_id": "a1", "limit": 1},
                                       headers=h(keys, "t1_trader")).status_code)
            statuses.append(client.get(f"/v1/instruments/{X}/book", params={"depth": 100},
                                       headers=h(keys, "t1_trader")).status_code)
            statuses.append(client.get("/v1/accounts/a1", headers=h(keys, "t1_trader")).status_code)
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(interval)
    assert statuses and set(statuses) == {200}


def test_quantities_and_money_must_be_json_integers(setup):
    """No coercion: true, "1000000" or 5.0 is refused (422 problem), never deposited or traded as a number."""
    client, keys, exchange = setup
    ht = h(keys, "t1_trader")
    before = exchange.state()
    order = {"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 1, "price_ticks": 100}
    for wrong in (True, "5", 5.0):
        for url, body in (("/v1/accounts/a1/deposits", {"asset": "USD", "amount": wrong}),
                          ("/v1/accounts/a1/withdrawals", {"asset": "USD", "amount": wrong}),
                          ("/v1/orders", {**order, "quantity": wrong}),
                          ("/v1/orders", {**order, "price_ticks": wrong}),
                          ("/v1/orders/batch", {"commands": [{**order, "op": "place", "ref": "r", "quantity": wrong}]}),
                          ("/v1/copy-trading/follows", {"follower_account_id": "a1", "leader_account_id": "a1",
                                                        "max_exposure": wrong})):
            r = client.post(url, json=body, headers=ht)
            assert is_problem(r, 422)["errors"], (url, body)
    assert exchange.state() == before and len(exchange.journal.load()) == 6
    assert client.post("/v1/orders", json=order, headers=ht).status_code == 201


def test_batch_trades_name_only_the_callers_own_orders(setup):
    """A batch's trades showed both order ids: the counterparty's belongs to another tenant (GET on it is a 404,
    the tape and /v1/fills leave it out). Each trade now names only the caller's own order, and its side."""
    client, keys, _ = setup
    theirs = client.post("/v1/orders", json={"account_id": "b1", "instrument": X, "side": "SELL", "quantity": 4,
                                             "price_ticks": 1000}, headers=h(keys, "t2_trader")).json()
    r = client.post("/v1/orders/batch", headers=h(keys, "t1_trader"), json={"commands": [
        {"op": "place", "ref": "b", "account_id": "a1", "instrument": X, "side": "BUY", "quantity": 3,
         "price_ticks": 1000}]})
    mine = r.json()["results"][0]["order_id"]
    [trade] = r.json()["trades"]
    assert {k: v for k, v in trade.items() if "order" in k} == {"order_id": mine}  # not theirs["order_id"]
    assert trade["side"] == "BUY" and trade["aggressor_side"] == "BUY"
    is_problem(client.get(f"/v1/orders/{theirs['order_id']}", headers=h(keys, "t1_trader")), 404)
    # the other way round: t2's batch sells into t1's resting bid, and sees only its own order, as the SELL
    bid = client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 2,
                                          "price_ticks": 900}, headers=h(keys, "t1_trader")).json()
    r = client.post("/v1/orders/batch", headers=h(keys, "t2_trader"), json={"commands": [
        {"op": "place", "ref": "s", "account_id": "b1", "instrument": X, "side": "SELL", "quantity": 2,
         "price_ticks": 900}]})
    [trade] = r.json()["trades"]
    assert (trade["order_id"], trade["side"]) == (r.json()["results"][0]["order_id"], "SELL")
    assert {k: v for k, v in trade.items() if "order" in k} == {"order_id": r.json()["results"][0]["order_id"]}
    assert bid["order_id"] != trade["order_id"]
    # both sides the caller's (two of its own accounts): the trade names both its orders, one entry per side
    assert client.post("/v1/accounts", json={"account_id": "a2"}, headers=h(keys, "t1_trader")).status_code == 201
    client.post("/v1/accounts/a2/deposits", json={"asset": X, "amount": 10}, headers=h(keys, "t1_trader"))
    r = client.post("/v1/orders/batch", headers=h(keys, "t1_trader"), json={"commands": [
        {"op": "place", "ref": "s", "account_id": "a2", "instrument": X, "side": "SELL", "quantity": 1,
         "price_ticks": 700},
        {"op": "place", "ref": "b", "account_id": "a1", "instrument": X, "side": "BUY", "quantity": 1,
         "price_ticks": 700}]})
    ids = {x["ref"]: x["order_id"] for x in r.json()["results"]}
    trades = r.json()["trades"]
    assert len({t["trade_id"] for t in trades}) == 1
    assert sorted((t["side"], t["order_id"]) for t in trades) == [("BUY", ids["b"]), ("SELL", ids["s"])]


def test_the_tape_is_each_instruments_own_and_never_scans_the_venues_trades(ctx):
    """GET /v1/instruments/{symbol}/trades reads the instrument's own trades: it used to filter every trade the
    venue ever made on each request (a tape polled every second on a year of trades: ~1.6 M tuples a call)."""
    exchange = Exchange([X, "OTHR"])
    app = create_trading_app(ctx, exchange)
    key = {"X-API-Key": ctx.keys.create("alice", "t1", ["trader"])}
    client = TestClient(app, raise_server_exceptions=False)
    for account in ("a1", "a2"):
        assert client.post("/v1/accounts", json={"account_id": account}, headers=key).status_code == 201
        for asset in ("USD", X, "OTHR"):
            client.post(f"/v1/accounts/{account}/deposits", json={"asset": asset, "amount": 10_000_000}, headers=key)
    for i in range(12):  # X trades at 1000..1011, OTHR at 50 and 51 (every sixth)
        symbol, price = ("OTHR", 50 + i // 6) if i % 6 == 5 else (X, 1000 + i)
        for account, side in (("a1", "SELL"), ("a2", "BUY")):
            assert client.post("/v1/orders", json={"account_id": account, "instrument": symbol, "side": side,
                                                   "quantity": 1, "price_ticks": price}, headers=key).status_code == 201

    class NoScan(list):  # the venue's trades, which the tape must not iterate
        def __iter__(self):
            raise AssertionError("the tape scanned every trade of the venue")

    exchange.engine.trades = NoScan(exchange.engine.trades)
    tape = client.get(f"/v1/instruments/{X}/trades", params={"limit": 3}, headers=key)
    assert tape.status_code == 200, tape.text
    assert [t["price_ticks"] for t in tape.json()] == [1008, 1009, 1010]  # the last 3, oldest first
    other = client.get("/v1/instruments/OTHR/trades", headers=key).json()
    assert [t["price_ticks"] for t in other] == [50, 51]


def test_a_closed_order_older_than_the_kept_history_answers_404_and_pages_stay_whole(ctx):
    """The service keeps each account's last ``history`` orders and fills (the API's largest page by default): an
    older closed order is gone from memory (it is in the journal and the lake) and reads like any unknown order;
    an old order still resting is kept, readable and cancellable; pages up to ``history`` are whole."""
    exchange = Exchange([X], rebase_commands=10, history=4)
    app = create_trading_app(ctx, exchange)
    key = {"X-API-Key": ctx.keys.create("alice", "t1", ["trader"])}
    client = TestClient(app, raise_server_exceptions=False)
    for account in ("a1", "a2"):
        assert client.post("/v1/accounts", json={"account_id": account}, headers=key).status_code == 201
        for asset in ("USD", X):
            client.post(f"/v1/accounts/{account}/deposits", json={"asset": asset, "amount": 10_000_000}, headers=key)

    def place(account, side, price):
        response = client.post("/v1/orders", json={"account_id": account, "instrument": X, "side": side,
                                                    "quantity": 1, "price_ticks": price}, headers=key)
        assert response.status_code == 201, response.text
        return response.json()["order_id"]

    resting = place("a1", "BUY", 10)  # far below the market: rests throughout
    first_filled = place("a2", "SELL", 1000)
    place("a1", "BUY", 1000)
    for i in range(30):
        place("a2", "SELL", 1000 + i)
        place("a1", "BUY", 1000 + i)
    gone = client.get(f"/v1/orders/{first_filled}", headers=key)
    assert is_problem(gone, 404)["type"].endswith("unknown-order")
    assert client.get(f"/v1/orders/{resting}", headers=key).json()["status"] == "NEW"
    orders = client.get("/v1/orders", params={"account_id": "a1", "limit": 4}, headers=key).json()
    assert [o["price_ticks"] for o in orders] == [1026, 1027, 1028, 1029]
    fills = client.get("/v1/fills", params={"account_id": "a2", "limit": 4}, headers=key).json()
    assert [f["price_ticks"] for f in fills] == [1026, 1027, 1028, 1029]
    tape = client.get(f"/v1/instruments/{X}/trades", params={"limit": 4}, headers=key).json()
    assert [t["price_ticks"] for t in tape] == [1026, 1027, 1028, 1029]
    assert client.delete(f"/v1/orders/{resting}", headers=key).json()["status"] == "CANCELLED"
    assert len(exchange.engine.orders) < 20  # of 63 placed


def test_an_amended_quantity_is_the_total_shown_back_and_resending_it_reopens_nothing(setup):
    """A reduction shows the new total as ``quantity`` (cancelled counts cancels and expiry only), so sending the
    shown quantity back with a new price keeps the lots it had, as a FIX cancel/replace would."""
    client, keys, exchange = setup
    t1 = h(keys, "t1_trader")
    o = client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "SELL", "quantity": 10,
                                        "price_ticks": 1000}, headers=t1).json()
    url = f"/v1/orders/{o['order_id']}"
    shown = lambda r: (r["quantity"], r["open_quantity"], r["cancelled_quantity"])  # noqa: E731
    reduced = client.patch(url, json={"quantity": 6}, headers=t1).json()
    assert shown(reduced) == (6, 6, 0)
    moved = client.patch(url, json={"quantity": reduced["quantity"], "price_ticks": 1001}, headers=t1).json()
    assert shown(moved) == (6, 6, 0) and moved["price_ticks"] == 1001
    assert shown(client.patch(url, json={"quantity": 8}, headers=t1).json()) == (8, 8, 0)
    assert shown(client.delete(url, headers=t1).json()) == (8, 0, 8)
    assert Exchange.restore([X], exchange.journal).state() == exchange.state()


def test_a_journal_outage_answers_503_and_applies_nothing(ctx):

    from tests.services.trading.journals import Down

    journal = Down()
    exchange = Exchange([X], journal=journal)
    client = TestClient(create_trading_app(ctx, exchange), raise_server_exceptions=False)
    t1 = {"X-API-Key": ctx.keys.create("alice", "t1", ["trader"])}
    client.post("/v1/accounts", json={"account_id": "a1"}, headers=t1)
    client.post("/v1/accounts/a1/deposits", json={"asset": "USD", "amount": 10_000}, headers=t1)
    before = exchange.state()
    journal.down = True
    for path, body in (("/v1/accounts/a1/deposits", {"asset": "USD", "amount": 5}),
                       ("/v1/orders", {"account_id": "a1", "instrument": X, "side": "BUY", "quantity": 1,
                                       "price_ticks": 10}),
                       ("/v1/orders/batch", {"commands": [{"op": "place", "ref": "r", "account_id": "a1",
                                                           "instrument": X, "side": "BUY", "quantity": 1,
                                                           "price_ticks": 10}]})):
        problem = is_problem(client.post(path, json=body, headers=t1), 503)
        assert problem["type"].endswith("journal-unavailable")
        assert exchange.state() == before
    journal.down = False
    assert client.post("/v1/accounts/a1/deposits", json={"asset": "USD", "amount": 5}, headers=t1).status_code == 200


def test_an_amend_reads_the_filled_quantity_of_the_order_as_it_is_under_the_lock(ctx):
    """An undone command rebuilds the engine's orders: the order object the amend read before taking the lock
    may be replaced, its filled quantity stale (here 0 where 4 lots filled since)."""
    from services.trading.exchange import JournalUnavailable

    from tests.services.trading.journals import Down

    journal = Down()
    exchange = Exchange([X], journal=journal)
    client = TestClient(create_trading_app(ctx, exchange), raise_server_exceptions=False)
    t1 = {"X-API-Key": ctx.keys.create("alice", "t1", ["trader"])}
    for account in ("a1", "a2"):
        client.post("/v1/accounts", json={"account_id": account}, headers=t1)
        client.post(f"/v1/accounts/{account}/deposits", json={"asset": "USD", "amount": 10**6}, headers=t1)
        client.post(f"/v1/accounts/{account}/deposits", json={"asset": X, "amount": 100}, headers=t1)
    sell = client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "SELL", "quantity": 10,
                                           "price_ticks": 100}, headers=t1).json()

    ran = []

    def meanwhile():  # between the amend's first read of the order and its taking the lock
        journal.down = True
        with pytest.raises(JournalUnavailable):
            exchange.place("t1/a2", X, "BUY", 1, 100)  # reached the engine, undone: the orders are rebuilt
        journal.down = False
        filled = exchange.place("t1/a2", X, "BUY", 4, 100)  # fills 4 of the rebuilt order
        assert filled.filled_qty == 4 and exchange.engine.orders[sell["order_id"]].filled_qty == 4
        ran.append(True)

    class Interleaved:
        def __init__(self, lock):
            self.lock, self.hook = lock, None

        def __enter__(self):
            hook, self.hook = self.hook, None
            if hook is not None:
                hook()
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    exchange._lock = Interleaved(exchange._lock)
    exchange._lock.hook = meanwhile
    amended = client.patch(f"/v1/orders/{sell['order_id']}", json={"quantity": 6}, headers=t1)
    assert ran and amended.status_code == 200, amended.text
    assert (amended.json()["quantity"], amended.json()["open_quantity"]) == (6, 2)
    assert Exchange.restore([X], journal).state() == exchange.state()


def test_account_ids_are_answered_as_sent_when_the_tenant_name_has_a_slash(ctx):
    """A tenant may be named hierarchically (``platformq serve --tenant acme/emea``): the exchange sees
    "acme/emea/desk1", and every answer names the account "desk1", as the caller sent it and addresses it by (it
    answered "emea/desk1", which no route takes)."""
    exchange = Exchange([X])
    client = TestClient(create_trading_app(ctx, exchange), raise_server_exceptions=False)
    key = {"X-API-Key": ctx.keys.create("alice", "acme/emea", ["trader"])}
    for account in ("desk1", "desk2"):
        created = client.post("/v1/accounts", json={"account_id": account}, headers=key)
        assert created.status_code == 201 and created.json()["account_id"] == account
        for asset, amount in (("USD", 10**6), (X, 100)):
            r = client.post(f"/v1/accounts/{account}/deposits", json={"asset": asset, "amount": amount}, headers=key)
            assert r.status_code == 200 and r.json()["account_id"] == account
    sell = client.post("/v1/orders", json={"account_id": "desk2", "instrument": X, "side": "SELL", "quantity": 2,
                                           "price_ticks": 50}, headers=key).json()
    buy = client.post("/v1/orders", json={"account_id": "desk1", "instrument": X, "side": "BUY", "quantity": 2,
                                          "price_ticks": 50}, headers=key).json()
    assert (sell["account_id"], buy["account_id"], buy["status"]) == ("desk2", "desk1", "FILLED")
    assert client.get(f"/v1/orders/{buy['order_id']}", headers=key).json()["account_id"] == "desk1"
    assert [o["account_id"] for o in client.get("/v1/orders", params={"account_id": "desk1"}, headers=key).json()] \
        == ["desk1"]
    assert [f["account_id"] for f in client.get("/v1/fills", params={"account_id": "desk2"}, headers=key).json()] \
        == ["desk2"]
    follow = client.post("/v1/copy-trading/follows", json={"follower_account_id": "desk2",
                                                           "leader_account_id": "desk1"}, headers=key).json()
    assert (follow["follower_account_id"], follow["leader_account_id"]) == ("desk2", "desk1")
    assert client.get(f"/v1/accounts/{buy['account_id']}", headers=key).status_code == 200


def test_reads_during_a_batch_whose_journal_write_fails_never_show_what_it_undid(ctx):
    """A batch applies its commands, then journals them, holding the exchange lock. A read of an order or an
    account during it answered what the batch had applied (the resting sell FILLED, the buyer's lots and cash
    moved) although the journal write then failed and the batch was undone (503): GET /v1/orders/{id} did not
    take the lock, and GET /v1/accounts/{id} read under the lock an account object the undo had replaced."""
    from services.trading.exchange import MemoryJournal

    class Stalls(MemoryJournal):
        stall = entered = None

        def append_many(self, commands):
            if self.stall is not None:
                self.entered.set()
                self.stall.wait(10)
                raise OSError("database is locked")
            return super().append_many(commands)

    journal = Stalls()
    exchange = Exchange([X], journal=journal)
    client = TestClient(create_trading_app(ctx, exchange), raise_server_exceptions=False)
    t1 = {"X-API-Key": ctx.keys.create("alice", "t1", ["trader"])}
    for account in ("a1", "a2"):
        client.post("/v1/accounts", json={"account_id": account}, headers=t1)
        client.post(f"/v1/accounts/{account}/deposits", json={"asset": "USD", "amount": 10**6}, headers=t1)
        client.post(f"/v1/accounts/{account}/deposits", json={"asset": X, "amount": 100}, headers=t1)
    sell = client.post("/v1/orders", json={"account_id": "a1", "instrument": X, "side": "SELL", "quantity": 5,
                                           "price_ticks": 100}, headers=t1).json()
    before = {"order": client.get(f"/v1/orders/{sell['order_id']}", headers=t1).json(),
              "account": client.get("/v1/accounts/a2", headers=t1).json()}
    for name, path in (("order", f"/v1/orders/{sell['order_id']}"), ("account", "/v1/accounts/a2")):
        journal.stall, journal.entered = threading.Event(), threading.Event()
        answers = {}
        batch = threading.Thread(target=lambda: answers.setdefault("batch", client.post(
            "/v1/orders/batch", json={"commands": [{"op": "place", "ref": "r", "account_id": "a2", "instrument": X,
                                                    "side": "BUY", "quantity": 5, "price_ticks": 100}]},
            headers=t1)))
        batch.start()
        assert journal.entered.wait(10)  # the batch has filled the sell and waits on its journal write
        read = threading.Thread(target=lambda: answers.setdefault("read", client.get(path, headers=t1)))
        read.start()
        read.join(0.5)
        journal.stall.set()  # the write fails: the batch is undone
        batch.join(10)
        read.join(10)
        assert answers["batch"].status_code == 503
        assert answers["read"].status_code == 200 and answers["read"].json() == before[name], name
    journal.stall = None
    assert Exchange.restore([X], journal).state() == exchange.state()
