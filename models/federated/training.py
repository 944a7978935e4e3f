"""Local training on one participant: SGD with FedProx's proximal term, SCAFFOLD's control-variate
correction and, optionally, Opacus DP-SGD whose RDP accountant history travels with the participant.

Both corrections are data-independent, so they are applied as an exact extra SGD term after the
(possibly noised) data step: for plain SGD, ``w -= lr·(g + μ(w − w_t) + c − c_i)`` equals the data
step followed by ``w -= lr·(μ(w_old − w_t) + c − c_i)`` with ``w_old`` the weights before the step.
Keeping them outside Opacus means per-sample clipping and noise see only the data gradient, as
DP-SGD prescribes, and the proximal term is exactly ∇(μ/2·‖w − w_t‖²).
"""

from __future__ import annotations

import math
import secrets
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models.federated.model import load_numpy, to_numpy


@dataclass(frozen=True)
class DPSpec:
    target_epsilon: float  # calibrates the noise multiplier for the whole planned run
    delta: float
    max_grad_norm: float
    planned_rounds: int


@dataclass
class LocalResult:
    arrays: list[np.ndarray]
    num_examples: int
    loss: float
    steps: int
    epsilon: float = 0.0
    noise_multiplier: float = 0.0
    accountant_history: list[tuple[float, float, int]] = field(default_factory=list)
    new_control: list[np.ndarray] | None = None
    control_delta: list[np.ndarray] | None = None


def class_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(np.minimum(weights, 50.0), dtype=torch.float32)


# With DP-SGD, class weights stop working: each example's gradient is clipped to the same norm, so
# a 50x weight on a rare class is clipped away and the model learns the majority class only. A
# balanced task under DP therefore rebalances by sampling instead: every class keeps at most this
# many times as many rows as the rarest class has, drawn afresh each round.
DP_MAJORITY_RATIO = 1.0


def dp_class_caps(y: np.ndarray, num_classes: int, ratio: float = DP_MAJORITY_RATIO) -> np.ndarray:
    """Rows each class keeps when a balanced task trains under DP (depends on the counts only)."""
    counts = np.bincount(y, minlength=num_classes)
    rarest = counts[counts > 0].min() if (counts > 0).any() else 0
    return np.minimum(counts, int(math.ceil(ratio * rarest)))


def dp_training_size(y: np.ndarray, num_classes: int) -> int:
    """How many rows a balanced DP round trains on: the n its privacy accounting is planned for."""
    return int(dp_class_caps(y, num_classes).sum())


def dp_rebalance(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh class-balanced draw for one round. Which rows are drawn depends on labels, class counts and
    independent randomness only, and the accountant is told the drawn set's size: with the class counts
    treated as public (as Opacus's sampling rate treats the dataset size) the reported ε bounds every
    row's loss; rows not drawn lose nothing that round."""
    rng = np.random.default_rng(seed)
    caps = dp_class_caps(y, num_classes)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), size=int(caps[c]), replace=False)
                                   for c in range(num_classes) if caps[c] > 0]))
    return x[keep], y[keep]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def sample_rate(n: int, batch_size: int) -> float:
    """The Poisson sampling rate Opacus's make_private uses: 1 / (batches per epoch)."""
    return 1.0 / steps_per_epoch(n, batch_size)


def noise_multiplier_for(spec: DPSpec, n: int, batch_size: int, epochs: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    rate = sample_rate(n, batch_size)
    steps = spec.planned_rounds * epochs * steps_per_epoch(n, batch_size)
    return float(get_noise_multiplier(target_epsilon=spec.target_epsilon, target_delta=spec.delta,
                                      sample_rate=rate, steps=steps, accountant="rdp"))


def epsilon_after(history: list[tuple[float, float, int]], delta: float) -> float:
    """ε of a participant whose accountant has this (noise, sample rate, steps) history."""
    from opacus.accountants import RDPAccountant

    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [tuple(h) for h in history]
    return float(accountant.get_epsilon(delta))


def planned_history(history: list, n: int, batch_size: int, epochs: int, noise: float) -> list:
    return [*history, (noise, sample_rate(n, batch_size), epochs * steps_per_epoch(n, batch_size))]


def train_local(model: nn.Module, x: np.ndarray, y: np.ndarray, num_classes: int, *, epochs: int,
                batch_size: int, lr: float, seed: int, mu: float = 0.0, balanced: bool = False,
                server_control: list[np.ndarray] | None = None, client_control: list[np.ndarray] | None = None,
                dp: DPSpec | None = None, accountant_history: list | None = None) -> LocalResult:
    if dp is not None:
        # DP-SGD's guarantee needs noise and sampling nobody else can predict; ``seed`` comes from the run
        # config, which the server sends. A seed from the OS's entropy, never sent or stored, drives the
        # class-balanced draw, Poisson sampling and the noise (Opacus uses torch's default generator).
        seed = secrets.randbits(63)
    torch.manual_seed(seed)
    if dp is not None and balanced:
        x, y = dp_rebalance(x, y, num_classes, seed)
    global_weights = [torch.from_numpy(a.copy()) for a in to_numpy(model)]
    params = list(model.parameters())
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    weight = class_weights(y, num_classes) if balanced else None
    noise = 0.0
    engine = None
    if dp is not None:
        from opacus import PrivacyEngine

        noise = noise_multiplier_for(dp, len(y), batch_size, epochs)
        engine = PrivacyEngine(accountant="rdp")
        engine.accountant.history = [tuple(h) for h in (accountant_history or [])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # secure_mode / RNG advice printed on every call
            module, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise,
                max_grad_norm=dp.max_grad_norm, poisson_sampling=True)
    else:
        module = model

    correction = None
    if server_control is not None and client_control is not None:
        correction = [torch.from_numpy(c - ci) for c, ci in zip(server_control, client_control)]
    module.train()
    steps, total_loss, seen = 0, 0.0, 0
    for _ in range(epochs):
        for xb, yb in loader:
            if len(yb) == 0:  # Poisson sampling can draw an empty batch
                continue
            optimizer.zero_grad()
            per_sample = nn.functional.cross_entropy(module(xb), yb, weight=None, reduction="none")
            if weight is not None:
                per_sample = per_sample * weight[yb]
            loss = per_sample.mean()
            loss.backward()
            before = [p.detach().clone() for p in params] if mu > 0 else None
            optimizer.step()
            with torch.no_grad():
                for i, p in enumerate(params):
                    extra = torch.zeros_like(p)
                    if mu > 0:
                        extra += mu * (before[i] - global_weights[i])
                    if correction is not None:
                        extra += correction[i]
                    if mu > 0 or correction is not None:
                        p -= lr * extra
            steps += 1
            total_loss += loss.item() * len(yb)
            seen += len(yb)

    result = LocalResult(arrays=to_numpy(model), num_examples=int(len(y)), loss=total_loss / max(seen, 1),
                         steps=steps, noise_multiplier=noise)
    if engine is not None:
        result.accountant_history = [tuple(h) for h in engine.accountant.history]
        result.epsilon = float(engine.accountant.get_epsilon(dp.delta))
    if correction is not None:
        # SCAFFOLD option II: c_i+ = c_i − c + (x − y_i) / (K·lr)
        new_control = [ci - c + (xg.numpy() - yi) / (max(steps, 1) * lr)
                       for ci, c, xg, yi in zip(client_control, server_control, global_weights, result.arrays)]
        result.new_control = new_control
        result.control_delta = [n - o for n, o in zip(new_control, client_control)]
    return result


def train_centralised(x: np.ndarray, y: np.ndarray, num_features: int, num_classes: int, *, hidden: int,
                      epochs: int, batch_size: int, lr: float, seed: int, balanced: bool = False) -> nn.Module:
    """The same model and optimiser on pooled data: the baseline a federation is compared with."""
    from models.federated.model import build_model

    model = build_model(num_features, num_classes, hidden, seed)
    train_local(model, x, y, num_classes, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, balanced=balanced)
    return model


__all__ = ["DP_MAJORITY_RATIO", "DPSpec", "LocalResult", "dp_rebalance", "dp_training_size", "epsilon_after", "load_numpy", "noise_multiplier_for", "planned_history",
           "train_centralised", "train_local"]
