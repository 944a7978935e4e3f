"""Seed a temporary lake with simulated trading days for the neuromorphic tests.

bronze.orders and bronze.anomaly_labels come from the venue simulation through the bronze writer's
own table builder (``venue_tables``); silver.trades is the dbt model's join of the buy and sell fills
on trade_id, done here in Arrow so these tests need neither dbt nor the service-backed assets.
"""

import datetime as dt

SCALE = 0.3


def silver_trades(fills):
    import pyarrow as pa
    import pyarrow.compute as pc

    buys = fills.filter(pc.equal(fills.column("side"), "BUY"))
    sells = fills.filter(pc.equal(fills.column("side"), "SELL")).select(["trade_id", "account_id"]) \
        .rename_columns(["trade_id", "sell_account_id"])
    joined = buys.join(sells, "trade_id")
    return pa.table({
        "trade_id": joined.column("trade_id"), "partition_date": joined.column("partition_date"),
        "ts": joined.column("ts"), "instrument": joined.column("instrument"),
        "price_ticks": joined.column("price_ticks"), "quantity": joined.column("qty_lots"),
        "buy_account_id": joined.column("account_id"), "sell_account_id": joined.column("sell_account_id"),
        "anomaly_type": joined.column("anomaly_type"), "anomaly_id": joined.column("anomaly_id"),
    })


def report_sources(instance, days: list[str], keys=None) -> None:
    """Record the days of the neuromorphic sources as materialised, as the lake_daily run that wrote them would."""
    from dagster import AssetMaterialization

    from platformq_assets.neuromorphic.assets import SOURCES

    for key in keys or SOURCES:
        for day in days:
            instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=day))


def seed_days(lake, days: list[str], scale: float = SCALE, instance=None) -> dict:
    """The days' venue tables written to the lake (and, given an instance, recorded as materialised there)."""
    from pipelines.partitions import LAKE_START_DATE, PARTITION_COLUMN
    from platformq_assets.lake.venue import BRONZE_ANOMALY_LABELS, BRONZE_FILLS, BRONZE_ORDERS, venue_tables
    from services.trading.simulation import SimulationConfig, accounts, simulate_day

    config = SimulationConfig(seed=7, scale=scale, start_date=LAKE_START_DATE)
    labels = {}
    for day in days:
        date = dt.date.fromisoformat(day)
        tables = venue_tables(simulate_day(date, config), accounts(config), f"seed:{day}",
                              dt.datetime.now(dt.timezone.utc))
        lake.replace_partition("bronze.orders", tables[BRONZE_ORDERS], PARTITION_COLUMN, date)
        lake.replace_partition("bronze.anomaly_labels", tables[BRONZE_ANOMALY_LABELS], PARTITION_COLUMN, date)
        lake.replace_partition("silver.trades", silver_trades(tables[BRONZE_FILLS]), PARTITION_COLUMN, date)
        labels[day] = tables[BRONZE_ANOMALY_LABELS].num_rows
    if instance is not None:
        report_sources(instance, days)
    return labels
