"""Scores for the detector: precision/recall, float-vs-fixed-point agreement, an energy proxy (numpy only)."""

from __future__ import annotations

import numpy as np


def decide(out_counts: np.ndarray) -> np.ndarray:
    """Window flagged when the anomalous neuron (index 1) fires strictly more than the normal one (ties: normal)."""
    return (out_counts[:, 1] > out_counts[:, 0]).astype(np.uint8)


def precision_recall(labels: np.ndarray, flags: np.ndarray) -> dict:
    labels, flags = labels.astype(bool), flags.astype(bool)
    tp = int((labels & flags).sum())
    fp = int((~labels & flags).sum())
    fn = int((labels & ~flags).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "tp": tp, "fp": fp,
            "fn": fn, "windows": int(len(labels)), "positives": int(labels.sum())}


def agreement(float_counts: np.ndarray, fixed_counts: np.ndarray) -> dict:
    """SLAYER (float) vs Lava (fixed point): same decision per window, and output spike counts.

    ``flagged_agreement``: of the windows either side flags, the share both flag (1.0 when neither flags any).
    Anomalies are rare, so the decision agreement over all windows says little on its own: a Lava run that flagged
    nothing still agreed on 99.6 % of a day's windows when SLAYER flagged 8 of 1,950.
    """
    float_flag, fixed_flag = decide(float_counts).astype(bool), decide(fixed_counts).astype(bool)
    same = float_flag == fixed_flag
    either = int((float_flag | fixed_flag).sum())
    return {
        "decision_agreement": round(float(same.mean()), 4),
        "flagged_agreement": round(float((float_flag & fixed_flag).sum()) / either, 4) if either else 1.0,
        "flagged_disagreements": int((float_flag != fixed_flag).sum()),
        "exact_count_agreement": round(float((float_counts == fixed_counts).all(1).mean()), 4),
        "mean_abs_count_diff": round(float(np.abs(float_counts - fixed_counts).mean()), 4),
        "flagged_float": int(decide(float_counts).sum()), "flagged_fixed": int(decide(fixed_counts).sum()),
    }


FLAGGED_TOLERANCE = 1  # windows one side flags and the other not, allowed whatever their share


def agreement_passes(agree: dict, threshold: float) -> bool:
    """The float/fixed-point check: the same decision on ``threshold`` of the windows, and of the flagged ones, or
    at most one flagged window apart: with the few windows a day flags, one borderline window whose spike count
    rounds the other way in fixed point (8 of 9 agree) would fail a blocking check on its own."""
    flagged_ok = (agree["flagged_agreement"] >= threshold
                  or agree.get("flagged_disagreements", FLAGGED_TOLERANCE + 1) <= FLAGGED_TOLERANCE)
    return agree["decision_agreement"] >= threshold and flagged_ok


def energy_proxy(input_spikes: np.ndarray, hidden_counts: np.ndarray, out_counts: np.ndarray,
                 sizes: list[int]) -> dict:
    """Synaptic operations and spikes per inference (one window), the usual neuromorphic energy proxy.

    Every spike into a dense layer costs one synaptic operation per outgoing synapse: input spikes
    fan out to ``sizes[1]`` hidden neurons, hidden spikes to ``sizes[2]`` outputs. A dense
    (non-spiking) network of the same shape performs ``T * (C*H + H*O)`` multiply-accumulates.
    """
    per_window_input = input_spikes.reshape(len(input_spikes), -1).sum(1)
    synops = per_window_input * sizes[1] + hidden_counts * sizes[2]
    steps = input_spikes.shape[-1]
    dense_macs = steps * (sizes[0] * sizes[1] + sizes[1] * sizes[2])
    return {
        "synops_per_inference": round(float(synops.mean()), 2),
        "spikes_per_inference": round(float((per_window_input + hidden_counts + out_counts.sum(1)).mean()), 2),
        "input_spikes_per_inference": round(float(per_window_input.mean()), 2),
        "hidden_spikes_per_inference": round(float(hidden_counts.mean()), 2),
        "output_spikes_per_inference": round(float(out_counts.sum(1).mean()), 2),
        "dense_macs_per_inference": int(dense_macs),
        "synops_vs_dense_macs": round(float(synops.mean()) / dense_macs, 4),
    }
