"""The Dagster service client: retries with backoff, circuit breaker, in-process and over HTTP."""

import time
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Response

from resources.services import CircuitBreaker, CircuitOpenError, ServiceClientResource, ServiceError
from tests.services.serving import serve


def flaky_app(failures_before_success: int, status: int = 503):
    app = FastAPI()
    app.state.calls = 0

    @app.get("/thing")
    def thing():
        app.state.calls += 1
        if app.state.calls <= failures_before_success:
            return Response(status_code=status, headers={"Retry-After": "0"})
        return {"ok": True, "calls": app.state.calls}

    @app.get("/bad")
    def bad():
        app.state.calls += 1
        return Response('{"title": "Unprocessable Content", "detail": "nope", "status": 422}', status_code=422,
                        media_type="application/problem+json")

    return app


def test_retries_5xx_with_backoff_then_succeeds():
    app = flaky_app(2)
    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.05, max_retries=3)
        started = time.perf_counter()
        assert client.request("GET", "/thing") == {"ok": True, "calls": 3}
        assert time.perf_counter() - started >= 0.05 + 0.1  # 0.05 then 0.1 s of backoff


def test_client_errors_are_not_retried_and_carry_the_problem():
    app = flaky_app(0)
    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.01)
        with pytest.raises(ServiceError) as err:
            client.request("GET", "/bad")
        assert err.value.status == 422 and err.value.problem["detail"] == "nope" and app.state.calls == 1


def test_circuit_opens_after_repeated_failures_and_fails_fast():
    app = flaky_app(10**6)
    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.0, max_retries=1,
                                       breaker_threshold=4, breaker_reset_s=60)
        for _ in range(2):
            with pytest.raises(ServiceError):
                client.request("GET", "/thing")
        calls = app.state.calls
        assert calls == 4 and client.breaker.state == "open"
        with pytest.raises(CircuitOpenError) as opened:
            client.request("GET", "/thing")
        assert app.state.calls == calls  # failed fast, no request sent
        assert opened.value.service == "x" and str(opened.value).startswith("x: circuit open")


def test_a_breaker_opening_during_a_calls_retries_reports_that_calls_failure():
    app = flaky_app(10**6)
    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.0, max_retries=5,
                                       breaker_threshold=2, breaker_reset_s=60)
        with pytest.raises(ServiceError) as failed:
            client.request("GET", "/thing")
        assert not isinstance(failed.value, CircuitOpenError) and failed.value.status == 503
        assert app.state.calls == 2 and client.breaker.state == "open"


def test_rate_limited_answers_do_not_open_the_breaker():
    app = flaky_app(6, status=429)
    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.0, max_retries=1,
                                       breaker_threshold=2, breaker_reset_s=60)
        for _ in range(3):  # six 429s in a row: the service is up and asks to slow down
            with pytest.raises(ServiceError) as limited:
                client.request("GET", "/thing")
            assert limited.value.status == 429
        assert client.breaker.state == "closed"
        assert client.request("GET", "/thing")["calls"] == 7


def test_connection_refused_is_retried_then_reported():
    client = ServiceClientResource(service="x", base_url="http://127.0.0.1:9", api_key="k", backoff_s=0.0,
                                   max_retries=2, timeout_s=1)
    with pytest.raises(ServiceError, match="failed"):
        client.request("GET", "/thing")


def test_a_post_is_sent_again_only_when_it_surely_did_nothing():
    """A POST whose answer timed out, or that got a 500 or a gateway's 502/504, may have been applied: sending it
    again applied orders, trades or deposits twice. It is repeated only after 429 and 503 (the services' answer
    when they undid the change) or a connection never made; a GET is repeated as before."""
    app = FastAPI()
    app.state.applied = 0
    answers = {"slow": 0, "500": 0, "503": 0}

    @app.post("/slow")
    def slow():
        app.state.applied += 1  # applied, but the answer comes too late
        time.sleep(0.6)
        return {"ok": True}

    @app.post("/status/{code}")
    def status(code: int):
        answers[str(code)] += 1
        if answers[str(code)] == 1:  # the services' problem document (a 503: journal-unavailable, say)
            problem = f'{{"type": "https://platformq.dev/problems/p{code}", "title": "t", "status": {code}}}'
            return Response(problem, status_code=code, headers={"Retry-After": "0"},
                            media_type="application/problem+json")
        return {"ok": True, "attempts": answers[str(code)]}

    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.0, max_retries=3,
                                       timeout_s=0.2)
        with pytest.raises(ServiceError, match="failed"):
            client.request("POST", "/slow")
        time.sleep(0.7)
        assert app.state.applied == 1
        with pytest.raises(ServiceError) as err:
            client.request("POST", "/status/500")
        assert err.value.status == 500 and answers["500"] == 1
        assert client.request("POST", "/status/503") == {"ok": True, "attempts": 2}
    refused = ServiceClientResource(service="x", base_url="http://127.0.0.1:9", api_key="k", backoff_s=0.0,
                                    max_retries=2, timeout_s=1, breaker_threshold=10)
    with pytest.raises(ServiceError, match="failed"):
        refused.request("POST", "/thing")  # never connected: sent three times, then reported
    assert refused.breaker.failures == 3


def test_breaker_half_opens_after_reset():
    now = [0.0]
    breaker = CircuitBreaker(2, 10, clock=lambda: now[0])
    breaker.record(False)
    breaker.record(False)
    assert breaker.state == "open"
    now[0] = 11
    assert breaker.state == "half-open"
    breaker.record(True)
    assert breaker.state == "closed"


def test_in_process_trading_service_through_the_resource(tmp_path):
    client = ServiceClientResource(service="trading", home=str(tmp_path))
    assert "AAPL" in client.request("GET", "/v1/instruments")
    client.request("POST", "/v1/accounts", json_body={"account_id": "desk"})
    client.request("POST", "/v1/accounts/desk/deposits", json_body={"asset": "USD", "amount": 10_000})
    order = client.request("POST", "/v1/orders", json_body={"account_id": "desk", "instrument": "AAPL",
                                                            "side": "BUY", "quantity": 2, "price_ticks": 100})
    assert order["status"] == "NEW"
    # state is journalled: a new client (a new step process) sees the same exchange
    again = ServiceClientResource(service="trading", home=str(tmp_path))
    assert again.request("GET", f"/v1/orders/{order['order_id']}")["open_quantity"] == 2


def _board(day, rows):
    """gold.trader_leaderboard rows of one day: (tenant_id, account_id, pnl, pnl_rank)."""
    import pyarrow as pa

    return pa.table({"pnl_rank": [r[3] for r in rows], "account_id": [r[1] for r in rows],
                     "display_name": ["A***"] * len(rows), "tenant_id": [r[0] for r in rows],
                     "pnl": [r[2] for r in rows], "traded_notional": [1.0] * len(rows),
                     "partition_date": pa.array([day] * len(rows), pa.date32())})


def _leaderboard_clients(tmp_path, lake, *tenants):
    from fastapi.testclient import TestClient

    from resources.services import build_local_app

    app, ctx = build_local_app("trading", str(tmp_path), {k: getattr(lake, k) for k in ("catalog_uri", "warehouse")})
    client = TestClient(app, raise_server_exceptions=False)

    def board(tenant, **params):
        key = ctx.keys.create(f"viewer-{tenant}", tenant, ["viewer"])
        r = client.get("/v1/leaderboard", params=params, headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        return [(x["tenant_id"], x["account_id"], x["pnl_rank"]) for x in r.json()]

    return board


def test_trading_leaderboard_shows_each_tenant_only_its_own_traders(tmp_path, lake):
    """The social leaderboard is per tenant (copy trading is within one): it served every tenant's traders, their
    PnL and notional, to any caller. Each tenant sees its own rows, ranked 1..n among themselves, and its own
    latest day."""
    import datetime as dt

    jan2, jan3 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
    lake.replace_partition("gold.trader_leaderboard", _board(jan2, [
        ("t-acme", 1, 90.0, 1), ("t-cygnus", 2, 80.0, 1), ("t-acme", 4, 70.0, 2), ("t-cygnus", 5, -5.0, 2),
        ("t-acme", 7, -9.0, 3)]), "partition_date", jan2)
    lake.replace_partition("gold.trader_leaderboard", _board(jan3, [("t-acme", 1, 5.0, 2), ("t-acme", 4, 6.0, 1)]),
                           "partition_date", jan3)
    board = _leaderboard_clients(tmp_path, lake)
    assert board("t-acme", date="2024-01-02") == [("t-acme", 1, 1), ("t-acme", 4, 2), ("t-acme", 7, 3)]
    assert board("t-cygnus", date="2024-01-02") == [("t-cygnus", 2, 1), ("t-cygnus", 5, 2)]
    assert board("t-acme") == [("t-acme", 4, 1), ("t-acme", 1, 2)]  # its latest day
    # cygnus's latest day is the latest with its rows, not a day only other tenants traded on
    assert board("t-cygnus") == [("t-cygnus", 2, 1), ("t-cygnus", 5, 2)]
    assert board("t-cygnus", date="2024-01-03") == []
    assert board("t-acme", date="2024-01-02", limit=2) == [("t-acme", 1, 1), ("t-acme", 4, 2)]
    assert board("t-nobody") == [] and board("platform") == []


def test_trading_leaderboard_ranks_within_the_tenant_on_days_ranked_platform_wide(tmp_path, lake):
    """A day built before trader_leaderboard ranked per tenant holds platform-wide ranks: served as they are,
    their gaps (1, 3, 5) would tell a tenant how many other tenants' traders did better."""
    import datetime as dt

    day = dt.date(2024, 1, 2)
    lake.replace_partition("gold.trader_leaderboard", _board(day, [
        ("t-acme", 1, 90.0, 1), ("t-cygnus", 2, 80.0, 2), ("t-acme", 4, 70.0, 3), ("t-cygnus", 5, 70.0, 3),
        ("t-acme", 7, 70.0, 3), ("t-acme", 8, -1.0, 6)]), "partition_date", day)
    board = _leaderboard_clients(tmp_path, lake)
    # as SQL's rank(): equal PnL is one rank, and the next rank counts every trader above
    assert board("t-acme") == [("t-acme", 1, 1), ("t-acme", 4, 2), ("t-acme", 7, 2), ("t-acme", 8, 4)]
    assert board("t-cygnus") == [("t-cygnus", 2, 1), ("t-cygnus", 5, 2)]

def test_venue_routing_rebuilds_each_trade_from_the_batchs_own_order_sides(tmp_path):
    """A batch names only the caller's own order of each trade (side and order id); every simulated account is
    the platform's, so a trade comes as its BUY and its SELL entry, and routing pairs them again."""
    from platformq_assets.lake.venue_routing import route_session, trades_match
    from services.trading.engine import BUY, GTC, IOC, SELL, MatchingEngine

    sim = MatchingEngine(["AAPL", "MSFT"])
    for ts, (instrument, account, side, qty, price, tif) in enumerate([
            ("AAPL", 1, SELL, 5, 10_000, GTC), ("AAPL", 2, BUY, 3, 10_010, GTC),  # 2 lifts 1's offer
            ("MSFT", 3, BUY, 4, 5_000, GTC), ("MSFT", 2, SELL, 6, None, IOC),  # a market sell into 3's bid
            ("AAPL", 3, BUY, 2, 10_000, GTC)]):
        sim.submit(instrument, account, side, qty, price, tif, ts)
    assert len(sim.trades) == 3
    routed = route_session(ServiceClientResource(service="trading", home=str(tmp_path)), sim.journal,
                           ["AAPL", "MSFT"], [1, 2, 3])
    assert routed["rejected"] == 0 and len(routed["trades"]) == 3
    assert trades_match(sim.trades, routed["trades"])[0], (sim.trades, routed["trades"])


def test_in_process_services_keep_state_in_the_configured_stores(tmp_path, monkeypatch):
    """PLATFORMQ_GOVERNANCE_STORE_URL (and the credentials, derivatives and trading ones) reach a service run in
    process by a Dagster step, as they reach `platformq serve`: the state was kept in SQLite under home, which a
    step's pod loses. In Dagster's resources the URL travels as an environment reference (it can hold a password)."""
    from resources import build_resources
    from resources.settings import Settings

    store = tmp_path / "elsewhere" / "governance.db"
    store.parent.mkdir()
    monkeypatch.setenv("PLATFORMQ_GOVERNANCE_STORE_URL", f"sqlite:///{store}")
    settings = Settings(home=tmp_path / "home", governance_store_url=f"sqlite:///{store}")
    governance = build_resources(settings)["governance"]
    assert governance.store == {"url": {"env": "PLATFORMQ_GOVERNANCE_STORE_URL"}}  # no URL in the run config
    governance.request("POST", "/v1/daos", json_body={"holdings": {"acct-1": 10}, "treasury": {"USD": 5}})
    assert store.exists() and not (tmp_path / "home" / "services" / "governance.db").exists()
    again = build_resources(settings)["governance"]  # another step's process: the DAO is there
    assert again.request("GET", "/v1/dao")["treasury"] == {"USD": 5}
    monkeypatch.delenv("PLATFORMQ_GOVERNANCE_STORE_URL")
    assert build_resources(Settings(home=tmp_path / "home"))["governance"].store is None


@pytest.mark.parametrize("retry_after", ["86400", "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_retry_after_is_honoured_but_capped(monkeypatch, retry_after):
    """A 429/503 naming an absurd Retry-After (a day, or a date decades ahead) made a Dagster step sleep that long
    before its next try; the wait is capped at max_retry_after_s. A date in the form HTTP allows is read too."""
    import resources.services as services

    app = FastAPI()
    app.state.calls = 0

    @app.get("/thing")
    def thing():
        app.state.calls += 1
        if app.state.calls == 1:
            return Response(status_code=503, headers={"Retry-After": retry_after})
        return {"ok": True}

    slept = []
    monkeypatch.setattr(services, "time", SimpleNamespace(sleep=slept.append, time=time.time))  # the client's only
    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.01, max_retries=2)
        assert client.request("GET", "/thing") == {"ok": True}
        assert slept == [60.0]  # max_retry_after_s, by default


def test_a_reasonable_retry_after_is_waited_for(monkeypatch):
    import email.utils

    import resources.services as services

    app = FastAPI()
    app.state.calls = 0

    @app.get("/thing")
    def thing():
        app.state.calls += 1
        if app.state.calls <= 2:  # the date made when it is answered: a slow start cannot eat the margin
            soon = email.utils.formatdate(time.time() + 5, usegmt=True)
            return Response(status_code=429, headers={"Retry-After": ["7", soon][app.state.calls - 1]})
        return {"ok": True}

    slept = []
    monkeypatch.setattr(services, "time", SimpleNamespace(sleep=slept.append, time=time.time))  # the client's only
    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.01, max_retries=3)
        assert client.request("GET", "/thing") == {"ok": True}
    assert slept[0] == 7.0 and 3.0 <= slept[1] <= 5.0, slept


def test_a_post_answered_503_by_a_gateway_is_not_sent_again():
    """A POST is repeated after a 503 because the services answer 503 only when they undid the change (their
    problem document says which: journal-unavailable, state-store-unavailable...). A 503 from a proxy in front of
    the service (Envoy's "upstream connect error or disconnect/reset before headers", an ingress's page) may
    come after the service applied the request and died before answering: it was sent again, and the order or
    deposit applied twice. Such a 503 is reported; the service's own 503 is still sent again, and a GET is
    repeated after either."""
    app = FastAPI()
    calls = {"gateway": 0, "service": 0, "read": 0}

    @app.post("/gateway")
    def gateway():
        calls["gateway"] += 1  # applied; the proxy reports the upstream's reset
        return Response("upstream connect error or disconnect/reset before headers. reset reason: connection "
                        "termination", status_code=503, media_type="text/plain")

    @app.post("/service")
    def service():
        calls["service"] += 1
        if calls["service"] == 1:
            return Response('{"type": "https://platformq.dev/problems/journal-unavailable", "title": "Service '
                            'Unavailable", "status": 503}', status_code=503, media_type="application/problem+json")
        return {"ok": True}

    @app.get("/read")
    def read():
        calls["read"] += 1
        return Response("<html>503</html>", status_code=503, media_type="text/html") if calls["read"] == 1 else {}

    with serve(app) as url:
        client = ServiceClientResource(service="x", base_url=url, api_key="k", backoff_s=0.0, max_retries=3)
        with pytest.raises(ServiceError) as err:
            client.request("POST", "/gateway")
        assert err.value.status == 503 and calls["gateway"] == 1
        assert client.request("POST", "/service") == {"ok": True} and calls["service"] == 2
        assert client.request("GET", "/read") == {} and calls["read"] == 2


def test_a_venue_rerun_clears_every_resting_order_and_takes_a_resent_cancel_as_done(tmp_path):
    """A crashed run's resting orders are cancelled a page at a time until none is left (one page of 1,000 was
    all), and a cancel whose answer was lost and that the client sent again (409 order-not-open) is done, not a
    failed venue run."""
    from platformq_assets.lake.venue_routing import clear_resting_orders

    trading = ServiceClientResource(service="trading", home=str(tmp_path))
    trading.request("POST", "/v1/accounts", json_body={"account_id": "desk"})
    trading.request("POST", "/v1/accounts/desk/deposits", json_body={"asset": "USD", "amount": 10**9})
    ids = [trading.request("POST", "/v1/orders", json_body={"account_id": "desk", "instrument": "AAPL",
                                                            "side": "BUY", "quantity": 1, "price_ticks": 100 + i})
           ["order_id"] for i in range(5)]

    class ResendsFirstCancel:  # the first DELETE is applied, its answer lost, and the client sends it again
        resent = False

        def request(self, method, path, **kwargs):
            if method == "DELETE" and not self.resent:
                self.resent = True
                trading.request(method, path, **kwargs)
            return trading.request(method, path, **kwargs)

    assert clear_resting_orders(ResendsFirstCancel(), "desk", page=2) == 4  # the fifth was cancelled by the first send
    assert trading.request("GET", "/v1/orders", params={"account_id": "desk", "open_only": True}) == []
    assert {trading.request("GET", f"/v1/orders/{i}")["status"] for i in ids} == {"CANCELLED"}


def test_a_keyed_post_whose_answer_was_lost_is_sent_again_and_applied_once():
    """The futures asset's trades carry an Idempotency-Key: a trade whose answer timed out is sent again (without a
    key it fails the step, as it may have been applied) and the derivatives service applies it once."""
    import asyncio

    from services.common.app import ServiceContext
    from services.derivatives.api import create_derivatives_app

    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    key = ctx.keys.create("alice", "t1", ["trader"])
    app = create_derivatives_app(ctx)
    slow = {"left": 1}

    @app.middleware("http")
    async def lose_the_first_trades_answer(request, call_next):
        response = await call_next(request)  # applied
        if request.url.path.endswith("/trades") and slow["left"]:
            slow["left"] -= 1
            await asyncio.sleep(0.6)  # the client has given up waiting by now
        return response

    trade = {"buyer_account_id": "a1", "seller_account_id": "a2", "contracts": 1, "price": "2.00"}
    with serve(app) as url:
        client = ServiceClientResource(service="derivatives", base_url=url, api_key=key, backoff_s=0.0,
                                       max_retries=3, timeout_s=0.3)
        client.request("POST", "/v1/futures/contracts", json_body={"symbol": "GPUH30", "expiry": "2030-12-31"})
        for account in ("a1", "a2"):
            client.request("POST", "/v1/futures/GPUH30/accounts",
                           json_body={"account_id": account, "deposit_cents": 100_000})
        answer = client.request("POST", "/v1/futures/GPUH30/trades", json_body=trade, idempotency_key="run1:trade:0")
        assert answer["trade_id"] == 1 and len(app.state.markets.houses["GPUH30"].trades) == 1
        slow["left"] = 1
        with pytest.raises(ServiceError, match="failed"):  # without a key: not sent again
            client.request("POST", "/v1/futures/GPUH30/trades", json_body=trade)
        time.sleep(0.4)
        assert len(app.state.markets.houses["GPUH30"].trades) == 2
