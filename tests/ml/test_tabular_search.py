"""The AutoML search on real Ray (in process, loopback): a search in which no trial can train says why; a search
leaves no Ray Tune files behind outside the folder it was given."""

import os
from pathlib import Path

import numpy as np
import pytest

from models.tabular import Split, search
from resources.compute import RayResource


def test_a_search_where_every_trial_fails_names_the_trials_error(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    # labels outside {0, 1}: every family's fit raises inside the trainable
    broken = Split(x[:30], np.full(30, 2), x[30:], np.array([0, 1] * 5))
    ray = RayResource(num_cpus=2, temp_dir=f"/tmp/pqray-test-{os.getpid()}")
    with ray.session(), pytest.raises(RuntimeError) as failed:
        search(broken, num_samples=2, storage_path=str(tmp_path / "tune"), max_failures=0)
    message = str(failed.value)
    assert message.startswith("every trial failed; first error: ValueError")
    assert "classes" in message  # scikit-learn's own words, not Ray's wrapper or "No best trial found"


def test_a_search_without_a_storage_path_leaves_nothing_behind(tmp_path, monkeypatch):
    """Ray Tune's default storage is ~/ray_results: every search of every run added to it. Without a storage path
    the trial files live in a temporary folder for the search only; the result is the same search."""
    import tempfile

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = (x[:, 0] > 0).astype(int)
    split = Split(x[:60], y[:60], x[60:], y[60:])
    default = Path(os.path.expanduser("~/ray_results")) / "platformq_search"
    before = sorted(default.iterdir()) if default.exists() else None
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where this process makes its temporary folders
    ray = RayResource(num_cpus=2, temp_dir=f"/tmp/pqray-test-{os.getpid()}")
    with ray.session():
        result = search(split, num_samples=2, max_failures=0, seed=3)
    assert len(result["trials"]) == 2 and result["best_score"] > 0.8
    assert result["best_config"]["seed"] == 3  # the search's seed is the models' seed too
    assert (sorted(default.iterdir()) if default.exists() else None) == before
    assert list(scratch.iterdir()) == []  # the search's folder is gone


def test_the_mlp_samples_its_own_learning_rate_range():
    """The MLP took min(learning_rate, 0.05) of the GBM's loguniform(0.02, 0.3): two samples in three were 0.05.
    Its own range spreads its trials; the seed given to the search is the one in every trial's config."""
    from models.tabular import IterativeModel, search_space

    space = search_space(seed=11)
    assert space["seed"] == 11
    rates = np.array(space["mlp_learning_rate"].sample(size=3000, random_state=np.random.default_rng(0)))
    assert rates.min() >= 1e-4 and rates.max() <= 0.05 and np.mean(np.isclose(rates, rates.max())) < 0.01
    config = {"family": "mlp", "alpha": 1e-4, "learning_rate": 0.3, "mlp_learning_rate": 0.003, "hidden": 16,
              "max_leaf_nodes": 7, "seed": 11}
    model = IterativeModel(config, 3)
    assert model.estimator.learning_rate_init == 0.003 and model.estimator.random_state == 11
