"""Idempotency-Key on the futures routes that move money or positions: a client retrying after a lost answer gets
the first answer again and nothing happens twice, also after a restart; reusing a key for another request is refused."""

import pickle

from fastapi.testclient import TestClient

from services.common import idempotency
from services.common.app import ServiceContext
from services.common.state_store import StateStore
from services.derivatives.api import Listing, create_derivatives_app
from tests.services.problems import is_problem

X = "GPUH30"


def ok(response, status=200):
    assert response.status_code == status, response.text
    return response


def served(ctx, url):
    app = create_derivatives_app(ctx, store=StateStore(url, "derivatives"))
    return TestClient(app, raise_server_exceptions=False), app.state.markets


def setup(tmp_path):
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    t1 = {"X-API-Key": ctx.keys.create("alice", "t1", ["trader"])}
    t2 = {"X-API-Key": ctx.keys.create("bob", "t2", ["trader"])}
    url = f"sqlite:///{tmp_path / 'derivatives.db'}"
    client, markets = served(ctx, url)
    ok(client.post("/v1/futures/contracts", json={"symbol": X, "expiry": "2030-12-31"}, headers=t1), 201)
    for key, accounts in ((t1, ("a1", "a2")), (t2, ("a1",))):
        for account in accounts:
            ok(client.post(f"/v1/futures/{X}/accounts", json={"account_id": account, "deposit_cents": 100_000},
                           headers=key), 201)
    return ctx, url, client, markets, t1, t2


def keyed(headers, key):
    return {**headers, "Idempotency-Key": key}


def balance(client, headers, account):
    return ok(client.get(f"/v1/futures/{X}/accounts/{account}", headers=headers)).json()["balance_cents"]


def test_a_retried_deposit_withdrawal_and_trade_happen_once(tmp_path):
    ctx, url, client, markets, t1, t2 = setup(tmp_path)
    deposit = f"/v1/futures/{X}/accounts/a1/deposits"
    first = ok(client.post(deposit, json={"amount_cents": 5_000}, headers=keyed(t1, "dep-1")))
    again = ok(client.post(deposit, json={"amount_cents": 5_000}, headers=keyed(t1, "dep-1")))
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert balance(client, t1, "a1") == 105_000
    # without a key every request is its own deposit (as before)
    ok(client.post(deposit, json={"amount_cents": 1}, headers=t1))
    ok(client.post(deposit, json={"amount_cents": 1}, headers=t1))
    assert balance(client, t1, "a1") == 105_002

    body = {"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 2, "price": "2.50"}
    trade = ok(client.post(f"/v1/futures/{X}/trades", json=body, headers=keyed(t1, "trade-1")), 201)
    retried = ok(client.post(f"/v1/futures/{X}/trades", json=body, headers=keyed(t1, "trade-1")), 201)
    assert retried.json() == trade.json() and len(markets.houses[X].trades) == 1

    out = ok(client.post(f"/v1/futures/{X}/accounts/a2/withdrawals", json={"amount_cents": 1_000},
                         headers=keyed(t1, "wd-1")))
    # a new process on the same store still knows the keys: the answer was saved with the change
    client, markets = served(ctx, url)
    replay = ok(client.post(f"/v1/futures/{X}/accounts/a2/withdrawals", json={"amount_cents": 1_000},
                            headers=keyed(t1, "wd-1")))
    assert replay.json() == out.json() and replay.headers["Idempotent-Replayed"] == "true"
    ok(client.post(f"/v1/futures/{X}/trades", json=body, headers=keyed(t1, "trade-1")), 201)
    assert balance(client, t1, "a2") == 99_000 and len(markets.houses[X].trades) == 1
    assert ok(client.post(f"/v1/futures/{X}/accounts", json={"account_id": "a3", "deposit_cents": 7},
                          headers=keyed(t1, "open-a3")), 201).json()["balance_cents"] == 7
    # opening an account again with its key is its first answer, not a 409
    assert ok(client.post(f"/v1/futures/{X}/accounts", json={"account_id": "a3", "deposit_cents": 7},
                          headers=keyed(t1, "open-a3")), 201).json()["balance_cents"] == 7


def test_a_key_reused_for_another_request_is_refused_and_keys_are_per_tenant(tmp_path):
    ctx, url, client, markets, t1, t2 = setup(tmp_path)
    ok(client.post(f"/v1/futures/{X}/accounts/a1/deposits", json={"amount_cents": 5_000}, headers=keyed(t1, "k")))
    for path, body in ((f"/v1/futures/{X}/accounts/a1/deposits", {"amount_cents": 6_000}),  # another amount
                       (f"/v1/futures/{X}/accounts/a2/deposits", {"amount_cents": 5_000}),  # another account
                       (f"/v1/futures/{X}/accounts/a1/withdrawals", {"amount_cents": 5_000})):  # another route
        problem = is_problem(client.post(path, json=body, headers=keyed(t1, "k")), 422)
        assert problem["type"].endswith("/idempotency-key-reused")
    assert balance(client, t1, "a1") == 105_000 and balance(client, t1, "a2") == 100_000
    # another tenant's same key is its own: its deposit happens, and t1's kept answer is not shown to it
    theirs = ok(client.post(f"/v1/futures/{X}/accounts/a1/deposits", json={"amount_cents": 5_000},
                            headers=keyed(t2, "k")))
    assert "Idempotent-Replayed" not in theirs.headers and balance(client, t2, "a1") == 105_000
    for bad in (b"", b"x" * 256, b"with space", "naïve".encode()):
        headers = {**t1, "Idempotency-Key": bad}
        problem = is_problem(client.post(f"/v1/futures/{X}/accounts/a1/deposits", json={"amount_cents": 1},
                                         headers=headers), 400)
        assert problem["type"].endswith("/invalid-idempotency-key")
    assert balance(client, t1, "a1") == 105_000


def test_a_refused_request_is_not_kept_so_its_retry_runs_again(tmp_path):
    ctx, url, client, markets, t1, t2 = setup(tmp_path)
    path = f"/v1/futures/{X}/accounts/a1/withdrawals"
    is_problem(client.post(path, json={"amount_cents": 200_000}, headers=keyed(t1, "wd")), 422)  # exceeds excess
    ok(client.post(f"/v1/futures/{X}/accounts/a1/deposits", json={"amount_cents": 150_000}, headers=t1))
    assert ok(client.post(path, json={"amount_cents": 200_000}, headers=keyed(t1, "wd"))).json()["balance_cents"] \
        == 50_000


def test_keys_expire_and_are_bounded_per_tenant(monkeypatch):
    records = {}
    idempotency.remember(records, "t1", "old", "p", 200, {"n": 1}, now=0.0)
    assert idempotency.replay(records, "t1", "old", "p", now=idempotency.TTL_S).body  # still kept at the limit
    assert idempotency.replay(records, "t1", "old", "p", now=idempotency.TTL_S + 1) is None  # then forgotten
    monkeypatch.setattr(idempotency, "MAX_KEYS", 3)
    idempotency.remember(records, "t2", "theirs", "p", 200, {"n": 0}, now=10.0)
    for i in range(5):
        idempotency.remember(records, "t1", f"k{i}", "p", 200, {"n": i}, now=11.0 + i)
    assert list(records["t1"]) == ["k2", "k3", "k4"]
    assert list(records["t2"]) == ["theirs"]  # one tenant's many keys never push out another's


def test_a_listing_saved_before_keys_were_kept_loads_with_none_and_the_kept_keys_are_plain_data(tmp_path):
    ctx, url, client, markets, t1, t2 = setup(tmp_path)
    ok(client.post(f"/v1/futures/{X}/accounts/a1/deposits", json={"amount_cents": 1}, headers=keyed(t1, "k")))
    listing = markets.listings[X]
    state = dict(listing.__dict__)
    del state["idempotency"]
    old = Listing.__new__(Listing)
    old.__dict__.update(state)
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.idempotency == {}
    # the kept answers pickle as builtins and collections only: a version of the service without the idempotency
    # module (a rollback, or an older replica on the same store) still reads the contract
    data = pickle.dumps(listing.idempotency)
    assert listing.idempotency["t1"]["k"][2] == 200 and b"services" not in data and b"Idempotency" not in data
