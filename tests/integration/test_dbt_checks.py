"""dbt tests as Dagster asset checks, executed without their model (the UI's "Execute checks" on silver/trades):
the selected tests run on the model's partition as the lake holds it, and nothing is built."""

import datetime as dt

import pyarrow as pa
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from tests.integration.helpers import QUIET, definitions

pytestmark = pytest.mark.slow
DAY = dt.date(2024, 1, 2)
TRADES = AssetKey(["silver", "trades"])


def test_checks_executed_alone_test_the_lake_partition_and_build_nothing(settings, lake):
    # silver.trades as the lake holds it: trade 7 twice (a bad day), every price set
    lake.replace_partition("silver.trades", pa.table({
        "trade_id": pa.array([7, 7, 8], pa.int64()), "partition_date": pa.array([DAY] * 3, pa.date32()),
        "price": [1.5, 1.5, 2.0], "aggressor_side": ["BUY", "BUY", "SELL"],
        "anomaly_type": pa.array([None] * 3, pa.string())}), "partition_date", DAY)
    snapshot = lake.describe("silver.trades")["snapshot_id"]
    defs = definitions(settings)
    checks = {AssetCheckKey(TRADES, "unique_trades_trade_id"), AssetCheckKey(TRADES, "not_null_trades_price")}
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection=checks)
    result = job.execute_in_process(partition_key=DAY.isoformat(), instance=DagsterInstance.get(), run_config=QUIET,
                                    raise_on_error=False)

    evaluations = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert evaluations == {"unique_trades_trade_id": False, "not_null_trades_price": True}
    assert not result.success  # the failed unique test blocks
    assert result.get_asset_materialization_events() == []
    assert lake.describe("silver.trades")["snapshot_id"] == snapshot
    assert not any(lake.table_exists(t) for t in ("silver.accounts", "gold.ohlcv_bars", "gold.positions_pnl"))
