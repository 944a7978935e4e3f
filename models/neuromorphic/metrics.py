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
    """SLAYER (float) vs Lava (fixed point): same decision per window, and output spike counts."""
    same = decide(float_counts) == decide(fixed_counts)
    return {
        "decision_agreement": round(float(same.mean()), 4),
        "exact_count_agreement": round(float((float_counts == fixed_counts).all(1).mean()), 4),
        "mean_abs_count_diff": round(float(np.abs(float_counts - fixed_counts).mean()), 4),
        "flagged_float": int(decide(float_counts).sum()), "flagged_fixed": int(decide(fixed_counts).sum()),
    }


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
