"""Derivatives API over HTTP (ASGI in process): pricing, SPAN, futures clearing, auth, roles, tenancy, problem+json."""

import pytest
from fastapi.testclient import TestClient

from services.derivatives.api import FuturesMarkets, create_derivatives_app
from services.derivatives.options import bsm_price, crr_price
from services.derivatives.span import FuturesPosition, OptionPosition, SpanParameters, span_margin
from tests.services.problems import is_problem

X = "GPUH30"
EXPIRY = "2030-12-31"
D1, D2, D3 = "2030-06-03", "2030-06-04", "2030-06-05"
BSM = {"model": "bsm", "option_type": "call", "underlying_price": 100, "strike": 100, "rate": 0.05, "vol": 0.2,
       "time": 1}


@pytest.fixture
def setup(ctx):
    markets = FuturesMarkets()
    app = create_derivatives_app(ctx, markets)
    keys = {
        "t1_trader": ctx.keys.create("alice", "t1", ["trader"]),
        "t1_engineer": ctx.keys.create("erin", "t1", ["engineer"]),
        "t1_viewer": ctx.keys.create("victor", "t1", ["viewer"]),
        "t1_auditor": ctx.keys.create("audrey", "t1", ["auditor"]),
        "t2_trader": ctx.keys.create("bob", "t2", ["trader"]),
    }
    client = TestClient(app, raise_server_exceptions=False)
    listed = client.post("/v1/futures/contracts", json={"symbol": X, "expiry": EXPIRY}, headers=h(keys, "t1_trader"))
    assert listed.status_code == 201, listed.text
    for who, accounts in (("t1_trader", ("a1", "a2")), ("t2_trader", ("b1", "b2"))):
        for account in accounts:
            r = client.post(f"/v1/futures/{X}/accounts", json={"account_id": account, "deposit_cents": 100_000},
                            headers=h(keys, who))
            assert r.status_code == 201, r.text
    return client, keys, markets


def h(keys, who):
    return {"X-API-Key": keys[who]}


# ---------------------------------------------------------------- pricing


def test_option_prices_and_greeks(setup):
    client, keys, _ = setup
    hv = h(keys, "t1_viewer")
    call = client.post("/v1/options/price", json=BSM, headers=hv).json()
    assert call["price"] == pytest.approx(10.450583572185565, abs=1e-9)  # Hull's textbook value
    assert call["greeks"]["delta"] == pytest.approx(0.6368306511756191) and call["greeks"]["vega"] > 0
    put = client.post("/v1/options/price", json={**BSM, "option_type": "put"}, headers=hv).json()
    assert call["price"] - put["price"] == pytest.approx(100 - 100 * 2.718281828459045 ** -0.05)  # parity
    q = client.post("/v1/options/price", json={**BSM, "dividend_yield": 0.03}, headers=hv).json()
    assert q["price"] == pytest.approx(bsm_price("call", 100, 100, 0.05, 0.2, 1, 0.03))
    b76 = client.post("/v1/options/price", json={**BSM, "model": "black76"}, headers=hv).json()
    assert b76["price"] == pytest.approx(bsm_price("call", 100, 100, 0.05, 0.2, 1, 0.05))  # Black-76 = BSM, q=r
    american = client.post("/v1/options/price", json={**BSM, "model": "crr", "option_type": "put", "steps": 400},
                           headers=hv).json()
    assert american["greeks"] is None
    assert american["price"] == pytest.approx(crr_price("put", 100, 100, 0.05, 0.2, 1, steps=400))
    assert american["price"] > put["price"]  # early exercise premium
    european = client.post("/v1/options/price", json={**BSM, "model": "crr", "option_type": "put", "steps": 2000,
                                                      "american": False}, headers=hv).json()
    assert european["price"] == pytest.approx(put["price"], abs=2e-3)


def test_implied_volatility_round_trips(setup):
    client, keys, _ = setup
    hv = h(keys, "t1_viewer")
    for model in ("bsm", "black76"):
        priced = client.post("/v1/options/price", json={**BSM, "model": model, "vol": 0.37}, headers=hv).json()
        body = {k: v for k, v in BSM.items() if k != "vol"}
        iv = client.post("/v1/options/implied-volatility", json={**body, "model": model, "price": priced["price"]},
                         headers=hv)
        assert iv.status_code == 200 and iv.json()["implied_volatility"] == pytest.approx(0.37, abs=1e-9)
    # a call worth more than the spot violates no-arbitrage: no volatility produces it
    body = {k: v for k, v in BSM.items() if k != "vol"}
    bad = is_problem(client.post("/v1/options/implied-volatility", json={**body, "price": 150}, headers=hv), 422)
    assert "no-arbitrage" in bad["detail"]


def test_structured_products_price_as_sum_of_legs(setup):
    client, keys, _ = setup
    hv = h(keys, "t1_viewer")
    market = {"notional": 1000, "spot": 100, "rate": 0.05, "vol": 0.2, "time": 5}
    solved = client.post("/v1/structured/principal-protected-note", json=market, headers=hv).json()
    assert solved["price"] == pytest.approx(1000) and 0 < solved["participation"] < 1
    assert [leg["name"] for leg in solved["legs"]] == ["zero-coupon bond", "ATM call"]
    given = client.post("/v1/structured/principal-protected-note", json={**market, "participation": 0.5},
                        headers=hv).json()
    assert given["price"] == pytest.approx(sum(leg["value"] for leg in given["legs"])) and given["price"] < 1000
    rc = client.post("/v1/structured/reverse-convertible", json={**market, "time": 1, "strike_pct": 0.9},
                     headers=hv).json()
    assert rc["price"] == pytest.approx(1000) and rc["coupon_rate"] > 0
    assert rc["legs"][-1]["name"] == "short put" and rc["legs"][-1]["value"] < 0
    fixed = client.post("/v1/structured/reverse-convertible", json={**market, "time": 1, "coupon_rate": 0.0},
                        headers=hv).json()
    assert fixed["price"] < 1000 and fixed["price_pct"] == pytest.approx(fixed["price"] / 1000)
    both = client.post("/v1/structured/principal-protected-note",
                       json={**market, "participation": 1, "target_price": 990}, headers=hv)
    is_problem(both, 422)
    no_budget = client.post("/v1/structured/principal-protected-note", json={**market, "rate": -0.01}, headers=hv)
    assert "no option budget" in is_problem(no_budget, 422)["detail"]


def test_span_margin_matches_the_core(setup):
    client, keys, _ = setup
    body = {"futures_price": 100, "rate": 0.03, "parameters": {"price_scan_range": 6, "volatility_scan_range": 0.04,
                                                               "short_option_minimum": 10},
            "positions": [{"kind": "future", "quantity": 3, "contract_size": 100},
                          {"kind": "option", "quantity": -2, "option_type": "call", "strike": 105, "time": 0.25,
                           "vol": 0.3, "contract_size": 100}]}
    r = client.post("/v1/margin/span", json=body, headers=h(keys, "t1_viewer"))
    assert r.status_code == 200, r.text
    out = r.json()
    expected = span_margin([FuturesPosition(3, 100), OptionPosition(-2, "call", 105, 0.25, 0.3, 100)], 100, 0.03,
                           SpanParameters(6, 0.04, short_option_minimum=10))
    assert out["margin"] == pytest.approx(expected.margin) and out["scan_risk"] == pytest.approx(expected.scan_risk)
    assert out["worst_scenario"]["number"] == expected.worst_scenario.number
    assert out["worst_scenario"]["loss"] == pytest.approx(out["worst_loss"])
    assert [s["number"] for s in out["scenarios"]] == list(range(1, 17))
    assert out["short_option_minimum"] == pytest.approx(20)
    too_wide = {**body, "parameters": {"price_scan_range": 60, "volatility_scan_range": 0.04}}
    assert "too large" in is_problem(client.post("/v1/margin/span", json=too_wide, headers=h(keys, "t1_viewer")),
                                     422)["detail"]


# ---------------------------------------------------------------- futures clearing


def test_futures_trade_settle_and_margin_call(setup):
    client, keys, markets = setup
    ht = h(keys, "t1_trader")
    trade = client.post(f"/v1/futures/{X}/trades", json={"buyer_account_id": "a1", "seller_account_id": "a2",
                                                         "contracts": 2, "price": "2.50"}, headers=ht)
    assert trade.status_code == 201, trade.text
    assert trade.json() == {"trade_id": 1, "symbol": X, "buyer_account_id": "a1", "seller_account_id": "a2",
                            "contracts": 2, "price": "2.50", "price_ticks": 250, "day": None}
    s1 = client.post(f"/v1/futures/{X}/settlements", json={"day": D1, "settlement_price": "2.605"}, headers=ht)
    assert s1.status_code == 201, s1.text
    s1 = s1.json()
    assert s1["settlement_price"] == "2.60" and s1["settlement_price_ticks"] == 260  # half-even to the tick
    assert {v["account_id"]: v["variation_margin_cents"] for v in s1["variation_margin"]} == {"a1": 2_000,
                                                                                              "a2": -2_000}
    a2 = client.get(f"/v1/futures/{X}/accounts/a2", headers=h(keys, "t1_viewer")).json()
    assert a2 == {"account_id": "a2", "symbol": X, "balance_cents": 98_000, "equity_cents": 98_000, "position": -2,
                  "initial_requirement_cents": 10_000, "maintenance_requirement_cents": 8_000,
                  "excess_cents": 88_000, "margin_call_cents": 0}
    # a big rally puts the short under maintenance: the call restores the initial requirement
    s2 = client.post(f"/v1/futures/{X}/settlements", json={"day": D2, "settlement_price": "7.20"}, headers=ht).json()
    calls = {c["account_id"]: c for c in s2["margin_calls"]}
    assert set(calls) == {"a2"} and calls["a2"]["equity_cents"] == 98_000 - 2 * 460 * 100 == 6_000
    assert calls["a2"]["amount_cents"] == 10_000 - 6_000  # back to the initial requirement, not maintenance
    paid = client.post(f"/v1/futures/{X}/accounts/a2/deposits", json={"amount_cents": 4_000}, headers=ht).json()
    assert paid["margin_call_cents"] == 0 and paid["balance_cents"] == 10_000
    out = client.post(f"/v1/futures/{X}/accounts/a1/withdrawals", json={"amount_cents": 1_000}, headers=ht)
    assert out.status_code == 200 and out.json()["balance_cents"] == 100_000 + 2_000 + 92_000 - 1_000
    too_much = client.post(f"/v1/futures/{X}/accounts/a2/withdrawals", json={"amount_cents": 1}, headers=ht)
    assert "exceeds excess margin" in is_problem(too_much, 422)["detail"]
    listed = client.get("/v1/futures/contracts", headers=h(keys, "t2_trader")).json()
    assert listed["next_page_token"] is None
    listed = listed["contracts"]
    assert listed == [{"symbol": X, "underlying": "GPU-hour", "currency": "USD", "expiry": EXPIRY,
                       "contract_size": 100, "tick_size": "0.01", "tick_value_cents": 100,
                       "initial_margin_cents": 5_000, "maintenance_margin_cents": 4_000, "open_interest": 2,
                       "last_settlement_price": "7.20", "last_settlement_day": D2, "status": "open",
                       "final_settlement_day": None, "final_price": None, "reference_price": None,
                       "price_band_pct": 10, "price_band_low": "6.48", "price_band_high": "7.92"}]
    assert client.get(f"/v1/futures/contracts/{X}", headers=h(keys, "t2_trader")).json() == listed[0]
    is_problem(client.get("/v1/futures/contracts/NOPE1", headers=ht), 404)
    # variation margin nets to zero: only the deposit and the withdrawal changed the total
    assert sum(a.balance_cents for a in markets.houses[X].accounts.values()) == 4 * 100_000 + 4_000 - 1_000


def test_contract_listing_filters_and_pages(setup):
    """The listing pages in symbol order and filters by state, expiry, settlement day and operator."""
    client, keys, _ = setup
    ht, h2 = h(keys, "t1_trader"), h(keys, "t2_trader")
    expiries = {"GPUA1": "2030-01-05", "GPUA2": "2030-01-06", "GPUA3": "2030-01-07", "GPUB1": "2030-01-05"}
    for symbol, expiry in expiries.items():
        who = h2 if symbol.startswith("GPUB") else ht
        assert client.post("/v1/futures/contracts", json={"symbol": symbol, "expiry": expiry},
                           headers=who).status_code == 201
    assert client.post("/v1/futures/contracts", json={"symbol": "CPUA1", "expiry": "2030-01-05",
                                                       "underlying": "CPU-hour"}, headers=ht).status_code == 201
    assert client.post("/v1/futures/GPUA1/final-settlement", json={"final_price": "2.10", "day": "2030-01-08"},
                       headers=ht).status_code == 201

    def symbols(headers=ht, **params):
        body = client.get("/v1/futures/contracts", params=params, headers=headers)
        assert body.status_code == 200, body.text
        return [c["symbol"] for c in body.json()["contracts"]], body.json()["next_page_token"]

    assert symbols() == (["CPUA1", "GPUA1", "GPUA2", "GPUA3", "GPUB1", X], None)
    assert symbols(underlying="CPU-hour") == (["CPUA1"], None)
    assert symbols(underlying="GPU-hour", status="open", expires_by="2030-01-06") == (["GPUA2", "GPUB1"], None)
    assert symbols(status="open", expires_by="2030-01-06") == (["CPUA1", "GPUA2", "GPUB1"], None)
    assert symbols(status="settled") == (["GPUA1"], None)
    assert symbols(settled_on="2030-01-08") == (["GPUA1"], None)
    assert symbols(settled_on="2030-01-07") == ([], None)
    assert symbols(operated="true") == (["CPUA1", "GPUA1", "GPUA2", "GPUA3", X], None)
    assert symbols(operated="true", underlying="GPU-hour") == (["GPUA1", "GPUA2", "GPUA3", X], None)
    assert symbols(h2, operated="true") == (["GPUB1"], None)
    # pages: each ends where the next starts, the last says so; filters apply before paging
    seen, token, pages = [], None, 0
    while True:
        page, token = symbols(page_size=2, **({"page_token": token} if token else {}))
        seen, pages = seen + page, pages + 1
        if token is None:
            break
    assert seen == ["CPUA1", "GPUA1", "GPUA2", "GPUA3", "GPUB1", X] and pages == 3
    gpu = {"operated": "true", "underlying": "GPU-hour"}
    assert symbols(page_size=2, **gpu) == (["GPUA1", "GPUA2"], "GPUA2")
    assert symbols(page_size=2, page_token="GPUA2", **gpu) == (["GPUA3", X], None)
    assert symbols(page_size=4, **gpu) == (["GPUA1", "GPUA2", "GPUA3", X], None)  # exactly full: no token
    for bad in ({"page_size": 0}, {"page_size": 1001}, {"status": "closed"}, {"expires_by": "soon"},
                {"page_token": "not a symbol"}, {"underlying": ""}, {"underlying": "x" * 65}):
        is_problem(client.get("/v1/futures/contracts", params=bad, headers=ht), 422)


def test_final_settlement_at_expiry_closes_positions_and_releases_margin(setup):
    client, keys, markets = setup
    ht, h2 = h(keys, "t1_trader"), h(keys, "t2_trader")
    for body, headers in (({"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 2, "price": "2.50"}, ht),
                          ({"buyer_account_id": "b1", "seller_account_id": "b2", "contracts": 1, "price": "2.40"}, h2)):
        assert client.post(f"/v1/futures/{X}/trades", json=body, headers=headers).status_code == 201
    early = client.post(f"/v1/futures/{X}/final-settlement", json={"final_price": "2.6", "day": D1}, headers=ht)
    assert "before expiry" in is_problem(early, 422)["detail"]
    not_operator = client.post(f"/v1/futures/{X}/final-settlement", json={"final_price": "2.6"}, headers=h2)
    assert is_problem(not_operator, 403)["type"].endswith("not-contract-operator")
    assert is_problem(client.get(f"/v1/futures/{X}/final-settlement", headers=ht), 404)["type"].endswith("not-settled")
    final = client.post(f"/v1/futures/{X}/final-settlement", json={"final_price": "2.605"}, headers=ht)
    assert final.status_code == 201, final.text
    out = final.json()
    assert out["day"] == EXPIRY and out["final_price"] == "2.60" and out["final_price_ticks"] == 260
    accounts = {a["account_id"]: a for a in out["accounts"]}
    assert set(accounts) == {"a1", "a2"}  # the caller's tenant only
    assert client.get(f"/v1/futures/{X}/final-settlement", headers=ht).json() == out  # read back, as answered
    theirs = client.get(f"/v1/futures/{X}/final-settlement", headers=h2).json()
    assert [a["account_id"] for a in theirs["accounts"]] == ["b1", "b2"] and theirs["day"] == EXPIRY
    contract = client.get(f"/v1/futures/contracts/{X}", headers=h2).json()
    assert (contract["status"], contract["final_settlement_day"], contract["final_price"]) == ("settled", EXPIRY,
                                                                                               "2.60")
    assert contract["open_interest"] == 0
    assert accounts["a1"] == {"account_id": "a1", "closed_position": 2, "variation_margin_cents": 2_000,
                              "balance_cents": 102_000}
    assert accounts["a2"]["closed_position"] == -2 and accounts["a2"]["balance_cents"] == 98_000
    b1 = client.get(f"/v1/futures/{X}/accounts/b1", headers=h2).json()
    assert b1["position"] == 0 and b1["balance_cents"] == 100_000 + 20 * 100  # 2.40 -> 2.60, one contract
    # everything is withdrawable now, and the contract takes no more trades or settlements
    out_all = client.post(f"/v1/futures/{X}/accounts/a1/withdrawals", json={"amount_cents": 102_000}, headers=ht)
    assert out_all.status_code == 200 and out_all.json()["balance_cents"] == 0
    late = client.post(f"/v1/futures/{X}/trades", json={"buyer_account_id": "a1", "seller_account_id": "a2",
                                                        "contracts": 1, "price": "2.50"}, headers=ht)
    assert "expired" in is_problem(late, 422)["detail"]
    again = client.post(f"/v1/futures/{X}/final-settlement", json={"final_price": "2.6"}, headers=ht)
    assert "already been finally settled" in is_problem(again, 422)["detail"]
    assert sum(a.balance_cents for a in markets.houses[X].accounts.values()) == 4 * 100_000 - 102_000


def test_futures_domain_errors_are_422_with_the_message(setup):
    client, keys, _ = setup
    ht = h(keys, "t1_trader")
    trade = {"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 1, "price": "2.50"}
    cases = [
        (f"/v1/futures/{X}/trades", {**trade, "price": "2.505"}, "multiple of tick size"),
        (f"/v1/futures/{X}/trades", {**trade, "price": "0"}, "positive"),
        (f"/v1/futures/{X}/trades", {**trade, "contracts": 21}, "initial margin"),  # 21 * $50 > $1000
        (f"/v1/futures/{X}/trades", {**trade, "seller_account_id": "a1"}, "buyer and seller must differ"),
        (f"/v1/futures/{X}/settlements", {"day": "2031-01-02", "settlement_price": "2.5"}, "after expiry"),
        ("/v1/futures/contracts", {"symbol": "BAD1", "expiry": EXPIRY, "contract_size": 1, "tick_size": "0.001"},
         "not whole"),
        ("/v1/futures/contracts", {"symbol": "BAD2", "expiry": EXPIRY, "initial_margin_cents": 1,
                                   "maintenance_margin_cents": 2}, "maintenance margin"),
    ]
    for url, body, message in cases:
        assert message in is_problem(client.post(url, json=body, headers=ht), 422)["detail"]
    client.post(f"/v1/futures/{X}/settlements", json={"day": D2, "settlement_price": "2.5"}, headers=ht)
    late = client.post(f"/v1/futures/{X}/settlements", json={"day": D1, "settlement_price": "2.5"}, headers=ht)
    assert "is not after the last one" in is_problem(late, 422)["detail"]
    # conflicts and unknowns
    is_problem(client.post("/v1/futures/contracts", json={"symbol": X, "expiry": EXPIRY}, headers=ht), 409)
    is_problem(client.post(f"/v1/futures/{X}/accounts", json={"account_id": "a1"}, headers=ht), 409)
    is_problem(client.post("/v1/futures/NOPE/accounts", json={"account_id": "a1"}, headers=ht), 404)
    is_problem(client.get(f"/v1/futures/{X}/accounts/zz", headers=ht), 404)


def test_validation_errors_are_problems_not_500(setup):
    client, keys, _ = setup
    ht = h(keys, "t1_trader")
    bad_prices = [{**BSM, "vol": 0}, {**BSM, "vol": 5.5}, {**BSM, "time": 51}, {**BSM, "time": 0},
                  {**BSM, "underlying_price": -1}, {**BSM, "strike": 1e9}, {**BSM, "rate": 2},
                  {**BSM, "model": "heston"}, {**BSM, "option_type": "straddle"}, {**BSM, "extra": 1},
                  {**BSM, "model": "crr", "steps": 2001}, {**BSM, "steps": 10},  # steps are for crr only
                  {**BSM, "model": "black76", "dividend_yield": 0.01}, {**BSM, "vol": "high"}]
    for body in bad_prices:
        is_problem(client.post("/v1/options/price", json=body, headers=ht), 422)
    # the edge of the bounds: a CRR call tree overflows; the answer is a 422, not a 500 or an inf
    edge = {**BSM, "model": "crr", "underlying_price": 1e8, "strike": 1e-8, "rate": 1, "vol": 5, "time": 50,
            "steps": 2000}
    assert "not a finite number" in is_problem(client.post("/v1/options/price", json=edge, headers=ht),
                                               422)["detail"]
    tiny = {**BSM, "underlying_price": 1e-300, "strike": 1e-300, "vol": 1e-300, "time": 1e-300}
    is_problem(client.post("/v1/options/price", json=tiny, headers=ht), 422)
    for raw in (b'{"model": "bsm", "vol": NaN}', b"{not json", b'{"model": "bsm", "vol": Infinity}'):
        is_problem(client.post("/v1/options/price", content=raw, headers={**ht, "content-type": "application/json"}),
                   422)
    futures = [("/v1/futures/contracts", {"symbol": "lower", "expiry": EXPIRY}),
               ("/v1/futures/contracts", {"symbol": "OK", "expiry": "someday"}),
               (f"/v1/futures/{X}/trades", {"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 1,
                                            "price": 2.5}),  # floats are refused: not exact on the tick grid
               (f"/v1/futures/{X}/trades", {"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 0,
                                            "price": "2.5"}),
               (f"/v1/futures/{X}/accounts/a1/deposits", {"amount_cents": 0}),
               (f"/v1/futures/{X}/accounts/a1/deposits", {"amount_cents": 10**16}),
               (f"/v1/futures/{X}/accounts", {"account_id": "has/slash"}),
               (f"/v1/futures/{X}/settlements", {"day": "2030-02-30", "settlement_price": "2.5"}),
               (f"/v1/futures/{X}/settlements", {"day": D1, "settlement_price": "-2.5"}),
               ("/v1/margin/span", {"futures_price": 100, "rate": 0, "parameters": {"price_scan_range": 1,
                                    "volatility_scan_range": 0}, "positions": [{"kind": "swap", "quantity": 1}]}),
               ("/v1/margin/span", {"futures_price": 100, "rate": 0, "parameters": {"price_scan_range": 1,
                                    "volatility_scan_range": 0}, "positions": [{"kind": "future"}] * 201})]
    for url, body in futures:
        is_problem(client.post(url, json=body, headers=ht), 422)


def test_authentication_and_roles(setup):
    client, keys, _ = setup
    is_problem(client.post("/v1/options/price", json=BSM), 401)
    is_problem(client.post("/v1/options/price", json=BSM, headers={"X-API-Key": "pq_wrong"}), 401)
    is_problem(client.post("/v1/options/price", json=BSM, headers={"Authorization": "Bearer not.a.jwt"}), 401)
    # the auditor role has no derivatives permissions at all
    assert "derivatives:read" in is_problem(client.post("/v1/options/price", json=BSM,
                                                        headers=h(keys, "t1_auditor")), 403)["detail"]
    is_problem(client.get(f"/v1/futures/{X}/accounts/a1", headers=h(keys, "t1_auditor")), 403)
    # a viewer prices and reads but changes nothing
    assert client.post("/v1/options/price", json=BSM, headers=h(keys, "t1_viewer")).status_code == 200
    assert client.get(f"/v1/futures/{X}/accounts/a1", headers=h(keys, "t1_viewer")).status_code == 200
    writes = [("/v1/futures/contracts", {"symbol": "V1", "expiry": EXPIRY}),
              (f"/v1/futures/{X}/accounts", {"account_id": "v"}),
              (f"/v1/futures/{X}/accounts/a1/deposits", {"amount_cents": 1}),
              (f"/v1/futures/{X}/accounts/a1/withdrawals", {"amount_cents": 1}),
              (f"/v1/futures/{X}/trades", {"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 1,
                                           "price": "2.5"}),
              (f"/v1/futures/{X}/settlements", {"day": D1, "settlement_price": "2.5"}),
              (f"/v1/futures/{X}/final-settlement", {"final_price": "2.5"})]
    for url, body in writes:
        assert "derivatives:write" in is_problem(client.post(url, json=body, headers=h(keys, "t1_viewer")),
                                                 403)["detail"]
    # an engineer of the listing tenant may post settlements; a JWT works like the key it came from
    token = client.post("/auth/token", json={"api_key": keys["t1_engineer"]}).json()["access_token"]
    settled = client.post(f"/v1/futures/{X}/settlements", json={"day": D1, "settlement_price": "2.5"},
                          headers={"Authorization": f"Bearer {token}"})
    assert settled.status_code == 201


def test_tenant_isolation_on_every_route(setup):
    """Tenant 2 probes every tenant-scoped route with tenant 1's ids: 404 (403 to settle t1's contract)."""
    client, keys, markets = setup
    ht1, ht2 = h(keys, "t1_trader"), h(keys, "t2_trader")
    own = client.post(f"/v1/futures/{X}/trades", json={"buyer_account_id": "a1", "seller_account_id": "a2",
                                                       "contracts": 1, "price": "2.50"}, headers=ht1)
    assert own.status_code == 201
    before = markets.state()
    probes = {
        ("GET", "/v1/futures/{symbol}/accounts/{account_id}"): (404, dict(url=f"/v1/futures/{X}/accounts/a1")),
        ("POST", "/v1/futures/{symbol}/accounts/{account_id}/deposits"):
            (404, dict(url=f"/v1/futures/{X}/accounts/a1/deposits", json={"amount_cents": 5})),
        ("POST", "/v1/futures/{symbol}/accounts/{account_id}/withdrawals"):
            (404, dict(url=f"/v1/futures/{X}/accounts/a1/withdrawals", json={"amount_cents": 5})),
        ("POST", "/v1/futures/{symbol}/trades"):
            (404, dict(url=f"/v1/futures/{X}/trades", json={"buyer_account_id": "b1", "seller_account_id": "a1",
                                                             "contracts": 1, "price": "2.50"})),
        # settling moves every tenant's cash: only the tenant that listed the contract may do it
        ("POST", "/v1/futures/{symbol}/settlements"):
            (403, dict(url=f"/v1/futures/{X}/settlements", json={"day": D1, "settlement_price": "9.99"})),
        ("POST", "/v1/futures/{symbol}/final-settlement"):
            (403, dict(url=f"/v1/futures/{X}/final-settlement", json={"final_price": "9.99"})),
    }
    shared = {("POST", "/v1/futures/contracts"), ("GET", "/v1/futures/contracts"),  # market-wide listings
              ("GET", "/v1/futures/contracts/{symbol}"),
              # the final price is market-wide; its accounts are the caller's own (test_final_settlement_...)
              ("GET", "/v1/futures/{symbol}/final-settlement"),
              ("POST", "/v1/futures/{symbol}/accounts")}  # creates in the caller's own tenant
    tenant_routes = {(m, r.path) for r in client.app.routes for m in getattr(r, "methods", ())
                     if r.path.startswith("/v1/futures") and (m, r.path) not in shared}
    assert tenant_routes == set(probes), "a new tenant-scoped route needs an isolation probe"
    for (method, _), (status, kwargs) in probes.items():
        is_problem(client.request(method, **kwargs, headers=ht2), status)
    for buyer, seller in (("a1", "a2"), ("a1", "b1")):  # t1's accounts in either role
        r = client.post(f"/v1/futures/{X}/trades", json={"buyer_account_id": buyer, "seller_account_id": seller,
                                                         "contracts": 1, "price": "2.50"}, headers=ht2)
        is_problem(r, 404)
    assert markets.state() == before
    # the same account id in another tenant is a different account
    assert client.post(f"/v1/futures/{X}/accounts", json={"account_id": "a1"}, headers=ht2).status_code == 201
    assert client.get(f"/v1/futures/{X}/accounts/a1", headers=ht2).json()["balance_cents"] == 0
    assert client.get(f"/v1/futures/{X}/accounts/a1", headers=ht1).json()["balance_cents"] == 100_000
    # settlement results show the settling tenant's own accounts only: t2 operates a contract t1 also trades
    assert client.post("/v1/futures/contracts", json={"symbol": "T2X", "expiry": EXPIRY},
                       headers=ht2).status_code == 201
    for who, account in (("t1_trader", "a1"), ("t1_trader", "a2"), ("t2_trader", "b1"), ("t2_trader", "b2")):
        client.post("/v1/futures/T2X/accounts", json={"account_id": account, "deposit_cents": 50_000},
                    headers=h(keys, who))
    for buyer, seller, who in (("a1", "a2", ht1), ("b1", "b2", ht2)):
        client.post("/v1/futures/T2X/trades", json={"buyer_account_id": buyer, "seller_account_id": seller,
                                                    "contracts": 1, "price": "1.00"}, headers=who)
    s = client.post("/v1/futures/T2X/settlements", json={"day": D1, "settlement_price": "1.50"}, headers=ht2).json()
    assert {v["account_id"]: v["variation_margin_cents"] for v in s["variation_margin"]} == {"b1": 5_000,
                                                                                             "b2": -5_000}
    assert client.get("/v1/futures/T2X/accounts/a1", headers=ht1).json()["balance_cents"] == 55_000
    is_problem(client.post("/v1/futures/T2X/settlements", json={"day": D2, "settlement_price": "1.50"},
                           headers=ht1), 403)


def test_audit_records_state_changes_per_tenant(setup):
    client, keys, _ = setup
    client.post(f"/v1/futures/{X}/accounts/a1/deposits", json={"amount_cents": 7},
                headers={**h(keys, "t1_trader"), "X-Request-ID": "dep-1"})
    auditor = {"X-API-Key": client.app.state.ctx.keys.create("ada", "t1", ["auditor"])}
    records = client.get("/audit", headers=auditor).json()
    mine = [r for r in records if r["correlation_id"] == "dep-1"]
    assert mine and mine[0]["status"] == 200 and mine[0]["subject"] == "alice"
    assert all(r["tenant"] == "t1" for r in records)
    metrics = client.get("/metrics").text
    assert 'route="/v1/futures/{symbol}/accounts/{account_id}/deposits",status="200"' in metrics



def test_quantities_and_money_must_be_json_integers(setup):
    """No coercion: true, "2" or 2.0 is refused (422 problem), never booked as 1 or 2 contracts or cents."""
    client, keys, _ = setup
    ht, hv = h(keys, "t1_trader"), h(keys, "t1_viewer")

    def state():
        return ([client.get(f"/v1/futures/{X}/accounts/{a}", headers=hv).json() for a in ("a1", "a2")],
                client.get("/v1/futures/contracts", headers=hv).json())

    before = state()
    trade = {"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 2, "price": "2.50"}
    for wrong in (True, "2", 2.0):
        for url, body in ((f"/v1/futures/{X}/trades", {**trade, "contracts": wrong}),
                          (f"/v1/futures/{X}/accounts/a1/deposits", {"amount_cents": wrong}),
                          (f"/v1/futures/{X}/accounts/a1/withdrawals", {"amount_cents": wrong}),
                          (f"/v1/futures/{X}/accounts", {"account_id": "a3", "deposit_cents": wrong}),
                          ("/v1/futures/contracts", {"symbol": "NEW1", "expiry": EXPIRY, "contract_size": wrong})):
            r = client.post(url, json=body, headers=ht)
            assert is_problem(r, 422)["errors"], (url, body)
    assert state() == before
    # dates stay ISO strings, prices decimal strings, and integral floats in float fields stay fine
    assert client.post(f"/v1/futures/{X}/trades", json=trade, headers=ht).status_code == 201
    assert client.post("/v1/options/price", json=BSM, headers=hv).status_code == 200


# ---------------------------------------------------------------- review findings: pending variation margin,
# price band, trading ends at expiry


def test_withdrawal_after_a_losing_close_keeps_the_unsettled_loss(setup):
    client, keys, markets = setup
    ht = h(keys, "t1_trader")
    opened = client.post(f"/v1/futures/{X}/trades", json={"buyer_account_id": "a1", "seller_account_id": "a2",
                                                          "contracts": 10, "price": "2.00"}, headers=ht)
    assert opened.status_code == 201
    assert client.post(f"/v1/futures/{X}/settlements", json={"day": D1, "settlement_price": "2.00"},
                       headers=ht).status_code == 201
    close = client.post(f"/v1/futures/{X}/trades", json={"buyer_account_id": "a2", "seller_account_id": "a1",
                                                         "contracts": 10, "price": "1.80"}, headers=ht)
    assert close.status_code == 201, close.text  # a1 flat, 20 ticks * 10 contracts * $1 lost, not yet paid
    too_much = client.post(f"/v1/futures/{X}/accounts/a1/withdrawals", json={"amount_cents": 100_000}, headers=ht)
    assert "exceeds excess margin 80000" in is_problem(too_much, 422)["detail"]
    a1 = client.get(f"/v1/futures/{X}/accounts/a1", headers=ht).json()
    assert (a1["position"], a1["balance_cents"], a1["equity_cents"], a1["excess_cents"]) == (0, 100_000, 80_000,
                                                                                           80_000)
    out = client.post(f"/v1/futures/{X}/accounts/a1/withdrawals", json={"amount_cents": 80_000}, headers=ht)
    assert out.status_code == 200 and out.json()["balance_cents"] == 20_000
    client.post(f"/v1/futures/{X}/settlements", json={"day": D2, "settlement_price": "1.80"}, headers=ht)
    assert client.get(f"/v1/futures/{X}/accounts/a1", headers=ht).json()["balance_cents"] == 0  # not negative


def test_trades_outside_the_price_band_are_refused(setup):
    client, keys, markets = setup
    ht = h(keys, "t1_trader")
    listed = client.post("/v1/futures/contracts", json={"symbol": "GPUREF", "expiry": EXPIRY,
                                                        "reference_price": "2.00", "price_band_pct": 5}, headers=ht)
    assert listed.status_code == 201, listed.text
    assert {k: listed.json()[k] for k in ("reference_price", "price_band_pct", "price_band_low",
                                          "price_band_high")} == {"reference_price": "2.00", "price_band_pct": 5,
                                                                  "price_band_low": "1.90", "price_band_high": "2.10"}
    for account in ("x", "y"):
        client.post("/v1/futures/GPUREF/accounts", json={"account_id": account, "deposit_cents": 5_000}, headers=ht)
    wash = {"buyer_account_id": "x", "seller_account_id": "y", "contracts": 1, "price": "999999999"}
    refused = is_problem(client.post("/v1/futures/GPUREF/trades", json=wash, headers=ht), 422)
    assert "outside the price band 1.90..2.10 (5% around the reference price)" in refused["detail"]
    assert client.post("/v1/futures/GPUREF/trades", json={**wash, "price": "2.00"}, headers=ht).status_code == 201
    # without a reference price the band starts at the first settlement
    assert client.post(f"/v1/futures/{X}/settlements", json={"day": D1, "settlement_price": "2.00"},
                       headers=ht).status_code == 201
    late = client.post(f"/v1/futures/{X}/trades", json={**wash, "buyer_account_id": "a1", "seller_account_id": "a2"},
                       headers=ht)
    assert "outside the price band 1.80..2.20" in is_problem(late, 422)["detail"]
    for bad in ({"price_band_pct": 0}, {"price_band_pct": 101}, {"reference_price": 2.0},
                {"reference_price": "2.005"}):
        is_problem(client.post("/v1/futures/contracts", json={"symbol": "BADREF", "expiry": EXPIRY, **bad},
                               headers=ht), 422)
    assert "BADREF" not in markets.listings
    assert markets.houses["GPUREF"].accounts["t1/x"].balance_cents == 5_000


def test_trades_dated_after_expiry_are_refused_before_the_final_settlement(setup):
    client, keys, markets = setup
    ht = h(keys, "t1_trader")
    body = {"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 1, "price": "2.00"}
    on_expiry = client.post(f"/v1/futures/{X}/trades", json={**body, "day": EXPIRY}, headers=ht)
    assert on_expiry.status_code == 201 and on_expiry.json()["day"] == EXPIRY  # the last trading day
    late = client.post(f"/v1/futures/{X}/trades", json={**body, "day": "2031-01-01"}, headers=ht)
    assert "after expiry 2030-12-31 of GPUH30: trading has ended" in is_problem(late, 422)["detail"]
    is_problem(client.post(f"/v1/futures/{X}/trades", json={**body, "day": "someday"}, headers=ht), 422)
    assert len(markets.houses[X].trades) == 1
