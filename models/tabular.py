"""Tabular classifiers and their budgeted AutoML search (Ray Tune + ASHA). No Dagster here.

Both platform models are binary classifiers over a feature frame:
``price_direction`` (does the next 5-minute interval close up?) and ``account_anomaly``
(is this account window part of an anomaly the simulation injected?). The search spans
three model families (linear, gradient boosting, a small MLP); every family trains in
iterations and reports the validation score after each, so ASHA can stop weak trials early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FAMILIES = ("linear", "gbm", "mlp")
# MLflow serialises scikit-learn models with skops, which refuses types it was not told to trust.
# These are the ones our own families produce (we write and read these files ourselves).
SKOPS_TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
]
MAX_ITERATIONS = 8
METRIC = "val_roc_auc"


# The training set is cut by event time into three slices: the earliest rows train, the next ones are the
# search's validation slice (Ray Tune chooses the challenger on them), the latest ones are the test slice
# that only the promotion gate sees (60 % / 20 % / 20 % of the rows; the test fixtures' two simulated days
# leave the gate ~150 rows of each model).
VALIDATION_FRACTION = 0.2
TEST_FRACTION = 0.2
# A rare class (the account model's anomalous windows are ~1 % of rows) can leave a slice with none of its rows:
# no ROC AUC to choose on or gate on. The validation and test slices then reach back in time until each holds at
# least this many rows of every class, as long as the training slice keeps as many.
MIN_CLASS_ROWS = 5


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    # the last event time trained or validated on (a pandas Timestamp): the gate grades only rows after it
    cutoff: Any = None
    test_rows: int = 0  # rows after the cutoff, left out of training and validation
    fit_cutoff: Any = None  # the last event time of the training slice (what the model was fitted on)


def time_cuts(times, validation: float = VALIDATION_FRACTION, test: float = TEST_FRACTION, labels=None,
              min_class_rows: int = MIN_CLASS_ROWS) -> tuple:
    """(validation_start, test_start): the event times at which the validation and the test slice begin.

    The cuts fall on event-time boundaries (rows sharing an event time are never on both sides): each cut is
    the event time of the row at that fraction of the rows in time order; rows before ``validation_start``
    train, rows from it up to ``test_start`` validate, rows at or after ``test_start`` are the test slice
    (``test_start`` is None when ``test`` is 0).

    With ``labels`` (aligned with ``times``), a cut moves earlier where its slice would hold fewer than
    ``min_class_rows`` rows of a class: to the event time of that class's ``min_class_rows``-th latest row in the
    slice's reach. A move that would leave the training slice fewer than ``min_class_rows`` rows of a class is
    not made (the slice keeps its fractional cut, and the gate says when it cannot judge)."""
    import pandas as pd

    if not (0 < validation < 1 and 0 <= test < 1 and validation + test < 1):
        raise ValueError(f"validation ({validation}) and test ({test}) must be fractions leaving rows to train on")
    frame = pd.DataFrame({"t": pd.Series(times).reset_index(drop=True)})
    if labels is not None:
        frame["y"] = pd.Series(labels).reset_index(drop=True)  # positionally aligned with times
    frame = frame.sort_values("t", kind="mergesort").reset_index(drop=True)
    ordered = frame["t"]
    n = len(ordered)
    test_start = ordered.iloc[int(n * (1 - test))] if test > 0 and n else None
    validation_start = ordered.iloc[int(n * (1 - test - validation))] if n else None
    if labels is not None and n and min_class_rows > 0:
        moved_test = _reach_back(frame, test_start, None, min_class_rows) if test_start is not None else None
        moved_validation = _reach_back(frame, min(validation_start, moved_test) if moved_test is not None
                                       else validation_start, moved_test, min_class_rows)
        if moved_validation > ordered.iloc[0] and (moved_test is None or moved_validation < moved_test):
            validation_start, test_start = moved_validation, moved_test
    if (validation_start is None or validation_start <= ordered.iloc[0]
            or (test_start is not None and validation_start >= test_start)):
        raise ValueError(f"{n} rows over {ordered.nunique()} event times are too few to split by time into train, "
                         f"validation ({validation:.0%}) and test ({test:.0%}) slices")
    return validation_start, test_start


def _reach_back(frame, start, end, k: int):
    """The earliest of ``start`` and, per class, the event time that gives the slice [start, end) ``k`` rows of
    it; ``start`` unchanged where that would leave fewer than ``k`` rows of a class before the slice."""
    cut = start
    for value in frame["y"].dropna().unique():
        rows = frame[frame["y"] == value]
        in_reach = rows[rows["t"] < end] if end is not None else rows
        if len(in_reach) < 2 * k or (in_reach["t"] >= start).sum() >= k:
            continue  # too few of the class to keep k on both sides, or the slice already holds k
        cut = min(cut, in_reach["t"].iloc[-k])
    # a move is kept only if every class keeps k rows before the cut (the rows that train)
    before = frame[frame["t"] < cut]
    if cut != start and any((before["y"] == v).sum() < min(k, (frame["y"] == v).sum())
                            for v in frame["y"].dropna().unique()):
        return start
    return cut


def time_split(frame, features: list[str], label: str, time_column: str, validation: float = VALIDATION_FRACTION,
               test: float = TEST_FRACTION) -> Split:
    """Train on the earliest rows, validate on the next ones (no look-ahead), cut at event-time boundaries by
    :func:`time_cuts` (which keeps a rare class in every slice); the latest rows (the test slice) are left out
    for the promotion gate."""
    validation_start, test_start = time_cuts(frame[time_column], validation, test, labels=frame[label])
    frame = frame.sort_values(time_column, kind="mergesort")
    times = frame[time_column]
    train = frame[times < validation_start]
    val = frame[times >= validation_start] if test_start is None else \
        frame[(times >= validation_start) & (times < test_start)]
    return Split(as_matrix(train, features), train[label].to_numpy(dtype=int),
                 as_matrix(val, features), val[label].to_numpy(dtype=int),
                 cutoff=val[time_column].max(), test_rows=len(frame) - len(train) - len(val),
                 fit_cutoff=train[time_column].max())


def model_inputs(frame, features: list[str]):
    """The model's input columns as training, validation, batch scoring and the promotion gate all feed them:
    float64 in ``features`` order, a missing value (no look-back yet, no data in the window) as 0.0 (online
    serving fills a missing value with 0.0 too)."""
    return frame[features].astype("float64").fillna(0.0)


def as_matrix(frame, features: list[str]) -> np.ndarray:
    return model_inputs(frame, features).to_numpy()


def score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC; 0.5 when the validation slice has a single class (no ranking to judge)."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_true)) < 2:
        return 0.5
    return float(roc_auc_score(y_true, proba))


def search_space(seed: int = 7) -> dict:
    """The search's space: one config per trial; each family reads its own keys (``learning_rate`` is the GBM's,
    ``mlp_learning_rate`` Adam's initial step for the MLP, which diverges at the GBM's larger rates)."""
    from ray import tune

    return {
        "family": tune.choice(list(FAMILIES)),
        "alpha": tune.loguniform(1e-5, 1e-2),
        "learning_rate": tune.loguniform(0.02, 0.3),
        "mlp_learning_rate": tune.loguniform(1e-3, 0.05),
        "max_leaf_nodes": tune.choice([7, 15, 31]),
        "hidden": tune.choice([16, 32]),
        "seed": seed,  # the models' random state: the search's seed
    }


class IterativeModel:
    """One family's estimator, trained one iteration at a time (then used through predict_proba)."""

    def __init__(self, config: dict[str, Any], n_features: int):
        from sklearn.preprocessing import StandardScaler

        self.config = dict(config)
        self.scaler = StandardScaler()
        self.iterations = 0
        family, seed = config["family"], int(config.get("seed", 7))
        if family == "linear":
            from sklearn.linear_model import SGDClassifier

            self.estimator = SGDClassifier(loss="log_loss", alpha=float(config["alpha"]), random_state=seed)
        elif family == "gbm":
            from sklearn.ensemble import HistGradientBoostingClassifier

            self.estimator = HistGradientBoostingClassifier(
                learning_rate=float(config["learning_rate"]), max_leaf_nodes=int(config["max_leaf_nodes"]),
                max_iter=10, warm_start=True, early_stopping=False, random_state=seed)
        elif family == "mlp":
            from sklearn.neural_network import MLPClassifier

            self.estimator = MLPClassifier(hidden_layer_sizes=(int(config["hidden"]),), alpha=float(config["alpha"]),
                                           # configs from before mlp_learning_rate: the GBM's rate, capped
                                           learning_rate_init=float(config.get("mlp_learning_rate")
                                                                    or min(float(config["learning_rate"]), 0.05)),
                                           random_state=seed)
        else:
            raise ValueError(f"unknown model family {family!r}; families are {', '.join(FAMILIES)}")
        self.n_features = n_features

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.iterations == 0:
            self.scaler.fit(x)
        xs = self.scaler.transform(x)
        family = self.config["family"]
        if family == "gbm":
            self.estimator.set_params(max_iter=10 * (self.iterations + 1))
            self.estimator.fit(xs, y)
        else:
            for _ in range(5):
                self.estimator.partial_fit(xs, y, classes=np.array([0, 1]))
        self.iterations += 1

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(self.scaler.transform(x))

    def pipeline(self):
        """A fitted sklearn Pipeline (what MLflow logs and serving loads)."""
        from sklearn.pipeline import Pipeline

        return Pipeline([("scale", self.scaler), ("model", self.estimator)])


def train_iterations(config: dict, split: Split, iterations: int, report=None) -> IterativeModel:
    model = IterativeModel(config, split.x_train.shape[1])
    for i in range(iterations):
        model.step(split.x_train, split.y_train)
        if report is not None:
            report({METRIC: score(split.y_val, model.predict_proba(split.x_val)[:, 1]), "iteration": i + 1})
    return model


def tune_trainable(config: dict, split_ref=None) -> None:
    """A Ray Tune function trainable: reports the validation AUC after every iteration."""
    import ray
    from ray import tune

    split = ray.get(split_ref) if isinstance(split_ref, ray.ObjectRef) else split_ref
    node = ray.get_runtime_context().get_node_id()  # where it ran (MLflow skips non-numeric values)
    train_iterations(config, split, MAX_ITERATIONS, report=lambda metrics: tune.report({**metrics, "node_id": node}))


def search(split: Split, num_samples: int, mlflow_tracking_uri: str | None = None, experiment: str | None = None,
           parent_run_id: str | None = None, time_budget_s: float | None = None, storage_path: str | None = None,
           seed: int = 7, max_failures: int = 2) -> dict:
    """Budgeted AutoML over the families with ASHA early stopping; every trial goes to MLflow.

    Ray Tune's own trial files (state, per-trial result logs) go to ``storage_path``; without one, to a temporary
    folder removed after the search (Ray's default, ``~/ray_results``, outside the platform's home, grew by every
    search of every run and home). The search's record is the MLflow runs."""
    import tempfile

    if storage_path is None:
        with tempfile.TemporaryDirectory(prefix="platformq-tune-") as scratch:
            return search(split, num_samples, mlflow_tracking_uri, experiment, parent_run_id, time_budget_s,
                          storage_path=scratch, seed=seed, max_failures=max_failures)
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    callbacks = []
    if mlflow_tracking_uri:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else None
        callbacks.append(MLflowLoggerCallback(tracking_uri=mlflow_tracking_uri, experiment_name=experiment, tags=tags,
                                              save_artifact=False))
    split_ref = ray.put(split)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(tune_trainable, split_ref=split_ref), {"cpu": 1}),
        param_space=search_space(seed),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=num_samples, time_budget_s=time_budget_s,
            scheduler=ASHAScheduler(max_t=MAX_ITERATIONS, grace_period=2, reduction_factor=2),
            search_alg=BasicVariantGenerator(random_state=seed),
        ),
        # a trial whose node dies (worker lost, pre-empted) is retried elsewhere instead of failing the search
        run_config=tune.RunConfig(name="platformq_search", storage_path=storage_path, callbacks=callbacks, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    results = tuner.fit()
    # before get_best_result: with no successful trial it raises a message that hides the cause
    errors = [_trial_error(r.error) for r in results if r.error is not None]
    if errors and len(errors) == len(results):
        raise RuntimeError(f"every trial failed; first error: {errors[0]}")
    best = results.get_best_result(metric=METRIC, mode="max", scope="last")
    trials = []
    for result in results:
        if result.metrics is None or result.error is not None:
            continue
        trials.append({"family": result.config["family"], METRIC: result.metrics.get(METRIC),
                       "iterations": result.metrics.get("training_iteration"),
                       "stopped_early": (result.metrics.get("training_iteration") or 0) < MAX_ITERATIONS,
                       "node_id": result.metrics.get("node_id")})
    return {"best_config": {k: v for k, v in best.config.items()}, "best_score": float(best.metrics[METRIC]),
            "best_iterations": int(best.metrics.get("training_iteration") or MAX_ITERATIONS), "trials": trials,
            "failed_trials": errors}


def _trial_error(error: BaseException) -> str:
    """What went wrong in a trial, in one line: the trainable's own exception, not Ray's wrapper
    (whose first line is only "ray::ImplicitFunc.train() (pid=..., ip=...)")."""
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:300]
