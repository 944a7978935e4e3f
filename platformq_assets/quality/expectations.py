"""Great Expectations suites run as Dagster asset checks.

GX is imported inside the check (6-8 s import): loading the code location
never pays for it. The suite runs on an ephemeral GX context (nothing written
to disk, analytics off) over the partition's rows read from Iceberg.
"""


import os

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetKey

from pipelines.partitions import PARTITION_COLUMN, daily_asset_check
from resources.lake import LakeResource

SILVER_TRADES = AssetKey(["silver", "trades"])


def silver_trades_suite(gx):
    """Expectations for silver.trades, built on a GX module handle."""
    suite = gx.ExpectationSuite(name="silver_trades")
    for expectation in (
        gx.expectations.ExpectTableColumnsToMatchSet(
            column_set=["trade_id", "ts", "instrument", "price", "quantity", "buy_account_id", "sell_account_id",
                        "aggressor_side"], exact_match=False),
        # the column expectations pass vacuously on no rows; the venue trades every day
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
        gx.expectations.ExpectColumnValuesToBeUnique(column="trade_id"),
        # GX's column-value expectations skip nulls: without these a null key, price, quantity or side passes
        *(gx.expectations.ExpectColumnValuesToNotBeNull(column=column)
          for column in ("trade_id", "ts", "instrument", "price", "quantity", "aggressor_side")),
        gx.expectations.ExpectColumnValuesToBeBetween(column="price", min_value=0, strict_min=True),
        gx.expectations.ExpectColumnValuesToBeBetween(column="quantity", min_value=1),
        gx.expectations.ExpectColumnValuesToBeInSet(column="aggressor_side", value_set=["BUY", "SELL"]),
        gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="notional", column_B="price", or_equal=True),
    ):
        suite.add_expectation(expectation)
    return suite


def run_suite(dataframe, suite_factory) -> tuple[bool, dict]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("lake")
        .add_dataframe_asset("partition")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(suite_factory(gx))
    result = batch_definition.get_batch(batch_parameters={"dataframe": dataframe}).validate(suite)
    failed = [r.expectation_config.type for r in result.results if not r.success]
    stats = result.statistics
    return bool(result.success), {
        "expectations": stats["evaluated_expectations"],
        "successful": stats["successful_expectations"],
        "failed_expectations": ", ".join(failed) or "none",
        "suite": suite.name,
    }


@daily_asset_check(
    asset=SILVER_TRADES,
    name="trades_expectation_suite",
    description="Great Expectations suite `silver_trades` over the partition's rows.",
    blocking=False,
)
def trades_expectation_suite(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
    rows = lake.read_partition("silver.trades", PARTITION_COLUMN, context.partition_key)
    passed, metadata = run_suite(rows.to_pandas(), silver_trades_suite)
    return AssetCheckResult(passed=passed, severity=AssetCheckSeverity.ERROR,
                            metadata={"rows": rows.num_rows, **metadata})
