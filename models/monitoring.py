"""Drift statistics between a reference sample (the training set) and a current one. No Dagster."""

from __future__ import annotations

import numpy as np

PSI_WARN = 0.1
PSI_ERROR = 0.25
NO_DATA = "no-data"


def severity(value: float) -> str:
    """ok / warn / error from a PSI (as reported: rounded to 4 places, so the number shown and the verdict
    agree); no-data when there was nothing to compare (NaN: an empty day)."""
    if value != value:
        return NO_DATA
    return "error" if value >= PSI_ERROR else "warn" if value >= PSI_WARN else "ok"


def overall_severity(feature_severities, prediction_severity: str) -> str:
    """A day's severity over its features' and its predictions' verdicts: error, else warn, else no-data (a value
    with nothing to compare), else ok."""
    found = {*feature_severities, prediction_severity}
    return next((level for level in ("error", "warn", NO_DATA) if level in found), "ok")


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins (eps-smoothed)."""
    reference = np.asarray(reference, dtype="float64")
    current = np.asarray(current, dtype="float64")
    reference = reference[np.isfinite(reference)]
    current = current[np.isfinite(current)]
    if len(reference) == 0 or len(current) == 0:
        return float("nan")
    quantiles = np.quantile(reference, np.linspace(0, 1, bins + 1))
    edges, held = np.unique(quantiles, return_counts=True)
    if len(edges) < 2:  # constant reference: any change of value is all drift
        same = np.isclose(current, reference[0]).mean()
        ref_share, cur_share = np.array([1.0, 0.0]), np.array([same, 1 - same])
    else:
        # Bins over the distinct quantiles q0 < ... < q_max: per edge the interval up to it, (q_{j-1}, q_j], and
        # (q_max, inf) for values beyond the reference's maximum. A value holding several quantiles (a point mass:
        # a mostly-zero count, a 0/1 flag, a score capped at 1.0) is a bin of its own, [q_j], with the interval
        # below it open, (q_{j-1}, q_j): a shift off the mass, down or up, changes bins wherever the mass sits.
        ref_share = _bin_shares(reference, edges, held > 1)
        cur_share = _bin_shares(current, edges, held > 1)
    eps = 1e-4
    ref_share = np.clip(ref_share, eps, None)
    cur_share = np.clip(cur_share, eps, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def _bin_shares(values: np.ndarray, edges: np.ndarray, atom: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins of :func:`psi`: slot 2j is (edges[j-1], edges[j]] (open at edges[j] when
    it is an atom), slot 2j+1 the atom edges[j] alone (empty for other edges), slot 2k beyond the last edge."""
    j = np.searchsorted(edges, values, side="left")  # the first edge >= value (len(edges): beyond the maximum)
    on_atom = (j < len(edges)) & (values == edges[np.minimum(j, len(edges) - 1)]) & atom[np.minimum(j, len(edges) - 1)]
    slots = 2 * j + on_atom
    return np.bincount(slots, minlength=2 * len(edges) + 1) / len(values)


def ks(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value."""
    from scipy.stats import ks_2samp

    reference = np.asarray(reference, dtype="float64")
    current = np.asarray(current, dtype="float64")
    reference, current = reference[np.isfinite(reference)], current[np.isfinite(current)]
    if not len(reference) or not len(current):  # no sample to compare (a day without values): undefined
        return float("nan"), float("nan")
    result = ks_2samp(reference, current)
    return float(result.statistic), float(result.pvalue)


def drift_report(reference, current, features: list[str]) -> dict[str, dict]:
    """Per feature: PSI, KS statistic and p-value, and a severity (ok / warn / error, no-data) from PSI."""
    report = {}
    for feature in features:
        value = round(psi(reference[feature].to_numpy(), current[feature].to_numpy()), 4)
        statistic, pvalue = ks(reference[feature].to_numpy(), current[feature].to_numpy())
        report[feature] = {"psi": value, "ks": round(statistic, 4), "ks_pvalue": round(pvalue, 6),
                           "severity": severity(value)}
    return report
