"""The code location loads, has the whole graph, and stays light to import."""

import json
import os
import subprocess
import sys

import pytest
from dagster import AssetKey

from tests.conftest import ROOT

EXPECTED_ASSETS = {
    "bronze/orders", "bronze/fills", "bronze/reference_prices", "bronze/accounts", "bronze/anomaly_labels",
    "silver/trades", "silver/accounts", "gold/ohlcv_bars", "gold/positions_pnl", "gold/trader_leaderboard",
    "bronze/partner_quotes", "bronze/kyc_events", "quarantine/landing", "ops/landing_files",
    "trust/dataset_credentials", "trust/credential_anchors", "gold/futures_margin", "gold/futures_final_settlement",
    "governance/dao_outcomes",
    "federated/order_anomaly_model",
    "neuromorphic/spike_trains", "neuromorphic/snn_model", "neuromorphic/anomaly_scores",
    "features/instrument_intervals", "features/account_activity", "features/registry", "features/online_store",
    "features/instrument_intervals_history",
    *(f"ml/{m}{s}" for m in ("price_direction", "account_anomaly")
      for s in ("_training_set", "", "_evaluation", "_champion", "_drift")),
    "gold/price_direction_predictions", "gold/account_anomaly_predictions",
}
HEAVY = ["great_expectations", "dbt", "dagster_dbt", "pyiceberg", "duckdb", "pyarrow", "pandas", "minio",
         "trino", "feast", "mlflow", "ray", "torch", "pyspark", "sqlalchemy", "fastapi", "pyld", "httpx",
         "services.credentials", "services.trading.exchange",
         "lava", "sklearn", "h5py", "kubernetes", "flwr", "opacus", "models.federated", "dagster_pyspark",
         "scipy", "models.tabular", "services.models"]


def test_definitions_hold_the_whole_medallion_graph(settings):
    from platformq_assets.definitions import build_definitions

    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert EXPECTED_ASSETS <= keys
    # dbt sources link to the Python bronze assets with no glue
    assert AssetKey(["bronze", "fills"]) in graph.get(AssetKey(["silver", "trades"])).parent_keys
    assert AssetKey(["silver", "trades"]) in graph.get(AssetKey(["gold", "ohlcv_bars"])).parent_keys
    checks = {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys}
    assert "silver/trades:unique_trades_trade_id" in checks  # dbt test as asset check
    assert "silver/trades:trades_expectation_suite" in checks  # GX suite
    assert "ops/landing_files:landing_counts_reconcile" in checks
    assert {j.name for j in defs.jobs} >= {"venue_daily", "lake_daily", "ingest_landing", "ml_daily", "ml_training",
                                           "lake_maintenance"}
    type(defs).validate_loadable(defs)  # what the webserver/daemon do: names unique, jobs resolvable
    assert {s.name for s in defs.schedules} >= {"venue_daily_schedule", "ml_daily_schedule", "ml_training_weekly",
                                                "lake_maintenance_daily"}
    assert {s.name for s in defs.sensors} >= {"landing_zone_sensor", "freshness_checks_sensor", "ml_drift_alerts"}
    # model lineage: feature table -> training set -> model -> evaluation -> champion -> scores
    chain = ["features/instrument_intervals", "ml/price_direction_training_set", "ml/price_direction",
             "ml/price_direction_evaluation", "ml/price_direction_champion", "gold/price_direction_predictions"]
    for upstream, downstream in zip(chain, chain[1:]):
        assert AssetKey.from_user_string(upstream) in graph.get(AssetKey.from_user_string(downstream)).parent_keys
    for key in keys:
        spec = graph.get(AssetKey.from_user_string(key))
        assert spec.owners, f"{key} has no owner"
        assert spec.group_name in {"bronze", "silver", "gold", "landing", "trust", "markets", "governance",
                                   "neuromorphic", "federated", "features", "ml", "maintenance", "audit"}
    # unpartitioned work the sensors and the nightly schedule start stays out of the daily (partitioned) jobs
    unpartitioned = {AssetKey(["governance", "audit_log"]), AssetKey(["governance", "erasure_log"]),
                     AssetKey(["maintenance", "compaction"])}
    for name in ("venue_daily", "lake_daily", "medallion_daily"):
        assert not unpartitioned & set(defs.resolve_job_def(name).asset_layer.selected_asset_keys), name
    assert defs.resolve_job_def("governance_audit").asset_layer.selected_asset_keys == {
        AssetKey(["governance", "audit_log"])}
    assert "audit_trail_sensor" in {s.name for s in defs.sensors}


def test_dbt_error_tests_are_blocking_and_warn_tests_are_not(settings):
    from platformq_assets.definitions import build_definitions

    graph = build_definitions(settings).resolve_asset_graph()
    specs = {f"{k.asset_key.to_user_string()}:{k.name}": graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert specs["silver/trades:unique_trades_trade_id"].blocking is True
    assert specs["silver/trades:accepted_values_trades_anomaly_type__spoofing__wash_trade__flash_move"].blocking is False


def test_loading_definitions_imports_no_heavy_library():
    code = (
        "import sys, json\n"
        "from platformq_assets.definitions import defs\n"
        "defs()\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("profile", ["local", "production"])
def test_loading_definitions_prints_no_warning(profile):
    """Every step process loads the location: Dagster's API-status warnings (preview, beta, superseded)
    for the APIs chosen on purpose are silenced where each is used, so a run's logs stay clean."""
    from tests.unit.test_secrets_in_ui import PRODUCTION

    code = (
        "from platformq_assets.definitions import defs\n"
        "from dagster._core.definitions.definitions_load_context import (DefinitionsLoadContext,\n"
        "    DefinitionsLoadType)\n"
        "DefinitionsLoadContext.set(DefinitionsLoadContext(load_type=DefinitionsLoadType.INITIALIZATION,\n"
        "    repository_load_data=None))\n"
        "loaded = defs()\n"
        "graph = loaded.resolve_asset_graph()\n"
        "print(len(graph.get_all_asset_keys()), len(graph.asset_check_keys), len(loaded.sensors))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLATFORMQ_") and k != "PYTHONWARNINGS"}
    if profile == "production":
        env.update(PRODUCTION, PLATFORMQ_SERVICES_IN_PROCESS="true")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assets, checks, sensors = map(int, out.stdout.split())
    assert assets >= len(EXPECTED_ASSETS) and checks > 0 and sensors > 0
    assert "Warning" not in out.stderr, out.stderr
