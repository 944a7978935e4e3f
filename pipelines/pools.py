"""Concurrency pools: at most one step writes an Iceberg table at a time.

Every asset step that writes lake tables names a pool, ``iceberg/<table>`` for a step that
writes one table and ``iceberg/<group>`` for a step that writes a group of tables no other
step writes (the venue session, landing ingestion, the dbt build). Steps that share a table
share its pool (both models' drift steps write ``ml.drift_reports``). The instance gives
every pool one slot (``concurrency: pools: default_limit: 1`` in dagster.yaml and
infra/dagster.production.yaml), so a backfill's runs queue their writing steps per table
instead of racing for Iceberg commits; other steps still run in parallel. Writers outside
Dagster (the CLI, services) are covered by the lake's optimistic commit retry
(resources/lake.py).

In the UI: Deployment → Concurrency → Pools lists each pool once a step has used it, with its slots
and the steps waiting.
"""

from __future__ import annotations

import os
import socket

POOL_PREFIX = "iceberg/"


def table_pool(identifier: str) -> str:
    """The pool of the steps that write the Iceberg table ``namespace.table``."""
    return f"{POOL_PREFIX}{identifier}"


def group_pool(group: str) -> str:
    """The pool of a step that writes a group of tables of its own (e.g. ``bronze.venue``)."""
    return f"{POOL_PREFIX}{group}"


# The Feast online store's writes: its newer-wins rule reads each entity's stored time, then writes, so two
# materialisations at once (a backfill's days) could each pass the check and the older day land last.
ONLINE_STORE_POOL = "feast/online_store"


def cli_run_tags() -> dict[str, str]:
    """Tags of a run the ``platformq`` CLI executes in its own process (see free_abandoned_slots)."""
    return {"platformq/trigger": "cli", "platformq/pid": str(os.getpid()), "platformq/host": socket.gethostname()}


def _process_gone(run) -> bool:
    pid, host = run.tags.get("platformq/pid"), run.tags.get("platformq/host")
    if not pid or host != socket.gethostname():
        return False  # not ours to judge: the daemon's run monitoring handles launched runs
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def free_abandoned_slots(instance) -> list[str]:
    """Release the pool slots of CLI runs whose process died (killed, Ctrl-C'd hard, power cut).

    A step frees its slot when it ends, and the daemon's run monitoring fails dead launched
    runs; an in-process CLI run that was SIGKILLed has neither, and would hold its table's
    slot for ever, so every later writer of that table would wait. The CLI calls this before
    it runs anything: such a run is reported failed and its slots freed. Returns the run ids.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    freed = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        run_ids = {s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps}
        for run_id in sorted(run_ids - set(freed)):
            run = instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished and not _process_gone(run):
                continue
            if run is not None and not run.is_finished:
                instance.report_run_failed(run, f"the process that ran it ({run.tags.get('platformq/pid')}) is gone; "
                                                f"its pool slots were released")
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return freed
