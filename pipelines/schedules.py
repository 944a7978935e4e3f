"""Clock-bound work only; derived assets follow by automation conditions."""

from dagster import build_schedule_from_partitioned_job

from pipelines.jobs import venue_daily_job

# Shortly after midnight UTC, build the day that just ended.
venue_daily_schedule = build_schedule_from_partitioned_job(
    venue_daily_job, hour_of_day=0, minute_of_hour=15, name="venue_daily_schedule"
)


def ml_schedules():
    from dagster import ScheduleDefinition

    from pipelines.jobs import ml_daily_job, ml_training_job

    daily = build_schedule_from_partitioned_job(ml_daily_job, hour_of_day=2, minute_of_hour=0,
                                                name="ml_daily_schedule")
    weekly = ScheduleDefinition(name="ml_training_weekly", job=ml_training_job, cron_schedule="0 4 * * 1",
                                execution_timezone="UTC", description="Retrain and gate every model each Monday.")
    return [daily, weekly]


def maintenance_schedules():
    from dagster import ScheduleDefinition

    from pipelines.jobs import lake_maintenance_job

    return [ScheduleDefinition(name="lake_maintenance_daily", job=lake_maintenance_job, cron_schedule="30 3 * * *",
                               execution_timezone="UTC",
                               description="Erasure requests, retention, compaction, snapshot expiry and orphan "
                                           "files, every night.")]
