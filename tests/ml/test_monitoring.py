"""Drift maths on the edge cases real feature columns have (no Dagster, no services)."""

import numpy as np
import pandas as pd
import pytest

from models.monitoring import PSI_ERROR, drift_report, psi


@pytest.mark.parametrize("reference, current", [
    ([0.0] * 95 + [1.0] * 5, [0.0] * 50 + [1.0] * 50),  # a rare 0/1 flag now on half the time
    ([0.0] * 95 + [1.0] * 5, [1.0] * 100),
    ([0.0] * 5 + [1.0] * 95, [0.0] * 60 + [1.0] * 40),  # the mass at the top instead
    ([0.0] * 92 + [3.0] * 8, [7.0] * 100),  # a mostly-zero count whose values moved
    (list(np.zeros(95)) + list(np.linspace(1, 50, 5)), list(np.linspace(1, 50, 100))),  # mostly-zero notional
])
def test_psi_sees_drift_in_point_mass_features(reference, current):
    """A reference whose quantiles collapse onto one value (>= 90 % of the rows) must keep that value in a bin
    of its own: merged into one bin with everything else, any shift scored PSI 0."""
    reference, current = np.array(reference), np.array(current)
    assert psi(reference, current) >= PSI_ERROR
    assert psi(reference, reference.copy()) == pytest.approx(0.0, abs=1e-9)
    report = drift_report(pd.DataFrame({"f": reference}), pd.DataFrame({"f": current}), ["f"])
    assert report["f"]["severity"] == "error"


def test_psi_on_continuous_data_is_unchanged_in_kind():
    rng = np.random.default_rng(4)
    reference = rng.normal(0, 1, 4000)
    assert psi(reference, rng.normal(0, 1, 800)) < 0.1
    assert psi(reference, rng.normal(1, 1, 800)) >= PSI_ERROR
