"""infra/compose.yaml (the production twins for Docker users) and the env file that points the
production profile at it. Docker cannot run here: the file's shape and its agreement with the
settings are what can be checked honestly."""

import re

import pytest

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
    # on one host: steps in processes, Lava in .venv-lava (the k8s runner needs a cluster and a volume claim,
    # and the demo's neuromorphic step failed without them)
    assert (settings.effective_executor, settings.effective_lava_runner) == ("multiprocess", "subprocess")
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


def test_compose_instance_file_validates_and_matches_the_local_limits(tmp_path, monkeypatch):
    """infra/dagster.compose.yaml: Postgres storage from PLATFORMQ_DAGSTER_PG_URL and the default run launcher
    (runs as processes on the host), validated by Dagster's own schemas; the queue, limits, retries and
    monitoring of the local dagster.yaml."""
    import shutil

    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_postgres import DagsterPostgresStorage

    path = INFRA / "dagster.compose.yaml"
    monkeypatch.setenv("PLATFORMQ_DAGSTER_PG_URL", env_example()["PLATFORMQ_DAGSTER_PG_URL"])
    shutil.copy(path, tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    from dagster._core.launcher import DefaultRunLauncher  # the module and class the file names exist

    assert config["run_launcher"]["module"] == DefaultRunLauncher.__module__.rsplit(".", 1)[0]
    storage = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    assert storage.value["postgres_url"].startswith("postgresql+psycopg2://") and \
        storage.value["postgres_url"].endswith("/dagster")
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    compose = yaml.safe_load(path.read_text())
    for section in ("run_coordinator", "concurrency", "run_retries", "run_monitoring", "sensors", "schedules"):
        assert compose[section] == local[section], section
    # compose.yaml's instructions point DAGSTER_HOME at a copy of this file
    header = (INFRA / "compose.yaml").read_text()
    assert "cp infra/dagster.compose.yaml .platformq/compose/dagster.yaml" in header
    assert "export DAGSTER_HOME=$PWD/.platformq/compose" in header


def make_dry_run(target: str, **env) -> str:
    """What `make -n TARGET` would run (nothing is run) with these environment variables (None: unset)."""
    import os
    import subprocess

    environ = {k: v for k, v in os.environ.items() if k not in env}
    environ.update({k: v for k, v in env.items() if v is not None})
    done = subprocess.run(["make", "-n", "-W", "dagster.yaml", "-W", "requirements/main.txt", target], cwd=ROOT,
                          env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_never_writes_the_local_instance_over_another_dagster_home(tmp_path):
    """With DAGSTER_HOME pointing at the compose or production instance, `make setup` (run by ui, demo, validate)
    leaves that folder alone; the local home still gets the SQLite instance file."""
    elsewhere = tmp_path / "production-home"
    out = make_dry_run("setup", DAGSTER_HOME=str(elsewhere), PLATFORMQ_HOME=None)
    assert str(elsewhere) not in out
    local = tmp_path / "local-home"
    out = make_dry_run("setup", DAGSTER_HOME=None, PLATFORMQ_HOME=str(local))
    assert f"cp dagster.yaml {local}/dagster.yaml" in out


def test_make_finds_the_cpu_torch_wheel_without_a_local_wheel_folder():
    """Without PIP_FIND_LINKS (a fresh machine) the main environment also uses the PyTorch CPU index, where
    requirements/main.txt's `+cpu` torch lives; with it (the build machine) uv is told nothing more."""
    index = "--index https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match"
    assert index in make_dry_run(".make/venv", PIP_FIND_LINKS=None)
    assert "download.pytorch.org" not in make_dry_run(".make/venv", PIP_FIND_LINKS="/opt/wheels")


@pytest.mark.slow
def test_make_ui_starts_every_schedule_and_sensor_in_the_local_instance(tmp_path):
    """The definitions declare them stopped (a deployment starts nothing it was not told to); `make ui` starts
    them all before `dagster dev` (UI_AUTOMATION=off leaves them stopped). The commands it would run are run
    here against a fresh instance, and the instance then holds every one of them running."""
    import os
    import shutil
    import subprocess

    from dagster import DagsterInstance
    from dagster._core.scheduler.instigation import InstigatorStatus

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "PLATFORMQ_HOME": str(home)}
    lines = make_dry_run("ui", **env).splitlines()
    starts = [line for line in lines if " start --start-all " in line]
    assert len(starts) == 2 and lines.index(starts[-1]) < next(i for i, x in enumerate(lines) if " dev " in x)
    assert not [line for line in make_dry_run("ui", UI_AUTOMATION="off", **env).splitlines() if "--start-all" in line]
    for line in starts:
        subprocess.run(line, shell=True, cwd=ROOT, env={**os.environ, **env}, check=True, capture_output=True,
                       timeout=120)
    from platformq_assets.definitions import build_definitions
    from resources.settings import Settings

    repository = build_definitions(Settings(home=home)).get_repository_def()
    declared = {d.name for d in [*repository.schedule_defs, *repository.sensor_defs]}
    assert {"venue_daily_schedule", "lake_maintenance_daily", "landing_zone_sensor",
            "default_automation_condition_sensor"} <= declared
    assert all(d.default_status.value == "STOPPED" for d in [*repository.schedule_defs, *repository.sensor_defs])
    with DagsterInstance.from_config(str(home)) as instance:
        running = {state.name for state in instance.all_instigator_state()
                   if state.status == InstigatorStatus.RUNNING}
    assert running == declared


def test_serve_listens_on_the_host_it_is_given(platform_home):
    """`platformq serve --host`: 127.0.0.1 unless told; the address given is the one bound (an address that is not
    this machine's fails to bind, before anything starts)."""
    from click.testing import CliRunner

    from platformq_assets.cli import main, serve

    [host] = [p for p in serve.params if p.name == "host"]
    assert host.default == "127.0.0.1"
    assert "127.0.0.1" in CliRunner().invoke(main, ["serve", "--help"]).output
    result = CliRunner().invoke(main, ["serve", "--host", "192.0.2.1", "--port", "18100", "--only", "trading"])
    assert result.exit_code == 1, result.output
    assert "trading cannot listen on 192.0.2.1:18100" in result.output and "admin API key" not in result.output


def test_every_database_the_env_example_names_exists_commented_lines_included():
    """The optional (commented) settings of production.env.example name databases too: uncommenting one must
    point at a database the compose init script creates."""
    created = set(re.findall(r"CREATE DATABASE (\w+);", (INFRA / "compose/postgres-init.sql").read_text()))
    named = re.findall(r"postgresql\+psycopg2://platformq:platformq@127\.0\.0\.1:5432/(\w+)",
                       (INFRA / "production.env.example").read_text())
    assert "services" in named and set(named) <= created
