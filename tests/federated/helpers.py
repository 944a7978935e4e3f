"""Run one federation in a fresh process (Ray never outlives it) and read its history."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def simulate(tmp_path: Path, config: dict, participants: int, chaos: dict | None = None, timeout: int = 240,
             server_crash_after: int | None = None, mid_round: bool = False) -> dict:
    """``server_crash_after`` k: the ServerApp fails once round k is done (``mid_round``: in round k + 1, once its
    training replies are in); the run must then fail."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "models.federated.simulation", "--config",
               json.dumps({**config, "output-dir": str(out)}), "--participants", str(participants)]
    if chaos is not None:
        command += ["--client-app", "tests.federated.chaos:build", "--client-args", json.dumps(chaos)]
    if server_crash_after is not None:
        command += ["--server-app", "tests.federated.chaos:crashing_server",
                    "--server-args", json.dumps({"after_round": server_crash_after, "mid_round": mid_round})]
    # Ray's unix socket paths must stay short (108 bytes): pytest's tmp_path is too deep.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if server_crash_after is None:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    else:
        assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    history = json.loads((out / "history.json").read_text())
    history["log"] = proc.stdout + proc.stderr
    history["output_dir"] = str(out)
    return history


def rounds(history: dict) -> dict[int, dict]:
    return {r["round"]: r for r in history["rounds"]}
