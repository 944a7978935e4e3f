"""Drift maths on the edge cases real feature columns have (no Dagster, no services)."""

import numpy as np
import pandas as pd
import pytest

from models.monitoring import PSI_ERROR, PSI_WARN, drift_report, psi


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


def test_the_severity_is_the_one_of_the_psi_shown():
    """A PSI of 0.09996 is shown as 0.1: its verdict is warn, the same the checks read from the shown value."""
    reference = np.array([0.0] * 95 + [1.0] * 5)
    current = np.array([0.0] * (100_000 - 13_911) + [1.0] * 13_911)
    assert 0.09995 <= psi(reference, current) < 0.1
    [entry] = drift_report(pd.DataFrame({"f": reference}), pd.DataFrame({"f": current}), ["f"]).values()
    assert (entry["psi"], entry["severity"]) == (0.1, "warn")


def test_a_day_without_rows_has_no_verdict_rather_than_ok():
    reference = pd.DataFrame({"f": np.linspace(0, 1, 100)})
    [entry] = drift_report(reference, reference.iloc[0:0], ["f"]).values()
    assert entry["severity"] == "no-data" and entry["psi"] != entry["psi"]


def test_psi_sees_a_point_mass_at_the_top_move_and_values_beyond_the_reference_maximum():
    """The top of the reference's range keeps bins of its own: a point mass at the maximum (one value holding
    several quantiles) is its own bin, and values beyond the maximum are one more. With the maximum dropped from
    the edges, 15 % of the rows moving from 1.0 to 0.97, or a 0/1 count now reaching 5, scored PSI 0."""
    rng = np.random.default_rng(3)
    uniform = rng.uniform(0, 1, 8500)
    reference = np.concatenate([uniform, np.ones(1500)])
    moved = np.concatenate([rng.uniform(0, 1, 8500), np.full(1500, 0.97)])
    assert psi(reference, moved) >= PSI_ERROR
    assert psi(reference, np.concatenate([rng.uniform(0, 1, 8500), np.ones(1500)])) < 0.01
    counts = np.array([0.0] * 95 + [1.0] * 5)
    assert psi(counts, np.array([0.0] * 95 + [5.0] * 5)) >= PSI_WARN
    assert psi(counts, np.array([0.0] * 80 + [5.0] * 20)) >= PSI_ERROR
    assert psi(counts, counts.copy()) == pytest.approx(0.0, abs=1e-9)


def test_the_overall_severity_counts_the_predictions_too():
    """A day whose features look like training but whose scores drifted is an error day: its severity (what the
    alert sensor reads) said ok, and the prediction drift was never alerted as such."""
    from models.monitoring import NO_DATA, overall_severity

    assert overall_severity(["ok", "ok"], "error") == "error"
    assert overall_severity(["ok", "warn"], "error") == "error"
    assert overall_severity(["ok"], "warn") == "warn"
    assert overall_severity(["error"], "ok") == "error"
    assert overall_severity(["ok"], NO_DATA) == NO_DATA
    assert overall_severity([NO_DATA], "warn") == "warn"
    assert overall_severity(["ok"], "ok") == "ok"
