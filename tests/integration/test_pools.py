"""One writer per Iceberg table: every writing step names a pool, and the instance gives each pool one slot."""

import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance

from pipelines.pools import POOL_PREFIX
from tests.conftest import ROOT, subprocess_env

pytestmark = pytest.mark.slow


def executable_ops(defs):
    graph = defs.resolve_asset_graph()
    return [ad for ad in graph.assets_defs if ad.is_executable and ad.keys]


def test_every_step_that_writes_the_lake_has_a_table_pool():
    from platformq_assets.definitions import defs

    ops = executable_ops(defs())
    pools = {}
    for ad in ops:
        kinds = set().union(*(ad.specs_by_key[k].kinds for k in ad.keys))
        pool = ad.node_def.pool
        if "iceberg" in kinds:
            assert pool and pool.startswith(POOL_PREFIX), f"{ad.node_def.name} writes Iceberg but has no pool"
        if pool:
            pools.setdefault(pool, []).append(ad.node_def.name)
    # two steps share a pool only where they write the same table
    assert sorted(pools[POOL_PREFIX + "ml.drift_reports"]) == ["ml__account_anomaly_drift", "ml__price_direction_drift"]
    assert {p: names for p, names in pools.items() if len(names) > 1} == {
        POOL_PREFIX + "ml.drift_reports": pools[POOL_PREFIX + "ml.drift_reports"]}
    assert pools[POOL_PREFIX + "bronze.venue"] == ["venue_session"]
    assert pools[POOL_PREFIX + "gold.price_direction_predictions"] == ["gold__price_direction_predictions"]
    # the federated model writes no table of its own but updates the participant registry
    assert pools[POOL_PREFIX + "federated.participants"] == ["federated__order_anomaly_model"]


@pytest.mark.parametrize("config,max_runs", [("dagster.yaml", 2), ("infra/dagster.production.yaml", 20)])
def test_instances_give_each_pool_one_slot_per_step(tmp_path, config, max_runs):
    parsed = yaml.safe_load((ROOT / config).read_text())
    # the storage and run launcher need Postgres/K8s (tested in test_dagster_instance.py)
    local = {k: parsed[k] for k in ("concurrency", "run_coordinator")}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(local))
    with DagsterInstance.from_config(str(tmp_path)) as instance:  # Dagster's own config validation
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity.value == "op"
        assert concurrency.run_queue_config.max_concurrent_runs == max_runs


# Two runs of two different assets that share a pool, started together in separate processes
# on one instance (our dagster.yaml). The first step to get the slot waits until it sees the
# other run's step *pending* on the pool, records what it saw, then finishes; only then may the
# other step start. Without the pool the waiting step would see no pending step and fail.
SCRIPT = textwrap.dedent("""
    import json, sys, time
    from dagster import DagsterInstance, asset, materialize

    POOL, NAME, OUT = sys.argv[1], sys.argv[2], sys.argv[3]

    @asset(name=NAME, pool=POOL)
    def writer(context):
        storage = context.instance.event_log_storage
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = storage.get_concurrency_info(POOL)
            if info.pending_step_count:  # the other run's step waits for our slot
                break
            if any(r.is_finished for r in context.instance.get_runs() if r.run_id != context.run_id):
                break  # we were second: the other run has finished
            time.sleep(0.2)
        info = storage.get_concurrency_info(POOL)
        with open(OUT, "w") as f:
            json.dump({"slots": info.slot_count, "active": info.active_slot_count,
                       "pending": info.pending_step_count, "run_id": context.run_id}, f)

    result = materialize([writer], instance=DagsterInstance.get())
    sys.exit(0 if result.success else 1)
""")


def test_steps_sharing_a_pool_never_write_at_the_same_time(tmp_path):
    from platformq_assets.definitions import defs

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    pool = next(ad.node_def.pool for ad in executable_ops(defs()) if ad.node_def.name == "venue_session")
    script = tmp_path / "writer.py"
    script.write_text(SCRIPT)
    with DagsterInstance.from_config(str(home)) as instance:
        # create the storage and the pool (at the configured default limit) before two processes
        # race to create them: a fresh SQLite instance's schema migration is not concurrency-safe
        assert instance.event_log_storage.initialize_concurrency_limit_to_default(pool)
    env = subprocess_env(home)
    procs = [subprocess.Popen([sys.executable, str(script), pool, name, str(tmp_path / f"{name}.json")],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("writer_a", "writer_b")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-3000:] for o in outputs]

    import json

    seen = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("writer_a", "writer_b")}
    first = min(seen, key=lambda n: _window(home, seen[n]["run_id"])[0])
    second = "writer_b" if first == "writer_a" else "writer_a"
    # the first writer held the pool's only slot while the second waited for it
    assert seen[first] == {"slots": 1, "active": 1, "pending": 1, "run_id": seen[first]["run_id"]}
    first_start, first_end = _window(home, seen[first]["run_id"])
    second_start, _ = _window(home, seen[second]["run_id"])
    assert second_start >= first_end > first_start


def _window(home, run_id):
    """(step start, step end) timestamps of the run's single step, from the instance's event log."""
    with DagsterInstance.from_config(str(home)) as instance:
        start = instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)[0].timestamp
        end = instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)[0].timestamp
    return start, end


HOLDER = textwrap.dedent("""
    import sys, time
    from dagster import DagsterInstance, asset, materialize
    from pipelines.pools import cli_run_tags

    @asset(name="holder", pool=sys.argv[1])
    def holder():
        time.sleep(600)  # killed before it ends

    materialize([holder], instance=DagsterInstance.get(), tags=cli_run_tags())
""")


def test_a_killed_cli_run_does_not_hold_its_table_for_ever(tmp_path):
    import os
    import signal
    import time

    from pipelines.pools import free_abandoned_slots, table_pool

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    pool = table_pool("bronze.orders")
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    DagsterInstance.from_config(str(home)).dispose()  # storage created before the other process starts
    proc = subprocess.Popen([sys.executable, str(script), pool], cwd=ROOT, env=subprocess_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            storage = instance.event_log_storage
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if pool in storage.get_concurrency_keys() and storage.get_concurrency_info(pool).active_slot_count:
                    break
                time.sleep(0.2)
            assert storage.get_concurrency_info(pool).active_slot_count == 1, proc.stdout.read() if proc.poll() else ""
            [run] = instance.get_runs()
            assert free_abandoned_slots(instance) == []  # its process is alive: the slot is rightly held
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert free_abandoned_slots(instance) == [run.run_id]
            assert storage.get_concurrency_info(pool).active_slot_count == 0
            assert instance.get_run_by_id(run.run_id).status.value == "FAILURE"
    finally:
        if proc.poll() is None:
            proc.kill()
