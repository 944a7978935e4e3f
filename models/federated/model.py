"""The model every participant trains, and conversions between torch and Flower records.

Flower is imported inside the record helpers, so the platform can rebuild a registered model
(``build_model`` + ``load_numpy``) without importing Flower.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def build_model(num_features: int, num_classes: int, hidden: int = 32, seed: int = 0) -> nn.Module:
    """A one-hidden-layer MLP (Opacus-compatible: Linear and ReLU only)."""
    torch.manual_seed(seed)
    if hidden <= 0:
        return nn.Sequential(nn.Linear(num_features, num_classes))
    return nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def to_numpy(model: nn.Module) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in model.state_dict().values()]


def load_numpy(model: nn.Module, arrays: list[np.ndarray]) -> None:
    keys = list(model.state_dict().keys())
    model.load_state_dict({k: torch.from_numpy(np.asarray(a, dtype=np.float32)) for k, a in zip(keys, arrays)},
                          strict=True)


def to_record(arrays: list[np.ndarray], names: list[str] | None = None):
    from flwr.app import Array, ArrayRecord

    names = names or [f"{i}" for i in range(len(arrays))]
    return ArrayRecord({name: Array(np.asarray(a, dtype=np.float32)) for name, a in zip(names, arrays)})


def from_record(record) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float32) for a in record.to_numpy_ndarrays()]


def accuracy_and_loss(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()
        acc = (logits.argmax(1).numpy() == y).mean().item()
    return float(acc), float(loss)
