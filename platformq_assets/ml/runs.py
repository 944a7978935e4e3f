"""Build the ML part of the graph for a range of days, in the order its partitioning needs:
registry -> daily features (+ online store) -> training and gate -> daily scores and drift.
What `platformq demo` runs; the schedules do the same over time."""

import time
from collections.abc import Callable

from dagster import AssetKey

from pipelines.jobs import ML_DAILY_KEYS, ML_TRAINING_KEYS
from pipelines.pools import cli_run_tags

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
FEATURE_KEYS = ML_DAILY_KEYS[:3]
MODELS = ("price_direction", "account_anomaly")
SCORING_KEYS = ML_DAILY_KEYS[3:]


Reporter = Callable[[dict], None] | None


def _run(defs, instance, keys, partition=None, run_config=None, on_report: Reporter = None,
         label: str | None = None) -> dict:
    """One in-process run of ``keys``; its report (``step``: ``label`` or the asset key, ``assets``: every key)."""
    started = time.perf_counter()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(keys))
    result = job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False,
                                    run_config={**QUIET, **(run_config or {})}, tags=cli_run_tags())
    checks = result.get_asset_check_evaluations()
    errors = [e.event_specific_data.error for e in result.all_events
              if e.is_step_failure and e.event_specific_data and e.event_specific_data.error]
    names = sorted({k.path[0] + "/" + k.path[-1] for k in keys})
    report = {"errors": [_root(e) for e in errors], "step": label or ", ".join(names), "assets": names,
              "partition": partition or "-", "success": result.success, "run_id": result.run_id,
              "seconds": round(time.perf_counter() - started, 1),
              "materializations": len(result.get_asset_materialization_events()),
              "checks_passed": sum(c.passed for c in checks),
              "checks_failed": [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed]}
    if on_report is not None:
        on_report(report)
    return report


def _root(error) -> str:
    while error.cause is not None:
        error = error.cause
    return f"{error.cls_name}: {error.message.strip()}"[:2000]


def build_federated(defs, instance, on_report: Reporter = None) -> list[dict]:
    """The demo enrols every tenant not yet in the registry (with consent: this is sample data),
    then runs the federated rounds once. Tenants already registered keep their status and consent."""
    from platformq_assets.federated import participants as registry
    from platformq_assets.federated.assets import MODEL_KEY
    from resources import lake_resource
    from resources.settings import load_settings

    lake = lake_resource(load_settings())
    registered = {row["tenant_id"] for row in registry.list_participants(lake)}
    for tenant in registry.known_tenants(lake):
        if tenant not in registered:
            registry.enrol(lake, tenant, consent=True)
    return [_run(defs, instance, [MODEL_KEY], on_report=on_report)]


def build_neuromorphic(days: list[str], defs, instance, on_report: Reporter = None) -> list[dict]:
    """Spike trains for every day; the SNN (trained on the days before) and its scores from day 2 on."""
    from platformq_assets.neuromorphic.assets import SPIKE_TRAINS_KEY

    reports = [_run(defs, instance, [SPIKE_TRAINS_KEY], days[0], on_report=on_report)]
    keys = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "neuromorphic"]
    for day in days[1:]:
        reports.append(_run(defs, instance, keys, day, on_report=on_report, label="neuromorphic: SNN, scores"))
    return reports


def build_ml(days: list[str], defs, instance, trials: int = 6, on_report: Reporter = None) -> list[dict]:
    """Returns one report per run, each also given to ``on_report`` as soon as its run ends. A promotion
    gate that says no is the gate working, not a broken build: its report is marked ``gated`` (ok for the
    demo), and that model is not scored until a version passes (its predictions would fail with "no
    champion yet")."""
    from resources.mlflow import mlflow_resource
    from resources.settings import load_settings

    reports = [_run(defs, instance, [AssetKey(["features", "registry"])], on_report=on_report)]
    for day in days:
        reports.append(_run(defs, instance, FEATURE_KEYS, day, on_report=on_report,
                            label="features: daily views, online store"))
    training = {"ops": {f"ml__{m}": {"config": {"num_samples": trials}} for m in MODELS}}
    trained = _run(defs, instance, [k for k in ML_TRAINING_KEYS if k != AssetKey(["features", "registry"])],
                   run_config=training, label="ml: train, evaluate, promote")
    gated = [c for c in trained["checks_failed"] if c.endswith(":promotion_gate")]
    trained["gated"] = bool(gated) and len(gated) == len(trained["checks_failed"]) and all(
        "promotion_gate" in e for e in trained["errors"])
    reports.append(trained)
    if on_report is not None:
        on_report(trained)
    registry = mlflow_resource(load_settings())
    ready = [m for m in MODELS if registry.version_for(m, "champion") is not None]
    for model in MODELS:
        if model not in ready:
            reports.append({"step": f"ml: score {model}", "assets": [], "partition": "-", "success": True,
                            "gated": True, "skipped": True,
                            "run_id": None, "materializations": 0, "checks_passed": 0, "checks_failed": [],
                            "errors": [], "note": "skipped: no champion (no version has passed the gate yet)"})
            if on_report is not None:
                on_report(reports[-1])
    scoring = [k for k in SCORING_KEYS if any(k.path[-1].startswith(m) for m in ready)]
    for day in days if scoring else []:
        reports.append(_run(defs, instance, scoring, day, on_report=on_report, label="ml: score, drift"))
    return reports
