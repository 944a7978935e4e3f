"""Clock-bound work only; derived assets follow by automation conditions."""

from dagster import build_schedule_from_partitioned_job

from pipelines.jobs import venue_daily_job

# Shortly after midnight UTC, build the day that just ended.
venue_daily_schedule = build_schedule_from_partitioned_job(
    venue_daily_job, hour_of_day=0, minute_of_hour=15, name="venue_daily_schedule"
)
