"""Non-spiking baselines on the same windows: a small MLP (supervised, like the SNN) and an IsolationForest.

They read the raw per-bin features the spikes were encoded from (counts, lots, returns, imbalance),
flattened per window, so the comparison is "same windows, same information, no spikes".
"""

from __future__ import annotations

import numpy as np


def flatten(features: np.ndarray) -> np.ndarray:
    """Per-bin values plus each feature's window sum and max (so a burst counts wherever it falls)."""
    return np.concatenate([features.reshape(len(features), -1), features.sum(-1), features.max(-1)], axis=1)


def train_mlp(features: np.ndarray, labels: np.ndarray, seed: int = 0, positive_share: float = 0.08):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    repeat = max(1, int(round(positive_share * len(negatives) / ((1 - positive_share) * max(1, len(positives))))))
    index = rng.permutation(np.concatenate([negatives, np.tile(positives, repeat)]))  # same re-sampling as the SNN
    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=seed))
    model.fit(flatten(features[index]), labels[index])
    return model


def train_isolation_forest(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    from sklearn.ensemble import IsolationForest

    contamination = float(min(0.5, max(1e-3, labels.mean())))
    return IsolationForest(n_estimators=100, contamination=contamination, random_state=seed).fit(flatten(features))


def mlp_scores(model, features: np.ndarray) -> np.ndarray:
    return model.predict_proba(flatten(features))[:, 1]


def isolation_flags(model, features: np.ndarray) -> np.ndarray:
    return (model.predict(flatten(features)) == -1).astype(np.uint8)
