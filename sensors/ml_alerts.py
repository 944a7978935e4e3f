"""ML alert sensor: every drift materialisation with a warn or error severity (features or predictions) becomes
a row in ``ops.ml_alerts`` and a webhook post; ok and no-data (a day without rows) are none. The cursor is the
multi-asset sensor's per-asset event cursor, so a restart neither repeats nor skips an alert."""

import datetime as dt
import time
import warnings

from dagster import AssetKey, MultiAssetSensorEvaluationContext, SkipReason, SupersessionWarning, multi_asset_sensor

from resources.alerts import AlertsResource, transient
from resources.lake import LakeResource

DRIFT_KEYS = [AssetKey(["ml", "price_direction_drift"]), AssetKey(["ml", "account_anomaly_drift"])]
MAX_EVENTS_PER_TICK = 500  # per drift asset
# seconds a tick posts alerts for (Dagster cuts a sensor tick off at 60 s, keeping none of its cursor)
TICK_BUDGET_S = 25.0


def alert_record(event) -> dict | None:
    materialization = event.asset_materialization
    metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    severity = metadata.get("severity", "ok")
    if severity == "ok" and (metadata.get("prediction_psi") or 0) >= 0.25:
        severity = "error"  # recorded before a day's severity counted its prediction drift
    if severity not in ("warn", "error"):  # ok, or no-data (a day without rows: its failed checks say so)
        return None
    return {
        "alert_id": f"{event.run_id}:{materialization.asset_key.to_user_string()}:{materialization.partition}",
        "asset_key": materialization.asset_key.to_user_string(),
        "partition": materialization.partition,
        "severity": severity,
        "detail": (f"max PSI {metadata.get('max_psi')} on {metadata.get('max_psi_feature')}; "
                   f"drifted: {', '.join(metadata.get('drifted_features') or []) or 'none'}; "
                   f"prediction PSI {metadata.get('prediction_psi')}"),
        "run_id": event.run_id,
        "raised_at": dt.datetime.now(dt.timezone.utc),
    }


def recorded_alerts(lake: LakeResource, alert_ids: list[str]) -> set[str]:
    """Which of these alerts ``ops.ml_alerts`` already holds."""
    from pyiceberg.expressions import In

    if not alert_ids or not lake.table_exists("ops.ml_alerts"):
        return set()
    found = lake.read("ops.ml_alerts", row_filter=In("alert_id", set(alert_ids)), columns=("alert_id",))
    return set(found.column("alert_id").to_pylist())


def _drift_alerts(context: MultiAssetSensorEvaluationContext, lake: LakeResource, alerts: AlertsResource):
    import pyarrow as pa

    schema = pa.schema([("alert_id", pa.string()), ("asset_key", pa.string()), ("partition", pa.string()),
                        ("severity", pa.string()), ("detail", pa.string()), ("run_id", pa.string()),
                        ("raised_at", pa.timestamp("us", tz="UTC"))])
    read = []  # (asset key, event, alert record or None), each asset's events oldest first
    for key in DRIFT_KEYS:
        # every materialisation since the cursor, oldest first (not only the latest: a backfill or a paused
        # sensor leaves several partitions' reports between two ticks); the rest waits for the next tick
        for event in context.materialization_records_for_key(key, limit=MAX_EVENTS_PER_TICK):
            read.append((key, event, alert_record(event.event_log_entry)))
    records = [record for _, _, record in read if record is not None]
    # A tick that is cut off (past Dagster's sensor timeout) keeps no cursor, and the next one reads the same events
    # again: an alert already in the table is not appended twice.
    new = [r for r in records if r["alert_id"] not in recorded_alerts(lake, [r["alert_id"] for r in records])]
    if new:
        lake.append("ops.ml_alerts", pa.Table.from_pylist(new, schema=schema))
    # Posts for at most TICK_BUDGET_S, each event's cursor kept once its alert is posted (delivery is at least
    # once); the rest goes on the next tick. A tick posting a backfill's alerts to a slow webhook ran past the
    # timeout and the next tick posted the same first alerts again, for ever.
    # Every event read and handled is marked consumed, not only the last: Dagster keeps the partitions of the
    # others as "trailing unconsumed" events, and at 25 of them (a backfill of a month, or several shorter ones)
    # every later tick of the sensor failed before keeping its cursor, re-posting the same alerts each minute.
    # An alert the webhook does not take for now (no answer, a 5xx, 408, 429) keeps its event unconsumed: the tick
    # stops there and the next one posts it again (it is recorded once); it was dropped unseen. One the webhook
    # refuses for good (another 4xx, a redirect) is logged as an error and passed: retried, it held back every later
    # alert for ever.
    deadline = time.monotonic() + TICK_BUDGET_S
    posted = handled = 0
    refused = None
    for key, event, record in read:
        if record is not None:
            if posted and time.monotonic() >= deadline:
                break
            status = alerts.send({**record, "raised_at": record["raised_at"].isoformat(),
                                  "text": f"platformQ drift {record['severity']}: {record['asset_key']} "
                                          f"[{record['partition']}] {record['detail']}"})
            if alerts.webhook_url and not (status is not None and status < 300):
                if transient(status):
                    refused = record
                    break
                context.log.error(f"the webhook refused drift alert {record['alert_id']} with HTTP {status}: it is "
                                  "recorded in ops.ml_alerts and not posted again (check the webhook's URL and "
                                  "what it accepts)")
            posted += 1
        context.advance_cursor({key: event})
        handled += 1
    left = len(read) - handled
    if refused is not None:
        message = (f"the webhook did not accept drift alert {refused['alert_id']} (recorded in ops.ml_alerts): it "
                   f"and {left - 1} later event(s) are posted on the next tick" + (f"; {posted} alert(s) posted"
                                                                                   if posted else ""))
        context.log.error(message)
        return SkipReason(message)
    # Return a value, never None: Dagster's wrapper keeps the cursors advanced above only when the sensor
    # function returns something (with None, every tick re-read and re-posted the same alerts).
    if not posted:
        return SkipReason("no drift alert since the last tick")
    context.log.info(f"raised {posted} ML alert(s)" + (f"; {left} event(s) left for the next tick" if left else ""))
    return SkipReason(f"raised {posted} ML alert(s); no run to start")


# Dagster marks multi-asset sensors superseded by Declarative Automation, except where a sensor has side
# effects instead of launching runs, which is this one's whole job (a table row and a webhook post per
# alert). The warning is silenced for this definition only: every step process loads the location.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", SupersessionWarning)
    ml_drift_alerts = multi_asset_sensor(
        monitored_assets=DRIFT_KEYS, name="ml_drift_alerts", minimum_interval_seconds=60,
        description="Records drift alerts in ops.ml_alerts and posts them to PLATFORMQ_ALERT_WEBHOOK_URL.",
    )(_drift_alerts)
