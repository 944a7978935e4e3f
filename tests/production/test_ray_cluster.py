"""A Ray head and a worker started with `ray start` run the platform's Tune search (production path).

Ray binds the machine's network address for multi-node clusters, so the cluster, the driver and
everything else live in a private network namespace that only has loopback (`unshare -n`):
nothing listens outside 127.0.0.1 and nothing outside the test can reach it.
"""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# A head and a worker (the worker's node manager on a known port, so a test can kill it), then a driver.
SCRIPT = r"""
set -euo pipefail
ip link set lo up
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 PYTHONPATH={root}
unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER  # the single-node guard: this namespace is where multi-node is safe
RAY={bin}/ray
cleanup() {{ $RAY stop --force >/dev/null 2>&1 || true; }}
trap cleanup EXIT
$RAY start --head --node-ip-address=127.0.0.1 --port=6380 --num-cpus=1 --include-dashboard=false \
    --temp-dir={raytmp} --disable-usage-stats >/dev/null
$RAY start --address=127.0.0.1:6380 --node-ip-address=127.0.0.1 --num-cpus=1 --node-manager-port=6391 \
    --disable-usage-stats >/dev/null
{python} {root}/tests/production/{driver} 127.0.0.1:6380 {tmp}/tune
"""


def run_on_cluster(driver: str, tmp_path, timeout: int) -> dict:
    import tempfile

    raytmp = tempfile.mkdtemp(prefix="pqray-", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    script = SCRIPT.format(root=ROOT, bin=str(ROOT / ".venv" / "bin"), tmp=tmp_path, raytmp=raytmp,
                           python=sys.executable, driver=driver)
    done = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tune_search_runs_on_a_two_node_ray_cluster(tmp_path):
    result = run_on_cluster("ray_cluster_driver.py", tmp_path, timeout=400)
    assert result["nodes"] == 2 and result["addresses"] == ["127.0.0.1"]
    assert result["cpus"] == 2.0 and result["nodes_used"] == 2  # work landed on both nodes
    assert result["trials"] == 4 and 0.5 < result["best_score"] <= 1.0


def test_killing_the_ray_worker_mid_search_retries_trials_and_a_rerun_succeeds(tmp_path):
    result = run_on_cluster("ray_worker_kill_driver.py", tmp_path, timeout=500)
    assert result["killed"] == 0  # the worker's raylet was there and got SIGKILL
    assert result["alive_after"] == 1
    assert result["first_trials"] == 6  # every trial finished: those on the dead node were retried on the head
    assert result["second_trials"] == 2 and 0.5 < result["best"] <= 1.0


def test_the_ml_training_asset_runs_its_search_on_the_cluster(tmp_path):
    """Dagster materialises ml/price_direction with PLATFORMQ_RAY_ADDRESS set: the trials run on both nodes."""
    result = run_on_cluster("ray_dagster_driver.py", tmp_path, timeout=580)
    assert result["address"] == result["ray"] == "127.0.0.1:6380"
    assert result["ray_cluster_cpus"] == 2.0 and result["ray_nodes_used"] == 2
    assert result["trials"] == 4 and result["alias"] == "challenger" and result["model_version"] == "1"
