"""RayResource's local mode starts its own Ray, whatever the environment says (ray.init recorded, not run)."""

import pytest

from resources.compute import RayResource


@pytest.mark.parametrize("address", [None, "", "local"])
def test_local_mode_starts_a_local_ray_even_with_ray_address_set(address, monkeypatch):
    """ray.init(address=None) connects to $RAY_ADDRESS (or the last cluster started on the machine) when there is
    one: a local step would have run its trials on a cluster nobody configured. "local" always starts one."""
    import ray

    calls = []
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with RayResource(address=address, num_cpus=2, temp_dir="/tmp/pqray-unit").session() as cluster:
        assert cluster["address"] == "local"
    [init] = calls
    assert init["address"] == "local" and init["num_cpus"] == 2


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
