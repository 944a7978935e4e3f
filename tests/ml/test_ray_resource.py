"""RayResource's local mode starts its own Ray, whatever the environment says (a real Ray, started in
process); a cluster address is passed to ray.init as given (recorded here: the real two-node cluster is
tests/production/test_ray_cluster.py)."""

import os
import socket

import pytest

from resources.compute import RayResource


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", [None, "", "local"])
def test_local_mode_starts_a_local_ray_even_with_ray_address_set(address, monkeypatch):
    """ray.init(address=None) connects to $RAY_ADDRESS (or the last cluster started on the machine) when there is
    one: a local step would have run its trials on a cluster nobody configured (here: one nobody runs, so joining
    it fails). "local" always starts one, of num_cpus CPUs, and shuts it down after."""
    import ray

    nobody = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", nobody)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    assert not ray.is_initialized()
    with RayResource(address=address, num_cpus=2, temp_dir=f"/tmp/pqray-unit-{os.getpid()}").session() as cluster:
        assert cluster["address"] == "local" and cluster["resources"]["CPU"] == 2.0
        assert ray.get_runtime_context().gcs_address != nobody and len(ray.nodes()) == 1

        @ray.remote
        def square(x):
            return x * x

        assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]  # the local Ray runs tasks
    assert not ray.is_initialized()  # shut down: nothing leaks into the next step
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ  # the environment is left as it was


def test_a_cluster_address_is_passed_as_given(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with RayResource(address="ray-head:6379").session() as cluster:
        assert cluster["address"] == "ray-head:6379"
    assert calls == [{"address": "ray-head:6379", "log_to_driver": False}]


def test_local_ray_stays_on_loopback_when_ray_was_imported_before(tmp_path):
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at its import: in a process that had imported Ray before
    (another library, an earlier step of an in-process run), setting it before ray.init did nothing, and the
    local Ray bound the machine's network address. Run in a fresh process, which imports Ray first."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = f"""
import os
os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
import ray  # imported before the resource sets anything
from resources.compute import RayResource
with RayResource(address="local", num_cpus=1, temp_dir={str(f"/tmp/pqray-lb-{os.getpid()}")!r}).session():
    print("NODES", sorted({{n["NodeManagerAddress"] for n in ray.nodes()}}))
    print("GCS", ray.get_runtime_context().gcs_address)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("NODES", "GCS")))
    assert lines["NODES"] == "['127.0.0.1']" and lines["GCS"].startswith("127.0.0.1:"), out.stdout


def test_a_failed_ray_start_leaves_the_process_as_it_was(monkeypatch):
    """The loopback flag and variable were restored only after a Ray that had started: a failed ray.init left
    them set for the rest of the process."""
    import ray
    from ray._private import ray_constants

    flag = ray_constants.ENABLE_RAY_CLUSTER
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)

    def refuse(**kwargs):
        raise RuntimeError("no Ray here")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(RuntimeError, match="no Ray here"):
        with RayResource(address="local", temp_dir=f"/tmp/pqray-unit-{os.getpid()}").session():
            pass
    assert ray_constants.ENABLE_RAY_CLUSTER == flag and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
