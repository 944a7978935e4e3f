"""The run-failure sensor as the daemon evaluates it (in the code location ``platformq``): a failed run
started by the ``platformq`` CLI (in process, so with no code-location origin) is alerted as well as a run
the daemon launched."""

from dagster import SensorEvaluationContext, asset, instance_for_test, materialize
from dagster._core.remote_origin import RegisteredCodeLocationOrigin

from sensors.run_failures import run_failure_alerts


@asset
def broken() -> None:
    raise ValueError("the partner file was empty")


class Lake:
    def __init__(self):
        self.rows = []

    def append(self, table, data):
        self.rows += data.to_pylist()


class Alerts:
    def __init__(self):
        self.posted = []

    def post(self, payload):
        self.posted.append(payload)
        return True


def tick(instance, cursor, lake, alerts):
    context = SensorEvaluationContext(
        instance_ref=None, last_tick_completion_time=None, last_run_key=None, cursor=cursor,
        repository_name="__repository__", instance=instance, sensor_name="run_failure_alerts",
        resources={"lake": lake, "alerts": alerts},
        code_location_origin=RegisteredCodeLocationOrigin("platformq"))
    with context:
        list(run_failure_alerts.evaluate_tick(context).run_requests or [])
        return context.cursor


def test_a_failed_cli_run_is_alerted():
    lake, alerts = Lake(), Alerts()
    with instance_for_test() as instance:
        cursor = tick(instance, None, lake, alerts)  # the first tick starts from now
        # what `platformq backfill` / `ingest-landing` / `make demo` do: execute_in_process on the instance
        result = materialize([broken], instance=instance, raise_on_error=False)
        assert not result.success
        tick(instance, cursor, lake, alerts)
    assert [r["run_id"] for r in lake.rows] == [result.run_id]
    assert [p["run_id"] for p in alerts.posted] == [result.run_id]
    assert "the partner file was empty" in alerts.posted[0]["error"]


def test_an_alert_the_webhook_refused_fails_the_tick():
    """A webhook that refused the alert (or did not answer) after its attempts: the tick succeeded and logged the
    webhook as 'not used', so the failure's only alert was lost with nothing to show for it. The record is kept and
    the tick shows the refusal (Dagster moves the cursor on either way: the run is not alerted twice)."""

    class Refusing(Alerts):
        webhook_url = "https://hooks.example/platformq"

        def post(self, payload):
            super().post(payload)
            return False

    lake, alerts = Lake(), Refusing()
    with instance_for_test() as instance:
        cursor = tick(instance, None, lake, alerts)
        result = materialize([broken], instance=instance, raise_on_error=False)
        context = SensorEvaluationContext(
            instance_ref=None, last_tick_completion_time=None, last_run_key=None, cursor=cursor,
            repository_name="__repository__", instance=instance, sensor_name="run_failure_alerts",
            resources={"lake": lake, "alerts": alerts}, code_location_origin=RegisteredCodeLocationOrigin("platformq"))
        with context:
            [reaction] = run_failure_alerts.evaluate_tick(context).dagster_run_reactions
            cursor = context.cursor
        assert reaction.dagster_run.run_id == result.run_id
        assert reaction.error is not None and "webhook did not accept" in reaction.error.message
        assert [r["run_id"] for r in lake.rows] == [result.run_id]  # recorded all the same
        tick(instance, cursor, lake, alerts)  # the next tick does not post it again
    assert [p["run_id"] for p in alerts.posted] == [result.run_id]
