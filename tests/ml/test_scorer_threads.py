"""The model service predicts one row on one OpenMP thread, also when it started before any model was loaded.

threadpoolctl limits only the native thread pools loaded when its controller is made. `platformq serve`
builds the scorer before the first request loads a model (and with it scikit-learn's OpenMP runtime),
so a controller made at construction limited nothing: one-row predictions fanned out to every core.
This runs in a fresh interpreter, where scikit-learn is not imported yet when the scorer is built.
"""

import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = r"""
import json, sys
from services.models.scorer import ModelScorer, ModelSpec

class Registry:  # real MLflow (SQLite + local artifacts), reached the way the scorer reaches it
    def __init__(self, home):
        from resources.mlflow import MlflowResource
        self.mlflow = MlflowResource(tracking_uri=f"sqlite:///{home}/mlflow.db", artifact_location=f"file://{home}/art")
    def _mlflow(self):
        return self.mlflow._mlflow()
    def version_for(self, name, alias):
        return self.mlflow.version_for(name, alias)

spec = ModelSpec("m", "svc", "instrument", ("a", "b"), tenant_scoped=False)
online = lambda service, rows: {"a": [0.5] * len(rows), "b": [1.5] * len(rows), "as_of_epoch": [1.7e9] * len(rows)}
registry = Registry(sys.argv[1])
seen = []

class Recording:  # records the threads scikit-learn's tree predictor would use
    def __init__(self, estimator):
        self.estimator = estimator
    def predict_proba(self, row):
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
        seen.append(_openmp_effective_n_threads())
        return self.estimator.predict_proba(row)

class Probe(ModelScorer):  # the loaded model, as the scorer keeps it, wrapped in the recorder
    def _load(self, model, version):
        estimator = super()._load(model, version)
        if not isinstance(estimator, Recording):
            estimator = self._models[(model, version)] = Recording(estimator)
        return estimator

scorer = Probe(registry, online, {"m": spec})
sklearn_loaded_before = "sklearn" in sys.modules

import numpy as np
from mlflow import sklearn as mlflow_sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from models.tabular import SKOPS_TRUSTED_TYPES
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 2))
model = HistGradientBoostingClassifier(max_iter=5).fit(x, (x[:, 0] > 0).astype(int))
with registry.mlflow.start_run("threads"):
    info = mlflow_sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"],
                                    skops_trusted_types=SKOPS_TRUSTED_TYPES)
version = registry.mlflow.register(info.model_uri, "m")
registry.mlflow.promote("m", version.version, "test")

from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
results = [scorer.predict("m", ["AAPL"], "t-acme") for _ in range(3)]
print(json.dumps({"sklearn_loaded_before": sklearn_loaded_before, "outside": _openmp_effective_n_threads(),
                  "inside": seen, "scores": [r[0]["score"] for r in results]}))
"""


def test_one_row_predictions_use_one_openmp_thread_when_the_scorer_predates_the_model(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "4", "PATH": "/usr/bin:/bin",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["sklearn_loaded_before"] is False  # the order `platformq serve` has
    assert out["outside"] == 4  # without a limit scikit-learn would use OMP_NUM_THREADS threads
    assert out["inside"] == [1, 1, 1]
    assert len(out["scores"]) == 3 and all(0.0 <= s <= 1.0 for s in out["scores"])
