"""The promotion gate on its own (no Ray, no Feast): a synthetic training set in a real Iceberg lake, versions
in a real MLflow registry (SQLite), the ``ml/<model>_evaluation`` asset materialised by Dagster.

What it proves: the gate feeds the models the inputs they train and serve on; it grades both versions only on
rows neither trained nor validated on (not the search's validation slice, not a champion's training rows after
a backfill); too few such rows fail the gate with a reason; the time split cuts between event times.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from dagster import AssetKey

from features.repo import LABELS, feature_columns

MODEL = "price_direction"
FEATURES = feature_columns(MODEL)
LABEL = LABELS[MODEL]
INSTRUMENTS = ("AAPL", "IBM", "MSFT")
CUTOFF_TAG = "training_cutoff"  # the version tag the gate reads (written when a version is registered)
CONFIG = {"family": "linear", "alpha": 1e-4, "learning_rate": 0.1, "max_leaf_nodes": 7, "hidden": 16, "seed": 7}


def training_frame(days=4, per_day=60, seed=0, start="2024-03-04", gaps=True):
    """Rows shaped like ml.price_direction_training_set: every instrument at every 5-minute event time;
    ``gaps``: the first intervals of a day have no look-back (NaN features, as the real feature tables have)."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        open_ = pd.Timestamp(f"{start} 14:30", tz="UTC") + pd.Timedelta(days=day)
        for i in range(per_day):
            at = open_ + pd.Timedelta(minutes=5 * i)
            for instrument in INSTRUMENTS:
                values = dict(zip(FEATURES, rng.normal(size=len(FEATURES))))
                if gaps and i < 2:
                    for name in ("ret_1", "ret_3", "ret_6", "vol_6", "vol_12", "volume_6"):
                        values[name] = np.nan
                signal = values["ret_1"] if values["ret_1"] == values["ret_1"] else 0.0
                rows.append({"instrument": instrument, "event_timestamp": at, **values,
                             "as_of_epoch": float(at.timestamp()),
                             LABEL: int(signal + rng.normal(scale=1.0) > 0)})
    return pd.DataFrame(rows)


def write_training_set(lake, frame):
    from pyiceberg.expressions import AlwaysTrue

    from platformq_assets.ml.lifecycle import to_arrow

    lake.replace_where(f"ml.{MODEL}_training_set", to_arrow(frame), AlwaysTrue())


def ordered(frame):
    return frame.sort_values("event_timestamp", kind="mergesort").reset_index(drop=True)


def seen_rows(frame, split):
    """The rows a version trained or validated on (time_split's train then validation rows, in time order)."""
    return ordered(frame).iloc[:len(split.x_train) + len(split.x_val)]


def register(mlflow, frame, family="linear", cutoff=True, champion=False):
    """Train like ml/<model> does (time_split, arrays) and register as it does; ``cutoff``: record the last
    event time the version trained or validated on (False: a version registered before that tag existed)."""
    from mlflow import sklearn as mlflow_sklearn
    from mlflow.models import infer_signature

    from models.tabular import SKOPS_TRUSTED_TYPES, time_split, train_iterations
    from platformq_assets.ml.lifecycle import mlflow_frames

    split = time_split(frame, FEATURES, LABEL, "event_timestamp")
    pipeline = train_iterations({**CONFIG, "family": family}, split, 4).pipeline()
    example = pd.DataFrame(split.x_val[:5], columns=FEATURES)
    with mlflow.start_run(f"platformq/{MODEL}", run_name="train"), mlflow_frames():
        info = mlflow_sklearn.log_model(pipeline, name="model", input_example=example,
                                        signature=infer_signature(example, pipeline.predict(example.to_numpy())),
                                        skops_trusted_types=SKOPS_TRUSTED_TYPES)
    tags = {CUTOFF_TAG: seen_rows(frame, split)["event_timestamp"].max().isoformat()} if cutoff else {}
    version = mlflow.register(info.model_uri, MODEL, tags=tags)
    if champion:
        mlflow.promote(MODEL, version.version, "test champion")
    return version, pipeline, split


def gate(lake, mlflow, **config):
    """Materialise ml/<model>_evaluation alone, as the training job's last-but-one step does."""
    from dagster import materialize

    from platformq_assets.ml.lifecycle import model_assets

    [evaluation] = [a for a in model_assets(MODEL, AssetKey(["features", "instrument_intervals"]))
                    if a.key == AssetKey(["ml", f"{MODEL}_evaluation"])]
    result = materialize([evaluation], resources={"lake": lake, "mlflow": mlflow}, raise_on_error=False,
                         run_config={"ops": {f"ml__{MODEL}_evaluation": {"config": {
                             "min_metric": 0.0, "min_improvement": -1.0, **config}}}})
    failures = [e.event_specific_data.error.message for e in result.all_events
                if e.is_step_failure and e.event_specific_data and e.event_specific_data.error]
    # a gate that says no fails its (blocking) check, and with it the step: anything else is a crash
    assert all("blocking asset check failed" in f for f in failures), failures
    [check] = result.get_asset_check_evaluations()
    [event] = result.get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    return check.passed, meta, check.metadata["reason"].value


@pytest.fixture
def registry(settings):
    from resources.mlflow import mlflow_resource

    return mlflow_resource(settings)


def served_auc(pipeline, rows):
    """The AUC of the model on ``rows`` as batch scoring / serving feed them (missing features as 0.0)."""
    from models.tabular import score
    from platformq_assets.ml.lifecycle import model_frame

    return round(score(rows[LABEL].to_numpy(), pipeline.predict_proba(model_frame(rows, FEATURES).to_numpy())[:, 1]), 4)


def test_gate_feeds_the_models_the_inputs_they_train_and_serve_on(lake, registry):
    """A linear challenger and a GBM champion, the holdout's first intervals without look-back (NaN): the gate
    neither crashes ("Input X contains NaN") nor scores the GBM on other inputs than it trains and serves on."""
    frame = training_frame(days=10, per_day=24)  # short days: the latest ones' starts are among the rows graded
    write_training_set(lake, frame)
    _, gbm, _ = register(registry, frame, family="gbm", champion=True)
    _, linear, _ = register(registry, frame, family="linear")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        passed, meta, reason = gate(lake, registry)
    assert passed, reason
    # models fitted on arrays, graded on gate_data's frame in the features' order: no feature-name warning, and no
    # hint about integer columns that may miss values (the label never does)
    noise = [str(w.message) for w in seen if "feature names" in str(w.message) or "integer column" in str(w.message)]
    assert not noise, noise
    graded = ordered(frame).iloc[len(frame) - meta["holdout_rows"]:]  # the gate grades the latest rows
    assert graded[FEATURES].isna().any(axis=1).sum() > 0  # some of them without look-back
    assert meta["challenger/roc_auc"] == served_auc(linear, graded)
    assert meta["champion/roc_auc"] == served_auc(gbm, graded)


def test_the_search_never_sees_the_rows_the_gate_grades(lake, registry):
    """time_split leaves the latest rows out of both train and validation; those rows, and only those, are
    the gate's: the challenger was not chosen on them."""
    from models.tabular import time_split

    frame = training_frame(gaps=False)
    split = time_split(frame, FEATURES, LABEL, "event_timestamp")
    seen = seen_rows(frame, split)
    assert len(seen) < len(frame), "the search's train + validation rows are the whole training set"
    test_rows = ordered(frame).iloc[len(seen):]
    assert test_rows["event_timestamp"].min() > seen["event_timestamp"].max()
    assert len(test_rows) >= 0.15 * len(frame) and len(split.x_val) >= 0.15 * len(frame)
    # the end of the training slice (prediction drift's reference starts after it): the last row fitted on
    assert split.fit_cutoff == ordered(frame)["event_timestamp"].iloc[len(split.y_train) - 1] < split.cutoff

    write_training_set(lake, frame)
    _, challenger, _ = register(registry, frame)
    passed, meta, reason = gate(lake, registry)
    assert passed, reason
    assert meta["holdout_rows"] == len(test_rows)
    assert meta["challenger/roc_auc"] == served_auc(challenger, test_rows)


def test_gate_never_grades_a_champion_on_rows_it_trained_on_after_a_backfill(lake, registry):
    """The champion trained on the 4 latest days; older days are backfilled and a challenger trains on all 8.
    The gate grades both only on rows after the later of their two training cutoffs."""
    recent = training_frame(days=4, start="2024-03-08", seed=1, gaps=False)
    _, champion, champion_split = register(registry, recent, champion=True)
    champion_seen = seen_rows(recent, champion_split)

    backfilled = pd.concat([training_frame(days=4, start="2024-03-04", seed=2, gaps=False), recent],
                           ignore_index=True)
    write_training_set(lake, backfilled)
    register(registry, backfilled)
    passed, meta, reason = gate(lake, registry)
    graded = ordered(backfilled)[ordered(backfilled)["event_timestamp"] > champion_seen["event_timestamp"].max()]
    assert passed, reason
    assert meta["holdout_rows"] == len(graded) > 0
    assert meta["champion/roc_auc"] == served_auc(champion, graded)


def test_a_champion_without_a_recorded_cutoff_is_graded_after_the_challengers(lake, registry):
    """A champion registered before cutoffs were recorded counts as trained up to the challenger's cutoff."""
    frame = training_frame(gaps=False)
    write_training_set(lake, frame)
    register(registry, frame, champion=True, cutoff=False)
    _, _, split = register(registry, frame)
    passed, meta, reason = gate(lake, registry)
    assert passed, reason
    assert meta["holdout_rows"] == len(frame) - len(seen_rows(frame, split))


def test_a_challenger_without_a_recorded_cutoff_is_not_graded(lake, registry):
    """A challenger registered before cutoffs were recorded: which rows it trained on is unknown, so the gate
    gives no verdict (it fails and says to train again) rather than grading it on rows it may have seen."""
    frame = training_frame(gaps=False)
    write_training_set(lake, frame)
    challenger, _, _ = register(registry, frame, cutoff=False)
    passed, meta, reason = gate(lake, registry)
    assert not passed and CUTOFF_TAG in reason and f"materialise ml/{MODEL}" in reason
    assert registry.client().get_model_version(MODEL, challenger.version).tags["platformq.stage"] == "dev"


def test_too_few_unseen_rows_fail_the_gate_with_a_reason(lake, registry):
    """A champion trained up to (almost) the end of today's training set leaves the gate nothing fair to
    grade on: it fails, says why, and the challenger stays in dev."""
    frame = training_frame(gaps=False)
    write_training_set(lake, frame)
    champion, _, _ = register(registry, frame, champion=True)
    late = ordered(frame)["event_timestamp"].iloc[-7]  # 2 event times (6 rows) after it
    registry.client().set_model_version_tag(MODEL, champion.version, CUTOFF_TAG, late.isoformat())
    challenger, _, _ = register(registry, frame)
    passed, meta, reason = gate(lake, registry)
    assert not passed
    assert meta["holdout_rows"] == 6
    assert "6 rows" in reason and "at least" in reason
    assert registry.client().get_model_version(MODEL, challenger.version).tags["platformq.stage"] == "dev"


def test_time_split_cuts_between_event_times():
    """Three instruments share every event time and the row-count cut falls inside a group: no event time is
    on both sides of a cut (ret_1 carries the event time's index so the matrices show it)."""
    from models.tabular import time_split

    frame = training_frame(days=1, per_day=101, gaps=False)
    index = {t: i for i, t in enumerate(sorted(frame["event_timestamp"].unique()))}
    frame["ret_1"] = frame["event_timestamp"].map(index).astype("float64")
    assert len(frame) == 303
    split = time_split(frame, FEATURES, LABEL, "event_timestamp")
    column = FEATURES.index("ret_1")
    train, validation = split.x_train[:, column], split.x_val[:, column]
    assert train.max() < validation.min()
    assert len(train) % 3 == 0 and len(validation) % 3 == 0
    unseen = frame[frame["ret_1"] > validation.max()]
    assert len(unseen) % 3 == 0 and len(train) + len(validation) + len(unseen) == len(frame)


def test_a_holdout_of_one_class_fails_the_gate_with_a_reason(lake, registry):
    """Rows no version saw, all of one label (a rare class that did not occur lately): no ROC AUC can judge
    them, so the gate fails and says so (mlflow's evaluate raised on them: the step crashed)."""
    frame = training_frame()
    challenger, _, split = register(registry, frame)
    unseen = ordered(frame)["event_timestamp"] > split.cutoff
    quiet = ordered(frame)
    quiet.loc[unseen, LABEL] = 0
    write_training_set(lake, quiet)
    passed, meta, reason = gate(lake, registry)
    assert not passed and meta["holdout_rows"] == int(unseen.sum()) >= 50
    assert f"hold only {LABEL}=0" in reason and "both classes" in reason
    assert registry.client().get_model_version(MODEL, challenger.version).tags["platformq.stage"] == "dev"


def test_time_split_keeps_a_rare_class_in_every_slice():
    """17 positives among ~700 rows, none in the latest 40 % of event times: the validation and test slices reach
    back until each holds 5 of them (the training slice keeps the other 7); the cuts stay on event-time boundaries.
    With 3 positives there is nothing to share out: the fractional cuts stand."""
    from models.tabular import MIN_CLASS_ROWS, time_split

    frame = ordered(training_frame(days=4, per_day=60, gaps=False))
    frame[LABEL] = 0
    times = sorted(frame["event_timestamp"].unique())
    rare = [times[i] for i in np.linspace(5, int(len(times) * 0.55), 17).astype(int)]
    for t in rare:  # one positive row at each of 17 event times
        frame.loc[frame.index[frame["event_timestamp"] == t][0], LABEL] = 1
    index = {t: i for i, t in enumerate(times)}
    frame["ret_1"] = frame["event_timestamp"].map(index).astype("float64")
    column = FEATURES.index("ret_1")

    split = time_split(frame, FEATURES, LABEL, "event_timestamp")
    test = frame[frame["event_timestamp"] > split.cutoff]
    assert (int(split.y_train.sum()), int(split.y_val.sum()), int(test[LABEL].sum())) == (7, MIN_CLASS_ROWS, MIN_CLASS_ROWS)
    assert split.x_train[:, column].max() < split.x_val[:, column].min() and len(split.x_train) % 3 == 0
    assert len(test) > 0.4 * len(frame)  # the test slice reached back past its 20 %

    sparse = frame.copy()
    sparse[LABEL] = 0
    sparse.loc[sparse.index[:3], LABEL] = 1
    plain = time_split(sparse, FEATURES, LABEL, "event_timestamp")
    assert len(plain.y_train) == int(len(frame) * 0.6) and len(plain.y_val) == int(len(frame) * 0.2)


def test_a_challenger_that_no_longer_passes_the_gate_leaves_staging(lake, registry):
    """Evaluated again (a stricter threshold here; other rows or another champion in practice) and failed: the
    stage it reached before is withdrawn, so the champion asset cannot promote it on the earlier verdict."""
    frame = training_frame(days=10, per_day=24)
    write_training_set(lake, frame)
    champion, _, _ = register(registry, frame, family="gbm", champion=True)
    challenger, _, _ = register(registry, frame, family="linear")
    passed, _, reason = gate(lake, registry)
    assert passed, reason
    staged = registry.version_for(MODEL, "challenger")
    assert staged.tags["platformq.stage"] == "staging"
    assert staged.tags["platformq.staged_against"] == str(champion.version)
    assert str(registry.version_for(MODEL, "staging").version) == str(challenger.version)
    passed, _, reason = gate(lake, registry, min_metric=0.999)
    assert not passed
    withdrawn = registry.version_for(MODEL, "challenger")
    assert withdrawn.tags["platformq.stage"] == "dev" and "no longer passes" in withdrawn.tags["platformq.dev_reason"]
    assert registry.version_for(MODEL, "staging") is None
