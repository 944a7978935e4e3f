"""spike_trains encodes a day only once its trades, orders and anomaly labels are built.

A partition never materialised reads as an empty table: run before dbt built silver.trades for the day (a manual
materialisation, the neuromorphic_daily job, a backfill ahead of lake_daily), the day was encoded from its orders
alone (no price or trade channel ever spiked) and stored as the day's spike trains; run before the labels landed,
every window was labelled normal and the coverage check passed on no labels.
"""

from dagster import AssetKey, DagsterInstance, materialize

from tests.neuromorphic.seed import report_sources, seed_days

DAY = "2024-01-02"
TRADES = AssetKey(["silver", "trades"])


def test_a_day_whose_trades_were_not_built_is_not_encoded(settings, lake):
    from pipelines.partitions import PARTITION_COLUMN
    from platformq_assets.neuromorphic.assets import SOURCES, spike_trains

    seed_days(lake, [DAY])
    # the venue landed the day in bronze; dbt has not built silver.trades for it yet
    lake.replace_partition("silver.trades", lake.read("silver.trades").slice(0, 0), PARTITION_COLUMN, DAY)
    with DagsterInstance.ephemeral() as instance:
        report_sources(instance, [DAY], [k for k in SOURCES if k != TRADES])
        result = materialize([spike_trains], partition_key=DAY, instance=instance, raise_on_error=False,
                             resources={"lake": lake})
    assert not result.success
    failure = " ".join(str(e.event_specific_data) for e in result.all_events if e.is_step_failure)
    assert "silver/trades for 2024-01-02 not materialised" in failure
    assert not (settings.effective_lava_workdir / "spike_trains" / f"{DAY}.npz").exists()
    assert not (settings.effective_lava_workdir / "events" / f"{DAY}.npz").exists()
