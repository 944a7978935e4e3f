"""Partitions definitions, one per grain, declared once (assets import these)."""

import datetime as dt
import warnings

from dagster import DailyPartitionsDefinition, PreviewWarning, asset_check

# The venue and the lake are partitioned by trading day from a fixed start.
LAKE_START_DATE = dt.date(2024, 1, 1)

daily_partitions = DailyPartitionsDefinition(start_date=LAKE_START_DATE.isoformat(), timezone="UTC")

# Column that carries the partition in every partitioned lake table.
PARTITION_COLUMN = "partition_date"


def daily_asset_check(**kwargs):
    """``@asset_check`` for one trading day's partition (a check that reads that day's rows).

    Partitioned asset checks are a Dagster preview API; its warning is silenced for these
    definitions only (every step process loads the location and would print it)."""

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PreviewWarning)
            return asset_check(partitions_def=daily_partitions, **kwargs)(fn)

    return decorate
