"""ML catch-up sensor: a trading day whose ``ml_daily`` could not run (its inputs were late) is run once they
are there.

``ml_daily_schedule`` runs a day's features, online store, scores and drift at 02:00 UTC. When the venue's
day (gold bars, bronze orders/fills/accounts) is built later than that, the feature steps fail, naming the
missing partitions, and write nothing. This sensor looks at the last ``LOOKBACK_DAYS`` days whose scheduled
time has passed: a day whose feature partitions are missing, whose inputs are all materialised now, and for
which no ``ml_daily`` run is queued or in progress gets one run. The run key names the inputs' latest
materialisations, so one state of the inputs gets one run (a run that fails again waits for new inputs or for
an operator, as any failed run does), and a day rebuilt later is caught up again.
"""

import datetime as dt

from dagster import AssetKey, AssetRecordsFilter, DagsterRunStatus, RunRequest, RunsFilter, SensorEvaluationContext, \
    SensorResult, SkipReason, sensor

LOOKBACK_DAYS = 7
# ml_daily_schedule runs a day at 02:00 UTC the next day (pipelines/schedules.py); an hour later its run has
# been launched (the in-progress check covers one still going), so only then may a missing day be caught up
DUE_HOUR = 3
FEATURE_KEYS = [AssetKey(["features", "instrument_intervals"]), AssetKey(["features", "account_activity"])]
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
INPUT_KEYS = [AssetKey(["gold", "ohlcv_bars"]), AssetKey(["bronze", "orders"]), AssetKey(["bronze", "fills"]),
              AssetKey(["bronze", "accounts"])]


def days_due(now: dt.datetime) -> list[str]:
    """The days (partition keys) whose scheduled ml_daily run is due, newest first, within the look-back."""
    latest = (now - dt.timedelta(hours=DUE_HOUR)).date() - dt.timedelta(days=1)
    return [(latest - dt.timedelta(days=i)).isoformat() for i in range(LOOKBACK_DAYS)]


def _latest_storage_id(instance, key: AssetKey, day: str) -> int | None:
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1,
                                              ascending=False).records
    return records[0].storage_id if records else None


def catch_up_requests(instance, now: dt.datetime) -> list[RunRequest]:
    built = [instance.get_materialized_partitions(key) for key in FEATURE_KEYS]
    requests = []
    for day in days_due(now):
        if all(day in done for done in built):
            continue
        inputs = [_latest_storage_id(instance, key, day) for key in INPUT_KEYS]
        if any(storage_id is None for storage_id in inputs):
            continue  # still missing: the run would fail again
        running = instance.get_run_records(RunsFilter(job_name="ml_daily", tags={"dagster/partition": day},
                                                      statuses=UNFINISHED), limit=1)
        if running:
            continue  # the schedule's (or an earlier catch-up's) run is still going
        requests.append(RunRequest(run_key=f"catch-up:{day}:{'-'.join(map(str, inputs))}", partition_key=day,
                                   tags={"platformq/trigger": "ml_daily_catch_up"}))
    return requests


def build_ml_catch_up_sensor(job):
    @sensor(name="ml_daily_catch_up", job=job, minimum_interval_seconds=300,
            description=f"Runs ml_daily for a day of the last {LOOKBACK_DAYS} whose features are missing once the "
                        "day's inputs (gold bars, bronze orders/fills/accounts) have been built.")
    def ml_daily_catch_up(context: SensorEvaluationContext):
        requests = catch_up_requests(context.instance, dt.datetime.now(dt.timezone.utc))
        if not requests:
            return SkipReason("no day's features are missing with its inputs built")
        context.log.info(f"catching up ml_daily for {[r.partition_key for r in requests]}")
        return SensorResult(run_requests=requests)

    return ml_daily_catch_up
