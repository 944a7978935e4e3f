"""Cross-layer reconciliation checks (bronze -> silver), independent of dbt's own tests."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetKey

from pipelines.partitions import PARTITION_COLUMN, daily_asset_check
from resources.lake import LakeResource


@daily_asset_check(
    asset=AssetKey(["silver", "trades"]),
    name="trades_reconcile_with_bronze_fills",
    additional_deps=[AssetKey(["bronze", "fills"])],
    blocking=True,
    description="Every bronze fill pair is one silver trade: 2 x trades = fills, and traded lots agree.",
)
def trades_reconcile_with_bronze_fills(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    import pyarrow.compute as pc

    day = context.partition_key
    fills = lake.read_partition("bronze.fills", PARTITION_COLUMN, day)
    trades = lake.read_partition("silver.trades", PARTITION_COLUMN, day)
    fill_lots = pc.sum(fills.column("qty_lots")).as_py() or 0
    trade_lots = pc.sum(trades.column("quantity")).as_py() or 0
    passed = fills.num_rows == 2 * trades.num_rows and fill_lots == 2 * trade_lots
    return AssetCheckResult(passed=passed, metadata={
        "bronze_fills": fills.num_rows, "silver_trades": trades.num_rows,
        "bronze_fill_lots": fill_lots, "silver_trade_lots": trade_lots})
