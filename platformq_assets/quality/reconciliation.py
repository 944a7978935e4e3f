"""Cross-layer reconciliation checks (bronze -> silver), independent of dbt's own tests."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetKey

from pipelines.partitions import PARTITION_COLUMN, daily_asset_check
from resources.lake import LakeResource


def reconcile_fills_with_trades(fills, trades) -> tuple[bool, dict]:
    """Trade by trade: each trade id of the fills is one silver trade of half their lots, and silver has no
    other. Totals alone passed a day whose silver dropped one trade and doubled another of the same size, or
    held another set of trades of the same count and size (a day built from fills replaced since)."""
    import pyarrow.compute as pc

    per_fill = fills.group_by("trade_id").aggregate([([], "count_all"), ("qty_lots", "sum")])
    per_fill = per_fill.select(["trade_id", "count_all", "qty_lots_sum"]).rename_columns(
        ["trade_id", "fills", "fill_lots"])
    per_trade = trades.group_by("trade_id").aggregate([([], "count_all"), ("quantity", "sum")])
    per_trade = per_trade.select(["trade_id", "count_all", "quantity_sum"]).rename_columns(
        ["trade_id", "trades", "trade_lots"])
    # a trade id on one side only, or a null one (which joins nothing), has nulls on the other: unreconciled
    joined = per_fill.join(per_trade, "trade_id", join_type="full outer", coalesce_keys=False,
                           right_suffix="_silver")
    bad = pc.fill_null(pc.or_(
        pc.not_equal(joined.column("fills"), pc.multiply(joined.column("trades"), 2)),
        pc.not_equal(joined.column("fill_lots"), pc.multiply(joined.column("trade_lots"), 2))), True)
    unreconciled = joined.filter(bad)
    ids = [str(v) for v in sorted(set(pc.coalesce(unreconciled.column("trade_id"),
                                                  unreconciled.column("trade_id_silver")).to_pylist()),
                                  key=lambda v: (v is None, v if v is not None else 0))]  # by id, a null last
    fill_lots = pc.sum(fills.column("qty_lots")).as_py() or 0
    trade_lots = pc.sum(trades.column("quantity")).as_py() or 0
    passed = (unreconciled.num_rows == 0 and fills.num_rows == 2 * trades.num_rows
              and fill_lots == 2 * trade_lots)
    return passed, {"bronze_fills": fills.num_rows, "silver_trades": trades.num_rows,
                    "bronze_fill_lots": fill_lots, "silver_trade_lots": trade_lots,
                    "unreconciled_trades": unreconciled.num_rows,
                    "unreconciled_trade_ids": ", ".join(ids[:10]) or "none"}


@daily_asset_check(
    asset=AssetKey(["silver", "trades"]),
    name="trades_reconcile_with_bronze_fills",
    additional_deps=[AssetKey(["bronze", "fills"])],
    blocking=True,
    description="Every bronze fill pair is one silver trade, trade by trade (its id and lots), and silver has no "
                "other: 2 x trades = fills, and traded lots agree.",
)
def trades_reconcile_with_bronze_fills(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    day = context.partition_key
    fills = lake.read_partition("bronze.fills", PARTITION_COLUMN, day)
    trades = lake.read_partition("silver.trades", PARTITION_COLUMN, day)
    passed, metadata = reconcile_fills_with_trades(fills, trades)
    return AssetCheckResult(passed=passed, metadata=metadata)
