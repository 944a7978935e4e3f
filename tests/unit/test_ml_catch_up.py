"""The ML catch-up sensor on a real (ephemeral) Dagster instance: a day whose features are missing is run once
its inputs are built, and only then."""

import datetime as dt

from dagster import AssetMaterialization, DagsterInstance, DagsterRunStatus, build_sensor_context
from dagster._core.storage.dagster_run import DagsterRun

from sensors.ml_catch_up import FEATURE_KEYS, INPUT_KEYS, LOOKBACK_DAYS, catch_up_requests, days_due

NOW = dt.datetime(2024, 3, 10, 9, 0, tzinfo=dt.timezone.utc)


def build(instance, keys, day):
    for key in keys:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=day))


def days(requests):
    return sorted(r.partition_key for r in requests)


def test_a_day_is_due_an_hour_after_its_schedule_and_for_a_week():
    assert days_due(dt.datetime(2024, 3, 10, 2, 59, tzinfo=dt.timezone.utc))[0] == "2024-03-08"
    assert days_due(dt.datetime(2024, 3, 10, 3, 0, tzinfo=dt.timezone.utc))[0] == "2024-03-09"
    assert len(days_due(NOW)) == LOOKBACK_DAYS and days_due(NOW)[-1] == "2024-03-03"


def test_missing_features_are_caught_up_once_their_inputs_are_built():
    instance = DagsterInstance.ephemeral()
    build(instance, INPUT_KEYS + FEATURE_KEYS, "2024-03-07")  # a normal day: built by the schedule
    build(instance, INPUT_KEYS, "2024-03-08")  # inputs late: the 02:00 run failed, nothing written
    build(instance, INPUT_KEYS[:2], "2024-03-09")  # inputs still incomplete: a run would fail again
    build(instance, INPUT_KEYS + FEATURE_KEYS[:1], "2024-03-06")  # one feature table missing
    build(instance, INPUT_KEYS, "2024-02-20")  # beyond the look-back
    requests = catch_up_requests(instance, NOW)
    assert days(requests) == ["2024-03-06", "2024-03-08"]
    assert all(r.tags["platformq/trigger"] == "ml_daily_catch_up" for r in requests)
    keys = {r.partition_key: r.run_key for r in requests}

    # the same inputs: the same run key (Dagster starts one run per key); rebuilt inputs: a new one
    assert {r.partition_key: r.run_key for r in catch_up_requests(instance, NOW)} == keys
    build(instance, INPUT_KEYS[:1], "2024-03-08")
    again = {r.partition_key: r.run_key for r in catch_up_requests(instance, NOW)}
    assert again["2024-03-06"] == keys["2024-03-06"] and again["2024-03-08"] != keys["2024-03-08"]

    # a run of the day going (or queued): left to it
    instance.add_run(DagsterRun(job_name="ml_daily", run_id="a" * 8 + "-0000-0000-0000-000000000000",
                                status=DagsterRunStatus.STARTED, tags={"dagster/partition": "2024-03-08"}))
    assert days(catch_up_requests(instance, NOW)) == ["2024-03-06"]

    # the remaining inputs arrive; the day's features are built: nothing left to catch up
    build(instance, INPUT_KEYS, "2024-03-09")
    assert days(catch_up_requests(instance, NOW)) == ["2024-03-06", "2024-03-09"]
    build(instance, FEATURE_KEYS, "2024-03-06")
    build(instance, FEATURE_KEYS, "2024-03-09")
    assert days(catch_up_requests(instance, NOW)) == []


def test_the_sensor_requests_runs_of_the_ml_daily_job(settings):
    from platformq_assets.definitions import build_definitions

    definitions = build_definitions(settings)
    sensor = definitions.resolve_sensor_def("ml_daily_catch_up")
    assert sensor.job_name == "ml_daily"
    instance = DagsterInstance.ephemeral()
    yesterday = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)).date() - dt.timedelta(days=1)
    build(instance, INPUT_KEYS, yesterday.isoformat())
    with build_sensor_context(instance=instance, definitions=definitions) as context:
        result = sensor.evaluate_tick(context)
    assert [r.partition_key for r in result.run_requests] == [yesterday.isoformat()]
