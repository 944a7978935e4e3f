"""One writer per Iceberg table: every writing step names a pool, and the instance gives each pool one slot."""

import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance

from pipelines.pools import ONLINE_STORE_POOL, POOL_PREFIX
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
    # ... and the lake maintenance steps (erasure, retention, compaction, expiry, orphans), which rewrite other steps' tables through
    # optimistic commits that are redone when another writer commits first
    assert {p: sorted(names) for p, names in pools.items() if len(names) > 1} == {
        POOL_PREFIX + "ml.drift_reports": ["ml__account_anomaly_drift", "ml__price_direction_drift"],
        POOL_PREFIX + "lake.maintenance": ["governance__erasure_log", "maintenance__compaction",
                                           "maintenance__data_retention", "maintenance__orphan_files",
                                           "maintenance__snapshot_expiry"]}
    assert pools[POOL_PREFIX + "bronze.venue"] == ["venue_session"]
    assert pools[POOL_PREFIX + "gold.price_direction_predictions"] == ["gold__price_direction_predictions"]
    # the federated model writes no table of its own but updates the participant registry
    assert pools[POOL_PREFIX + "federated.participants"] == ["federated__order_anomaly_model"]
    # the online store's newer-wins rule reads then writes: one materialisation at a time
    assert pools[ONLINE_STORE_POOL] == ["features__online_store"]


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


# Two runs of two different assets that share a pool, in separate processes on one instance
# (our dagster.yaml). The second run starts once the first one's step holds the pool's slot; the
# first step waits until it sees the second run's step queued on the pool without a slot, records
# what it saw, then finishes; only then may the second step start. Without the pool the first step
# would see no waiting step and the test would fail.
#
# Not tested, because Dagster does not guarantee it: two claims made within the same few
# milliseconds. Dagster 1.13's slot claim checks for a free slot and takes it in separate statements
# (SELECT ... FOR UPDATE SKIP LOCKED, a no-op on SQLite and outside a transaction on Postgres's
# autocommit connections), so both can be admitted; we saw it about once in 40 starts on a loaded
# 2-core machine. Tables stay correct then too: the lake's optimistic commits (test_lake.py's race tests).
SCRIPT = textwrap.dedent("""
    import json, sys, time
    from dagster import DagsterInstance, asset, materialize

    POOL, NAME, OUT = sys.argv[1], sys.argv[2], sys.argv[3]

    @asset(name=NAME, pool=POOL)
    def writer(context):
        storage = context.instance.event_log_storage
        deadline = time.monotonic() + 120
        def waiting(info):
            # the other run's step is queued on the pool but holds no slot. Dagster may already have
            # *assigned* it (claims that both saw a free slot are both assigned), so count queued steps
            # without a slot, not just unassigned ones.
            holders = {s.run_id for s in info.claimed_slots}
            return [p for p in info.pending_steps if p.run_id != context.run_id and p.run_id not in holders]

        while time.monotonic() < deadline:
            info = storage.get_concurrency_info(POOL)
            if waiting(info):  # the other run's step waits for our slot
                break
            if any(r.is_finished for r in context.instance.get_runs() if r.run_id != context.run_id):
                break  # we were second: the other run has finished
            time.sleep(0.2)
        info = storage.get_concurrency_info(POOL)
        with open(OUT, "w") as f:
            json.dump({"slots": info.slot_count, "active": info.active_slot_count,
                       "holder": [s.run_id for s in info.claimed_slots], "waiting": len(waiting(info)),
                       "run_id": context.run_id}, f)

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

    def start(name):
        return subprocess.Popen([sys.executable, str(script), pool, name, str(tmp_path / f"{name}.json")],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    procs = [start("writer_a")]
    with DagsterInstance.from_config(str(home)) as instance:
        deadline = time.monotonic() + 120
        while not instance.event_log_storage.get_concurrency_info(pool).active_slot_count:
            assert procs[0].poll() is None and time.monotonic() < deadline, procs[0].communicate()[0][-3000:]
            time.sleep(0.1)
    procs.append(start("writer_b"))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-3000:] for o in outputs]

    import json

    seen = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("writer_a", "writer_b")}
    windows = {name: _window(home, seen[name]["run_id"]) for name in seen}
    # the first writer held the pool's only slot while the second waited for it
    run_id = seen["writer_a"]["run_id"]
    assert seen["writer_a"] == {"slots": 1, "active": 1, "holder": [run_id], "waiting": 1, "run_id": run_id}
    (first_start, first_end), (second_start, _) = windows["writer_a"], windows["writer_b"]
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
