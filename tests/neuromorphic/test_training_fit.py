"""The SNN's training fit (``snn_train_precision``/``recall``, logged to MLflow, and ``model.json``) is measured on the
windows laid out as scoring lays them out: the window, then the ``pad`` silent steps whose output spikes scoring
counts. It was measured without them, and the steps counted change the decisions: the figures described a
detector other than the one that scores."""

import json
import subprocess

import numpy as np
import pytest

from platformq_assets.neuromorphic.runner import PROJECT_ROOT
from tests.neuromorphic.test_encoding_mismatch import _Settings, _run

pytestmark = pytest.mark.slow

# recomputes the fit from the saved float network, in the lava environment: {pad: precision_recall}
FIT = """
import json, sys
import numpy as np
from models.neuromorphic import inference  # noqa: F401  (Lava first)
from models.neuromorphic import metrics, network
day = np.load(sys.argv[1])
net = network.load_network(sys.argv[2], day["spikes"].shape[1], 12)
print(json.dumps({pad: metrics.precision_recall(day["label"], metrics.decide(
    network.run_slayer(net, day["spikes"], pad=pad)["out_counts"])) for pad in (0, 2)}))
"""


def _windows(path, n=600, channels=8, steps=10, seed=1):
    """Sparse noise; an anomalous window (20 %) carries a burst on two channels."""
    rng = np.random.default_rng(seed)
    spikes = (rng.random((n, channels, steps)) < 0.03).astype(np.uint8)
    labels = (rng.random(n) < 0.2).astype(np.uint8)
    for i in np.flatnonzero(labels):
        t = rng.integers(0, steps - 4)
        spikes[i, :2, t:t + 3] = 1
    np.savez(path, spikes=spikes, features=spikes.astype(np.float32), label=labels,
             channel_names=np.array([f"c{i}" for i in range(channels)]), window_us=np.int64(10_000_000),
             bin_us=np.int64(1_000_000))
    return path


def test_training_fit_is_measured_as_scoring_decides(tmp_path):
    day = _windows(tmp_path / "day.npz")
    out = tmp_path / "model"
    out.mkdir()
    result, errors = _run("models.neuromorphic.pipes_train",
                          {"train_files": [str(day)], "out_dir": str(out), "hidden": 12, "epochs": 10, "lr": 0.05,
                           "seed": 0, "pad": 2}, ["netx_loads_export"])
    assert result.success, errors
    recorded = json.loads((out / "model.json").read_text())
    [event] = result.get_asset_materialization_events()
    reported = {k: v.value for k, v in event.materialization.metadata.items()}

    fit = subprocess.run([_Settings.lava_python, "-c", FIT, str(day), str(out / "slayer_state.pt")],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(PROJECT_ROOT), "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore"})
    assert fit.returncode == 0, fit.stderr[-3000:]
    by_pad = json.loads(fit.stdout.strip().splitlines()[-1])
    assert by_pad["0"] != by_pad["2"]  # the pad steps change decisions on these windows
    assert recorded["train_fit"]["snn"] == by_pad["2"] and recorded["train_fit_pad"] == 2
    assert reported["snn_train_precision"] == by_pad["2"]["precision"]
    assert reported["snn_train_recall"] == by_pad["2"]["recall"]
