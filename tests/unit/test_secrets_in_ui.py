"""Secrets never reach the code location's snapshot (the UI's Resources page), yet runs still get them.

Dagster serialises every configured resource value into the repository snapshot the webserver shows;
secrets set in the environment go in as EnvVar, which the snapshot names and a run resolves.
"""

import pytest
from dagster import asset, materialize

from tests.conftest import ML_PRODUCTION_ENV

SECRETS = {
    "PLATFORMQ_CATALOG_URI": "postgresql+psycopg2://lake:catalog-S3CR3T@db/c",
    "PLATFORMQ_S3_ACCESS_KEY": "access-S3CR3T",
    "PLATFORMQ_S3_SECRET_KEY": "secret-S3CR3T",
    "PLATFORMQ_SERVICES_API_KEY": "services-S3CR3T",
    "PLATFORMQ_AIRFLOW_PASSWORD": "airflow-S3CR3T",
    "PLATFORMQ_OPENLINEAGE_API_KEY": "lineage-S3CR3T",
    "PLATFORMQ_ALERT_WEBHOOK_URL": "https://hooks.example/services/T000/B000/hook-S3CR3T",
}
PRODUCTION = {
    "PLATFORMQ_PROFILE": "production", "PLATFORMQ_WAREHOUSE": "s3://lake/w", "PLATFORMQ_S3_ENDPOINT": "http://minio:9000",
    "PLATFORMQ_PII_SALT": "salt", "PLATFORMQ_OBJECT_STORE_BUCKET": "b", "PLATFORMQ_SQL_ENGINE": "duckdb",
    "PLATFORMQ_AIRFLOW_URL": "http://airflow:8080", "PLATFORMQ_AIRFLOW_USERNAME": "admin",
    "PLATFORMQ_AIRFLOW_DAGS": '["export_dag"]', "PLATFORMQ_OPENLINEAGE_URL": "http://marquez:5000",
    **ML_PRODUCTION_ENV, **SECRETS,
}


def snapshot_values(settings) -> str:
    from dagster._core.remote_representation.external_data import RepositorySnap

    from platformq_assets.definitions import build_definitions

    snap = RepositorySnap.from_def(build_definitions(settings).get_repository_def())
    return repr([(r.name, r.configured_values) for r in snap.resources])


@pytest.mark.parametrize("services", ["urls", "in_process"])
def test_secrets_appear_in_the_snapshot_only_as_variable_names(monkeypatch, services):
    from resources.settings import Settings

    env = {**PRODUCTION, **({"PLATFORMQ_SERVICE_URLS": '{"trading": "http://trading:8000", "credentials": '
                            '"http://c:8000", "derivatives": "http://d:8000", "governance": "http://g:8000", '
                            '"data": "http://data:8000"}'} if services == "urls"
                           else {"PLATFORMQ_SERVICES_IN_PROCESS": "true"})}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    shown = snapshot_values(Settings())
    assert "S3CR3T" not in shown
    for name in ("PLATFORMQ_S3_SECRET_KEY", "PLATFORMQ_AIRFLOW_PASSWORD", "PLATFORMQ_ALERT_WEBHOOK_URL"):
        assert name in shown  # what the UI shows instead
    assert ("PLATFORMQ_SERVICES_API_KEY" in shown) == (services == "urls")


def test_a_run_resolves_the_secrets(monkeypatch):
    from resources import build_resources
    from resources.services import resolve_env_refs
    from resources.settings import Settings

    for k, v in {**PRODUCTION, "PLATFORMQ_SERVICES_IN_PROCESS": "true"}.items():
        monkeypatch.setenv(k, v)
    resources = build_resources(Settings())
    seen = {}

    keys = {"lake", "object_store", "alerts", "openlineage", "data_api"}

    @asset(required_resource_keys=keys)
    def probe(context):
        r = context.resources
        seen.update(catalog=r.lake.catalog_uri, s3=(r.lake.s3_access_key, r.lake.s3_secret_key),
                    store=r.object_store.secret_key, hook=r.alerts.webhook_url, lineage=r.openlineage.api_key,
                    data_lake=resolve_env_refs(r.data_api.lake))

    materialize([probe], resources={k: resources[k] for k in keys})
    assert seen["catalog"] == SECRETS["PLATFORMQ_CATALOG_URI"]
    assert seen["s3"] == (SECRETS["PLATFORMQ_S3_ACCESS_KEY"], SECRETS["PLATFORMQ_S3_SECRET_KEY"])
    assert seen["store"] == SECRETS["PLATFORMQ_S3_SECRET_KEY"]
    assert seen["hook"] == SECRETS["PLATFORMQ_ALERT_WEBHOOK_URL"]
    assert seen["lineage"] == SECRETS["PLATFORMQ_OPENLINEAGE_API_KEY"]
    assert seen["data_lake"]["s3_secret_key"] == SECRETS["PLATFORMQ_S3_SECRET_KEY"]
    assert seen["data_lake"]["catalog_uri"] == SECRETS["PLATFORMQ_CATALOG_URI"]


def test_a_missing_secret_in_the_runs_process_is_a_clear_error(monkeypatch):
    from resources.services import resolve_env_refs

    monkeypatch.delenv("PLATFORMQ_S3_SECRET_KEY", raising=False)
    with pytest.raises(ValueError, match="s3_secret_key: environment variable PLATFORMQ_S3_SECRET_KEY is not set"):
        resolve_env_refs({"s3_secret_key": {"env": "PLATFORMQ_S3_SECRET_KEY"}})


def test_scripts_and_the_cli_get_plain_values(monkeypatch):
    from resources import lake_resource
    from resources.settings import Settings

    for k, v in {**PRODUCTION, "PLATFORMQ_SERVICES_IN_PROCESS": "true"}.items():
        monkeypatch.setenv(k, v)
    lake = lake_resource(Settings())
    assert lake.s3_secret_key == SECRETS["PLATFORMQ_S3_SECRET_KEY"] and type(lake.s3_secret_key) is str
