"""The daily medallion graph materialised into a temporary DAGSTER_HOME."""

import re
import subprocess
import sys
import time

import pyarrow.compute as pc
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from tests.conftest import ROOT, subprocess_env
from tests.integration.helpers import definitions, failed_checks, run_day

pytestmark = pytest.mark.slow
DAY, DAY2 = "2024-01-02", "2024-01-03"
LAKE_TABLES = ["bronze.orders", "bronze.fills", "bronze.reference_prices", "bronze.accounts", "bronze.anomaly_labels",
               "silver.trades", "silver.accounts", "gold.ohlcv_bars", "gold.positions_pnl", "gold.trader_leaderboard"]


def counts(lake):
    return {t: lake.read(t).num_rows for t in LAKE_TABLES}


def test_daily_graph_builds_consistent_tables(built_day):
    day = built_day("lake_daily", DAY)  # the whole daily graph, materialised from an empty home
    lake, result = day.lake, day.result
    assert result.success and failed_checks(result) == []
    assert len(result.get_asset_materialization_events()) == 15
    ran = {c.check_name for c in result.get_asset_check_evaluations()}
    assert {"trades_reconcile_with_bronze_fills", "trades_expectation_suite", "unique_trades_trade_id",
            "fills_match_journal_replay", "credentials_verify", "anchored_proofs_verify",
            "variation_margin_sums_to_zero", "open_interest_long_equals_short", "tally_matches_ballots",
            "treasury_moves_only_by_executed_proposals"} <= ran
    [outcome] = lake.read("governance.dao_outcomes").to_pylist()
    assert outcome["state"] in ("Executed", "Defeated") and outcome["voters"] == board_rows(lake)
    assert outcome["treasury_before_usd"] - outcome["treasury_after_usd"] == outcome["reward_usd"]
    margin = lake.read("gold.futures_margin")
    assert margin.num_rows == lake.read("bronze.accounts").num_rows
    assert sum(margin.column("position").to_pylist()) == 0
    accounts = lake.read("bronze.accounts", columns=("account_id", "tenant_id")).to_pylist()
    assert {(r["account_id"], r["tenant_id"]) for r in margin.to_pylist()} == {
        (r["account_id"], r["tenant_id"]) for r in accounts}  # each margin row says whose it is
    assert sum(margin.column("variation_margin_cents").to_pylist()) == 0
    assert any(v != 0 for v in margin.column("variation_margin_cents").to_pylist())

    # trust: one verified credential per gold table, anchored in one Merkle root on chain
    credentials = lake.read("trust.dataset_credentials").to_pylist()
    assert sorted(c["asset_key"] for c in credentials) == ["gold/ohlcv_bars", "gold/positions_pnl",
                                                            "gold/trader_leaderboard"]
    assert all(c["verified"] and c["issuer"].startswith("did:key:z6Mk") for c in credentials)
    import json as _json
    vc = _json.loads(credentials[0]["credential_json"])
    assert vc["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
    assert vc["credentialSubject"]["snapshotId"] == str(lake.describe(vc["credentialSubject"]["assetKey"]
                                                                        .replace("/", "."))["snapshot_id"])
    anchors = lake.read("trust.credential_anchors").to_pylist()
    assert len(anchors) == 3 and len({a["root"] for a in anchors}) == 1 and anchors[0]["chain_id"] == 1337
    assert {a["leaf"] for a in anchors} == {c["credential_sha256"] for c in credentials}

    fills, trades = lake.read("bronze.fills"), lake.read("silver.trades")
    assert fills.num_rows > 0 and fills.num_rows == 2 * trades.num_rows  # bronze -> silver reconciles
    for col in ("_source", "_batch_id", "_ingested_at"):
        assert lake.read("bronze.orders").column(col).null_count == 0

    accounts = lake.read("silver.accounts")
    assert "email" not in accounts.column_names and "full_name" not in accounts.column_names
    assert all(re.fullmatch(r"[0-9a-f]{64}", t) for t in accounts.column("email_token").to_pylist())
    assert all(n.endswith("***") and len(n) == 4 for n in accounts.column("display_name").to_pylist())

    bars = lake.read("gold.ohlcv_bars")
    daily = bars.filter(pc.equal(bars.column("bar_interval"), "1d"))
    for row in daily.to_pylist():
        mask = pc.equal(trades.column("instrument"), row["instrument"])
        instrument_trades = trades.filter(mask)
        assert row["volume"] == pc.sum(instrument_trades.column("quantity")).as_py()
        assert row["low"] <= row["open"] <= row["high"] and row["low"] <= row["close"] <= row["high"]
    minute = bars.filter(pc.equal(bars.column("bar_interval"), "1m"))
    assert pc.sum(minute.column("trade_count")).as_py() == trades.num_rows

    positions = lake.read("gold.positions_pnl")
    for symbol in set(positions.column("instrument").to_pylist()):
        p = positions.filter(pc.equal(positions.column("instrument"), symbol))
        assert pc.sum(p.column("net_lots")).as_py() == 0  # every buy has a seller
        assert abs(pc.sum(p.column("cash_flow")).as_py()) < 1e-6
    board = lake.read("gold.trader_leaderboard").to_pylist()
    tenants = {r["tenant_id"] for r in board}
    assert len(tenants) > 1 and None not in tenants
    for tenant in tenants:  # ranked within each tenant: 1 is its best trader
        ranked = sorted((r for r in board if r["tenant_id"] == tenant), key=lambda r: r["pnl_rank"])
        pnls = [r["pnl"] for r in ranked]
        assert pnls == sorted(pnls, reverse=True) and ranked[0]["pnl_rank"] == 1

    # metadata users act on
    mats = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    meta = mats[AssetKey(["silver", "trades"])]
    assert meta["dagster/row_count"].value == trades.num_rows and "snapshot_id" in meta and "profile" in meta


def test_rematerialising_a_partition_replaces_it(built_day):
    day = built_day("lake_daily", DAY)
    lake, defs = day.lake, definitions(day.settings)
    first = counts(lake)
    snapshot = lake.describe("silver.trades")["snapshot_id"]
    assert run_day(defs, DAY).success
    assert counts(lake) == first
    assert lake.describe("silver.trades")["snapshot_id"] != snapshot
    assert run_day(defs, DAY2).success
    trades = lake.read("silver.trades")
    grouped = trades.group_by("partition_date").aggregate([([], "count_all")])
    per_day = {str(d): n for d, n in zip(grouped.column("partition_date").to_pylist(),
                                          grouped.column("count_all").to_pylist())}
    assert per_day[DAY] == first["silver.trades"] and per_day[DAY2] > 0


def test_failing_blocking_dbt_test_stops_downstream_gold(built_day):
    day = built_day("lake_daily", DAY)
    lake, defs = day.lake, definitions(day.settings)
    gold_before = lake.describe("gold.ohlcv_bars")["snapshot_id"]
    # Corrupt bronze: duplicate some fills, so silver.trades gets duplicate trade ids.
    fills = lake.read_partition("bronze.fills", "partition_date", DAY)
    lake.append("bronze.fills", fills.slice(0, 10), partition_by="partition_date")
    result = run_day(defs, DAY, selection=[AssetKey(["silver", "trades"]), AssetKey(["silver", "accounts"]),
                                           AssetKey(["gold", "ohlcv_bars"]), AssetKey(["gold", "positions_pnl"]),
                                           AssetKey(["gold", "trader_leaderboard"])])
    assert not result.success
    assert "silver/trades:unique_trades_trade_id" in failed_checks(result)
    assert "silver/trades:trades_reconcile_with_bronze_fills" not in failed_checks(result)  # skipped: not built
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "gold/ohlcv_bars" not in materialised
    assert lake.describe("gold.ohlcv_bars")["snapshot_id"] == gold_before


def test_killed_materialisation_leaves_tables_readable_and_rerun_succeeds(built_day):
    day = built_day("lake_daily", DAY)
    lake, defs, platform_home = day.lake, definitions(day.settings), day.home
    before = counts(lake)
    env = subprocess_env(platform_home, PLATFORMQ_SIM_SCALE="0.3")
    proc = subprocess.Popen([sys.executable, "-m", "platformq_assets.cli", "backfill", "--start", DAY, "--end", DAY],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it while it writes bronze: as soon as a new data file appears in the warehouse
    data_dir = platform_home / "warehouse" / "bronze"
    existing = set(data_dir.rglob("*.parquet"))
    deadline = time.time() + 120
    while time.time() < deadline and not (set(data_dir.rglob("*.parquet")) - existing):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert time.time() < deadline, "the backfill never started writing"
    assert counts(lake) == before  # every table readable; the partition is old or new, never half
    assert run_day(defs, DAY).success
    assert counts(lake) == before


def test_backfill_range_from_dagster_cli_creates_one_run_per_day(settings, platform_home):
    env = subprocess_env(platform_home)
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "dagster"), "job", "backfill", "-w", "workspace.yaml",
                          "-j", "lake_daily", "--from", "2024-01-01", "--to", "2024-01-03", "--noprompt"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = DagsterInstance.get().get_runs(RunsFilter(job_name="lake_daily"))
    partitions = sorted(r.tags.get("dagster/partition") for r in runs)
    assert partitions == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert all(r.status in (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
                            DagsterRunStatus.STARTED, DagsterRunStatus.SUCCESS) for r in runs)


def test_reconciliation_check_catches_bronze_silver_drift(built_day):
    from dagster import AssetCheckKey

    day = built_day("lake_daily", DAY)
    lake, defs = day.lake, definitions(day.settings)
    fills = lake.read_partition("bronze.fills", "partition_date", DAY)
    lake.append("bronze.fills", fills.slice(0, 4), partition_by="partition_date")  # bronze changed, silver not
    check = AssetCheckKey(AssetKey(["silver", "trades"]), "trades_reconcile_with_bronze_fills")
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_check_selection={check},
                                                                   asset_selection=set())
    result = job.execute_in_process(partition_key=DAY, instance=DagsterInstance.get(), raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["bronze_fills"].value == fills.num_rows + 4


def board_rows(lake):
    return lake.read("gold.trader_leaderboard").num_rows
