"""One model's life cycle as assets: training set -> tuned model -> evaluation (gate) -> champion
-> batch predictions -> drift. Built per model by :func:`model_assets`.

* ``ml/<model>_training_set``: Feast ``get_historical_features`` over the model's feature service
  (point-in-time joins), written to ``ml.<model>_training_set``; a blocking check proves no
  feature value is from after its row's event time.
* ``ml/<model>``: Ray Tune AutoML (linear / gradient boosting / MLP, ASHA early stopping), every
  trial a nested MLflow run; the training set is cut by event time into train, validation (the
  search chooses on it) and a test slice left for the gate; the best model logged with signature
  and input example, registered as ``challenger`` with its feature service, training-set snapshot
  and training cutoff (the last event time it trained or validated on) recorded on the version.
* ``ml/<model>_evaluation``: MLflow evaluation of challenger and champion on the same rows: the
  training set's rows after both versions' training cutoffs, which neither trained nor was chosen
  on; the blocking ``promotion_gate`` check applies the metric thresholds (and fails when fewer
  than ``min_rows`` such rows exist).
* ``ml/<model>_champion``: promotion (dev -> staging -> production), the reason recorded.
* ``gold/<model>_predictions``: daily batch scoring with the champion.
* ``ml/<model>_drift``: PSI and KS per feature (the training-set rows the scoring version learned from vs the
  day), prediction drift (its scores on rows it was not fitted on vs the day's) and, where labels have arrived,
  performance; warn and error checks (:func:`drift_references`).
"""

import contextlib
import datetime as dt
import warnings

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from pipelines.partitions import PARTITION_COLUMN, daily_partitions
from pipelines.pods import TRAINING_POD
from pipelines.pools import table_pool
from resources.compute import RayResource
from resources.feast import FeastResource
from resources.lake import LakeResource
from resources.mlflow import CHALLENGER, CHAMPION, STAGE_TAG, STAGED_AGAINST_TAG, MlflowResource

ML = {"owners": ["team:ml-platform"]}
PROMOTION_METRIC = "roc_auc"
# Model-version tag: the last event time (ISO 8601) the version trained or validated on. The gate grades
# versions only on rows after it; a version without it was registered before it was recorded.
CUTOFF_TAG = "training_cutoff"
# Model-version tag: the last event time in the version's training slice (what it was fitted on). Prediction drift
# takes its reference scores from rows after it (out-of-sample, as a scored day's are).
FIT_CUTOFF_TAG = "fit_cutoff"
MIN_GATE_ROWS = 50  # fewer unseen rows than this: no verdict (the gate fails), not a noisy pass


class TrainingConfig(Config):
    num_samples: int = Field(default=6, ge=1)  # AutoML budget: trials across the model families
    time_budget_s: float = Field(default=300.0, gt=0)


class GateConfig(Config):
    # ROC AUC bounds (NaN would let any challenger past the champion comparison); a negative improvement lets a
    # challenger slightly worse than the champion through
    min_metric: float | None = Field(default=None, ge=0, le=1)  # defaults from settings (PLATFORMQ_PROMOTION_MIN_METRIC)
    min_improvement: float | None = Field(default=None, ge=-1, le=1)  # over the champion (..._MIN_IMPROVEMENT)
    min_rows: int = Field(default=MIN_GATE_ROWS, ge=1)  # rows after both versions' training cutoffs


def keys(model: str) -> dict[str, AssetKey]:
    return {
        "training_set": AssetKey(["ml", f"{model}_training_set"]),
        "model": AssetKey(["ml", model]),
        "evaluation": AssetKey(["ml", f"{model}_evaluation"]),
        "champion": AssetKey(["ml", f"{model}_champion"]),
        "predictions": AssetKey(["gold", f"{model}_predictions"]),
        "drift": AssetKey(["ml", f"{model}_drift"]),
    }


def load_training_set(lake: LakeResource, model: str):
    return lake.read(f"ml.{model}_training_set").to_pandas()


def epoch_seconds(times):
    """Whole seconds since the Unix epoch of a datetime column, whatever its unit (ns, us, ms, s) and with or
    without a time zone (naive is UTC), as the Feast views' ``as_of_epoch`` counts them. (``astype("int64") //
    10**9`` assumed nanoseconds: a microsecond column read 1000 times too early.)"""
    import pandas as pd

    epoch = pd.Timestamp(0, tz="UTC") if times.dt.tz is not None else pd.Timestamp(0)
    return (times - epoch) // pd.Timedelta("1s")


def holdout(frame, after):
    """The rows the gate grades: event time strictly after ``after`` (the later of the two versions' training
    cutoffs), in time order. Neither version trained on them nor was chosen on them, whatever the training
    set gained since (backfilled older days, a re-materialisation)."""
    import pandas as pd

    frame = frame.sort_values("event_timestamp", kind="mergesort")
    return frame[pd.to_datetime(frame["event_timestamp"], utc=True) > after]


def training_cutoff(version, tag: str = CUTOFF_TAG):
    """A registered version's training cutoff (its ``training_cutoff`` tag, or ``tag``) as a UTC timestamp; None
    for no version or one registered before the tag was recorded."""
    import pandas as pd

    value = (version.tags or {}).get(tag) if version is not None else None
    if not value:
        return None
    try:
        cutoff = pd.Timestamp(value)
    except ValueError as exc:
        raise ValueError(f"version {version.version}'s {tag} tag {value!r} is not a timestamp") from exc
    return cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")


def drift_references(training, day: str, version) -> tuple:
    """(feature reference, prediction reference): the training-set rows a day's drift is judged against, for the
    version that scored the day (``version``; None for none). Neither holds the judged day's own rows.

    * features: the rows the version trained or validated on (event time up to its ``training_cutoff``), the
      distribution it learned;
    * predictions: the rows it was not fitted on (event time after its ``fit_cutoff``, the end of its training
      slice: its validation and test slices and anything newer), whose scores are out-of-sample like the day's
      (scores on rows a model was fitted on are wider, for an overfit GBM much wider: a false drift error).
      A version registered before ``fit_cutoff`` was recorded: after its ``training_cutoff`` (the test slice on).

    A version without a ``training_cutoff`` (registered before it was recorded): the whole training set for both,
    the judged day left out."""
    import pandas as pd

    times = pd.to_datetime(training["event_timestamp"], utc=True)
    start = pd.Timestamp(day, tz="UTC")
    outside = (times < start) | (times >= start + pd.Timedelta(days=1))
    learned_until = training_cutoff(version)
    if learned_until is None:
        return training[outside], training[outside]
    fitted_until = training_cutoff(version, FIT_CUTOFF_TAG) or learned_until
    return training[outside & (times <= learned_until)], training[outside & (times > fitted_until)]


def model_assets(model: str, feature_table_key: AssetKey) -> list:
    from features.repo import AS_OF, ENTITY_KEYS, LABELS, SERVICES, TABLES, feature_columns

    k = keys(model)
    entity, label, service, table = ENTITY_KEYS[model], LABELS[model], SERVICES[model], TABLES[model]
    features = feature_columns(model)

    @asset(key=k["training_set"], pool=table_pool(f"ml.{model}_training_set"), deps=[feature_table_key, AssetKey(["features", "registry"])], group_name="ml",
           kinds={"feast", "iceberg"}, **ML,
           check_specs=[AssetCheckSpec("point_in_time_correct", asset=k["training_set"], blocking=True,
                                       description="No feature value is from after its row's event time.")],
           description=f"Point-in-time-correct training set for {model} from the Feast service {service}.")
    def training_set(context: AssetExecutionContext, lake: LakeResource, feast: FeastResource):

        rows = lake.read(table, columns=(entity, "event_ts", label)).to_pandas()
        rows = rows[rows[label].notna()].rename(columns={"event_ts": "event_timestamp"})
        frame = feast.historical_features(service, rows)
        frame = frame[frame[AS_OF].notna()]
        dropped = len(rows) - len(frame)
        event_epoch = epoch_seconds(frame["event_timestamp"])
        late = int((frame[AS_OF] > event_epoch).sum())
        frame[label] = frame[label].astype("int64")
        frame = frame.sort_values(["event_timestamp", entity], kind="mergesort").reset_index(drop=True)
        arrow = to_arrow(frame)
        from pyiceberg.expressions import AlwaysTrue

        written = lake.replace_where(f"ml.{model}_training_set", arrow, AlwaysTrue())
        return MaterializeResult(
            metadata={**written, "dagster/row_count": len(frame), "entity_rows": len(rows),
                      "rows_without_features_in_ttl": dropped, "feature_service": service,
                      "positive_share": float(frame[label].mean()) if len(frame) else 0.0},
            check_results=[AssetCheckResult(check_name="point_in_time_correct", passed=late == 0 and len(frame) > 0,
                                            metadata={"rows_with_future_features": late, "rows": len(frame)})],
        )

    @asset(key=k["model"], deps=[k["training_set"]], group_name="ml", kinds={"ray", "mlflow", "scikitlearn"}, **ML,
           op_tags=TRAINING_POD,
           description=f"{model}: Ray Tune AutoML (linear, gradient boosting, MLP; ASHA), every trial in MLflow, "
                       "the best registered as challenger.")
    def trained_model(context: AssetExecutionContext, config: TrainingConfig, lake: LakeResource,
                      ray: RayResource, mlflow: MlflowResource):
        import mlflow as mlflow_lib
        from mlflow import sklearn as mlflow_sklearn
        from mlflow.models import infer_signature

        from models.tabular import SKOPS_TRUSTED_TYPES, METRIC, score, search, time_split, train_iterations

        frame = load_training_set(lake, model)
        split = time_split(frame, features, label, "event_timestamp")  # the latest rows are left for the gate
        cutoff, fit_cutoff = split.cutoff.isoformat(), split.fit_cutoff.isoformat()
        snapshot = lake.describe(f"ml.{model}_training_set").get("snapshot_id")
        experiment = f"platformq/{model}"
        with mlflow.start_run(experiment, run_name=f"{model}-{context.run.run_id[:8]}",
                              tags={"dagster.run_id": context.run.run_id, "feature_service": service}) as run:
            with ray.session() as cluster:
                result = search(split, num_samples=config.num_samples, mlflow_tracking_uri=mlflow.tracking_uri,
                                experiment=experiment, parent_run_id=run.info.run_id,
                                time_budget_s=config.time_budget_s, storage_path=None)
            best = result["best_config"]
            # fitted on arrays (no feature names): serving passes arrays, a pandas row costs ~1 ms
            final = train_iterations(best, split, result["best_iterations"])
            val_x = _frame(split.x_val, features)
            val_score = score(split.y_val, final.predict_proba(split.x_val)[:, 1])
            mlflow_lib.log_params({f"best.{k_}": v for k_, v in best.items()})
            mlflow_lib.log_metrics({METRIC: val_score, "trials": len(result["trials"]),
                                    "stopped_early": sum(t["stopped_early"] for t in result["trials"])})
            mlflow_lib.log_dict({"trials": result["trials"], "features": features}, "search.json")
            mlflow_lib.set_tags({"training_set_snapshot": str(snapshot), "model_family": best["family"],
                                 CUTOFF_TAG: cutoff, FIT_CUTOFF_TAG: fit_cutoff})
            pipeline = final.pipeline()
            example = val_x.head(5)
            with mlflow_frames():  # MLflow checks the input example by predicting it
                info = mlflow_sklearn.log_model(
                    pipeline, name="model", signature=infer_signature(example, pipeline.predict(example.to_numpy())),
                    input_example=example, pip_requirements=["scikit-learn", "numpy", "pandas"],
                    skops_trusted_types=SKOPS_TRUSTED_TYPES)
        version = mlflow.register(info.model_uri, model, tags={
            "feature_service": service, "training_set": f"ml.{model}_training_set@{snapshot}",
            "mlflow_run_id": run.info.run_id, "dagster_run_id": context.run.run_id, "family": best["family"],
            CUTOFF_TAG: cutoff, FIT_CUTOFF_TAG: fit_cutoff},
            description=f"{best['family']} on {service}; {METRIC}={val_score:.4f} on the validation slice "
                        f"(trained and validated on rows up to {cutoff}).")
        return MaterializeResult(metadata={
            "mlflow_run_id": run.info.run_id, "mlflow_run": mlflow.run_url(run), "model_version": str(version.version),
            "alias": CHALLENGER, "family": best["family"], METRIC: round(val_score, 4),
            "trials": len(result["trials"]), "trials_stopped_early": sum(t["stopped_early"] for t in result["trials"]),
            "ray": cluster["address"], "ray_cluster_cpus": float(cluster["resources"].get("CPU", 0)),
            "ray_nodes_used": len({t["node_id"] for t in result["trials"] if t.get("node_id")}),
            "feature_service": service, CUTOFF_TAG: cutoff, FIT_CUTOFF_TAG: fit_cutoff, "train_rows": len(split.y_train),
            "validation_rows": len(split.y_val), "test_rows": split.test_rows,
            "trial_table": MetadataValue.md(_trials_markdown(result["trials"]))})

    @asset(key=k["evaluation"], deps=[k["model"]], group_name="ml", kinds={"mlflow"}, **ML,
           check_specs=[AssetCheckSpec("promotion_gate", asset=k["evaluation"], blocking=True,
                                       description="Challenger meets the metric threshold and beats the champion.")],
           description=f"Challenger vs champion for {model} on the same rows, those after both versions' training "
                       "cutoffs (MLflow evaluation with thresholds).")
    def evaluation(context: AssetExecutionContext, config: GateConfig, lake: LakeResource, mlflow: MlflowResource):
        from resources.settings import load_settings

        settings = load_settings()
        min_metric = config.min_metric if config.min_metric is not None else settings.promotion_min_metric
        min_gain = config.min_improvement if config.min_improvement is not None else settings.promotion_min_improvement
        outcome = evaluate_versions(mlflow, model, load_training_set(lake, model), features, label, min_metric,
                                    min_gain, min_rows=config.min_rows)
        challenger = outcome["challenger"]
        if outcome["passed"] and challenger:
            mlflow.set_stage(model, challenger, "staging", outcome["reason"], against=outcome["champion"] or "")
        elif challenger and str(challenger) != str(outcome["champion"]) \
                and (graded := mlflow.version_for(model, CHALLENGER)) is not None \
                and str(graded.version) == str(challenger) and graded.tags.get(STAGE_TAG) == "staging" \
                and not _holds_champion(mlflow, model, challenger):
            # it passed an earlier evaluation (another champion, other rows, a lower threshold): not any more
            mlflow.set_stage(model, challenger, "dev", f"no longer passes the promotion gate: {outcome['reason']}")
        return MaterializeResult(
            metadata={key: value for key, value in outcome.items() if key != "passed"},
            check_results=[AssetCheckResult(check_name="promotion_gate", passed=outcome["passed"],
                                            metadata={"reason": outcome["reason"],
                                                      "holdout_rows": outcome["holdout_rows"]})],
        )

    @asset(key=k["champion"], deps=[k["evaluation"]], group_name="ml", kinds={"mlflow"}, **ML,
           description=f"Promotes the gated challenger of {model} to champion (dev -> staging -> production).")
    def champion(context: AssetExecutionContext, mlflow: MlflowResource):
        challenger = mlflow.version_for(model, CHALLENGER)
        current = mlflow.version_for(model, CHAMPION)
        if challenger is None:
            return MaterializeResult(metadata={"champion": current.version if current else None,
                                               "promoted": False, "reason": "no challenger waiting"})
        if current is not None and str(challenger.version) == str(current.version):
            # a promotion that stopped after the champion alias moved (tags, aliases left): finish it
            result = mlflow.promote(model, challenger.version,
                                    reason=challenger.tags.get("platformq.staging_reason") or "passed the promotion gate")
            return MaterializeResult(metadata={**{k_: v for k_, v in result.items() if v is not None},
                                               "reason": result.get("reason") or "finished an interrupted promotion"})
        stage = challenger.tags.get(STAGE_TAG)
        if stage != "staging":
            # the blocking gate only guards its own run: materialised alone (UI, retry, another job) this
            # asset must still never promote a version the gate has not passed (manual override: the CLI)
            return MaterializeResult(metadata={
                "champion": current.version if current else None, "promoted": False,
                "reason": f"challenger v{challenger.version} has not passed the promotion gate (stage {stage})"})
        against = challenger.tags.get(STAGED_AGAINST_TAG)  # absent on versions staged before it was recorded
        now = str(current.version) if current is not None else ""
        if against is not None and against != now:
            # the gate compared it with another champion (one promoted by hand since, or a rollback)
            return MaterializeResult(metadata={
                "champion": current.version if current else None, "promoted": False,
                "reason": f"challenger v{challenger.version} passed the promotion gate against "
                          f"{'champion v' + against if against else 'no champion'}; the champion is now "
                          f"{'v' + now if now else 'none'}: materialise ml/{model}_evaluation again"})
        reason = challenger.tags.get("platformq.staging_reason") or "passed the promotion gate"
        result = mlflow.promote(model, challenger.version, reason=f"{reason} (dagster run {context.run.run_id})")
        return MaterializeResult(metadata={**{k_: v for k_, v in result.items() if v is not None}, "reason": reason})

    @asset(key=k["predictions"], pool=table_pool(f"gold.{model}_predictions"), deps=[feature_table_key, k["champion"]], partitions_def=daily_partitions,
           group_name="ml", kinds={"mlflow", "iceberg"}, **ML,
           description=f"Daily batch scores of {model} by the current champion, written to gold.")
    def predictions(context: AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
        import pyarrow as pa

        from platformq_assets.ml.features import _require_inputs

        # a feature partition never built reads as an empty table: the day's scores would be replaced by none, and
        # the day shown as scored (run alone from the UI, a partial backfill); a day built empty is scored empty
        _require_inputs(context, [feature_table_key],
                        build="materialise the day's feature partition (ml_daily builds it) first")
        arrow = lake.read_partition(table, PARTITION_COLUMN, context.partition_key)
        frame = arrow.to_pandas()
        champion_version = mlflow.version_for(model, CHAMPION)
        if champion_version is None:
            from dagster import Failure

            raise Failure(f"{model} has no champion yet: materialise ml/{model}_champion first")
        estimator = load_sklearn(mlflow, model, version=str(champion_version.version))  # the version recorded below
        matrix = model_frame(frame, features)
        proba = estimator.predict_proba(matrix.to_numpy())[:, 1] if len(frame) else []
        tenant = {"tenant_id": arrow["tenant_id"]} if "tenant_id" in arrow.column_names else {}  # per-tenant reads
        out = pa.table({
            entity: arrow[entity], **tenant, "event_ts": arrow["event_ts"],
            # typed: an empty day's columns would be Arrow's null type, which no partition value casts to
            PARTITION_COLUMN: pa.array([context.partition_key] * len(frame), pa.string()),
            "score": pa.array(proba, pa.float64()), "prediction": pa.array([int(p >= 0.5) for p in proba], pa.int64()),
            "label": arrow[label].cast(pa.int64()),
            "model_name": pa.array([model] * len(frame), pa.string()),
            "model_version": pa.array([str(champion_version.version)] * len(frame), pa.string()),
        })
        written = lake.replace_partition(f"gold.{model}_predictions", out, PARTITION_COLUMN, context.partition_key)
        return MaterializeResult(metadata={**written, "dagster/row_count": len(out),
                                           "model_version": str(champion_version.version),
                                           "positive_rate": float(sum(out["prediction"].to_pylist()) / max(len(out), 1))})

    @asset(key=k["drift"], pool=table_pool("ml.drift_reports"), deps=[k["training_set"], k["predictions"], feature_table_key],
           partitions_def=daily_partitions, group_name="ml", kinds={"python"}, **ML,
           check_specs=[
               AssetCheckSpec("feature_drift_warn", asset=k["drift"],
                              description="No feature's PSI reaches 0.1 against the training set."),
               AssetCheckSpec("feature_drift_error", asset=k["drift"],
                              description="No feature's PSI reaches 0.25 against the training set."),
               AssetCheckSpec("prediction_drift", asset=k["drift"],
                              description="The day's score distribution stays within PSI 0.25 of training."),
           ],
           description=f"Drift of {model}'s inputs and outputs (PSI, KS) and its performance where labels arrived.")
    def drift(context: AssetExecutionContext, lake: LakeResource, mlflow: MlflowResource):
        import pyarrow as pa

        from models.monitoring import NO_DATA, drift_report, overall_severity, psi, severity
        from models.tabular import score

        training = load_training_set(lake, model)
        current = model_frame(lake.read_partition(table, PARTITION_COLUMN, context.partition_key).to_pandas(),
                              features)
        scored = lake.read_partition(f"gold.{model}_predictions", PARTITION_COLUMN, context.partition_key).to_pandas()
        # the version the references belong to: the one that scored the day, not today's champion (after a promotion
        # a re-run or backfill would otherwise compare two different models' outputs); no scores: the champion
        scored_by = scored["model_version"].astype(str).mode().iloc[0] if len(scored) else None
        version = mlflow.client().get_model_version(model, scored_by) if scored_by is not None \
            else mlflow.version_for(model, CHAMPION)
        feature_reference, prediction_reference = drift_references(training, context.partition_key, version)
        report = drift_report(model_frame(feature_reference, features), current, features)
        prediction_psi = float("nan")
        if len(scored) and len(prediction_reference):
            estimator = load_sklearn(mlflow, model, version=scored_by)
            reference_scores = estimator.predict_proba(model_frame(prediction_reference, features).to_numpy())[:, 1]
            prediction_psi = round(psi(reference_scores, scored["score"].to_numpy()), 4)
        prediction_severity = severity(prediction_psi)
        labelled = scored[scored["label"].notna()]
        performance = {"labelled_rows": len(labelled)}
        if labelled["label"].nunique() == 2:  # a day of one class has no ROC AUC (not 0.5: that reads as chance)
            performance["roc_auc"] = round(score(labelled["label"].astype(int).to_numpy(), labelled["score"].to_numpy()), 4)
        if len(labelled):
            performance["accuracy"] = round(float((labelled["prediction"] == labelled["label"]).mean()), 4)
        worst = max(report.items(), key=lambda item: item[1]["psi"] if item[1]["severity"] != NO_DATA else -1.0)
        rows = [{"model_name": model, PARTITION_COLUMN: context.partition_key, "feature": f, **v} for f, v in report.items()]
        rows.append({"model_name": model, PARTITION_COLUMN: context.partition_key, "feature": "__prediction__",
                     "psi": prediction_psi, "ks": None, "ks_pvalue": None, "severity": prediction_severity})
        schema = pa.schema([("model_name", pa.string()), (PARTITION_COLUMN, pa.string()), ("feature", pa.string()),
                            ("psi", pa.float64()), ("ks", pa.float64()), ("ks_pvalue", pa.float64()),
                            ("severity", pa.string())])
        lake.replace_where("ml.drift_reports", pa.Table.from_pylist(rows, schema=schema),
                           _drift_rows(model, context.partition_key), partition_by=PARTITION_COLUMN)
        # one verdict per value, the one stored above; a day without rows has no drift verdict: every check fails
        error = [f for f, v in report.items() if v["severity"] == "error"]
        warn = [f for f, v in report.items() if v["severity"] in ("warn", "error")]
        # no-data of the features fails the feature checks; no prediction PSI (no scores, or no rows the version was
        # not fitted on outside the day) fails the prediction check only
        no_data = [f for f, v in report.items() if v["severity"] == NO_DATA]
        overall = overall_severity([v["severity"] for v in report.values()], prediction_severity)
        return MaterializeResult(
            metadata={"max_psi": worst[1]["psi"], "max_psi_feature": worst[0], "prediction_psi": prediction_psi,
                      "reference_rows": len(feature_reference), "prediction_reference_rows": len(prediction_reference),
                      "reference_version": str(version.version) if version is not None else None,
                      "drifted_features": error or warn, "severity": overall, "rows": len(current),
                      **{f"performance/{k_}": v for k_, v in performance.items()},
                      "report": MetadataValue.json(report)},
            check_results=[
                AssetCheckResult(check_name="feature_drift_warn", passed=not warn and not no_data,
                                 severity=AssetCheckSeverity.WARN, metadata={"features": warn, "no_data": no_data}),
                AssetCheckResult(check_name="feature_drift_error", passed=not error and not no_data,
                                 severity=AssetCheckSeverity.ERROR, metadata={"features": error, "no_data": no_data}),
                AssetCheckResult(check_name="prediction_drift", passed=prediction_severity in ("ok", "warn"),
                                 severity=AssetCheckSeverity.WARN,
                                 metadata={"psi": prediction_psi, "reference_rows": len(prediction_reference)}),
            ],
        )

    return [training_set, trained_model, evaluation, champion, predictions, drift]


def to_arrow(frame):
    """pandas -> Arrow with microsecond timestamps (Iceberg has no nanosecond type)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = [pa.field(f.name, pa.timestamp("us", tz=f.type.tz)) if pa.types.is_timestamp(f.type) else f
              for f in table.schema]
    return table.cast(pa.schema(fields))


def _drift_rows(model: str, partition: str):
    from pyiceberg.expressions import And, EqualTo

    return And(EqualTo("model_name", model), EqualTo(PARTITION_COLUMN, partition))


def _frame(matrix, features):
    import pandas as pd

    return pd.DataFrame(matrix, columns=features)


def model_frame(frame, features: list[str]):
    """The model's input frame: stored features plus the on-demand ones (same code as Feast's ODFV), filled
    as training fills them (:func:`models.tabular.model_inputs`). Batch scoring, drift and the gate use it."""
    from features.repo import derived_features
    from models.tabular import model_inputs

    frame = frame.copy()
    missing = [f for f in ("risk_adjusted_return", "volume_ratio") if f in features and f not in frame.columns]
    if missing:
        derived = derived_features({c: frame[c].astype("float64").tolist()
                                    for c in ("ret_1", "vol_6", "volume_1", "volume_6")})
        for name in missing:
            frame[name] = derived[name]
    return model_inputs(frame, features)


def gate_data(rows, features: list[str], label: str):
    """What ``mlflow.models.evaluate`` gets: the rows' model inputs exactly as training and serving build them
    (missing features 0.0: a linear or MLP model cannot take NaN, a GBM would route it elsewhere), the label."""
    data = model_frame(rows, features)
    data[label] = rows[label].astype("int64").to_numpy()
    return data


@contextlib.contextmanager
def mlflow_frames():
    """Around MLflow calls that hand our models a frame (an input example's check, an evaluation), two warnings
    that do not apply here: the models are fitted on arrays (batch scoring and serving pass arrays, a pandas row
    costs ~1 ms) and MLflow passes frames whose columns are the features in their order (the signature's,
    :func:`gate_data`'s), so scikit-learn's "X has feature names, but ... was fitted without feature names" has
    no mismatch to report (the gate tests compare each graded AUC with the served one); and MLflow's hint that
    an integer column cannot hold a missing value concerns the label and the predicted class, which never miss
    (rows without a label never reach the gate: ``gate_data`` casts it to int64)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "X has feature names, but .* was fitted without feature names", UserWarning)
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column", UserWarning)
        yield


def load_sklearn(mlflow: MlflowResource, model: str, alias: str | None = None, version: str | None = None):
    mlflow._mlflow()
    from mlflow import sklearn as mlflow_sklearn

    return mlflow_sklearn.load_model(f"models:/{model}/{version}" if version is not None else f"models:/{model}@{alias}")


def evaluate_versions(mlflow: MlflowResource, model: str, frame, features: list[str], label: str, min_metric: float,
                      min_gain: float, min_rows: int = MIN_GATE_ROWS) -> dict:
    """mlflow.models.evaluate for challenger and champion on the same rows, then the thresholds.

    The rows are those of ``frame`` (the training set) after the later of the two versions' training cutoffs
    (a champion without one counts as trained up to the challenger's), fed to the models as training and
    serving feed them (:func:`gate_data`). Fewer than ``min_rows`` of them, or rows of one class only (no ROC AUC):
    the gate fails and says why."""
    mlflow_lib = mlflow._mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.models import MetricThreshold

    challenger = mlflow.version_for(model, CHALLENGER)
    champion = mlflow.version_for(model, CHAMPION)
    outcome = {"challenger": challenger.version if challenger else None,
               "champion": champion.version if champion else None, "holdout_rows": 0,
               "holdout_min_rows": min_rows, "metric_threshold": min_metric, "min_improvement": min_gain,
               "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if challenger is None:
        return {**outcome, "passed": False, "reason": "no challenger to evaluate"}
    if champion is not None and str(challenger.version) == str(champion.version):
        # a promotion that stopped after the champion alias moved (ml/<model>_champion finishes it): no new version
        return {**outcome, "passed": False,
                "reason": f"challenger v{challenger.version} is already the champion (a promotion stopped part-way; "
                          f"materialising ml/{model}_champion finishes it): nothing to evaluate"}
    challenger_cutoff = training_cutoff(challenger)
    if challenger_cutoff is None:
        return {**outcome, "passed": False,
                "reason": f"challenger v{challenger.version} has no {CUTOFF_TAG} tag (registered before training "
                          f"cutoffs were recorded): the rows it trained on are unknown; materialise ml/{model} again"}
    champion_cutoff = training_cutoff(champion)
    after = max(challenger_cutoff, champion_cutoff or challenger_cutoff)
    rows = holdout(frame, after)
    outcome.update({"holdout_rows": len(rows), "holdout_after": after.isoformat(),
                    "challenger_training_cutoff": challenger_cutoff.isoformat(),
                    "champion_training_cutoff": champion_cutoff.isoformat() if champion_cutoff is not None else None})
    if len(rows) < min_rows:
        versions = f"challenger v{challenger.version}" + (f" and champion v{champion.version}" if champion else "")
        return {**outcome, "passed": False,
                "reason": f"only {len(rows)} rows after {after.isoformat()} (the latest training cutoff of "
                          f"{versions}); the gate needs at least {min_rows} rows no version trained or was "
                          f"chosen on: materialise newer feature days and the training set, then evaluate again"}
    classes = sorted(int(v) for v in rows[label].dropna().unique())
    if len(classes) < 2:
        return {**outcome, "passed": False,
                "reason": f"the {len(rows)} rows after {after.isoformat()} hold only {label}={classes[0] if classes else None}"
                          f": {PROMOTION_METRIC} cannot rank one class; the gate needs rows of both classes no version "
                          f"trained or was chosen on: materialise newer feature days and the training set, then "
                          f"evaluate again"}
    data = gate_data(rows, features, label)
    results = {}
    with mlflow.start_run(f"platformq/{model}", run_name=f"evaluate-v{challenger.version}",
                          tags={"evaluation_of": str(challenger.version)}) as parent:
        for alias, version in ((CHALLENGER, challenger), (CHAMPION, champion)):
            if version is None:
                continue
            with mlflow_lib.start_run(run_name=f"{alias}-v{version.version}", nested=True,
                                      experiment_id=parent.info.experiment_id), mlflow_frames():
                results[alias] = mlflow_lib.models.evaluate(
                    f"models:/{model}/{version.version}", data, targets=label, model_type="classifier",
                    evaluators=["default"], evaluator_config={"default": {"log_model_explainability": False}})
    metric = {alias: float(r.metrics.get(PROMOTION_METRIC, 0.0)) for alias, r in results.items()}
    threshold = MetricThreshold(threshold=min_metric, greater_is_better=True,
                                min_absolute_change=min_gain if (champion is not None and min_gain > 0) else None)
    try:
        mlflow_lib.validate_evaluation_results({PROMOTION_METRIC: threshold}, results[CHALLENGER],
                                               results.get(CHAMPION))
        passed, reason = True, (f"{PROMOTION_METRIC} {metric[CHALLENGER]:.4f} >= {min_metric}"
                                + (f", champion v{champion.version} {metric[CHAMPION]:.4f}" if champion else ", no champion yet"))
        if champion is not None and metric[CHALLENGER] < metric[CHAMPION] + min_gain:
            passed, reason = False, (f"challenger {PROMOTION_METRIC} {metric[CHALLENGER]:.4f} does not beat champion "
                                     f"v{champion.version} {metric[CHAMPION]:.4f} by {min_gain}")
    except MlflowException as failure:  # ModelValidationFailedException is one
        passed, reason = False, str(failure).strip().splitlines()[0][:500]
    return {**outcome, "passed": passed, "reason": reason,
            **{f"{alias}/{PROMOTION_METRIC}": round(v, 4) for alias, v in metric.items()},
            "metrics": MetadataValue.json({a: {m: float(v) for m, v in r.metrics.items() if isinstance(v, (int, float))}
                                           for a, r in results.items()})}


def _holds_champion(mlflow: MlflowResource, model: str, version) -> bool:
    """Whether ``version`` holds the champion alias now (read again: the champion may have moved since the gate)."""
    champion = mlflow.version_for(model, CHAMPION)
    return champion is not None and str(champion.version) == str(version)


def _trials_markdown(trials: list[dict]) -> str:
    lines = ["| family | val_roc_auc | iterations | stopped early |", "|---|---|---|---|"]
    for t in sorted(trials, key=lambda t: -(t.get("val_roc_auc") or 0)):
        lines.append(f"| {t['family']} | {t.get('val_roc_auc') or 0:.4f} | {t.get('iterations')} | {t['stopped_early']} |")
    return "\n".join(lines)
