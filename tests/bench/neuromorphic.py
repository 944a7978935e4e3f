"""Neuromorphic benchmarks (`make bench`, section `neuromorphic`), in two halves:

* main environment (``bench_neuromorphic``): simulate trading days into a temporary lake and write each
  day's events as the Dagster side does (``platformq_assets.neuromorphic.events``);
* lava environment (this file run as a script): encode, train the SNN and the baselines on all days
  but the last, then score the last day with the same network and input through SLAYER on torch
  (float) and through Lava's fixed-point Loihi 2 CPU simulation; one JSON line back.

Printed: inference events/s (input spikes consumed per second) Lava vs SLAYER, windows/s, SNN vs
MLP-baseline precision/recall (plus an IsolationForest), float/fixed agreement, synops per inference.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench_neuromorphic(report, days: int = 6, scale: float = 0.5, seeds: int = 3):
    import datetime as dt

    from platformq_assets.neuromorphic.events import write_day_events
    from resources.lake import LakeResource
    from resources.settings import Settings
    from tests.neuromorphic.seed import seed_days

    python = Settings().lava_python
    if not Path(python).exists():
        raise SystemExit(f"neuromorphic bench: {python} is missing; create it with `make setup`")
    names = [(dt.date(2024, 1, 2) + dt.timedelta(days=i)).isoformat() for i in range(days)]
    with tempfile.TemporaryDirectory() as tmp:
        lake = LakeResource(catalog_uri=f"sqlite:///{tmp}/catalog.db", warehouse=f"file://{tmp}/warehouse")
        seed_days(lake, names, scale=scale)
        files = []
        for day in names:
            path = Path(tmp) / "events" / f"{day}.npz"
            write_day_events(lake, day, path)
            files.append(str(path))
        out = subprocess.run([str(python), str(Path(__file__).resolve()), str(seeds), *files], cwd=ROOT,
                             capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                                   "PYTHONWARNINGS": "ignore"})
    if out.returncode:
        raise SystemExit(f"neuromorphic bench failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  network {r['sizes']} CUBA-LIF, {r['windows']} windows x {r['time_steps']} steps (+{r['extra_steps']} "
          f"lead/pad), trained on {days - 1} days ({r['training_positives']} anomalous windows), scored on 1 day "
          f"({r['positives']} anomalous)", flush=True)
    lava, torch_ = r["lava"], r["slayer"]
    report("SNN inference Lava vs SLAYER", f"{lava['events_per_s']:,.0f}", "events/s",
           f"{torch_['events_per_s']:,.0f}", "events/s", lava["events_per_s"] / torch_["events_per_s"],
           "reported", True)
    report("SNN windows/s Lava vs SLAYER", f"{lava['windows_per_s']:,.1f}", "windows/s",
           f"{torch_['windows_per_s']:,.1f}", "windows/s", lava["windows_per_s"] / torch_["windows_per_s"],
           "reported", True)
    print(f"  Lava: {lava['steps']} time steps in {lava['run_seconds']:.2f}s run ({lava['total_seconds']:.2f}s with "
          f"process build/compile), {lava['steps'] / lava['run_seconds']:,.0f} steps/s; SLAYER: "
          f"{torch_['seconds'] * 1000:.1f} ms (median of 5)", flush=True)
    for seed, q in enumerate(r["quality"]):
        snn, mlp, forest = q["snn_lava"], q["mlp"], q["isolation_forest"]
        report(f"SNN vs MLP P/R (seed {seed})", f"{snn['precision']:.2f}/{snn['recall']:.2f}", "P/R",
               f"{mlp['precision']:.2f}/{mlp['recall']:.2f}", "P/R (MLP)",
               snn["f1"] / mlp["f1"] if mlp["f1"] else float("nan"), "reported", True)
        print(f"  seed {seed}: F1 SNN {snn['f1']:.3f} (SLAYER float {q['snn_slayer']['f1']:.3f}), MLP {mlp['f1']:.3f}, "
              f"IsolationForest {forest['precision']:.2f}/{forest['recall']:.2f} F1 {forest['f1']:.3f}; "
              f"decision agreement {q['agreement']['decision_agreement']:.4f}, exact counts "
              f"{q['agreement']['exact_count_agreement']:.4f}", flush=True)
    e = r["energy"]
    print(f"  energy proxy per inference: {e['synops_per_inference']:.1f} synops, "
          f"{e['spikes_per_inference']:.1f} spikes "
          f"({e['input_spikes_per_inference']:.1f} in, {e['hidden_spikes_per_inference']:.1f} hidden, "
          f"{e['output_spikes_per_inference']:.1f} out) vs {e['dense_macs_per_inference']} MACs for the same dense "
          f"network ({e['synops_vs_dense_macs']:.3f}x); real energy needs Loihi hardware", flush=True)


def lava_main(seeds: int, files: list[str]) -> None:
    """Runs in .venv-lava."""
    import statistics

    import numpy as np

    from models.neuromorphic import inference  # Lava first (multiprocessing start method)
    from models.neuromorphic import baseline, layout, metrics, network
    from models.neuromorphic.encoding import encode_day, load_npz

    pad = 2
    days = [encode_day(load_npz(f)) for f in files]
    train, test = days[:-1], days[-1]
    x = np.concatenate([d["spikes"] for d in train])
    y = np.concatenate([d["label"] for d in train])
    f = np.concatenate([d["features"] for d in train])
    spikes, labels = test["spikes"], test["label"]
    events = int(spikes.sum())
    quality, timing = [], None
    for seed in range(seeds):
        net, _ = network.train(x, y, seed=seed)
        mlp = baseline.train_mlp(f, y, seed=seed)
        forest = baseline.train_isolation_forest(f, y, seed=seed)
        slayer = network.run_slayer(net, spikes, pad=pad)
        with tempfile.TemporaryDirectory() as tmp:
            net.export_hdf5(Path(tmp) / "net.h5")
            lava = inference.run_lava(Path(tmp) / "net.h5", spikes, pad=pad)
        quality.append({
            "snn_lava": metrics.precision_recall(labels, metrics.decide(lava["out_counts"])),
            "snn_slayer": metrics.precision_recall(labels, metrics.decide(slayer["out_counts"])),
            "mlp": metrics.precision_recall(labels, baseline.mlp_scores(mlp, test["features"]) >= 0.5),
            "isolation_forest": metrics.precision_recall(labels, baseline.isolation_flags(forest, test["features"])),
            "agreement": metrics.agreement(slayer["out_counts"], lava["out_counts"]),
        })
        if timing is None:  # timings on the first network (same network, same input for both)
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                network.run_slayer(net, spikes, pad=pad)
                runs.append(time.perf_counter() - t)
            slayer_s = statistics.median(runs)
            timing = {
                "slayer": {"seconds": slayer_s, "events_per_s": events / slayer_s,
                           "windows_per_s": len(labels) / slayer_s},
                "lava": {"run_seconds": lava["run_seconds"], "total_seconds": lava["total_seconds"],
                         "steps": lava["steps"], "events_per_s": events / lava["run_seconds"],
                         "windows_per_s": len(labels) / lava["run_seconds"]},
                "energy": metrics.energy_proxy(spikes, lava["hidden_counts"], lava["out_counts"], net.sizes),
                "sizes": net.sizes,
            }
    print(json.dumps({**timing, "quality": quality, "windows": int(len(labels)), "time_steps": int(spikes.shape[2]),
                      "extra_steps": layout.LEAD + pad, "positives": int(labels.sum()),
                      "training_positives": int(y.sum()), "events": events}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    lava_main(int(sys.argv[1]), sys.argv[2:])
