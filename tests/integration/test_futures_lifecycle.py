"""GPU-hour futures from listing to cash settlement at expiry, through the Dagster assets and the real service."""

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from platformq_assets.markets.futures import FUTURES_FINAL, FUTURES_MARGIN, TENOR_DAYS, gpu_hour_prices
from pipelines.partitions import PARTITION_COLUMN
from tests.integration.helpers import definitions, failed_checks, run_day

pytestmark = pytest.mark.slow
D1 = dt.date(2024, 1, 2)
DAYS = [D1 + dt.timedelta(days=n) for n in range(5)]
ACCOUNTS = {101: "t-acme", 102: "t-acme", 201: "t-cygnus", 202: "t-cygnus", 203: "t-cygnus"}


def roster(lake, day):
    lake.replace_partition("bronze.accounts", pa.table({
        "account_id": pa.array(list(ACCOUNTS), pa.int64()), "tenant_id": list(ACCOUNTS.values()),
        PARTITION_COLUMN: pa.array([day] * len(ACCOUNTS), pa.date32())}), PARTITION_COLUMN, day)


def materialise(defs, day):
    result = run_day(defs, day.isoformat(), selection=[FUTURES_MARGIN, FUTURES_FINAL], run_config={})
    assert result.success and failed_checks(result) == []
    [final] = [m for m in result.get_asset_materialization_events() if m.asset_key == FUTURES_FINAL]
    return {k: v.value for k, v in final.materialization.metadata.items()}


def statement(lake, table, day):
    return sorted(lake.read_partition(table, PARTITION_COLUMN, day).to_pylist(),
                  key=lambda r: (r["symbol"], r["account_id"]))


def test_contracts_are_cash_settled_at_expiry_once_and_late_days_catch_up(settings, lake):
    defs = definitions(settings)
    for day in DAYS:
        roster(lake, day)
    assert TENOR_DAYS == 2  # the days below are laid out for it
    listed = {}
    for day in DAYS[:2]:
        meta = materialise(defs, day)
        assert meta["contracts_settled"] == 0  # nothing has expired yet
        [listed[day]] = {r["symbol"] for r in statement(lake, "gold.futures_margin", day)}
        assert statement(lake, "gold.futures_final_settlement", day) == []

    # the platform's tenant also lists a contract on another underlying, already expired: its final price is not
    # the GPU-hour index, so the asset leaves it to whoever settles it
    service = defs.resources["derivatives"]
    # the day's open is the listing's reference price, so trades before the first settlement were held to a band
    contract = service.request("GET", f"/v1/futures/contracts/{listed[DAYS[0]]}")
    assert contract["reference_price"] == f"{gpu_hour_prices(DAYS[0], settings.sim_seed)[0]:.2f}"
    service.request("POST", "/v1/futures/contracts", json_body={"symbol": "H100X", "expiry": DAYS[0].isoformat(),
                                                                "underlying": "H100-hour"})
    # and an account of its own in day 1's contract that is no lake account: settled, but no row says whose it is
    service.request("POST", f"/v1/futures/{listed[DAYS[0]]}/accounts", json_body={"account_id": "acct-ops"})

    # day 3: day 1's contract expires and is settled at day 3's settlement price, every position closed
    meta = materialise(defs, DAYS[2])
    assert service.request("GET", "/v1/futures/contracts/H100X")["status"] == "open"
    assert (meta["contracts_settled"], meta["settled_by_this_run"], meta["symbols"]) == (1, 1, listed[DAYS[0]])
    assert meta["accounts_not_in_lake"] == 1
    described = {c.name: c.description for c in meta["dagster/column_schema"].columns}  # what the UI shows
    assert described["closed_position"] == "the position the final settlement closed" and all(described.values())
    final = statement(lake, "gold.futures_final_settlement", DAYS[2])
    opened = {r["account_id"]: r for r in statement(lake, "gold.futures_margin", DAYS[0])}
    assert {r["account_id"] for r in final} == set(ACCOUNTS) == set(opened)
    price = gpu_hour_prices(DAYS[2], settings.sim_seed)[1]
    tick_value = 100  # cents per 1-cent tick on a 100 GPU-hour contract
    for row in final:
        before = opened[row["account_id"]]
        assert row["tenant_id"] == ACCOUNTS[row["account_id"]] and row["expiry"] == DAYS[2]
        assert row["final_price"] == price and row["closed_position"] == before["position"]
        # the last mark: from day 1's settlement price to the final price, on the position carried
        moved = round((price - before["settlement_price"]) * 100)
        assert row["variation_margin_cents"] == before["position"] * moved * tick_value
        assert row["balance_cents"] == before["balance_cents"] + row["variation_margin_cents"]
    assert sum(r["variation_margin_cents"] for r in final) == 0 and any(r["closed_position"] for r in final)

    # a re-run of the day settles nothing again and writes the same statement; it lists a fresh contract of
    # its own (expiring day 5), and the first run's stays listed, open, in the service
    first_day3 = {r["symbol"] for r in statement(lake, "gold.futures_margin", DAYS[2])}
    again = materialise(defs, DAYS[2])
    assert (again["contracts_settled"], again["settled_by_this_run"]) == (1, 0)
    assert statement(lake, "gold.futures_final_settlement", DAYS[2]) == final
    rerun_day3 = {r["symbol"] for r in statement(lake, "gold.futures_margin", DAYS[2])}
    assert len(first_day3 | rerun_day3) == 2

    # day 4 is missed: day 5 settles day 2's contract (expired on day 4) at day 4's price, and both of day 3's
    meta = materialise(defs, DAYS[4])
    assert meta["settled_by_this_run"] == 3
    late = statement(lake, "gold.futures_final_settlement", DAYS[4])
    by_symbol = {s: [r for r in late if r["symbol"] == s] for s in {r["symbol"] for r in late}}
    assert set(by_symbol) == {listed[DAYS[1]]} | first_day3 | rerun_day3
    day2 = by_symbol[listed[DAYS[1]]]
    assert {r["final_price"] for r in day2} == {gpu_hour_prices(DAYS[3], settings.sim_seed)[1]}
    assert {r["expiry"] for r in day2} == {DAYS[3]}
    for symbol in first_day3 | rerun_day3:
        assert {r["final_price"] for r in by_symbol[symbol]} == {gpu_hour_prices(DAYS[4], settings.sim_seed)[1]}
    for rows in by_symbol.values():
        assert {r["account_id"] for r in rows} == set(ACCOUNTS)
        assert sum(r["variation_margin_cents"] for r in rows) == 0 and sum(r["closed_position"] for r in rows) == 0
    table = lake.read("gold.futures_final_settlement")
    # days 1, 2 and both of day 3 settled, each once, in one partition; day 5's own is open until day 7
    assert pc.count_distinct(table.column("symbol")).as_py() == table.num_rows // len(ACCOUNTS) == 4


def test_a_run_that_dies_after_settling_loses_nothing(settings, lake, monkeypatch):
    """Settled in the service, then the lake write fails: the retry settles nothing twice and writes the whole
    statement, read back from the service."""
    from resources.lake import LakeResource

    defs = definitions(settings)
    for day in DAYS[:3]:
        roster(lake, day)
    for day in DAYS[:2]:
        materialise(defs, day)
    real = LakeResource.replace_partition

    def crash(self, identifier, *args, **kwargs):
        if identifier == "gold.futures_final_settlement":
            raise OSError("disk full")
        return real(self, identifier, *args, **kwargs)

    monkeypatch.setattr(LakeResource, "replace_partition", crash)
    died = run_day(defs, DAYS[2].isoformat(), selection=[FUTURES_MARGIN, FUTURES_FINAL], run_config={})
    assert not died.success
    monkeypatch.setattr(LakeResource, "replace_partition", real)
    assert statement(lake, "gold.futures_final_settlement", DAYS[2]) == []
    retried = run_day(defs, DAYS[2].isoformat(), selection=[FUTURES_FINAL], run_config={})
    assert retried.success and failed_checks(retried) == []
    [event] = retried.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert (meta["contracts_settled"], meta["settled_by_this_run"]) == (1, 0)
    rows = statement(lake, "gold.futures_final_settlement", DAYS[2])
    assert {r["account_id"] for r in rows} == set(ACCOUNTS)
    assert sum(r["variation_margin_cents"] for r in rows) == 0 and any(r["variation_margin_cents"] for r in rows)


def test_another_tenant_trading_the_days_contract_leaves_its_checks_passing(settings, lake, monkeypatch):
    """Contracts are market-wide: another tenant may open accounts in the day's contract and clear trades between
    them. The service's open interest then counts that tenant's positions too; the platform's own longs still equal
    its shorts, and the blocking check passed only when the open interest was exactly the platform's."""
    from fastapi.testclient import TestClient

    from resources.services import ServiceClientResource, build_local_app, resolve_env_refs

    defs = definitions(settings)
    roster(lake, D1)
    service = defs.resources["derivatives"]
    store_url = (resolve_env_refs(service.store) or {}).get("url")
    real = ServiceClientResource.request

    def request(self, method, path, **kwargs):
        if method == "POST" and path.endswith("/settlements"):  # the day's trades are in: a market maker trades too
            symbol = path.split("/")[3]
            app, ctx = build_local_app("derivatives", service.home, derivatives_store_url=store_url)
            key = {"X-API-Key": ctx.keys.create("mm", "t-market-maker", ["trader"])}
            with TestClient(app) as other:
                price = other.get(f"/v1/futures/contracts/{symbol}", headers=key).json()["reference_price"]
                for account in ("mm1", "mm2"):
                    assert other.post(f"/v1/futures/{symbol}/accounts", headers=key,
                                      json={"account_id": account, "deposit_cents": 10**7}).status_code == 201
                assert other.post(f"/v1/futures/{symbol}/trades", headers=key, json={
                    "buyer_account_id": "mm1", "seller_account_id": "mm2", "contracts": 7,
                    "price": price}).status_code == 201
        return real(self, method, path, **kwargs)

    monkeypatch.setattr(ServiceClientResource, "request", request)
    result = run_day(defs, D1.isoformat(), selection=[FUTURES_MARGIN], run_config={})
    assert result.success and failed_checks(result) == []
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "open_interest_long_equals_short"]
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["open_interest"] == meta["long"] + 7 and meta["long"] == meta["short"] > 0
