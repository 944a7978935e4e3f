"""The AutoML search on real Ray (in process, loopback): a search in which no trial can train says why."""

import os

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
