"""The drift alert sensor on a real Dagster instance and lake: no alert is skipped or repeated."""

from dagster import AssetMaterialization, DagsterInstance, build_multi_asset_sensor_context

from resources.alerts import AlertsResource
from sensors.ml_alerts import DRIFT_KEYS, ml_drift_alerts


def report(instance, key, day, severity, prediction_psi=0.01):
    instance.report_runless_asset_event(AssetMaterialization(
        asset_key=key, partition=day,
        metadata={"severity": severity, "max_psi": 0.9 if severity != "ok" else 0.01, "max_psi_feature": "volume_1",
                  "drifted_features": ["volume_1"] if severity != "ok" else [], "prediction_psi": prediction_psi}))


def test_every_drifted_partition_since_the_last_tick_raises_an_alert(settings, lake):
    """A backfill (or a paused sensor) leaves several drift reports between two ticks: each one that drifted
    becomes an alert, not only the newest."""
    from platformq_assets.definitions import build_definitions

    instance = DagsterInstance.ephemeral()
    report(instance, DRIFT_KEYS[0], "2024-02-05", "error")
    report(instance, DRIFT_KEYS[0], "2024-02-06", "ok")
    report(instance, DRIFT_KEYS[0], "2024-02-07", "warn")
    report(instance, DRIFT_KEYS[1], "2024-02-05", "error")
    report(instance, DRIFT_KEYS[1], "2024-02-06", "error")
    with build_multi_asset_sensor_context(monitored_assets=DRIFT_KEYS, instance=instance,
                                          definitions=build_definitions(settings),
                                          resources={"lake": lake, "alerts": AlertsResource()}) as context:
        ml_drift_alerts(context)
        alerts = {(a["asset_key"], a["partition"], a["severity"]) for a in lake.read("ops.ml_alerts").to_pylist()}
        assert alerts == {("ml/price_direction_drift", "2024-02-05", "error"),
                          ("ml/price_direction_drift", "2024-02-07", "warn"),
                          ("ml/account_anomaly_drift", "2024-02-05", "error"),
                          ("ml/account_anomaly_drift", "2024-02-06", "error")}
        ml_drift_alerts(context)  # nothing new: nothing repeated
        assert lake.read("ops.ml_alerts").num_rows == 4
        report(instance, DRIFT_KEYS[0], "2024-02-08", "error")
        ml_drift_alerts(context)
        rows = lake.read("ops.ml_alerts").to_pylist()
        assert len(rows) == 5 and ("ml/price_direction_drift", "2024-02-08") in {
            (r["asset_key"], r["partition"]) for r in rows}


def test_the_daemons_ticks_keep_the_cursor_so_an_alert_is_raised_once(settings, lake):
    """The daemon calls evaluate_tick: Dagster keeps a multi-asset sensor's advanced cursors only when the
    function returns a value. Returning None re-read and re-posted every alert each minute."""
    from dagster import build_sensor_context

    from platformq_assets.definitions import build_definitions

    instance = DagsterInstance.ephemeral()
    report(instance, DRIFT_KEYS[0], "2024-02-05", "error")
    definitions, cursor = build_definitions(settings), None
    for _ in range(3):
        with build_sensor_context(instance=instance, cursor=cursor, definitions=definitions,
                                  resources={"lake": lake, "alerts": AlertsResource()}) as context:
            cursor = ml_drift_alerts.evaluate_tick(context).cursor
        assert cursor is not None and lake.read("ops.ml_alerts").num_rows == 1
    report(instance, DRIFT_KEYS[1], "2024-02-06", "warn")
    with build_sensor_context(instance=instance, cursor=cursor, definitions=definitions,
                              resources={"lake": lake, "alerts": AlertsResource()}) as context:
        ml_drift_alerts.evaluate_tick(context)
    assert lake.read("ops.ml_alerts").num_rows == 2


def test_a_tick_cut_off_before_its_cursor_was_kept_records_no_alert_twice(settings, lake):
    """A tick that runs past the sensor's time limit (a webhook that times out) keeps no cursor: the next tick
    reads the same events. The table had the alerts appended again on every such tick."""
    from dagster import build_sensor_context

    from platformq_assets.definitions import build_definitions

    instance = DagsterInstance.ephemeral()
    report(instance, DRIFT_KEYS[0], "2024-02-05", "error")
    report(instance, DRIFT_KEYS[1], "2024-02-05", "warn")
    definitions = build_definitions(settings)
    for _ in range(2):  # both ticks start from no cursor, as after a tick whose cursor was lost
        with build_sensor_context(instance=instance, cursor=None, definitions=definitions,
                                  resources={"lake": lake, "alerts": AlertsResource()}) as context:
            ml_drift_alerts.evaluate_tick(context)
    rows = lake.read("ops.ml_alerts").to_pylist()
    assert len(rows) == 2 and len({r["alert_id"] for r in rows}) == 2


def test_only_warn_and_error_days_are_alerted(settings, lake):
    """The sensor records and posts warn and error drift (README, module docstring): a day without rows (severity
    no-data, its checks failed) is no drift alert; a day whose scores drifted (in the severity now) is one."""
    from platformq_assets.definitions import build_definitions

    instance = DagsterInstance.ephemeral()
    report(instance, DRIFT_KEYS[0], "2024-02-05", "no-data", prediction_psi=float("nan"))
    report(instance, DRIFT_KEYS[0], "2024-02-06", "error", prediction_psi=0.4)
    report(instance, DRIFT_KEYS[1], "2024-02-05", "ok")
    alerts = AlertsResource()
    with build_multi_asset_sensor_context(monitored_assets=DRIFT_KEYS, instance=instance,
                                          definitions=build_definitions(settings),
                                          resources={"lake": lake, "alerts": alerts}) as context:
        ml_drift_alerts(context)
    rows = {(r["partition"], r["severity"]) for r in lake.read("ops.ml_alerts").to_pylist()}
    assert rows == {("2024-02-06", "error")}


def test_a_backfill_of_many_days_does_not_stop_the_sensor(settings, lake):
    """A backfill of a month leaves 30 drift reports between two ticks. Dagster keeps every partition whose event
    the sensor read but did not mark consumed as a 'trailing unconsumed' event, and a multi-asset sensor with 25
    of them fails every tick for good: all of them are marked consumed, and later ticks still alert."""
    import datetime as dt

    from dagster import build_sensor_context

    from platformq_assets.definitions import build_definitions

    instance = DagsterInstance.ephemeral()
    start = dt.date(2024, 1, 1)
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range(30)]
    for day in days:
        report(instance, DRIFT_KEYS[0], day, "warn")
    definitions, cursor = build_definitions(settings), None
    for _ in range(2):
        with build_sensor_context(instance=instance, cursor=cursor, definitions=definitions,
                                  resources={"lake": lake, "alerts": AlertsResource()}) as context:
            cursor = ml_drift_alerts.evaluate_tick(context).cursor
    assert lake.read("ops.ml_alerts").num_rows == 30
    for day in days[:10]:  # a second, shorter backfill: the trailing events of both must not add up to 25
        report(instance, DRIFT_KEYS[0], day, "error")
    report(instance, DRIFT_KEYS[1], "2024-02-06", "warn")
    with build_sensor_context(instance=instance, cursor=cursor, definitions=definitions,
                              resources={"lake": lake, "alerts": AlertsResource()}) as context:
        ml_drift_alerts.evaluate_tick(context)
    rows = lake.read("ops.ml_alerts").to_pylist()
    # (runless test events all share one run id: a day reported again has the same alert id and is not re-recorded)
    assert len(rows) == 31 and ("ml/account_anomaly_drift", "2024-02-06") in {(r["asset_key"], r["partition"])
                                                                             for r in rows}


class SlowWebhook(AlertsResource):
    """A webhook taking 10 s a post (on a fake clock); the daemon cuts a tick off at 60 s (Dagster's sensor timeout),
    which keeps none of its cursor."""

    def send(self, payload: dict) -> int | None:
        if CLOCK["now"] - CLOCK["tick_start"] >= 60:
            raise TimeoutError("sensor tick cut off at 60 s")
        CLOCK["now"] += 10
        POSTS.append(payload["alert_id"])
        return 200


CLOCK: dict = {}
POSTS: list = []


def test_a_slow_webhook_and_a_backfill_post_every_alert_once(settings, lake, monkeypatch):
    """Ten drifted days to a webhook taking 10 s each: a tick that posted them all ran past 60 s, was cut off
    without its cursor, and the next tick posted the same first alerts again, for ever. A tick posts for a limited
    time and keeps the cursor of what it posted; the rest goes on the next ticks, each alert posted once."""
    import time

    from dagster import build_sensor_context

    from platformq_assets.definitions import build_definitions

    CLOCK.update(now=0.0, tick_start=0.0)
    POSTS.clear()
    monkeypatch.setattr(time, "monotonic", lambda: CLOCK["now"])
    instance = DagsterInstance.ephemeral()
    days = [f"2024-01-{d:02d}" for d in range(1, 11)]
    for day in days:
        report(instance, DRIFT_KEYS[0], day, "error")
    definitions, cursor = build_definitions(settings), None
    for _ in range(8):
        CLOCK["tick_start"] = CLOCK["now"]
        with build_sensor_context(instance=instance, cursor=cursor, definitions=definitions,
                                  resources={"lake": lake, "alerts": SlowWebhook(webhook_url="http://hook")}) as context:
            try:
                cursor = ml_drift_alerts.evaluate_tick(context).cursor or cursor
            except Exception:  # the daemon's cut-off: the tick's cursor is lost
                pass
    assert sorted(POSTS) == sorted(set(POSTS)) and len(POSTS) == 10
    assert lake.read("ops.ml_alerts").num_rows == 10


def test_an_alert_the_webhook_cannot_take_now_is_posted_again_and_one_it_refuses_is_passed(settings, lake):
    """The sensor ignored the webhook's answer: an alert it could not take (down for a minute: 503) was never sent
    again. Now that one is posted on a later tick; one the webhook refuses for good (400) is logged and passed, so it
    does not hold back the alerts after it. A real webhook over HTTP."""
    from dagster import build_sensor_context
    from fastapi import FastAPI, Request, Response

    from platformq_assets.definitions import build_definitions
    from tests.services.serving import serve

    answers, received = {}, []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request):
        alert = (await request.json())["alert_id"]
        received.append(alert)
        return Response(status_code=answers.get(alert.split(":")[-1], 200))

    instance = DagsterInstance.ephemeral()
    days = ["2024-02-05", "2024-02-06", "2024-02-07"]
    for day in days:
        report(instance, DRIFT_KEYS[0], day, "error")
    definitions, cursor = build_definitions(settings), None
    with serve(app) as url:
        webhook = AlertsResource(webhook_url=f"{url}/hook", attempts=2, timeout_s=5)

        def tick():
            with build_sensor_context(instance=instance, cursor=cursor, definitions=definitions,
                                      resources={"lake": lake, "alerts": webhook}) as context:
                result = ml_drift_alerts.evaluate_tick(context)
            return result.cursor or cursor, result.skip_message or ""

        answers.update({days[0]: 503, days[1]: 400})
        cursor, message = tick()
        assert "did not accept" in message and [r.split(":")[-1] for r in received] == [days[0]] * 2  # 2 attempts
        assert lake.read("ops.ml_alerts").num_rows == 3  # all recorded all the same
        answers[days[0]] = 200  # back up; the 400 stays a 400
        received.clear()
        cursor, message = tick()
        # the first is posted again; the refused one is tried once (a 400 does not change) and passed; the third goes
        assert [r.split(":")[-1] for r in received] == days and "raised 3" in message
        received.clear()
        cursor, message = tick()
        assert received == [] and lake.read("ops.ml_alerts").num_rows == 3
