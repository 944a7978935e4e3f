"""Run-failure sensor: every failed run of the instance (launched by the daemon or run in process by the CLI) is
recorded in ``ops.run_failures`` and posted to the webhook."""

import datetime as dt

from dagster import RunFailureSensorContext, run_failure_sensor

from resources.alerts import AlertsResource
from resources.lake import LakeResource


def root_cause(error) -> str:
    """The innermost error's message: what went wrong, not Dagster's wrapper around it."""
    while error.cause is not None:
        error = error.cause
    return f"{error.cls_name}: {error.message.strip()}" if error.cls_name else error.message.strip()


def failure_record(context: RunFailureSensorContext) -> dict:
    run = context.dagster_run
    errors = [root_cause(e.event_specific_data.error)[:500] for e in context.get_step_failure_events()
              if e.event_specific_data and e.event_specific_data.error]
    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "failed_steps": ", ".join(e.step_key or "" for e in context.get_step_failure_events()),
        "error": (errors[0] if errors else (context.failure_event.message or ""))[:1000],
        "failed_at": dt.datetime.now(dt.timezone.utc),
    }


# Every run of the instance, not only those the daemon launched from this code location: runs the ``platformq``
# CLI executes in process (``backfill``, ``ingest-landing``, ``make demo``) have no code-location origin, and a
# sensor watching its own location passes over them (their failures were never recorded nor posted).
@run_failure_sensor(name="run_failure_alerts", monitor_all_code_locations=True,
                    description="Records failed runs in ops.run_failures and posts them to the configured webhook "
                                "(PLATFORMQ_ALERT_WEBHOOK_URL).")
def run_failure_alerts(context: RunFailureSensorContext, lake: LakeResource, alerts: AlertsResource):
    import pyarrow as pa

    record = failure_record(context)
    schema = pa.schema([("run_id", pa.string()), ("job_name", pa.string()), ("partition", pa.string()),
                        ("failed_steps", pa.string()), ("error", pa.string()),
                        ("failed_at", pa.timestamp("us", tz="UTC"))])
    # The alert must not depend on the lake: runs often fail because the catalog or the object store is
    # down, and Dagster moves this sensor's cursor past the run even when the sensor raises.
    try:
        lake.append("ops.run_failures", pa.Table.from_pylist([record], schema=schema))
        recorded = None
    except Exception as exc:  # noqa: BLE001 - re-raised below, after the alert went out
        recorded = exc
    payload = {**record, "failed_at": record["failed_at"].isoformat(), "recorded": recorded is None,
               "text": f"platformQ run {record['run_id'][:8]} of {record['job_name']} failed: {record['error'][:200]}"
                       + ("" if recorded is None else
                          f" (not recorded in ops.run_failures: {type(recorded).__name__})")}
    posted = alerts.post(payload)
    if recorded is not None:
        raise recorded
    if getattr(alerts, "webhook_url", None) and not posted:
        # the cursor moves past the run either way: a tick that succeeded showed nothing of the lost alert
        raise RuntimeError(f"the webhook did not accept the alert of failed run {record['run_id']} "
                           f"({record['job_name']}); the failure is recorded in ops.run_failures")
    context.log.info(f"recorded failure of run {record['run_id']}; webhook {'accepted' if posted else 'not used'}")
