"""Pipes entry: train the SLAYER network (and the non-spiking baselines) on a window of trading days.

Extras: ``train_files`` (spike-train .npz of the training days), ``out_dir``, ``hidden``, ``epochs``,
``lr``, ``seed``, ``pad`` (the silent steps after each window that scoring counts: the training fit is measured
in scoring's layout). Writes ``network.h5`` (netx export), ``slayer_state.pt`` (the float model),
``baselines.pkl`` and ``model.json`` into ``out_dir``; reports training metadata and the check that
netx loads the export with the trained layer shapes.
"""

import json
import pickle
import time
from pathlib import Path

import numpy as np
from dagster_pipes import open_dagster_pipes

from models.neuromorphic import inference  # noqa: F401  (imports Lava before scikit-learn: fork start method)
from models.neuromorphic import baseline, metrics, network
from models.neuromorphic.encoding import encoding_of, load_npz
from models.neuromorphic.reporting import pipes_metadata


def main() -> None:
    import torch

    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        days = [load_npz(path) for path in extras["train_files"]]
        encodings = {tuple(encoding_of(d).items()) for d in days}
        if len(encodings) > 1:
            raise ValueError(f"the training days were encoded differently: {[dict(e) for e in sorted(encodings)]}; "
                             "re-materialise their spike trains with one encoding config")
        spikes = np.concatenate([d["spikes"] for d in days])
        features = np.concatenate([d["features"] for d in days])
        labels = np.concatenate([d["label"] for d in days])
        out = Path(extras["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        hidden, epochs, lr, seed = extras["hidden"], extras["epochs"], extras["lr"], extras["seed"]

        started = time.perf_counter()
        net, history = network.train(spikes, labels, hidden=hidden, epochs=epochs, lr=lr, seed=seed,
                                     log=pipes.log.info)
        train_seconds = time.perf_counter() - started
        net.export_hdf5(out / "network.h5")
        torch.save(net.state_dict(), out / "slayer_state.pt")
        mlp = baseline.train_mlp(features, labels, seed=seed)
        forest = baseline.train_isolation_forest(features, labels, seed=seed)
        with open(out / "baselines.pkl", "wb") as handle:
            pickle.dump({"mlp": mlp, "isolation_forest": forest}, handle)

        # decided as scoring decides: the window, then ``pad`` silent steps whose spikes count too
        pad = int(extras.get("pad", 2))
        fit_snn = metrics.precision_recall(labels, metrics.decide(
            network.run_slayer(net, spikes, pad=pad)["out_counts"]))
        fit_mlp = metrics.precision_recall(labels, baseline.mlp_scores(mlp, features) >= 0.5)
        description = {
            "sizes": net.sizes, "hidden": hidden, "epochs": epochs, "lr": lr, "seed": seed,
            "neuron": "CUBA-LIF", "neuron_params": {k: v for k, v in network.NEURON_PARAMS.items()},
            "time_steps": int(spikes.shape[2]), "channel_names": days[0]["channel_names"].tolist(),
            "window_us": int(days[0]["window_us"]), "bin_us": int(days[0]["bin_us"]),
            "train_files": list(extras["train_files"]), "training_windows": int(len(labels)),
            "training_positives": int(labels.sum()), "history": history,
            "train_fit": {"snn": fit_snn, "mlp": fit_mlp}, "train_fit_pad": pad,
        }
        (out / "model.json").write_text(json.dumps(description, indent=2))

        from lava.lib.dl import netx

        loaded = netx.hdf5.Network(net_config=str(out / "network.h5"))
        shapes = [int(np.prod(layer.out.shape)) for layer in loaded.layers]
        pipes.report_asset_materialization(metadata=pipes_metadata({
            "network": str(out / "network.h5"),
            "network_bytes": (out / "network.h5").stat().st_size,
            "layers": net.sizes,
            "training_days": len(days),
            "training_windows": int(len(labels)),
            "training_positives": int(labels.sum()),
            "epochs": epochs,
            "final_loss": round(history[-1]["loss"], 5),
            "train_seconds": round(train_seconds, 2),
            "snn_train_precision": fit_snn["precision"], "snn_train_recall": fit_snn["recall"],
            "mlp_train_precision": fit_mlp["precision"], "mlp_train_recall": fit_mlp["recall"],
        }))
        pipes.report_asset_check(check_name="netx_loads_export", passed=shapes == net.sizes[1:],
                                 metadata=pipes_metadata({"netx_layers": shapes, "trained_layers": net.sizes[1:]}))


if __name__ == "__main__":
    main()
