"""Run inside .venv-lava by test_lava_network.py: a small SNN trained, exported and run on Lava.

Synthetic windows where an anomaly is a burst on two channels among sparse noise; prints one JSON
line with what the test asserts on (so the test itself runs in the main environment).
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from models.neuromorphic import inference  # Lava first (it fixes the multiprocessing start method)
from models.neuromorphic import baseline, metrics, network


def windows(n: int, seed: int, channels: int = 8, steps: int = 10):
    rng = np.random.default_rng(seed)
    spikes = (rng.random((n, channels, steps)) < 0.03).astype(np.uint8)
    labels = (rng.random(n) < 0.2).astype(np.uint8)
    for i in np.flatnonzero(labels):
        t = rng.integers(0, steps - 4)
        spikes[i, :2, t:t + 3] = 1
    features = spikes.astype(np.float32)
    return spikes, features, labels


def main() -> None:
    train_x, train_f, train_y = windows(600, 1)
    test_x, test_f, test_y = windows(200, 2)
    net, history = network.train(train_x, train_y, hidden=12, epochs=int(sys.argv[1]), lr=0.05, seed=0,
                                 positive_share=0.3)  # 20 % of these windows are anomalous
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.h5"
        net.export_hdf5(path)
        lava = inference.run_lava(path, test_x, pad=2)
        try:
            inference.run_config("loihi2_hw")
            hardware_error = ""
        except RuntimeError as error:
            hardware_error = str(error)
        try:  # what scoring with PLATFORMQ_LAVA_BACKEND=loihi2_hw does
            inference.run_lava(path, test_x[:2], pad=2, backend="loihi2_hw")
            hardware_run_error = ""
        except Exception as error:
            hardware_run_error = f"{type(error).__name__}: {error}"
    slayer = network.run_slayer(net, test_x, pad=2)
    mlp = baseline.train_mlp(train_f, train_y, positive_share=0.3)
    print(json.dumps({
        "history": history,
        "lava_out_shape": list(lava["out_counts"].shape), "steps": lava["steps"],
        "lava_output_spikes": int(lava["out_counts"].sum()), "lava_hidden_spikes": int(lava["hidden_counts"].sum()),
        "slayer_hidden_spikes": int(slayer["hidden_counts"].sum()),
        "agreement": metrics.agreement(slayer["out_counts"], lava["out_counts"]),
        "snn_lava": metrics.precision_recall(test_y, metrics.decide(lava["out_counts"])),
        "snn_slayer": metrics.precision_recall(test_y, metrics.decide(slayer["out_counts"])),
        "mlp": metrics.precision_recall(test_y, baseline.mlp_scores(mlp, test_f) >= 0.5),
        "energy": metrics.energy_proxy(test_x, lava["hidden_counts"], lava["out_counts"], net.sizes),
        "input_spikes": int(test_x.sum()), "sizes": net.sizes,
        "hardware_error": hardware_error, "hardware_run_error": hardware_run_error,
    }))


if __name__ == "__main__":
    main()
