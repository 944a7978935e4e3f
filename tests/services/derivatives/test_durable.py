"""The futures markets outlive the process: contracts, accounts, positions, balances, trades and settlements are
saved in a StateStore after each change (SQLite under home for `platformq serve`, Postgres in production); a change
the store does not take is answered 503 and undone in memory."""

import pickle

import pytest
from fastapi.testclient import TestClient

from resources.services import build_local_app
from services.common.app import ServiceContext
from services.common.state_store import StateStore
from services.derivatives.api import STATE_FORMAT, FuturesMarkets, create_derivatives_app
from tests.services.problems import is_problem
from tests.services.stores import FlakyStore, part_generations

X = "GPUH30"
EXPIRY = "2030-06-05"
D1, D2 = "2030-06-03", "2030-06-04"
DEPOSIT = 100_000
TICK_VALUE = 100  # cents per tick per contract: 0.01 USD x 100 GPU-hours


def ok(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def keys_of(ctx):
    return ({"X-API-Key": ctx.keys.create("alice", "t1", ["trader"])},
            {"X-API-Key": ctx.keys.create("bob", "t2", ["trader"])})


def trade(client, key, buyer, seller, contracts, price):
    return client.post(f"/v1/futures/{X}/trades", headers=key, json={
        "buyer_account_id": buyer, "seller_account_id": seller, "contracts": contracts, "price": price})


def snapshot(client, t1, t2, markets):
    """Everything the API shows of the markets, and the clearing houses' own record (trades, settlements)."""
    house = markets.houses[X]
    return {"contracts": ok(client.get("/v1/futures/contracts", headers=t1))["contracts"],
            "t1": [ok(client.get(f"/v1/futures/{X}/accounts/{a}", headers=t1)) for a in ("a1", "a2")],
            "t2": [ok(client.get(f"/v1/futures/{X}/accounts/{b}", headers=t2)) for b in ("b1", "b2")],
            "trades": list(house.trades), "settlements": list(house.settlements), "operators": dict(markets.operators),
            "state": markets.state()}


def trade_and_settle_a_day(client, t1, t2):
    ok(client.post("/v1/futures/contracts", json={"symbol": X, "expiry": EXPIRY}, headers=t1), 201)
    for key, accounts in ((t1, ("a1", "a2")), (t2, ("b1", "b2"))):
        for account in accounts:
            ok(client.post(f"/v1/futures/{X}/accounts", json={"account_id": account, "deposit_cents": DEPOSIT},
                           headers=key), 201)
    ok(trade(client, t1, "a1", "a2", 3, "2.00"), 201)
    ok(trade(client, t2, "b1", "b2", 2, "2.05"), 201)
    ok(client.post(f"/v1/futures/{X}/accounts/a1/deposits", json={"amount_cents": 5_000}, headers=t1))
    ok(client.post(f"/v1/futures/{X}/accounts/b2/withdrawals", json={"amount_cents": 1_000}, headers=t2))
    day1 = ok(client.post(f"/v1/futures/{X}/settlements", json={"day": D1, "settlement_price": "2.10"},
                          headers=t1), 201)
    assert {v["account_id"]: v["variation_margin_cents"] for v in day1["variation_margin"]} == {
        "a1": 3 * 10 * TICK_VALUE, "a2": -3 * 10 * TICK_VALUE}


def restart_keeps_everything(served):
    """Contracts, positions, balances, trades and settlement history outlive a restart; the next day settles."""
    client, (t1, t2), markets = served()
    trade_and_settle_a_day(client, t1, t2)
    before = snapshot(client, t1, t2, markets)
    assert before["contracts"][0]["last_settlement_price"] == "2.10" and before["contracts"][0]["open_interest"] == 5
    assert [a["position"] for a in before["t1"] + before["t2"]] == [3, -3, 2, -2]
    assert [a["balance_cents"] for a in before["t1"]] == [DEPOSIT + 5_000 + 3_000, DEPOSIT - 3_000]
    assert len(before["trades"]) == 2 and len(before["settlements"]) == 1

    client, (t1, t2), markets = served()  # a new process on the same store
    assert snapshot(client, t1, t2, markets) == before
    # the next day settles from the restored settlement price (2.10), trades go on numbering where they were
    assert ok(trade(client, t2, "b2", "b1", 1, "2.00"), 201)["trade_id"] == 3
    is_problem(client.post(f"/v1/futures/{X}/settlements", json={"day": D1, "settlement_price": "2.00"},
                           headers=t1), 422)  # the day already settled before the restart
    day2 = ok(client.post(f"/v1/futures/{X}/settlements", json={"day": D2, "settlement_price": "2.00"},
                          headers=t1), 201)
    assert {v["account_id"]: v["variation_margin_cents"] for v in day2["variation_margin"]} == {
        "a1": -3 * 10 * TICK_VALUE, "a2": 3 * 10 * TICK_VALUE}
    t2_day2 = ok(client.get(f"/v1/futures/{X}/accounts/b1", headers=t2))
    # b1: long 2 from 2.05, marked 2.10 on D1 (+10 ticks), sold 1 at 2.00 and the other marked 2.00 on D2
    assert t2_day2["position"] == 1 and t2_day2["balance_cents"] == DEPOSIT + 2 * 5 * TICK_VALUE - 2 * 10 * TICK_VALUE

    client, (t1, t2), markets = served()
    assert [s.day.isoformat() for s in markets.houses[X].settlements] == [D1, D2]
    final = ok(client.post(f"/v1/futures/{X}/final-settlement", json={"final_price": "2.20"}, headers=t1), 201)
    assert {a["account_id"]: a["closed_position"] for a in final["accounts"]} == {"a1": 3, "a2": -3}
    client, (t1, t2), markets = served()
    assert markets.houses[X].final is not None
    is_problem(trade(client, t1, "a1", "a2", 1, "2.20"), 422)  # expired and settled, also after a restart
    assert ok(client.get(f"/v1/futures/{X}/accounts/a2", headers=t1))["position"] == 0


def test_the_served_derivatives_app_keeps_its_state_across_a_restart(tmp_path):
    """`platformq serve`'s derivatives app (build_local_app): a restart used to start with no contracts at all."""

    def served():
        app, ctx = build_local_app("derivatives", str(tmp_path))
        return TestClient(app, raise_server_exceptions=False), keys_of(ctx), app.state.markets

    restart_keeps_everything(served)
    assert (tmp_path / "services" / "derivatives.db").exists()


def test_a_change_the_store_does_not_take_answers_503_and_is_undone(tmp_path):
    url = f"sqlite:///{tmp_path / 'derivatives.db'}"
    store = FlakyStore(url, "derivatives")
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    app = create_derivatives_app(ctx, store=store)
    client, (t1, t2), markets = TestClient(app, raise_server_exceptions=False), keys_of(ctx), app.state.markets
    trade_and_settle_a_day(client, t1, t2)
    before = snapshot(client, t1, t2, markets)

    store.fail = True
    refused = [trade(client, t1, "a1", "a2", 1, "2.10"),
               client.post(f"/v1/futures/{X}/accounts/a2/deposits", json={"amount_cents": 7_000}, headers=t1),
               client.post(f"/v1/futures/{X}/accounts/a1/withdrawals", json={"amount_cents": 1_000}, headers=t1),
               client.post(f"/v1/futures/{X}/accounts", json={"account_id": "a3", "deposit_cents": 1}, headers=t1),
               client.post(f"/v1/futures/{X}/settlements", json={"day": D2, "settlement_price": "2.50"},
                           headers=t1),
               client.post(f"/v1/futures/{X}/final-settlement", json={"final_price": "2.50"}, headers=t1),
               client.post("/v1/futures/contracts", json={"symbol": "GPUH31", "expiry": EXPIRY}, headers=t2)]
    for r in refused:
        problem = is_problem(r, 503)
        assert problem["type"].endswith("/state-store-unavailable") and "nothing was changed" in problem["detail"]
    assert app.state.markets is markets
    assert snapshot(client, t1, t2, markets) == before  # no trade recorded, no cash moved, nothing settled
    is_problem(client.get(f"/v1/futures/{X}/accounts/a3", headers=t1), 404)
    assert [c["symbol"] for c in ok(client.get("/v1/futures/contracts", headers=t2))["contracts"]] == [X]
    # a refused domain change (422) is still a 422, and leaves nothing behind either
    is_problem(trade(client, t1, "a1", "a2", 1, "2.001"), 422)
    assert snapshot(client, t1, t2, markets) == before

    store.fail = False
    assert ok(trade(client, t1, "a1", "a2", 1, "2.10"), 201)["trade_id"] == 3
    assert ok(client.post(f"/v1/futures/{X}/accounts/a2/deposits", json={"amount_cents": 7_000},
                          headers=t1))["balance_cents"] == DEPOSIT - 3_000 + 7_000
    ok(client.post(f"/v1/futures/{X}/settlements", json={"day": D2, "settlement_price": "2.50"}, headers=t1), 201)
    after = snapshot(client, t1, t2, markets)
    restarted = create_derivatives_app(ServiceContext("test", rate=1000.0, burst=1000), store=StateStore(url, "d"))
    assert restarted.state.markets.houses == {}  # another row of the same database
    app = create_derivatives_app(ctx, store=StateStore(url, "derivatives"))
    assert snapshot(TestClient(app, raise_server_exceptions=False), t1, t2, app.state.markets) == after
    assert [a["position"] for a in after["t1"]] == [4, -4]


@pytest.mark.slow
def test_the_state_outlives_a_restart_on_postgres(tmp_path):
    """The production store: Postgres (started by make test via infra/scripts/test-services.sh), through
    build_local_app's derivatives_store_url (PLATFORMQ_DERIVATIVES_STORE_URL for `platformq serve`)."""
    from tests.integration.servers import PG_DSN, postgres_database

    with postgres_database() as db:
        url = PG_DSN.format(db=db)
        apps = []

        def served():
            app, ctx = build_local_app("derivatives", str(tmp_path), derivatives_store_url=url)
            apps.append(app)
            return TestClient(app, raise_server_exceptions=False), keys_of(ctx), app.state.markets

        try:
            restart_keeps_everything(served)
        finally:
            for app in apps:
                app.state.durable.store.close()
        assert not (tmp_path / "services" / "derivatives.db").exists()



def test_a_request_saves_only_its_own_contract(tmp_path):
    """Each contract is a row of its own: a day's trading writes that day's contract, not every contract listed
    before it (the whole markets were pickled and written on every trade, so requests slowed with history)."""
    url = f"sqlite:///{tmp_path / 'derivatives.db'}"
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    app = create_derivatives_app(ctx, store=StateStore(url, "derivatives"))
    client, (t1, t2) = TestClient(app, raise_server_exceptions=False), keys_of(ctx)
    trade_and_settle_a_day(client, t1, t2)  # lists X and trades it
    ok(client.post("/v1/futures/contracts", json={"symbol": "GPUH31", "expiry": EXPIRY}, headers=t1), 201)
    written = part_generations(url)
    for account in ("c1", "c2"):
        ok(client.post("/v1/futures/GPUH31/accounts", json={"account_id": account, "deposit_cents": DEPOSIT},
                       headers=t1), 201)
    ok(client.post("/v1/futures/GPUH31/trades", headers=t1, json={
        "buyer_account_id": "c1", "seller_account_id": "c2", "contracts": 1, "price": "2.00"}), 201)
    now = part_generations(url)
    assert now[X] == written[X] and now["GPUH31"] == written["GPUH31"] + 3
    # a refused request (422) writes nothing at all
    is_problem(client.post("/v1/futures/GPUH31/trades", headers=t1, json={
        "buyer_account_id": "c1", "seller_account_id": "c2", "contracts": 1, "price": "2.001"}), 422)
    assert part_generations(url) == now


def test_a_store_written_by_the_previous_version_is_upgraded_on_start(tmp_path):
    """Format 1 held the whole FuturesMarkets in one row: the new code reads it, stores it as one part per
    contract, and carries on from it (the copy is not refused, nothing is lost)."""
    url = f"sqlite:///{tmp_path / 'derivatives.db'}"
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    app = create_derivatives_app(ctx, store=StateStore(url, "derivatives"))
    client, (t1, t2) = TestClient(app, raise_server_exceptions=False), keys_of(ctx)
    trade_and_settle_a_day(client, t1, t2)
    before = snapshot(client, t1, t2, app.state.markets)
    # what the previous version saved: the markets object (houses and operators, no lock) pickled in one row
    old = FuturesMarkets.__new__(FuturesMarkets)
    old.__dict__.update(houses=app.state.markets.houses, operators=app.state.markets.operators)
    legacy = tmp_path / "legacy.db"
    assert StateStore(f"sqlite:///{legacy}", "derivatives").save(1, pickle.dumps(old), 0)

    upgraded = create_derivatives_app(ctx, store=StateStore(f"sqlite:///{legacy}", "derivatives"))
    client = TestClient(upgraded, raise_server_exceptions=False)
    assert snapshot(client, t1, t2, upgraded.state.markets) == before
    assert StateStore(f"sqlite:///{legacy}", "derivatives").load()[:1] == (STATE_FORMAT,)
    assert set(part_generations(f"sqlite:///{legacy}")) == {X}
    assert ok(trade(client, t2, "b2", "b1", 1, "2.00"), 201)["trade_id"] == 3  # and it carries on
    again = create_derivatives_app(ctx, store=StateStore(f"sqlite:///{legacy}", "derivatives"))
    assert len(again.state.markets.houses[X].trades) == 3


def test_two_processes_trading_different_contracts_at_once_are_never_refused(tmp_path):
    """Two API processes on one store (workers of `platformq serve`, a Dagster run's in-process service), each
    trading its own contract at the same time: a save that finds the other's newer save of another contract is
    made on top of it instead of answering 503; both contracts keep every trade."""
    import threading

    url = f"sqlite:///{tmp_path / 'derivatives.db'}"
    ctx = ServiceContext("test", rate=10_000.0, burst=10_000)
    key = {"X-API-Key": ctx.keys.create("ops", "t1", ["trader"])}
    clients = [TestClient(create_derivatives_app(ctx, store=StateStore(url, "derivatives")),
                          raise_server_exceptions=False) for _ in range(2)]
    symbols = ["GPUA", "GPUB"]
    for client, symbol in zip(clients, symbols):
        ok(client.post("/v1/futures/contracts", json={"symbol": symbol, "expiry": EXPIRY}, headers=key), 201)
        for account in ("a1", "a2"):
            ok(client.post(f"/v1/futures/{symbol}/accounts", json={"account_id": account, "deposit_cents": DEPOSIT},
                           headers=key), 201)
    statuses = [[], []]
    start = threading.Barrier(2)

    def trade_many(i):
        start.wait()
        for n in range(40):  # back and forth: positions stay within the margin
            buyer, seller = ("a1", "a2") if n % 2 == 0 else ("a2", "a1")
            statuses[i].append(clients[i].post(f"/v1/futures/{symbols[i]}/trades", headers=key, json={
                "buyer_account_id": buyer, "seller_account_id": seller, "contracts": 1, "price": "2.00"}).status_code)

    threads = [threading.Thread(target=trade_many, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [[201] * 40, [201] * 40]
    restarted = create_derivatives_app(ctx, store=StateStore(url, "derivatives"))
    assert [len(restarted.state.markets.houses[s].trades) for s in symbols] == [40, 40]
