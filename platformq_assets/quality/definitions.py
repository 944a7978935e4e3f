"""Quality checks that stand apart from the assets' own: GX suites and freshness."""

import warnings

from dagster import (
    Definitions,
    PreviewWarning,
    SupersessionWarning,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
)

from pipelines.jobs import FRESHNESS_CHECKED
from platformq_assets.quality.expectations import trades_expectation_suite
from platformq_assets.quality.reconciliation import trades_reconcile_with_bronze_fills


def quality_definitions() -> Definitions:
    # A day's venue data and what is built from it must be in the lake by 02:00 UTC
    # the next day. Dagster marks these builders superseded by FreshnessPolicy, which
    # reports a freshness state, not an asset check: freshness is asked for as asset
    # checks with severities (listed, alerted on and kept in history with the other
    # checks), so the builders stay, and their warnings are silenced here only
    # (every step process loads this location and would print them).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        warnings.simplefilter("ignore", PreviewWarning)  # the partitioned check specs they build
        freshness = build_time_partition_freshness_checks(
            assets=FRESHNESS_CHECKED, deadline_cron="0 2 * * *", timezone="UTC"
        )
        sensor = build_sensor_for_freshness_checks(freshness_checks=freshness, name="freshness_checks_sensor")
    return Definitions(
        asset_checks=[trades_expectation_suite, trades_reconcile_with_bronze_fills, *freshness],
        sensors=[sensor],
    )


__all__ = ["quality_definitions"]
