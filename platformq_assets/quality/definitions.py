"""Quality checks that stand apart from the assets' own: GX suites and freshness."""

from dagster import AssetSelection, Definitions, build_sensor_for_freshness_checks, build_time_partition_freshness_checks

from platformq_assets.lake.venue import BRONZE_FILLS, BRONZE_ORDERS
from platformq_assets.quality.expectations import trades_expectation_suite


def quality_definitions() -> Definitions:
    # A day's venue data must land by 02:00 UTC the next day.
    freshness = build_time_partition_freshness_checks(
        assets=[BRONZE_ORDERS, BRONZE_FILLS], deadline_cron="0 2 * * *", timezone="UTC"
    )
    return Definitions(
        asset_checks=[trades_expectation_suite, *freshness],
        sensors=[build_sensor_for_freshness_checks(freshness_checks=freshness, name="freshness_checks_sensor")],
    )


__all__ = ["AssetSelection", "quality_definitions"]
