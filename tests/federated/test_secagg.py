"""SecAgg+ (Flower's legacy workflow + secaggplus_mod) on the simulation engine."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.federated.helpers import ROOT


@pytest.mark.slow
def test_secagg_plus_aggregates_masked_dp_sgd_updates_into_a_better_model(tmp_path):
    # client-side DP-SGD composes with SecAgg+: Opacus runs on the client before masking
    out = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    config = {"strategy": "fedprox", "proximal-mu": 0.01, "num-rounds": 2, "lr": 0.5, "local-epochs": 3,
              "min-participants": 3, "dp": "client", "dp-target-epsilon": 8.0, "output-dir": str(out)}
    try:
        proc = subprocess.run([sys.executable, "-m", "models.federated.secagg", "--config", json.dumps(config),
                               "--participants", "3"], cwd=ROOT, capture_output=True, text=True, timeout=240,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp,
                                   "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    # all four SecAgg+ stages ran and the server got only the unmasked sum
    assert "Secure aggregation commencing." in log and "Secure aggregation completed." in log
    assert "Secure aggregation halted." not in log
    history = json.loads((out / "history.json").read_text())
    rounds = {r["round"]: r for r in history["rounds"]}
    assert history["secure_aggregation"] == "secagg+"
    assert rounds[2]["server_accuracy"] > rounds[0]["server_accuracy"] + 0.4
    assert rounds[1]["participants"] == rounds[2]["participants"] == 3
    # each participant's accountant lives in its node state: round 2's ε composes round 1's (it used to restart)
    assert 0 < rounds[1]["epsilon_max"] < rounds[2]["epsilon_max"] <= 8.0 + 1e-6


def test_secagg_plus_refuses_what_it_cannot_honour():
    from models.federated.secagg import secagg_config

    with pytest.raises(ValueError, match="fedavg and fedprox only, not scaffold"):
        secagg_config({"strategy": "scaffold"})
    with pytest.raises(ValueError, match="does not compose with server-side central DP"):
        secagg_config({"strategy": "fedavg", "central-dp-noise": 0.5})
    assert secagg_config({"strategy": "fedprox", "dp": "client"}).dp == "client"  # client-side DP-SGD composes
