"""Pipes entry: score one trading day's windows with the exported network on Lava (fixed point).

Extras: ``spikes`` (the day's windows), ``model_dir`` (from training), ``out`` (scores .npz), ``pad``,
``backend``, ``partition`` (SLURM, hardware only), ``agreement_threshold``. The same windows also go
through SLAYER (float, torch) and the non-spiking baselines, so the checks compare like with like.
"""

import json
import pickle
import time
from pathlib import Path

import numpy as np
from dagster_pipes import open_dagster_pipes

from models.neuromorphic import inference
from models.neuromorphic import baseline, metrics, network
from models.neuromorphic.encoding import encoding_of, load_npz
from models.neuromorphic.reporting import pipes_metadata


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        windows = load_npz(extras["spikes"])
        model_dir = Path(extras["model_dir"])
        description = json.loads((model_dir / "model.json").read_text())
        spikes, labels = windows["spikes"], windows["label"]
        trained = {"channels": description["sizes"][0], "time_steps": description["time_steps"],
                   "window_us": description["window_us"], "bin_us": description["bin_us"]}
        if encoding_of(windows) != trained:
            raise ValueError(f"the day's windows were encoded as {encoding_of(windows)}, the network was trained on "
                             f"{trained}: re-materialise the day's spike trains with the encoding config of the "
                             "network's training days (or retrain)")
        if not len(labels):
            _empty_day(pipes, extras, windows, description)
            return

        net = network.load_network(model_dir / "slayer_state.pt", description["sizes"][0], description["hidden"])
        started = time.perf_counter()
        slayer_out = network.run_slayer(net, spikes, pad=extras["pad"])
        slayer_seconds = time.perf_counter() - started
        lava_out = inference.run_lava(model_dir / "network.h5", spikes, pad=extras["pad"],
                                      backend=extras["backend"], partition=extras.get("partition"))
        with open(model_dir / "baselines.pkl", "rb") as handle:
            baselines = pickle.load(handle)
        mlp_score = baseline.mlp_scores(baselines["mlp"], windows["features"])
        forest_flag = baseline.isolation_flags(baselines["isolation_forest"], windows["features"])

        lava_flag = metrics.decide(lava_out["out_counts"])
        slayer_flag = metrics.decide(slayer_out["out_counts"])
        snn = metrics.precision_recall(labels, lava_flag)
        snn_float = metrics.precision_recall(labels, slayer_flag)
        mlp = metrics.precision_recall(labels, mlp_score >= 0.5)
        forest = metrics.precision_recall(labels, forest_flag)
        agree = metrics.agreement(slayer_out["out_counts"], lava_out["out_counts"])
        energy = metrics.energy_proxy(spikes, lava_out["hidden_counts"], lava_out["out_counts"], description["sizes"])
        np.savez_compressed(
            extras["out"], lava_counts=lava_out["out_counts"], slayer_counts=slayer_out["out_counts"],
            lava_hidden=lava_out["hidden_counts"], input_spikes=spikes.sum((1, 2)).astype(np.int64),
            lava_flag=lava_flag, slayer_flag=slayer_flag, mlp_score=mlp_score.astype(np.float64),
            forest_flag=forest_flag, label=labels, anomaly_type=windows["anomaly_type"],
            anomaly_id=windows["anomaly_id"], instrument=windows["instrument"],
            window_start_us=windows["window_start_us"], window_us=windows["window_us"],
            time_steps=np.int64(spikes.shape[2]),
            counted_steps=np.int64(spikes.shape[2] + extras["pad"]))  # the counts cover the window and its pad

        events = int(spikes.sum())
        pipes.log.info(f"scored {len(labels)} windows on Lava ({lava_out['backend']}) in "
                       f"{lava_out['run_seconds']:.1f}s; SLAYER on torch in {slayer_seconds:.3f}s")
        pipes.report_asset_materialization(metadata=pipes_metadata({
            "windows": int(len(labels)), "anomalous_windows": int(labels.sum()),
            "flagged_lava": int(lava_flag.sum()), "flagged_slayer": int(slayer_flag.sum()),
            "backend": lava_out["backend"], "lava_steps": lava_out["steps"],
            "lava_run_seconds": round(lava_out["run_seconds"], 3),
            "lava_input_events_per_s": round(events / lava_out["run_seconds"], 1),
            "slayer_seconds": round(slayer_seconds, 4),
            "slayer_input_events_per_s": round(events / max(slayer_seconds, 1e-9), 1),
            "snn_precision": snn["precision"], "snn_recall": snn["recall"], "snn_f1": snn["f1"],
            "mlp_precision": mlp["precision"], "mlp_recall": mlp["recall"], "mlp_f1": mlp["f1"],
            "decision_agreement": agree["decision_agreement"],
            "synops_per_inference": energy["synops_per_inference"],
            "spikes_per_inference": energy["spikes_per_inference"],
        }))
        threshold = extras["agreement_threshold"]
        pipes.report_asset_check(
            check_name="float_fixed_point_agreement", passed=metrics.agreement_passes(agree, threshold),
            metadata=pipes_metadata({**agree, "threshold": threshold,
                                     "rule": "decision_agreement and flagged_agreement >= threshold"}))
        pipes.report_asset_check(
            check_name="snn_vs_baseline", passed=snn["f1"] >= 0.5 * mlp["f1"],
            metadata={"rule": "SNN (Lava fixed point) F1 >= half the MLP baseline's F1 on the same windows",
                      **{f"snn_lava_{k}": v for k, v in snn.items()},
                      **{f"snn_slayer_{k}": snn_float[k] for k in ("precision", "recall", "f1")},
                      **{f"mlp_{k}": mlp[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")},
                      **{f"isolation_forest_{k}": forest[k] for k in ("precision", "recall", "f1")}})
        pipes.report_asset_check(
            check_name="energy_proxy", passed=energy["synops_per_inference"] < energy["dense_macs_per_inference"],
            metadata={**energy, "note": "synaptic operations and spikes per window (inference); real energy "
                                        "needs Loihi hardware"})


def _empty_day(pipes, extras, windows, description) -> None:
    """A day without trades or orders has no windows: no rows, and checks that pass saying there was nothing to
    compare (neither the network nor Lava runs on zero windows)."""
    outputs = description["sizes"][-1]
    np.savez_compressed(
        extras["out"], lava_counts=np.zeros((0, outputs), np.int64), slayer_counts=np.zeros((0, outputs), np.int64),
        lava_hidden=np.zeros(0, np.int64), input_spikes=np.zeros(0, np.int64), lava_flag=np.zeros(0, np.uint8),
        slayer_flag=np.zeros(0, np.uint8), mlp_score=np.zeros(0, np.float64), forest_flag=np.zeros(0, np.uint8),
        label=windows["label"], anomaly_type=windows["anomaly_type"], anomaly_id=windows["anomaly_id"],
        instrument=windows["instrument"], window_start_us=windows["window_start_us"], window_us=windows["window_us"],
        time_steps=np.int64(windows["spikes"].shape[2]),
        counted_steps=np.int64(windows["spikes"].shape[2] + extras["pad"]))
    note = "no windows this day (no trades or orders): nothing scored"
    pipes.log.warning(note)
    pipes.report_asset_materialization(metadata={"windows": 0, "anomalous_windows": 0, "flagged_lava": 0,
                                                 "flagged_slayer": 0, "empty_day": True, "note": note})
    for check in ("float_fixed_point_agreement", "snn_vs_baseline", "energy_proxy"):
        pipes.report_asset_check(check_name=check, passed=True, metadata={"windows": 0, "note": note})


if __name__ == "__main__":
    main()
