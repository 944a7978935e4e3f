"""ml/<model>_drift on a real lake (Iceberg, SQLite catalog) and a real MLflow registry: the day's
prediction drift is measured against the version that scored the day, whoever is champion now."""

import numpy as np
import pandas as pd
from dagster import AssetKey, DagsterInstance, materialize

MODEL, DAY = "price_direction", "2024-02-06"


def feature_frame(rng, n, day):
    from features.compute import INSTRUMENT_FEATURES

    frame = pd.DataFrame({c: rng.normal(1.0, 1.0, n) for c in INSTRUMENT_FEATURES})
    frame["instrument"] = [f"I{i % 5}" for i in range(n)]
    start = pd.Timestamp(day, tz="UTC")  # every row within its day
    frame["event_ts"] = [start + pd.Timedelta(days=1) * i / n for i in range(n)]
    frame["label_up"] = (frame["ret_1"] > 1.0).astype("int64")
    frame["partition_date"] = day
    return frame


def seed_lake(lake, rng, day_rows: int, day_labels: int | None = None) -> None:
    """A training set (2024-02-05) and DAY's feature rows (``day_labels``: every one of DAY's labels)."""
    from pyiceberg.expressions import AlwaysTrue

    from platformq_assets.ml.lifecycle import to_arrow

    training = feature_frame(rng, 400, "2024-02-05").rename(columns={"event_ts": "event_timestamp"})
    training = training.drop(columns=["partition_date"])
    training["as_of_epoch"] = training["event_timestamp"].astype("int64") // 10**9
    lake.replace_where(f"ml.{MODEL}_training_set", to_arrow(training), AlwaysTrue())
    day = feature_frame(rng, day_rows, DAY)
    if day_labels is not None:
        day["label_up"] = day_labels
    lake.replace_partition("features.instrument_intervals", to_arrow(day), "partition_date", DAY)
    built(DAY)


def built(day: str) -> None:
    """The day's feature partition as the feature step leaves it: materialised (the scores need it built)."""
    from dagster import AssetMaterialization

    DagsterInstance.get().report_runless_asset_event(
        AssetMaterialization(AssetKey(["features", "instrument_intervals"]), partition=day))


def register(registry, rng, skewed: bool):
    from mlflow import sklearn as mlflow_sklearn
    from sklearn.linear_model import LogisticRegression

    from features.repo import feature_columns

    x = rng.normal(size=(200, len(feature_columns(MODEL))))
    y = (x[:, 0] > 0).astype(int)
    estimator = LogisticRegression().fit(x, y)
    if skewed:  # a version whose scores sit near 1: a very different score distribution
        estimator.intercept_ += 4.0
    with registry.start_run("tests/drift"):
        info = mlflow_sklearn.log_model(estimator, name="model")
    return registry.register(info.model_uri, MODEL)


def test_rerunning_a_days_drift_after_a_promotion_reports_the_same_prediction_drift(settings, lake):
    from platformq_assets.ml.lifecycle import keys, model_assets
    from resources.mlflow import mlflow_resource

    rng = np.random.default_rng(0)
    registry = mlflow_resource(settings)
    seed_lake(lake, rng, day_rows=200)

    assets = {a.key: a for a in model_assets(MODEL, AssetKey(["features", "instrument_intervals"]))}
    k = keys(MODEL)

    def run(*selection):
        result = materialize([assets[key] for key in selection], partition_key=DAY, instance=DagsterInstance.get(),
                             resources={"lake": lake, "mlflow": registry})
        assert result.success
        return {e.asset_key: {n: v.value for n, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}

    first = register(registry, rng, skewed=False)
    registry.promote(MODEL, first.version, "first")
    before = run(k["predictions"], k["drift"])
    assert before[k["predictions"]]["model_version"] == str(first.version)
    assert before[k["drift"]]["prediction_psi"] < 0.25  # the day looks like training
    assert 0.5 < before[k["drift"]]["performance/roc_auc"] <= 1.0  # labels of both classes arrived

    second = register(registry, rng, skewed=True)
    registry.promote(MODEL, second.version, "second")
    after = run(k["drift"])  # the day's scores are still the first version's
    assert after[k["drift"]]["prediction_psi"] == before[k["drift"]]["prediction_psi"]
    stored = [r for r in lake.read("ml.drift_reports").to_pylist() if r["feature"] == "__prediction__"]
    assert [r["severity"] for r in stored] == ["ok"]


def test_a_day_without_feature_rows_is_scored_empty_and_gets_no_drift_verdict(settings, lake):
    """An empty day: its predictions partition is written (empty, clearing what it held) and every drift
    check fails with no-data, instead of a crash in scoring and three green checks in drift."""
    from platformq_assets.ml.lifecycle import keys, model_assets
    from resources.mlflow import mlflow_resource

    rng = np.random.default_rng(1)
    registry = mlflow_resource(settings)
    seed_lake(lake, rng, day_rows=50)
    version = register(registry, rng, skewed=False)
    registry.promote(MODEL, version.version, "first")
    assets = {a.key: a for a in model_assets(MODEL, AssetKey(["features", "instrument_intervals"]))}
    k = keys(MODEL)
    empty = "2024-02-07"
    built(empty)  # built, without a row
    result = materialize([assets[k["predictions"]], assets[k["drift"]]], partition_key=empty,
                         instance=DagsterInstance.get(), resources={"lake": lake, "mlflow": registry})
    assert result.success
    assert lake.read_partition(f"gold.{MODEL}_predictions", "partition_date", empty).num_rows == 0
    [drift] = [e.materialization.metadata for e in result.get_asset_materialization_events() if e.asset_key == k["drift"]]
    assert drift["severity"].value == "no-data" and drift["rows"].value == 0
    verdicts = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert verdicts == {"feature_drift_warn": False, "feature_drift_error": False, "prediction_drift": False}
    stored = {r["severity"] for r in lake.read("ml.drift_reports").to_pylist() if r["partition_date"] == empty}
    assert stored == {"no-data"}


def test_a_day_whose_labels_are_all_one_class_reports_no_roc_auc(settings, lake):
    """No ROC AUC ranks one class: a day without a single positive reports accuracy and no AUC, not 0.5 (which
    reads as a model at chance)."""
    from platformq_assets.ml.lifecycle import keys, model_assets
    from resources.mlflow import mlflow_resource

    rng = np.random.default_rng(2)
    registry = mlflow_resource(settings)
    seed_lake(lake, rng, day_rows=120, day_labels=0)
    version = register(registry, rng, skewed=False)
    registry.promote(MODEL, version.version, "first")
    assets = {a.key: a for a in model_assets(MODEL, AssetKey(["features", "instrument_intervals"]))}
    k = keys(MODEL)
    result = materialize([assets[k["predictions"]], assets[k["drift"]]], partition_key=DAY,
                         instance=DagsterInstance.get(), resources={"lake": lake, "mlflow": registry})
    assert result.success
    [drift] = [e.materialization.metadata for e in result.get_asset_materialization_events() if e.asset_key == k["drift"]]
    assert drift["performance/labelled_rows"].value == 120 and "performance/accuracy" in drift
    assert "performance/roc_auc" not in drift


def test_drift_references_are_rows_the_scoring_version_learned_from_and_rows_it_never_fitted_on(settings, lake):
    """Feature drift compares the day with the rows the version that scored it trained or validated on (event time
    up to its ``training_cutoff``), never with the judged day itself; prediction drift compares the day's scores
    with that version's scores on rows it was not fitted on (after its ``fit_cutoff``; the judged day left out):
    in-sample scores of an overfit model are wider than any unseen day's, a false prediction-drift error."""
    from pyiceberg.expressions import AlwaysTrue

    from features.repo import feature_columns
    from models.monitoring import psi
    from platformq_assets.ml.lifecycle import keys, load_sklearn, model_assets, model_frame, to_arrow
    from resources.mlflow import mlflow_resource

    rng = np.random.default_rng(5)
    registry = mlflow_resource(settings)
    learned = feature_frame(rng, 400, "2024-02-05")  # trained (first 300) and validated on
    judged = feature_frame(rng, 200, DAY)
    judged["ret_1"] += 3.0  # the day drifted
    later = feature_frame(rng, 200, "2024-02-07")  # never seen by the version
    later["ret_1"] -= 1.5
    training = pd.concat([learned, judged, later]).rename(columns={"event_ts": "event_timestamp"})
    training = training.drop(columns=["partition_date"]).reset_index(drop=True)
    training["as_of_epoch"] = (training["event_timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1s")
    lake.replace_where(f"ml.{MODEL}_training_set", to_arrow(training), AlwaysTrue())
    lake.replace_partition("features.instrument_intervals", to_arrow(judged), "partition_date", DAY)
    built(DAY)
    version = register(registry, rng, skewed=False)
    client = registry.client()
    client.set_model_version_tag(MODEL, version.version, "training_cutoff", learned["event_ts"].max().isoformat())
    client.set_model_version_tag(MODEL, version.version, "fit_cutoff", learned["event_ts"].iloc[299].isoformat())
    registry.promote(MODEL, version.version, "first")

    assets = {a.key: a for a in model_assets(MODEL, AssetKey(["features", "instrument_intervals"]))}
    k = keys(MODEL)
    result = materialize([assets[k["predictions"]], assets[k["drift"]]], partition_key=DAY,
                         instance=DagsterInstance.get(), resources={"lake": lake, "mlflow": registry})
    assert result.success
    [drift] = [{n: v.value for n, v in e.materialization.metadata.items()}
               for e in result.get_asset_materialization_events() if e.asset_key == k["drift"]]
    features = feature_columns(MODEL)
    expected_feature_psi = round(psi(learned["ret_1"].to_numpy(), judged["ret_1"].to_numpy()), 4)
    assert drift["report"]["ret_1"]["psi"] == expected_feature_psi
    assert drift["reference_rows"] == 400
    estimator = load_sklearn(registry, MODEL, version=str(version.version))
    unseen = pd.concat([learned.iloc[300:], later]).rename(columns={"event_ts": "event_timestamp"})
    reference_scores = estimator.predict_proba(model_frame(unseen, features).to_numpy())[:, 1]
    day_scores = estimator.predict_proba(model_frame(judged, features).to_numpy())[:, 1]
    assert drift["prediction_psi"] == round(psi(reference_scores, day_scores), 4)
    assert drift["prediction_reference_rows"] == 300


def test_a_day_whose_feature_partition_was_never_built_is_not_scored(settings, lake):
    """Scores run alone (the UI, a partial backfill) for a day whose feature partition was never built: the
    partition read as empty and the day was "scored" with no row (what it held replaced by nothing), shown as
    materialised. The step fails naming the feature partition to build and writes nothing."""
    from platformq_assets.ml.lifecycle import keys, model_assets
    from resources.mlflow import mlflow_resource

    rng = np.random.default_rng(3)
    registry = mlflow_resource(settings)
    seed_lake(lake, rng, day_rows=50)  # DAY's features built; not the day scored below
    version = register(registry, rng, skewed=False)
    registry.promote(MODEL, version.version, "first")
    assets = {a.key: a for a in model_assets(MODEL, AssetKey(["features", "instrument_intervals"]))}
    k = keys(MODEL)
    day = "2024-02-08"
    result = materialize([assets[k["predictions"]]], partition_key=day, instance=DagsterInstance.get(),
                         resources={"lake": lake, "mlflow": registry}, raise_on_error=False)
    assert not result.success
    [error] = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]
    assert f"features/instrument_intervals for {day} not materialised yet" in error, error
    assert "feature partition" in error and "nothing was written" in error, error
    assert day not in DagsterInstance.get().get_materialized_partitions(k["predictions"])
    assert not lake.table_exists(f"gold.{MODEL}_predictions")
