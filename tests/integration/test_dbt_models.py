"""The dbt project run for real (dbt-duckdb) on hand-made bronze rows: time zones, the production (incremental)
layout of every day in one table, and the salt of PII tokens."""

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from dagster import Failure

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
UTC = dt.timezone.utc
DBT = str(ROOT / ".venv" / "bin" / "dbt")


def _fills(day, trades):
    """trades: (trade_id, ts, instrument, price_ticks, qty) -> the BUY and SELL fill of each."""
    rows = []
    for trade_id, ts, instrument, price, qty in trades:
        for side, account, liquidity in (("BUY", 1, "TAKER"), ("SELL", 2, "MAKER")):
            rows.append({"fill_id": len(rows) + 1, "trade_id": trade_id, "ts": ts, "instrument": instrument,
                         "account_id": account, "order_id": trade_id * 10 + account, "side": side,
                         "liquidity": liquidity, "price_ticks": price, "qty_lots": qty, "anomaly_type": None,
                         "anomaly_id": None, "_batch_id": "b", "partition_date": day})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("fill_id", pa.int64()), ("trade_id", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")),
        ("instrument", pa.string()), ("account_id", pa.int64()), ("order_id", pa.int64()), ("side", pa.string()),
        ("liquidity", pa.string()), ("price_ticks", pa.int64()), ("qty_lots", pa.int64()),
        ("anomaly_type", pa.string()), ("anomaly_id", pa.string()), ("_batch_id", pa.string()),
        ("partition_date", pa.date32())]))


def _accounts(day, emails=("ada.ivanova7@acme.example", "bo.chen2@acme.example")):
    n = len(emails)
    return pa.table({"account_id": list(range(1, n + 1)), "partition_date": pa.array([day] * n, pa.date32()),
                     "tenant_id": ["t-acme"] * n, "tenant_name": ["Acme"] * n,
                     "user_id": [f"u-{i}" for i in range(n)], "full_name": ["Ada Ivanova", "Bo Chen"][:n],
                     "email": list(emails), "agent_type": ["noise"] * n, "initial_balance_minor": [100] * n})


def _stage(target: Path, tables: dict) -> None:
    target.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(target / "lake.duckdb"))
    try:
        for identifier, table in tables.items():
            schema, name = identifier.split(".")
            con.execute(f'create schema if not exists "{schema}"')
            con.register("staged", table)
            con.execute(f'create table "{schema}"."{name}" as select * from staged')
            con.unregister("staged")
    finally:
        con.close()


def _build(project: Path, target: Path, select: str, day: str, env: dict | None = None) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "PLATFORMQ_PII_SALT"}
    environ.update({"DBT_TARGET_PATH": str(target), "DBT_LOG_PATH": str(target / "logs"), **(env or {})})
    subprocess.run([DBT, "build", "--select", select, "--profiles-dir", ".", "--target-path", str(target),
                    "--vars", json.dumps({"partition_date": day})], cwd=project, env=environ, capture_output=True,
                   text=True)
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {r["unique_id"].split(".")[2]: r["status"] for r in results}


def _query(target: Path, sql: str):
    con = duckdb.connect(str(target / "lake.duckdb"), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def test_daily_bars_are_utc_days_whatever_the_machines_time_zone(tmp_path):
    day = dt.date(2026, 11, 23)
    fills = _fills(day, [(1, dt.datetime(2026, 11, 23, 14, 45, tzinfo=UTC), "AAPL", 10000, 5),
                         (2, dt.datetime(2026, 11, 23, 20, 30, tzinfo=UTC), "AAPL", 10100, 5)])
    target = tmp_path / "target"
    _stage(target, {"bronze.fills": fills})
    # 14:30 UTC is 23:30 in Tokyo: the session straddles local midnight
    statuses = _build(ROOT / "dbt", target, "trades ohlcv_bars", day.isoformat(), env={"TZ": "Asia/Tokyo"})
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    bars = _query(target, "select strftime(bar_start at time zone 'UTC', '%Y-%m-%d %H:%M'), open, close, volume, "
                          "trade_count from gold.ohlcv_bars where bar_interval = '1d'")
    assert bars == [("2026-11-23 00:00", 100.0, 101.0, 10, 2)]
    minutes = _query(target, "select strftime(bar_start at time zone 'UTC', '%H:%M') from gold.ohlcv_bars "
                             "where bar_interval = '1m' order by 1")
    assert minutes == [("14:45",), ("20:30",)]


@pytest.fixture
def incremental_project(tmp_path):
    """The project as dbt-trino builds it (materialized 'incremental', delete+insert per partition_date: one
    table holding every day), run on dbt-duckdb."""
    project = tmp_path / "dbt"
    shutil.copytree(ROOT / "dbt", project, ignore=shutil.ignore_patterns("target", "logs"))
    config = project / "dbt_project.yml"
    text = config.read_text()
    trino_switch = "\"{{ 'incremental' if target.type == 'trino' else 'table' }}\""
    assert trino_switch in text
    config.write_text(text.replace(trino_switch, "incremental"))
    return project


def test_tests_hold_on_the_second_day_of_an_incremental_table(incremental_project, tmp_path):
    days = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    target = tmp_path / "inc-target"
    _stage(target, {
        "bronze.accounts": pa.concat_tables([_accounts(d) for d in days]),
        "bronze.fills": pa.concat_tables([_fills(d, [(i + 1, dt.datetime.combine(d, dt.time(15), UTC), "AAPL",
                                                       10000, 2)]) for i, d in enumerate(days)]),
        "bronze.reference_prices": pa.table({
            "ts": pa.array([dt.datetime.combine(d, dt.time(21), UTC) for d in days], pa.timestamp("us", tz="UTC")),
            "instrument": ["AAPL", "AAPL"], "reference_price": [100.5, 101.5],
            "partition_date": pa.array(days, pa.date32())}),
    })
    for day in days:
        statuses = _build(incremental_project, target, "accounts positions_pnl trader_leaderboard", day.isoformat())
        failed = {k: v for k, v in statuses.items() if v not in ("success", "pass")}
        assert not failed, (day, failed)
    assert _query(target, "select count(*), count(distinct partition_date) from silver.accounts") == [(4, 2)]
    assert _query(target, "select count(*), count(distinct partition_date) from gold.trader_leaderboard") == [(4, 2)]


def test_a_bad_day_fails_its_own_tests_not_every_later_days(incremental_project, tmp_path):
    """On Trino a table holds every day: tests over the whole table re-checked every earlier day on each run, so a
    day with an unmarked open position (pnl null, a blocking test) failed the build of every later day too."""
    days = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    target = tmp_path / "inc-target"
    _stage(target, {
        "bronze.accounts": pa.concat_tables([_accounts(d) for d in days]),
        "bronze.fills": pa.concat_tables([_fills(d, [(i + 1, dt.datetime.combine(d, dt.time(15), UTC), "AAPL",
                                                       10000, 2)]) for i, d in enumerate(days)]),
        "bronze.reference_prices": _marks(days[1], {"AAPL": 101.5}),  # no mark on the first day
    })
    first = _build(incremental_project, target, "accounts positions_pnl trader_leaderboard", days[0].isoformat())
    assert first["not_null_positions_pnl_pnl"] == "fail"
    second = _build(incremental_project, target, "accounts positions_pnl trader_leaderboard", days[1].isoformat())
    assert not {k: v for k, v in second.items() if v not in ("success", "pass")}, second
    assert "not_null_trader_leaderboard_tenant_id" in second and "not_null_positions_pnl_tenant_id" in second


def test_email_tokens_use_the_deployments_salt(tmp_path):
    day = dt.date(2024, 1, 2)
    email = "ada.ivanova7@acme.example"

    def token(salt_env: dict, name: str) -> str:
        target = tmp_path / name
        _stage(target, {"bronze.accounts": _accounts(day, emails=(email,))})
        statuses = _build(ROOT / "dbt", target, "accounts", day.isoformat(), env=salt_env)
        assert set(statuses.values()) <= {"success", "pass"}, statuses
        [(value,)] = _query(target, "select email_token from silver.accounts")
        return value

    secret = "deployment's-secret"  # a quote in the salt must not break the SQL
    assert token({"PLATFORMQ_PII_SALT": secret}, "secret") == hashlib.sha256(
        (secret + email).encode()).hexdigest()
    # without a deployment salt (local data) the public default applies
    assert token({}, "default") == hashlib.sha256(("platformq-local-salt" + email).encode()).hexdigest()


def test_production_step_refuses_to_tokenise_with_the_public_salt():
    from platformq_assets.lake.transform import DbtManifest, _require_pii_salt
    from resources.dbt import ensure_manifest

    manifest = DbtManifest.load(ensure_manifest(ROOT / "dbt"))
    accounts = "model.platformq.accounts"
    gold = ["model.platformq.ohlcv_bars", "model.platformq.trader_leaderboard"]
    with pytest.raises(Failure, match="PLATFORMQ_PII_SALT is not set: production models accounts"):
        _require_pii_salt(manifest, [accounts, *gold], "production", environ={})
    _require_pii_salt(manifest, [accounts], "production", environ={"PLATFORMQ_PII_SALT": "s"})
    _require_pii_salt(manifest, gold, "production", environ={})  # nothing tokenised
    _require_pii_salt(manifest, [accounts], "local", environ={})  # local data: the public default is fine


def test_rebuilding_a_day_that_came_out_empty_removes_its_old_rows(incremental_project, tmp_path):
    """delete+insert deletes only the partitions present in the new result: a day rebuilt with no rows (its
    bronze rows were erased or quarantined) must not keep the previous build's rows."""
    days = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    target = tmp_path / "inc-target"
    _stage(target, {"bronze.accounts": pa.concat_tables([_accounts(d) for d in days])})
    for day in days:
        assert set(_build(incremental_project, target, "accounts", day.isoformat()).values()) <= {"success", "pass"}
    con = duckdb.connect(str(target / "lake.duckdb"))
    try:
        con.execute("delete from bronze.accounts where partition_date = date '2024-01-02'")
    finally:
        con.close()
    assert set(_build(incremental_project, target, "accounts", "2024-01-02").values()) <= {"success", "pass"}
    assert _query(target, "select partition_date, count(*) from silver.accounts group by 1 order by 1") == [
        (dt.date(2024, 1, 3), 2)]


def _trades_between(day, trades):
    """trades: (trade_id, buyer, seller, instrument, price_ticks, qty) -> both fills of each, schema as _fills."""
    table = _fills(day, [(t[0], dt.datetime.combine(day, dt.time(15, t[0] % 60), UTC), t[3], t[4], t[5])
                         for t in trades])
    buyers_sellers = [a for t in trades for a in (t[1], t[2])]
    return table.set_column(table.schema.get_field_index("account_id"), "account_id",
                            pa.array(buyers_sellers, pa.int64()))


def _named_accounts(day, n):
    return pa.table({"account_id": list(range(1, n + 1)), "partition_date": pa.array([day] * n, pa.date32()),
                     "tenant_id": ["t-acme"] * n, "tenant_name": ["Acme"] * n,
                     "user_id": [f"u-{i}" for i in range(n)], "full_name": [f"Trader {i}" for i in range(n)],
                     "email": [f"t{i}@acme.example" for i in range(n)], "agent_type": ["noise"] * n,
                     "initial_balance_minor": [100] * n})


def _marks(day, prices):
    return pa.table({"ts": pa.array([dt.datetime.combine(day, dt.time(21), UTC)] * len(prices),
                                    pa.timestamp("us", tz="UTC")),
                     "instrument": list(prices), "reference_price": list(prices.values()),
                     "partition_date": pa.array([day] * len(prices), pa.date32())})


def test_equal_pnl_is_one_rank_and_an_unmarked_open_position_blocks_the_leaderboard(tmp_path):
    """PnL was summed in float dollars: two traders who each made exactly $0.30 got 0.30000000000001137 and
    0.2999999999999545, ranks 2 and 3. And a position with no closing price dropped out of its trader's sum,
    which ranked him on part of his book."""
    day = dt.date(2024, 1, 2)
    target = tmp_path / "ties"
    _stage(target, {
        "bronze.accounts": _named_accounts(day, 3),
        "bronze.fills": _trades_between(day, [(1, 1, 3, "AAPL", 15007, 3), (2, 3, 1, "AAPL", 15017, 3),
                                              (3, 2, 3, "MSFT", 10000, 3), (4, 3, 2, "MSFT", 10010, 3)]),
        "bronze.reference_prices": _marks(day, {"AAPL": 150.2, "MSFT": 100.2}),
    })
    statuses = _build(ROOT / "dbt", target, "accounts positions_pnl trader_leaderboard", day.isoformat())
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    assert _query(target, "select account_id, pnl_rank, pnl from gold.trader_leaderboard order by account_id") == [
        (1, 1, 0.3), (2, 1, 0.3), (3, 3, -0.6)]

    unmarked = tmp_path / "unmarked"
    _stage(unmarked, {
        "bronze.accounts": _named_accounts(day, 3),
        "bronze.fills": _trades_between(day, [(1, 1, 3, "AAPL", 15007, 3), (2, 3, 1, "AAPL", 15017, 3),
                                              (3, 1, 3, "NVDA", 50000, 10)]),
        "bronze.reference_prices": _marks(day, {"AAPL": 150.2}),  # no closing price for NVDA
    })
    statuses = _build(ROOT / "dbt", unmarked, "accounts positions_pnl trader_leaderboard", day.isoformat())
    pnl_tests = {k: v for k, v in statuses.items() if k.startswith("not_null_positions_pnl_pnl")}
    assert list(pnl_tests.values()) == ["fail"] and statuses["trader_leaderboard"] == "skipped", statuses
    flat, open_ = _query(unmarked, "select pnl from gold.positions_pnl where account_id = 1 order by instrument")
    assert flat == (0.3,) and open_ == (None,)  # a flat position's PnL needs no mark



def test_traders_are_ranked_within_their_tenant(tmp_path):
    """The leaderboard is per tenant (copy trading is within one): a platform-wide rank served to a tenant
    reveals, by its gaps, how many other tenants' traders did better. Tenants trade with each other on the
    venue; each one's traders are ranked 1..n among themselves."""
    day = dt.date(2024, 1, 2)
    target = tmp_path / "tenants"
    accounts = _named_accounts(day, 4)
    tenants = ["t-acme", "t-cygnus", "t-acme", "t-cygnus"]
    accounts = accounts.set_column(accounts.schema.get_field_index("tenant_id"), "tenant_id", pa.array(tenants))
    _stage(target, {
        "bronze.accounts": accounts,
        # acme's 1 makes $0.30 from cygnus's 2, acme's 3 makes $0.60 from cygnus's 4
        "bronze.fills": _trades_between(day, [(1, 1, 2, "AAPL", 15007, 3), (2, 2, 1, "AAPL", 15017, 3),
                                              (3, 3, 4, "MSFT", 10000, 3), (4, 4, 3, "MSFT", 10020, 3)]),
        "bronze.reference_prices": _marks(day, {"AAPL": 150.2, "MSFT": 100.2}),
    })
    statuses = _build(ROOT / "dbt", target, "accounts positions_pnl trader_leaderboard", day.isoformat())
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    assert _query(target, "select tenant_id, account_id, pnl_rank, pnl from gold.trader_leaderboard "
                          "order by tenant_id, pnl_rank") == [
        ("t-acme", 3, 1, 0.6), ("t-acme", 1, 2, 0.3), ("t-cygnus", 2, 1, -0.3), ("t-cygnus", 4, 2, -0.6)]

def test_email_tokens_and_domains_ignore_case_and_surrounding_space(tmp_path):
    day = dt.date(2024, 1, 2)
    target = tmp_path / "emails"
    _stage(target, {"bronze.accounts": _accounts(day, emails=(" Bo.Chen@Acme.example ", "bo.chen@acme.example"))})
    statuses = _build(ROOT / "dbt", target, "accounts", day.isoformat())
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    rows = _query(target, "select email_token, email_domain from silver.accounts")
    token = hashlib.sha256(b"platformq-local-salt" + b"bo.chen@acme.example").hexdigest()
    assert rows == [(token, "acme.example")] * 2



def test_equal_pnl_over_several_instruments_is_one_rank(tmp_path):
    """A trader's PnL is the sum of his positions' PnL in float dollars: $0.10 on AAPL and $0.20 on MSFT summed to
    0.30000000000000004, which ranked him above a trader who made exactly $0.30 on one instrument (and the DAO,
    which pays the best PnL, equal PnL to the lower account id, paid him whatever his id)."""
    day = dt.date(2024, 1, 2)
    target = tmp_path / "sums"
    _stage(target, {
        "bronze.accounts": _named_accounts(day, 3),
        # 2 makes $0.10 on AAPL and $0.20 on MSFT, 1 makes $0.30 on AAPL; 3 is the other side of every trade
        "bronze.fills": _trades_between(day, [(1, 2, 3, "AAPL", 10000, 1), (2, 3, 2, "AAPL", 10010, 1),
                                              (3, 2, 3, "MSFT", 10000, 1), (4, 3, 2, "MSFT", 10020, 1),
                                              (5, 1, 3, "AAPL", 10000, 1), (6, 3, 1, "AAPL", 10030, 1)]),
        "bronze.reference_prices": _marks(day, {"AAPL": 100.2, "MSFT": 100.2}),
    })
    statuses = _build(ROOT / "dbt", target, "accounts positions_pnl trader_leaderboard", day.isoformat())
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    assert _query(target, "select account_id, pnl_rank, pnl from gold.trader_leaderboard order by account_id") == [
        (1, 1, 0.3), (2, 1, 0.3), (3, 3, -0.6)]


def test_a_trade_whose_fills_do_not_name_one_taker_has_no_aggressor_and_fails_its_test(tmp_path):
    """The aggressor was `case when buy fill is TAKER then 'BUY' else 'SELL'`: a buy fill with no liquidity, or two
    fills both MAKER, made a SELL-aggressor trade, and the accepted_values test on the column could never fail."""
    day = dt.date(2024, 1, 2)
    fills = _fills(day, [(1, dt.datetime(2024, 1, 2, 15, tzinfo=UTC), "AAPL", 10000, 5),
                         (2, dt.datetime(2024, 1, 2, 15, 1, tzinfo=UTC), "AAPL", 10000, 5),
                         (3, dt.datetime(2024, 1, 2, 15, 2, tzinfo=UTC), "AAPL", 10000, 5)])
    liquidity = fills.column("liquidity").to_pylist()
    liquidity[0] = None  # trade 1: the buy fill's liquidity is missing
    liquidity[2] = "MAKER"  # trade 2: both fills say MAKER
    liquidity[4:6] = ["MAKER", "TAKER"]  # trade 3: the seller took liquidity
    fills = fills.set_column(fills.schema.get_field_index("liquidity"), "liquidity", pa.array(liquidity, pa.string()))
    target = tmp_path / "aggressor"
    _stage(target, {"bronze.fills": fills})
    statuses = _build(ROOT / "dbt", target, "trades", day.isoformat())
    assert statuses["not_null_trades_aggressor_side"] == "fail", statuses
    assert _query(target, "select trade_id, aggressor_side from silver.trades order by 1") == [
        (1, None), (2, None), (3, "SELL")]
