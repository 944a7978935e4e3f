"""A network and the windows it reads must share one encoding: windows of 60 s and of 120 s with 12 bins each have
the same shape (17 channels x 12 steps), not the same meaning. Training on days of both, or scoring a day encoded
one way with a network trained on the other, is refused by the lava-side scripts (run here through Pipes)."""

import json

import numpy as np
import pytest
from dagster import AssetCheckSpec, AssetKey, DagsterInstance, asset, materialize

from models.neuromorphic.encoding import EncodingConfig, encode_day
from platformq_assets.neuromorphic.runner import PROJECT_ROOT, run_lava_script
from tests.neuromorphic.test_encoding import events

pytestmark = pytest.mark.slow

DAY = events(trades=[(s, "AAA", 10000 + s % 7, 1 + s % 5) for s in range(0, 1200, 17)],
             orders=[(s, "AAA", "BUY" if s % 2 else "SELL", 10 + s % 90, None, 0) for s in range(3, 1200, 23)],
             labels=[("AAA", "spoofing", "s-1", 300, 330), ("AAA", "wash_trade", "w-1", 900, 900)])


class _Settings:
    effective_lava_runner = "subprocess"
    lava_python = str(PROJECT_ROOT / ".venv-lava" / "bin" / "python")


def _windows(tmp_path, name, window_seconds):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **encode_day(DAY, EncodingConfig(window_seconds=window_seconds, bins=12)))
    return path


def _run(module, extras, checks):
    key = AssetKey(["neuromorphic", "probe"])

    @asset(key=key, check_specs=[AssetCheckSpec(name, asset=key) for name in checks])
    def probe(context):
        yield from run_lava_script(context, _Settings(), module, extras).get_results()

    with DagsterInstance.ephemeral() as instance:
        result = materialize([probe], instance=instance, raise_on_error=False)
        # the lava side's exception, as the run's event log shows it
        errors = " ".join(r.dagster_event.engine_event_data.error.message for r in instance.all_logs(result.run_id)
                          if r.dagster_event and "closed with exception" in (r.dagster_event.message or ""))
    return result, errors


def test_training_days_of_one_shape_but_different_windows_are_refused(tmp_path):
    files = [str(_windows(tmp_path, "d1", 60)), str(_windows(tmp_path, "d2", 120))]
    out = tmp_path / "model"
    out.mkdir()
    result, errors = _run("models.neuromorphic.pipes_train",
                          {"train_files": files, "out_dir": str(out), "hidden": 4, "epochs": 1, "lr": 0.05,
                           "seed": 0}, ["netx_loads_export"])
    assert not result.success
    assert "encoded differently" in errors and "'window_us': 60000000" in errors and "120000000" in errors
    assert not (out / "network.h5").exists()


def test_a_day_encoded_otherwise_than_the_network_was_trained_is_not_scored(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"sizes": [17, 4, 2], "hidden": 4, "time_steps": 12,
                                                  "window_us": 60_000_000, "bin_us": 5_000_000}))
    out = tmp_path / "scores.npz"
    result, errors = _run("models.neuromorphic.pipes_score",
                          {"spikes": str(_windows(tmp_path, "day", 120)), "model_dir": str(model), "out": str(out),
                           "pad": 2, "backend": "loihi2_sim", "partition": None, "agreement_threshold": 0.95},
                          ["float_fixed_point_agreement", "snn_vs_baseline", "energy_proxy"])
    assert not result.success
    assert "the network was trained on" in errors and "'window_us': 120000000" in errors
    assert not out.exists()
