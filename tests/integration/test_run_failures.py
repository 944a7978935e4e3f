"""A failed run is recorded in the lake and posted to the webhook (a real HTTP server on loopback)."""

import pytest
from dagster import DagsterEventType, DagsterInstance, asset, build_run_status_sensor_context, materialize

from resources.alerts import AlertsResource
from sensors.run_failures import run_failure_alerts
from tests.services.serving import capturing_app, serve

pytestmark = pytest.mark.slow


@asset(partitions_def=None)
def broken() -> None:
    raise ValueError("the upstream file was empty")


def test_failed_run_is_recorded_and_posted(lake, platform_home):
    hook, received = capturing_app("/hook")

    instance = DagsterInstance.get()
    result = materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    [failure_entry] = instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)
    failure = failure_entry.dagster_event
    with serve(hook) as url, build_run_status_sensor_context(
            sensor_name="run_failure_alerts", dagster_event=failure, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            resources={"lake": lake, "alerts": AlertsResource(webhook_url=f"{url}/hook")},
    ) as context:
        run_failure_alerts(context.for_run_failure())
    [row] = lake.read("ops.run_failures").to_pylist()
    assert row["run_id"] == result.run_id and "the upstream file was empty" in row["error"]
    assert row["failed_steps"] == "broken"
    [message] = received
    assert message["run_id"] == result.run_id and "failed" in message["text"]


def test_alerting_never_raises_when_the_webhook_is_down():
    assert AlertsResource(webhook_url="http://127.0.0.1:9/hook", attempts=2, timeout_s=0.5).post({"x": 1}) is False
    assert AlertsResource().post({"x": 1}) is False


def test_the_alert_goes_out_when_the_lake_is_down(platform_home):
    """Runs fail when the catalog is down; the webhook still hears of them (Dagster moves the sensor's
    cursor past a run even when the sensor raises, so an alert not posted then is never posted)."""
    from resources.lake import LakeResource

    hook, received = capturing_app("/hook")

    instance = DagsterInstance.get()
    result = materialize([broken], instance=instance, raise_on_error=False)
    [failure_entry] = instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)
    down = LakeResource(catalog_uri="postgresql+psycopg2://platformq:platformq@127.0.0.1:1/iceberg_catalog",
                        warehouse="s3://lake/warehouse")
    with serve(hook) as url, build_run_status_sensor_context(
            sensor_name="run_failure_alerts", dagster_event=failure_entry.dagster_event, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            resources={"lake": down, "alerts": AlertsResource(webhook_url=f"{url}/hook")},
    ) as context:
        with pytest.raises(Exception):  # the tick still shows that the record could not be written
            run_failure_alerts(context.for_run_failure())
    [message] = received
    assert message["run_id"] == result.run_id and message["recorded"] is False
    assert "the upstream file was empty" in message["error"] and "not recorded" in message["text"]
