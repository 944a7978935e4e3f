"""Pipes entry: one trading day's order and trade events -> labelled spike-train windows.

Extras: ``events`` (the .npz the Dagster side wrote), ``out`` (where the windows go), ``encoding``
(EncodingConfig fields). Reports the windows as materialisation metadata and the check that every
labelled anomaly of the day falls inside at least one window.
"""

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
from dagster_pipes import open_dagster_pipes

from models.neuromorphic.encoding import EncodingConfig, anomalies_in_windows, encode_day, load_npz
from models.neuromorphic.reporting import pipes_metadata


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        config = EncodingConfig(**(extras.get("encoding") or {}))
        events = load_npz(extras["events"])
        started = time.perf_counter()
        windows = encode_day(events, config)
        seconds = time.perf_counter() - started
        # written beside it, then renamed: a crash mid-write leaves no half file that training would pick up
        out = Path(extras["out"])
        partial = out.with_name(f".{out.name}.partial")
        with open(partial, "wb") as handle:
            np.savez_compressed(handle, **windows)
        os.replace(partial, out)
        spikes, labels = windows["spikes"], windows["label"]
        kinds = windows["anomaly_type"][labels == 1]
        expected = set(events["label_id"].tolist())
        covered = anomalies_in_windows(events, windows)
        if len(labels):
            pipes.log.info(f"encoded {len(labels)} windows ({int(labels.sum())} anomalous) in {seconds:.2f}s")
        else:  # a closed venue: an empty day, stored (training skips it, scoring writes no rows) rather than failed
            pipes.log.warning("no trades or orders this day: no windows (an empty day)")
        pipes.report_asset_materialization(metadata=pipes_metadata({
            "path": extras["out"],
            "windows": int(len(labels)),
            "anomalous_windows": int(labels.sum()),
            "anomalous_by_type": {k: int((kinds == k).sum()) for k in sorted(set(kinds.tolist()))},
            "instruments": sorted(set(windows["instrument"].tolist())),
            "channels": int(spikes.shape[1]),
            "channel_names": windows["channel_names"].tolist(),
            "time_steps": int(spikes.shape[2]),
            "bin_ms": int(windows["bin_us"]) // 1000,
            "encoding": dataclasses.asdict(config),
            "input_spikes": int(spikes.sum()),
            "input_spikes_per_window": round(float(spikes.sum((1, 2)).mean()), 3) if len(labels) else 0.0,
            "spike_density": round(float(spikes.mean()), 5) if len(labels) else 0.0,
            "empty_day": not len(labels),
            "encode_seconds": round(seconds, 3),
        }))
        pipes.report_asset_check(
            check_name="labelled_anomalies_in_windows", passed=expected <= covered,
            metadata={"labelled_anomalies": len(expected), "covered": len(expected & covered),
                      "missing": ", ".join(sorted(expected - covered)) or "none"})


if __name__ == "__main__":
    main()
