"""The production Dagster instance: config validated by Dagster, storage proven on a real Postgres."""

import shutil
import subprocess

import pytest
import yaml
from dagster import DagsterInstance, asset, materialize
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config

from tests.conftest import ROOT
from tests.integration.servers import postgres_database

pytestmark = pytest.mark.slow
PRODUCTION_YAML = ROOT / "infra" / "dagster.production.yaml"


def pg_env(monkeypatch, db):
    for k, v in {"PLATFORMQ_DAGSTER_PG_URL": f"postgresql+psycopg2://platformq:platformq@127.0.0.1:5432/{db}",
                 "PLATFORMQ_K8S_NAMESPACE": "platformq", "PLATFORMQ_USER_CODE_IMAGE": "platformq/user-code:test"}.items():
        monkeypatch.setenv(k, v)


def test_production_instance_config_validates(tmp_path, monkeypatch):
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import DagsterPostgresStorage

    pg_env(monkeypatch, "dagster")
    shutil.copy(PRODUCTION_YAML, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's own top-level validation
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    launcher = process_config(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    assert launcher.value["job_namespace"] == "platformq"
    storage = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    assert storage.value["postgres_url"].endswith("/dagster")
    monkeypatch.delenv("PLATFORMQ_DAGSTER_PG_URL")  # a missing variable is an error, not a default
    storage = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert not storage.success and "PLATFORMQ_DAGSTER_PG_URL" in str(storage.errors)


@asset
def ping() -> int:
    return 1


@pytest.mark.serial  # restarts the machine's Postgres, which tests running beside it in another process use
def test_runs_are_stored_in_postgres_and_survive_a_postgres_restart(tmp_path, monkeypatch):
    with postgres_database() as db:
        pg_env(monkeypatch, db)
        production = yaml.safe_load(PRODUCTION_YAML.read_text())
        local_parts = {k: production[k] for k in ("storage", "run_retries", "telemetry")}  # no K8s launcher here
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(local_parts))
        instance = DagsterInstance.from_config(str(tmp_path))
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert materialize([ping], instance=instance).success
        version, cluster = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True,
                                          check=True).stdout.split()[:2]
        subprocess.run(["pg_ctlcluster", version, cluster, "restart"], check=True)
        subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-t", "30"], check=True)
        assert materialize([ping], instance=instance).success  # no manual step after the restart
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.is_success for r in runs)
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", user="platformq", password="platformq", dbname=db)
        with con, con.cursor() as cur:
            cur.execute("select count(*) from runs")
            assert cur.fetchone()[0] == 2
        con.close()
        instance.dispose()


@pytest.mark.parametrize("instance_file", ["dagster.yaml", "infra/dagster.compose.yaml",
                                           "infra/dagster.production.yaml"])
def test_pool_slots_a_dead_step_held_are_freed_after_its_run_ended(tmp_path, instance_file):
    """A step whose process was killed (OOM, a lost node) keeps its pool slot claimed; run monitoring then fails
    the run. Without `free_slots_after_run_end_seconds` the daemon never frees that slot, and every later writer
    of the table waits for ever."""
    import datetime as dt
    import logging

    from dagster import job, op
    from dagster._core.instance.ref import InstanceRef
    from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration

    config = yaml.safe_load((ROOT / instance_file).read_text())
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    # this file's run monitoring and pools, on local storage and the local launcher (which resumes no run)
    monitoring = {k: v for k, v in config["run_monitoring"].items() if k != "max_resume_run_attempts"}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(
        {**local, "run_monitoring": monitoring, "concurrency": config["concurrency"]}))

    @op
    def step():
        pass

    @job
    def one_step():
        step()

    pool = "iceberg/bronze.venue"
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        run_id = one_step.execute_in_process(instance=instance).run_id
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(pool)
        assert storage.claim_concurrency_slot(pool, run_id, "venue_session").is_claimed  # the killed step's claim

        def daemon_pass_at(later: dt.timedelta) -> list[str]:
            with freeze_time(dt.datetime.now(dt.timezone.utc) + later):
                with create_test_daemon_workspace_context(EmptyWorkspaceTarget(), instance) as context:
                    list(execute_concurrency_slots_iteration(context, logging.getLogger()))
            return [slot.run_id for slot in storage.get_concurrency_info(pool).claimed_slots]

        assert daemon_pass_at(dt.timedelta(seconds=30)) == [run_id]  # a just-ended run keeps it a while
        assert daemon_pass_at(dt.timedelta(minutes=10)) == []  # then the table is free again
