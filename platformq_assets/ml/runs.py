"""Build the ML part of the graph for a range of days, in the order its partitioning needs:
registry -> daily features (+ online store) -> training and gate -> daily scores and drift.
What `platformq demo` (and `platformq ml build`) run; the schedules do the same over time."""

from dagster import AssetKey

from pipelines.jobs import ML_DAILY_KEYS, ML_TRAINING_KEYS

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
FEATURE_KEYS = ML_DAILY_KEYS[:3]
SCORING_KEYS = ML_DAILY_KEYS[3:]


def _run(defs, instance, keys, partition=None, run_config=None) -> dict:
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(keys))
    result = job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False,
                                    run_config={**QUIET, **(run_config or {})}, tags={"platformq/trigger": "cli"})
    checks = result.get_asset_check_evaluations()
    errors = [e.event_specific_data.error for e in result.all_events
              if e.is_step_failure and e.event_specific_data and e.event_specific_data.error]
    return {"errors": [_root(e) for e in errors],"step": ", ".join(sorted({k.path[0] + "/" + k.path[-1] for k in keys}))[:60],
            "partition": partition or "-", "success": result.success, "run_id": result.run_id,
            "materializations": len(result.get_asset_materialization_events()),
            "checks_passed": sum(c.passed for c in checks),
            "checks_failed": [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed]}


def _root(error) -> str:
    while error.cause is not None:
        error = error.cause
    return f"{error.cls_name}: {error.message.strip()}"[:2000]


def build_ml(days: list[str], defs, instance, trials: int = 6) -> list[dict]:
    reports = [_run(defs, instance, [AssetKey(["features", "registry"])])]
    for day in days:
        reports.append(_run(defs, instance, FEATURE_KEYS, day))
    training = {"ops": {f"ml__{m}": {"config": {"num_samples": trials}} for m in ("price_direction", "account_anomaly")}}
    reports.append(_run(defs, instance, [k for k in ML_TRAINING_KEYS if k != AssetKey(["features", "registry"])],
                        run_config=training))
    for day in days:
        reports.append(_run(defs, instance, SCORING_KEYS, day))
    return reports
