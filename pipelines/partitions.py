"""Partitions definitions, one per grain, declared once (assets import these)."""

import datetime as dt

from dagster import DailyPartitionsDefinition

# The venue and the lake are partitioned by trading day from a fixed start.
LAKE_START_DATE = dt.date(2024, 1, 1)

daily_partitions = DailyPartitionsDefinition(start_date=LAKE_START_DATE.isoformat(), timezone="UTC")

# Column that carries the partition in every partitioned lake table.
PARTITION_COLUMN = "partition_date"
