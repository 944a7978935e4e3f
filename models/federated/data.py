"""Participant datasets.

``digits``: scikit-learn's bundled handwritten digits (1,797 images, 8×8 -> 64 features, 10
classes), a fixed stratified 75/25 train/test split; the training part is divided among
participants either IID or by a Dirichlet(α) draw of each class over participants (the usual
label-skew recipe for non-IID experiments). Every participant keeps 20 % of its share for
local evaluation. For tuning (``validation``), a stratified 20 % of the training part is held out
as the server's validation set and only the rest is divided: the test split is never looked at.

``npz``: the platform writes one ``<partition-id>.npz`` per tenant (X_train, y_train, X_test,
y_test) and a ``manifest.json`` naming the tenant of each partition; a participant reads only
its own file.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Split:
    participant: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@functools.lru_cache(maxsize=1)
def digits_train_test(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


@functools.lru_cache(maxsize=1)
def digits_fit_validation(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training part of :func:`digits_train_test` split again, 80/20 stratified (for choosing settings)."""
    from sklearn.model_selection import train_test_split

    x_tr, y_tr, _, _ = digits_train_test(seed)
    x_fit, x_val, y_fit, y_val = train_test_split(x_tr, y_tr, test_size=0.2, random_state=seed, stratify=y_tr)
    return x_fit, y_fit, x_val, y_val


def iid_partition(n: int, num_partitions: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet_partition(labels: np.ndarray, num_partitions: int, alpha: float, seed: int,
                        min_size: int = 5) -> list[np.ndarray]:
    """Split indices so each class is spread over partitions by a Dirichlet(α) draw."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares) * len(idx)).astype(int)[:-1]
            for p, chunk in enumerate(np.split(idx, cuts)):
                parts[p].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"could not draw a Dirichlet({alpha}) split with >= {min_size} samples per partition")


def digits_partition(partition_id: int, num_partitions: int, partitioning: str, alpha: float,
                     seed: int, validation: bool = False) -> Split:
    x_tr, y_tr, _, _ = digits_fit_validation() if validation else digits_train_test()
    if partitioning == "iid":
        parts = iid_partition(len(y_tr), num_partitions, seed)
    elif partitioning == "dirichlet":
        parts = dirichlet_partition(y_tr, num_partitions, alpha, seed)
    else:
        raise ValueError(f"unknown partitioning {partitioning!r} (iid | dirichlet)")
    idx = np.random.default_rng(seed + 1000 + partition_id).permutation(parts[partition_id])
    n_test = max(1, len(idx) // 5)
    test, train = idx[:n_test], idx[n_test:]
    return Split(f"p{partition_id}", x_tr[train], y_tr[train], x_tr[test], y_tr[test])


def write_participant_files(data_dir: Path, splits: list[Split], num_classes: int) -> None:
    """Write the npz layout the clients read (used by the platform and by tests)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for pid, split in enumerate(splits):
        np.savez(data_dir / f"{pid}.npz", x_train=split.x_train, y_train=split.y_train,
                 x_test=split.x_test, y_test=split.y_test)
    (data_dir / "manifest.json").write_text(json.dumps({
        "participants": [s.participant for s in splits], "num_features": int(splits[0].x_train.shape[1]),
        "num_classes": int(num_classes)}))


def npz_partition(data_dir: str, partition_id: int, participant: str = "") -> Split:
    """A participant's file, found by its name in the manifest when given (a tenant's node names
    itself, so enrolling another tenant never shifts it onto someone else's file), else by index."""
    folder = Path(data_dir)
    names = json.loads((folder / "manifest.json").read_text())["participants"]
    if participant:
        if participant not in names:
            raise ValueError(f"participant {participant!r} has no file in {data_dir} (manifest: {names})")
        partition_id = names.index(participant)
    elif not 0 <= partition_id < len(names):
        raise ValueError(f"partition {partition_id} not in {data_dir} ({len(names)} participants)")
    with np.load(folder / f"{partition_id}.npz") as arrays:
        return Split(names[partition_id], arrays["x_train"].astype(np.float32), arrays["y_train"].astype(np.int64),
                     arrays["x_test"].astype(np.float32), arrays["y_test"].astype(np.int64))


def npz_pooled_test(data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(data_dir)
    names = json.loads((folder / "manifest.json").read_text())["participants"]
    parts = [npz_partition(data_dir, i) for i in range(len(names))]
    return np.concatenate([p.x_test for p in parts]), np.concatenate([p.y_test for p in parts])


def load_split(dataset: str, partition_id: int, num_partitions: int, *, data_dir: str = "",
               partitioning: str = "iid", alpha: float = 0.3, seed: int = 0, participant: str = "",
               validation: bool = False) -> Split:
    if dataset == "digits":
        return digits_partition(partition_id, num_partitions, partitioning, alpha, seed, validation)
    if dataset == "npz":
        return npz_partition(data_dir, partition_id, participant)
    raise ValueError(f"unknown dataset {dataset!r} (digits | npz)")


def dataset_shape(dataset: str, data_dir: str = "") -> tuple[int, int]:
    """(features, classes) of a dataset, known to the server without reading participant data."""
    if dataset == "digits":
        return 64, 10
    meta = json.loads((Path(data_dir) / "manifest.json").read_text())
    return int(meta["num_features"]), int(meta["num_classes"])
