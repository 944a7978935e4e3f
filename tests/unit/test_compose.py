"""infra/compose.yaml (the production twins for Docker users) and the env file that points the
production profile at it. Docker cannot run here: the file's shape and its agreement with the
settings are what can be checked honestly."""

import re

import yaml

from tests.conftest import ROOT

INFRA = ROOT / "infra"


def env_example() -> dict:
    pairs = {}
    for line in (INFRA / "production.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            pairs[key] = value
    return pairs


def test_compose_brings_up_every_production_twin_on_loopback():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "redis", "trino", "mlflow", "marquez"} <= set(services)
    for name, service in services.items():
        assert "image" in service, name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (INFRA / source).exists(), f"{name} mounts missing {source}"
    # Trino's Iceberg catalog gets every variable its properties file reads
    needed = set(re.findall(r"\$\{ENV:([A-Z_]+)\}", (INFRA / "trino/catalog/iceberg.properties").read_text()))
    assert needed <= set(services["trino"]["environment"])


def test_env_example_satisfies_the_production_settings(monkeypatch):
    from resources import build_resources
    from resources.settings import Settings

    env = env_example()
    for key in list(__import__("os").environ):
        if key.startswith("PLATFORMQ_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.profile == "production" and settings.effective_sql_engine == "trino"
    resources = build_resources(settings)
    assert resources["feast"].online_store == "redis" and resources["openlineage"].url == "http://127.0.0.1:5002"
    # every database the URLs name is created by the compose init script, with the compose credentials
    created = set(re.findall(r"CREATE DATABASE (\w+);", (INFRA / "compose/postgres-init.sql").read_text()))
    for value in env.values():
        match = re.match(r"postgresql\+psycopg2://platformq:platformq@127\.0\.0\.1:5432/(\w+)", value)
        if match:
            assert match.group(1) in created
    minio = yaml.safe_load((INFRA / "compose.yaml").read_text())["services"]["minio"]["environment"]
    assert (env["PLATFORMQ_S3_ACCESS_KEY"], env["PLATFORMQ_S3_SECRET_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
