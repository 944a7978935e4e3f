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
