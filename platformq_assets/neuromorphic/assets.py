"""Neuromorphic inference: spiking anomaly detection on the venue's event streams, run on Lava via Pipes.

``neuromorphic/spike_trains``  one trading day's trades (silver) and orders (bronze) per instrument
                               encoded as labelled spike-train windows (lava side: ``pipes_encode``);
``neuromorphic/snn_model``     a SLAYER CUBA-LIF network trained on the spike trains of the previous
                               ``TRAINING_DAYS`` days, exported with netx to HDF5, logged to MLflow and
                               registered as ``challenger`` (lava side: ``pipes_train``);
``neuromorphic/anomaly_scores`` the exported network run on Lava's fixed-point Loihi 2 simulation over
                               the day's windows; scores land in ``gold.snn_anomaly_scores`` (lava side:
                               ``pipes_score``). The model scoring day D never saw day D.

The asset functions only read the lake, hand files to the lava side, and write results back.
"""

import datetime as dt
import hashlib
import json
import shutil
import warnings
from pathlib import Path

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    BetaWarning,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    TableColumn,
    TableSchema,
    TimeWindowPartitionMapping,
    asset,
)
from pydantic import Field

from pipelines.automation import derived_asset_condition, partial_history_condition
from pipelines.partitions import PARTITION_COLUMN, daily_partitions
from pipelines.pods import TRAINING_POD
from pipelines.pools import table_pool
from resources.lake import LakeResource
from resources.mlflow import MlflowResource

SPIKE_TRAINS_KEY = AssetKey(["neuromorphic", "spike_trains"])
SNN_MODEL_KEY = AssetKey(["neuromorphic", "snn_model"])
ANOMALY_SCORES_KEY = AssetKey(["neuromorphic", "anomaly_scores"])
SOURCES = [AssetKey(["silver", "trades"]), AssetKey(["bronze", "orders"]), AssetKey(["bronze", "anomaly_labels"])]
GROUP = "neuromorphic"
OWNERS = ["team:ml"]
TRAINING_DAYS = 5
MODEL_NAME = "snn_anomaly_detector"
EXPERIMENT = "neuromorphic"
SCORES_TABLE = "gold.snn_anomaly_scores"


# The lava-side script of each asset is stopped, with its processes (or its pod), and the step fails once it has run
# this long: a hung Lava simulation held the step, its run and the table's pool slot for ever.
_TIMEOUT_DESCRIPTION = "seconds the lava-side script may run before it is stopped and the step fails"


class SpikeEncodingConfig(Config):
    window_seconds: int = Field(default=60, ge=1)
    bins: int = Field(default=12, ge=1)  # time steps per window
    timeout_seconds: int = Field(default=1800, ge=1, description=_TIMEOUT_DESCRIPTION)


class SnnTrainingConfig(Config):
    hidden: int = Field(default=16, ge=1)
    epochs: int = Field(default=20, ge=1)
    lr: float = Field(default=0.05, gt=0)
    seed: int = Field(default=0, ge=0)
    timeout_seconds: int = Field(default=7200, ge=1, description=_TIMEOUT_DESCRIPTION)


# silent steps after each window before the network is reset, as scoring lays windows out by default; training
# measures its fit (the snn_train_* metrics) in the same layout, since the steps counted change the decisions
SCORING_PAD = 2


class ScoringConfig(Config):
    pad: int = Field(default=SCORING_PAD, ge=0)  # silent steps after each window before the network is reset
    agreement_threshold: float = Field(default=0.95, ge=0, le=1)  # SLAYER (float) vs Lava (fixed point) decisions per window
    timeout_seconds: int = Field(default=7200, ge=1, description=_TIMEOUT_DESCRIPTION)


def _settings():
    from resources.settings import load_settings

    return load_settings()


def _preflight(settings) -> None:
    """Fail before any work when the local side environment is missing."""
    if settings.effective_lava_runner == "subprocess":
        from platformq_assets.neuromorphic.runner import require_lava_python

        require_lava_python(settings)


def _require_sources(context: AssetExecutionContext) -> None:
    """The day's trades, orders and anomaly labels must have been built: a partition never materialised reads as
    an empty table, so a run before silver.trades (dbt) or the labels landed encoded the day from orders alone, or
    labelled every window normal, and reported it as that day's spike trains (automation waits for all three; a
    manual run, a job or a backfill did not)."""
    day = context.partition_key
    missing = [k.to_user_string() for k in SOURCES if day not in context.instance.get_materialized_partitions(k)]
    if missing:
        raise Failure(allow_retries=False,
                      description=f"{', '.join(missing)} for {day} not materialised yet: build the day (lake_daily) "
                      "first, then materialise this partition again; nothing was written",
                      metadata={"missing": ", ".join(missing)})


def _results(invocation, **metadata):
    """The Pipes results, with the Dagster side's own metadata merged into the materialisation."""
    for result in invocation.get_results():
        if isinstance(result, MaterializeResult):
            yield MaterializeResult(metadata={**(result.metadata or {}), **metadata},
                                    data_version=result.data_version)
        else:
            yield result


@asset(
    key=SPIKE_TRAINS_KEY,
    deps=SOURCES,
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds={"lava", "numpy"},
    owners=OWNERS,
    automation_condition=derived_asset_condition(),
    retry_policy=RetryPolicy(max_retries=1, delay=5),
    check_specs=[AssetCheckSpec("labelled_anomalies_in_windows", asset=SPIKE_TRAINS_KEY,
                                description="Every anomaly the simulation labelled that day overlaps a window.")],
    description="Per-instrument trades and orders of one day as labelled spike-train windows (delta and "
                "threshold encoding, via Pipes in the lava environment).",
)
def spike_trains(context: AssetExecutionContext, config: SpikeEncodingConfig, lake: LakeResource):
    from platformq_assets.neuromorphic.events import write_day_events
    from platformq_assets.neuromorphic.runner import lava_writable_dir, run_lava_script

    settings = _settings()
    _preflight(settings)
    _require_sources(context)
    day = context.partition_key
    workdir = settings.effective_lava_workdir
    events = workdir / "events" / f"{day}.npz"
    out = workdir / "spike_trains" / f"{day}.npz"
    lava_writable_dir(out.parent)
    rows = write_day_events(lake, day, events)
    invocation = run_lava_script(context, settings, "models.neuromorphic.pipes_encode", {
        "events": str(events), "out": str(out),
        "encoding": {"window_seconds": config.window_seconds, "bins": config.bins}},
        timeout_s=config.timeout_seconds)
    yield from _results(invocation, **{f"source_{k}": v for k, v in rows.items()})


STAGING_MARK = ".tmp-"  # models/<day>.tmp-<run_id>: a network being trained/registered, never scored
RETIRED_MARK = ".old-"  # models/<day>.old-<run_id>: the previous network, removed once the new one is in place


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _remove_staging(models: Path, day: str) -> None:
    for mark in (STAGING_MARK, RETIRED_MARK):
        for leftover in models.glob(f"{day}{mark}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _publish(staged: Path, published: Path) -> None:
    """Swap the registered network in: renames only, the previous folder removed once the new one is in place."""
    retired = published.with_name(f"{published.name}{RETIRED_MARK}{staged.name.rsplit(STAGING_MARK, 1)[1]}")
    if published.exists():
        published.rename(retired)
    try:
        staged.rename(published)
    except BaseException:
        if retired.exists() and not published.exists():
            retired.rename(published)  # put the previous network back
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _published_registry(model_dir: Path) -> dict:
    """registry.json of the day's network, verified to describe the network.h5 next to it."""
    path = model_dir / "registry.json"
    if not path.exists():
        raise Failure(allow_retries=False,
                      description=f"{path} is missing: the network in {model_dir} was never registered in MLflow, "
                      "so its scores would carry no model_version; re-materialise neuromorphic/snn_model")
    registry = json.loads(path.read_text())
    recorded, actual = registry.get("network_sha256"), _sha256(model_dir / "network.h5")
    if not registry.get("version") or recorded != actual:
        raise Failure(allow_retries=False,
                      description=f"{path} (model_version {registry.get('version')!r}, network sha256 {recorded}) "
                      f"does not match {model_dir / 'network.h5'} (sha256 {actual}): the network is not the "
                      "registered one; re-materialise neuromorphic/snn_model",
                      metadata={"registry_version": str(registry.get("version", "")),
                                "registry_sha256": str(recorded), "network_sha256": actual})
    return registry


# The model for day D trains on the TRAINING_DAYS days before it, of which the first days of the
# partition range have fewer: that needs allow_nonexistent_upstream_partitions, a beta parameter
# (its warning silenced here only: every step process loads the location).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", BetaWarning)
    TRAINING_WINDOW = TimeWindowPartitionMapping(start_offset=-TRAINING_DAYS, end_offset=-1,
                                                 allow_nonexistent_upstream_partitions=True)


def _training_days(day: str) -> list[str]:
    start = dt.date.fromisoformat(day)
    return [(start - dt.timedelta(days=k)).isoformat() for k in range(TRAINING_DAYS, 0, -1)]


@asset(
    key=SNN_MODEL_KEY,
    deps=[AssetDep(SPIKE_TRAINS_KEY, partition_mapping=TRAINING_WINDOW)],
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds={"lava", "pytorch", "mlflow"},
    owners=OWNERS,
    automation_condition=partial_history_condition(),
    retry_policy=RetryPolicy(max_retries=1, delay=5),
    op_tags=TRAINING_POD,  # the lava-dl work runs in this pod unless PLATFORMQ_LAVA_RUNNER=k8s gives it its own
    check_specs=[AssetCheckSpec("netx_loads_export", asset=SNN_MODEL_KEY,
                                description="lava-dl's netx loads the exported HDF5 with the trained layer shapes.")],
    description=f"SLAYER CUBA-LIF network trained on the previous {TRAINING_DAYS} days of spike trains, exported "
                "with netx to HDF5, logged to MLflow and registered as challenger.",
)
def snn_model(context: AssetExecutionContext, config: SnnTrainingConfig, mlflow: MlflowResource):
    from platformq_assets.neuromorphic.runner import lava_writable_dir, run_lava_script

    settings = _settings()
    _preflight(settings)
    day = context.partition_key
    workdir = settings.effective_lava_workdir
    days = [d for d in _training_days(day) if (workdir / "spike_trains" / f"{d}.npz").exists()]
    if not days:
        window = _training_days(day)
        raise Failure(allow_retries=False,
                      description=f"no spike trains in the training window of {day} ({window[0]} .. {window[-1]}): "
                      "materialise neuromorphic/spike_trains for earlier days first")
    models = workdir / "models"
    published = models / day
    _remove_staging(models, day)  # leftovers of crashed earlier runs
    # train aside (same volume as the published folder, so the lava pod sees it and the swap is a rename);
    # the day's folder changes only once the new network is registered
    out_dir = models / f"{day}{STAGING_MARK}{context.run.run_id}"
    lava_writable_dir(out_dir, exist_ok=False)
    try:
        invocation = run_lava_script(context, settings, "models.neuromorphic.pipes_train", {
            "train_files": [str(workdir / "spike_trains" / f"{d}.npz") for d in days], "out_dir": str(out_dir),
            "hidden": config.hidden, "epochs": config.epochs, "lr": config.lr, "seed": config.seed,
            "pad": SCORING_PAD}, timeout_s=config.timeout_seconds)
        results = list(invocation.get_results())
        from platformq_assets.neuromorphic.registry import log_and_register

        materialized = next(r for r in results if isinstance(r, MaterializeResult))
        registered = log_and_register(mlflow, out_dir, day, days, config.model_dump(exclude={"timeout_seconds"}),
                                      materialized.metadata or {})
        registered["network_sha256"] = _sha256(out_dir / "network.h5")
        (out_dir / "registry.json").write_text(json.dumps(registered))
        _publish(out_dir, published)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    for result in results:
        if isinstance(result, MaterializeResult):
            yield MaterializeResult(metadata={
                **(result.metadata or {}), "training_partitions": days, "mlflow_run_id": registered["run_id"],
                "mlflow_run": registered["run_url"], "registered_model": MODEL_NAME,
                "model_version": registered["version"], "model_alias": registered["alias"],
                "model_uri": MetadataValue.text(registered["model_uri"])}, data_version=result.data_version)
        else:
            yield result


@asset(
    key=ANOMALY_SCORES_KEY,
    pool=table_pool(SCORES_TABLE),
    deps=[SPIKE_TRAINS_KEY, SNN_MODEL_KEY],
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds={"lava", "iceberg"},
    owners=OWNERS,
    automation_condition=derived_asset_condition(),
    retry_policy=RetryPolicy(max_retries=1, delay=5),
    op_tags=TRAINING_POD,
    check_specs=[
        AssetCheckSpec("float_fixed_point_agreement", asset=ANOMALY_SCORES_KEY, blocking=True,
                       description="SLAYER (float, torch) and Lava (fixed point, Loihi 2 simulation) take the same "
                       "decision on at least `agreement_threshold` of the windows, and of the windows either flags."),
        AssetCheckSpec("snn_vs_baseline", asset=ANOMALY_SCORES_KEY,
                       description="Precision/recall on the labelled anomalies, the SNN next to a non-spiking MLP "
                       "(and an IsolationForest) on the same windows."),
        AssetCheckSpec("energy_proxy", asset=ANOMALY_SCORES_KEY,
                       description="Synaptic operations and spikes per inference (real energy needs Loihi)."),
    ],
    description="The day's windows scored by the exported network on Lava's fixed-point Loihi 2 simulation "
                f"(via Pipes); scores in {SCORES_TABLE}.",
)
def anomaly_scores(context: AssetExecutionContext, config: ScoringConfig, lake: LakeResource):
    from platformq_assets.neuromorphic.runner import lava_writable_dir, run_lava_script
    from platformq_assets.neuromorphic.scores import scores_table

    settings = _settings()
    _preflight(settings)
    day = context.partition_key
    workdir = settings.effective_lava_workdir
    spikes = workdir / "spike_trains" / f"{day}.npz"
    model_dir = workdir / "models" / day
    if not spikes.exists() or not (model_dir / "network.h5").exists():
        raise Failure(allow_retries=False,
                      description=f"scoring {day} needs neuromorphic/spike_trains and neuromorphic/snn_model for "
                      f"that day ({spikes}, {model_dir / 'network.h5'})")
    registry = _published_registry(model_dir)
    out = workdir / "scores" / f"{day}.npz"
    lava_writable_dir(out.parent)
    invocation = run_lava_script(context, settings, "models.neuromorphic.pipes_score", {
        "spikes": str(spikes), "model_dir": str(model_dir), "out": str(out), "pad": config.pad,
        "backend": settings.lava_backend, "partition": settings.lava_loihi_partition,
        "agreement_threshold": config.agreement_threshold}, timeout_s=config.timeout_seconds)
    if _sha256(model_dir / "network.h5") != registry["network_sha256"]:  # replaced while scoring
        raise Failure(allow_retries=True, description=f"{model_dir / 'network.h5'} changed while {day} was scored; "
                      "re-run neuromorphic/anomaly_scores")
    table = scores_table(out, day, str(registry["version"]))
    written = lake.replace_partition(SCORES_TABLE, table, PARTITION_COLUMN, day)
    schema = TableSchema(columns=[TableColumn(name=f.name, type=str(f.type)) for f in table.schema])
    yield from _results(invocation, table=SCORES_TABLE, rows=table.num_rows, **{"dagster/row_count": table.num_rows},
                        **{"dagster/column_schema": schema}, snapshot_id=str(written["snapshot_id"]),
                        model_version=str(registry["version"]))


__all__ = ["anomaly_scores", "snn_model", "spike_trains"]
