"""The lava side's scores file -> rows of ``gold.snn_anomaly_scores`` (one row per instrument window)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def scores_table(path: Path, day: str, model_version: str):
    import numpy as np
    import pyarrow as pa

    from pipelines.partitions import PARTITION_COLUMN

    with np.load(path, allow_pickle=False) as data:
        s = {k: data[k] for k in data.files}
    n = len(s["label"])
    start = pa.array(s["window_start_us"].astype(np.int64)).cast(pa.timestamp("us", tz="UTC"))
    end = pa.array((s["window_start_us"] + int(s["window_us"])).astype(np.int64)).cast(pa.timestamp("us", tz="UTC"))
    steps = float(s["counted_steps"])  # what the spike counts cover: the window and the pad steps after it
    blank = lambda a: pa.array([v or None for v in a.tolist()], pa.string())  # noqa: E731
    return pa.table({
        "instrument": pa.array(s["instrument"].tolist(), pa.string()),
        "window_start": start,
        "window_end": end,
        "label": pa.array(s["label"].astype(bool)),
        "anomaly_type": blank(s["anomaly_type"]),
        "anomaly_id": blank(s["anomaly_id"]),
        "snn_score": pa.array(s["lava_counts"][:, 1] / steps),  # anomalous neuron's spike rate (Lava), 0 to 1
        "snn_flag": pa.array(s["lava_flag"].astype(bool)),
        "lava_normal_spikes": pa.array(s["lava_counts"][:, 0].astype(np.int64)),
        "lava_anomaly_spikes": pa.array(s["lava_counts"][:, 1].astype(np.int64)),
        "slayer_normal_spikes": pa.array(s["slayer_counts"][:, 0].astype(np.int64)),
        "slayer_anomaly_spikes": pa.array(s["slayer_counts"][:, 1].astype(np.int64)),
        "slayer_flag": pa.array(s["slayer_flag"].astype(bool)),
        "baseline_score": pa.array(s["mlp_score"].astype(np.float64)),
        "baseline_flag": pa.array(s["mlp_score"] >= 0.5),
        "isolation_forest_flag": pa.array(s["forest_flag"].astype(bool)),
        "input_spikes": pa.array(s["input_spikes"].astype(np.int64)),
        "hidden_spikes": pa.array(s["lava_hidden"].astype(np.int64)),
        "model_version": pa.array([model_version] * n, pa.string()),
        PARTITION_COLUMN: pa.array([dt.date.fromisoformat(day)] * n, pa.date32()),
    })
