"""Settings: local by default, production explicit, and no env reads at import."""

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from resources import build_resources, lake_resource, object_store_resource, query_resource
from resources.settings import PRODUCTION_REQUIRED, Settings
from tests.conftest import ML_PRODUCTION_ENV, ROOT

PRODUCTION_ENV = {
    "PLATFORMQ_PROFILE": "production",
    "PLATFORMQ_CATALOG_URI": "postgresql+psycopg2://pq:pq@127.0.0.1:5432/catalog",
    "PLATFORMQ_WAREHOUSE": "s3://lake/warehouse",
    "PLATFORMQ_S3_ENDPOINT": "http://127.0.0.1:9000",
    "PLATFORMQ_S3_ACCESS_KEY": "key",
    "PLATFORMQ_S3_SECRET_KEY": "secret",
    "PLATFORMQ_PII_SALT": "deployment-salt",
    "PLATFORMQ_OBJECT_STORE_BUCKET": "platformq",
    "PLATFORMQ_TRINO_HOST": "trino.internal",
    "PLATFORMQ_SERVICE_URLS": '{"credentials": "http://creds.internal:8103", "derivatives": "http://d.internal:8101", "governance": "http://g.internal:8102", "trading": "http://t.internal:8100", "data": "http://data.internal:8104"}',
    "PLATFORMQ_SERVICES_API_KEY": "pq_secret",
    **ML_PRODUCTION_ENV,
}


def test_local_profile_is_embedded(platform_home):
    s = Settings()
    assert s.profile == "local"
    assert s.effective_catalog_uri == f"sqlite:///{platform_home / 'catalog.db'}"
    assert s.effective_warehouse.startswith("file://") and str(platform_home) in s.effective_warehouse
    assert query_resource(s).engine == "duckdb"
    assert object_store_resource(s).kind == "local"


def test_production_names_every_missing_variable(monkeypatch):
    monkeypatch.setenv("PLATFORMQ_PROFILE", "production")
    with pytest.raises(ValidationError) as err:
        Settings()
    for name in PRODUCTION_REQUIRED:
        assert f"PLATFORMQ_{name.upper()}" in str(err.value)


@pytest.mark.parametrize("variable", [*[f"PLATFORMQ_{n.upper()}" for n in PRODUCTION_REQUIRED],
                                      "PLATFORMQ_TRINO_HOST", "PLATFORMQ_SERVICE_URLS", "PLATFORMQ_SERVICES_API_KEY"])
def test_production_missing_one_variable_fails_with_its_name(monkeypatch, variable):
    for k, v in PRODUCTION_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(variable)
    with pytest.raises(ValidationError, match=variable):
        Settings()


def test_production_with_duckdb_engine_needs_no_trino(monkeypatch):
    for k, v in PRODUCTION_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PLATFORMQ_TRINO_HOST")
    monkeypatch.setenv("PLATFORMQ_SQL_ENGINE", "duckdb")
    s = Settings()
    assert query_resource(s).engine == "duckdb" and build_resources(s)["dbt"].target == "local"


@pytest.mark.parametrize("missing", ["PLATFORMQ_CHAIN_PRIVATE_KEY", "PLATFORMQ_CHAIN_REGISTRY"])
def test_production_json_rpc_chain_needs_its_key_and_a_deployed_registry(monkeypatch, missing):
    """Without a configured registry every anchoring run deployed a new one on the persistent chain: a retry
    could not find the day's anchor, and an auditor had no one registry to trust."""
    for k, v in {**PRODUCTION_ENV, "PLATFORMQ_CHAIN_RPC_URL": "https://rpc.internal:8545",
                 "PLATFORMQ_CHAIN_PRIVATE_KEY": "0x" + "11" * 32,
                 "PLATFORMQ_CHAIN_REGISTRY": "0x" + "22" * 20}.items():
        monkeypatch.setenv(k, v)
    assert Settings().chain_registry == "0x" + "22" * 20
    monkeypatch.delenv(missing)
    with pytest.raises(ValidationError, match=missing):
        Settings()


def test_malformed_production_variable_fails_with_its_name(monkeypatch):
    for k, v in PRODUCTION_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PLATFORMQ_TRINO_PORT", "eighty")
    with pytest.raises(ValidationError, match="trino_port"):
        Settings()


def test_production_profile_selects_production_backends(monkeypatch):
    for k, v in PRODUCTION_ENV.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    lake = lake_resource(s)
    assert lake.catalog_uri.startswith("postgresql+psycopg2://") and lake.warehouse == "s3://lake/warehouse"
    assert lake.catalog_properties()["s3.endpoint"] == "http://127.0.0.1:9000"
    assert query_resource(s).engine == "trino" and query_resource(s).trino_host == "trino.internal"
    store = object_store_resource(s)
    assert store.kind == "s3" and store.bucket == "platformq"
    resources = build_resources(s)
    assert resources["dbt"].target == "production"
    assert resources["credentials"].base_url == "http://creds.internal:8103"
    # a secret from the environment reaches the definitions as a reference (the UI shows its name)
    assert resources["credentials"].api_key.env_var_name == "PLATFORMQ_SERVICES_API_KEY"


def test_importing_the_code_location_reads_no_environment():
    """No project module reads PLATFORMQ_* at import (only load_settings() does, when called)."""
    code = (
        "import os, sys\n"
        "reads = []\n"
        "root = os.getcwd()\n"
        "cls = os.environ.__class__\n"
        "orig_get, orig_getitem = cls.get, cls.__getitem__\n"
        "def ours():\n"
        "    f = sys._getframe(2)\n"
        "    name = f.f_code.co_filename\n"
        "    return name.startswith(root) and '.venv' not in name\n"
        "def get(self, k, *a):\n"
        "    if ours(): reads.append(k)\n"
        "    return orig_get(self, k, *a)\n"
        "def getitem(self, k):\n"
        "    if ours(): reads.append(k)\n"
        "    return orig_getitem(self, k)\n"
        "cls.get, cls.__getitem__ = get, getitem\n"
        "import platformq_assets.definitions, platformq_assets.lake.venue, platformq_assets.lake.transform\n"
        "import platformq_assets.lake.landing, platformq_assets.cli, resources, sensors.landing, pipelines.jobs\n"
        "print(reads)\n"
    )
    env = {**os.environ, "PLATFORMQ_HOME": "/nonexistent", "PLATFORMQ_PROFILE": "production"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_environment_read_helper_detects_project_reads(tmp_path):
    """The probe above is not blind: a project-level read is reported."""
    module = tmp_path / "reads_env.py"
    module.write_text("import os\nVALUE = os.environ.get('PLATFORMQ_HOME')\n")
    code = (
        "import os, sys\n"
        "reads = []\n"
        "root = os.getcwd()\n"
        "cls = os.environ.__class__\n"
        "orig_get = cls.get\n"
        "def get(self, k, *a):\n"
        "    name = sys._getframe(1).f_code.co_filename\n"
        "    if name.startswith(root): reads.append(k)\n"
        "    return orig_get(self, k, *a)\n"
        "cls.get = get\n"
        "import reads_env\n"
        "print(reads)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['PLATFORMQ_HOME']"


@pytest.mark.parametrize("share,ok", [("0.25", True), ("1", True), ("0", True), ("1.5", False), ("-0.1", False)])
def test_ab_challenger_share_is_a_fraction(monkeypatch, share, ok):
    monkeypatch.setenv("PLATFORMQ_AB_CHALLENGER_SHARE", f'{{"price_direction": {share}}}')
    if ok:
        assert Settings().ab_challenger_share == {"price_direction": float(share)}
    else:
        with pytest.raises(ValueError, match="ab_challenger_share"):
            Settings()


@pytest.mark.parametrize("variable,value", [
    ("PLATFORMQ_SIM_SCALE", "-1"), ("PLATFORMQ_SIM_SCALE", "nan"), ("PLATFORMQ_RAY_NUM_CPUS", "0"),
    ("PLATFORMQ_TRINO_PORT", "70000"), ("PLATFORMQ_SPARK_JOB_TIMEOUT_S", "0"), ("PLATFORMQ_SPARK_JOB_TIMEOUT_S", "inf"),
    ("PLATFORMQ_SPARK_JOB_TIMEOUT_S", "1e12"),
    ("PLATFORMQ_SERVING_ALIAS_TTL_S", "-2"), ("PLATFORMQ_FEDERATED_ROUNDS", "0"),
    ("PLATFORMQ_FEDERATED_MIN_PARTICIPANTS", "0"), ("PLATFORMQ_FEDERATED_DP_DELTA", "1"),
    ("PLATFORMQ_FEDERATED_DP_EPSILON", "-3"), ("PLATFORMQ_FEDERATED_EPSILON_BUDGET", "-1"),
    ("PLATFORMQ_DATA_API_CACHE_MB", "-1"), ("PLATFORMQ_TRADING_HISTORY", "999"),
    ("PLATFORMQ_TRADING_SNAPSHOT_COMMANDS", "-1"), ("PLATFORMQ_PROMOTION_MIN_IMPROVEMENT", "nan"),
    ("PLATFORMQ_PROMOTION_MIN_METRIC", "inf"), ("PLATFORMQ_PROMOTION_MIN_METRIC", "-0.5"),
])
def test_a_number_out_of_its_range_fails_with_the_settings_name(monkeypatch, variable, value):
    # each used to be taken as given: a negative venue scale, a Ray of no CPUs, a federation of no rounds
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("PLATFORMQ_").lower()):
        Settings()


def test_a_settings_error_names_the_variables_and_quotes_no_value(monkeypatch):
    """pydantic's message quotes every value read: a Redis password or an S3 secret would reach the terminal
    and the UI's code-location error. load_settings names the variables and the problem only."""
    from resources.settings import SettingsError, load_settings

    for k, v in PRODUCTION_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PLATFORMQ_FEAST_REDIS_URL", "redis://:Sup3rRedisPw@redis.internal:6379/0")
    monkeypatch.setenv("PLATFORMQ_S3_SECRET_KEY", "supersecret123")
    monkeypatch.delenv("PLATFORMQ_RAY_ADDRESS")
    with pytest.raises(SettingsError) as missing:
        load_settings()
    load_settings.cache_clear()
    monkeypatch.setenv("PLATFORMQ_RAY_ADDRESS", "127.0.0.1:6380")
    monkeypatch.setenv("PLATFORMQ_TRINO_PORT", "eighty")
    with pytest.raises(SettingsError) as malformed:
        load_settings()
    assert "PLATFORMQ_RAY_ADDRESS" in str(missing.value) and "PLATFORMQ_TRINO_PORT" in str(malformed.value)
    for err in (missing, malformed):
        message = str(err.value)
        assert "Sup3rRedisPw" not in message and "supersecret123" not in message and "eighty" not in message
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no ValidationError chained on


def test_the_cli_under_production_needs_the_production_instance(monkeypatch):
    """Without DAGSTER_HOME the CLI used a local SQLite instance: runs the UI never shows, writes outside the
    production instance's table pools."""
    import click

    from platformq_assets.cli import _instance

    for k, v in PRODUCTION_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(click.ClickException, match="DAGSTER_HOME"):
        _instance()
    assert "DAGSTER_HOME" not in os.environ


def test_a_relative_home_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLATFORMQ_HOME", "relhome")
    s = Settings()
    assert s.home == tmp_path / "relhome"
    assert s.effective_warehouse == (tmp_path / "relhome" / "warehouse").as_uri()


def test_the_cli_gives_a_bare_local_dagster_home_the_projects_instance_config(platform_home, monkeypatch, tmp_path):
    """A DAGSTER_HOME given without a dagster.yaml ran the CLI's runs on Dagster's defaults (no table pools)."""
    from platformq_assets.cli import _instance

    bare = tmp_path / "dagster-home"
    monkeypatch.setenv("DAGSTER_HOME", str(bare))
    instance = _instance()
    assert (bare / "dagster.yaml").read_text() == (ROOT / "dagster.yaml").read_text()
    assert instance.root_directory == str(bare)
    pools = instance.get_concurrency_config().pool_config
    assert pools.default_pool_limit == 1
    (bare / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # an operator's own file is kept
    _instance()
    assert (bare / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_documented_postgres_urls_name_an_installed_driver():
    """Every `postgresql+<driver>://` the docs and the settings show names a driver that is installed
    (psycopg2-binary; psycopg 3 is not), so a URL copied from them connects."""
    import importlib.util
    import re

    texts = {p: (ROOT / p).read_text() for p in ("README.md", "resources/settings.py", "infra/production.env.example",
                                                  "infra/dagster.production.yaml", "infra/dagster.compose.yaml")
             if (ROOT / p).exists()}
    drivers = {(p, d) for p, text in texts.items() for d in re.findall(r"postgresql\+(\w+)://", text)}
    assert drivers
    for path, driver in drivers:
        assert importlib.util.find_spec(driver) is not None, f"{path} names postgresql+{driver}://, not installed"


def test_credentials_public_url_is_an_http_address(monkeypatch):
    monkeypatch.setenv("PLATFORMQ_CREDENTIALS_PUBLIC_URL", "https://vc.platformq.example")
    assert Settings().credentials_public_url == "https://vc.platformq.example"
    monkeypatch.setenv("PLATFORMQ_CREDENTIALS_PUBLIC_URL", "vc.platformq.example")
    with pytest.raises(ValueError, match="credentials_public_url"):  # pydantic's ValidationError names the field
        Settings()


def test_spark_conf_reaches_the_spark_session_settings(monkeypatch):
    """PLATFORMQ_SPARK_CONF: what a k8s:// master needs (image, namespace) and sizes, over the defaults."""
    from resources.compute import spark_resource

    monkeypatch.setenv("PLATFORMQ_SPARK_MASTER", "k8s://https://kubernetes.default.svc")
    monkeypatch.setenv("PLATFORMQ_SPARK_CONF", '{"spark.kubernetes.container.image": "platformq/spark:1", '
                                               '"spark.kubernetes.namespace": "lake", "spark.executor.memory": "4g"}')
    config = spark_resource(Settings()).spark_config
    assert config["spark.master"] == "k8s://https://kubernetes.default.svc"
    assert (config["spark.kubernetes.container.image"], config["spark.kubernetes.namespace"],
            config["spark.executor.memory"]) == ("platformq/spark:1", "lake", "4g")
    monkeypatch.setenv("PLATFORMQ_SPARK_CONF", '{"executor.memory": "4g"}')
    with pytest.raises(ValidationError, match="spark"):
        Settings()


def test_an_empty_path_variable_means_unset_not_the_current_folder(platform_home, monkeypatch):
    """A config map or compose file that names a variable with no value (PLATFORMQ_AUDIT_DIR: "") gave Path(""),
    the process's current folder: the audit sensor read ./ (nothing), landing files were looked for under ./,
    state went into the image's code folder. Empty means unset, as for every other setting."""
    from resources.settings import SettingsError, load_settings

    for name in ("HOME", "LANDING_DIR", "AUDIT_DIR", "LAVA_WORKDIR", "LAVA_PYTHON", "DBT_PROJECT_DIR",
                 "CREDENTIALS_ISSUER_KEY_FILE"):
        monkeypatch.setenv(f"PLATFORMQ_{name}", "")
    s = Settings()
    default = Settings.model_fields
    assert s.home == default["home"].default and s.landing_dir == default["landing_dir"].default
    assert (s.dbt_project_dir, s.lava_python) == (default["dbt_project_dir"].default, default["lava_python"].default)
    assert (s.audit_dir, s.lava_workdir, s.credentials_issuer_key_file) == (None, None, None)
    assert s.effective_audit_dir == s.home / "services"
    # a shared credentials store still needs a real key file: an empty one is missing, not the folder "."
    monkeypatch.setenv("PLATFORMQ_HOME", str(platform_home))
    monkeypatch.setenv("PLATFORMQ_CREDENTIALS_STORE_URL", "postgresql+psycopg2://c:pw@db/credentials")
    load_settings.cache_clear()
    with pytest.raises(SettingsError, match="PLATFORMQ_CREDENTIALS_ISSUER_KEY_FILE"):
        load_settings()
    load_settings.cache_clear()


def test_services_over_http_need_their_urls_and_key_at_load_even_when_chosen_explicitly(monkeypatch):
    """PLATFORMQ_SERVICES_IN_PROCESS=false says the same as leaving it unset in production: the services are
    reached over HTTP, so their URLs and the API key are required at load (they were only when it was unset; with
    false and no key the definitions loaded and each run failed at its first service call)."""
    from resources.settings import SettingsError, load_settings

    for k, v in PRODUCTION_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PLATFORMQ_SERVICES_IN_PROCESS", "false")
    monkeypatch.delenv("PLATFORMQ_SERVICES_API_KEY")
    load_settings.cache_clear()
    with pytest.raises(SettingsError, match="PLATFORMQ_SERVICES_API_KEY"):
        load_settings()
    load_settings.cache_clear()
    monkeypatch.setenv("PLATFORMQ_SERVICES_API_KEY", "pq_secret")
    assert Settings().effective_services_in_process is False


@pytest.mark.parametrize("name, value", [("PLATFORMQ_AIRFLOW_DAGS", "etl_daily,export_dag"),
                                         ("PLATFORMQ_SERVICE_URLS", "trading=http://t.internal:8100"),
                                         ("PLATFORMQ_SPARK_CONF", "spark.executor.memory=4g")])
def test_a_list_or_map_that_is_not_json_is_a_settings_error_naming_its_variable(monkeypatch, name, value):
    """Lists and maps are read as JSON. One that is not was pydantic-settings' own error ("error parsing value for
    field ..."), which the CLI does not catch (a traceback) and which names a field, not the variable."""
    from resources.settings import SettingsError, load_settings

    monkeypatch.setenv(name, value)
    load_settings.cache_clear()
    with pytest.raises(SettingsError, match=name) as error:
        load_settings()
    load_settings.cache_clear()
    assert value not in str(error.value) and "JSON" in str(error.value)


@pytest.mark.parametrize("given, value, needed", [
    ("PLATFORMQ_AIRFLOW_URL", "http://airflow.internal:8080", "PLATFORMQ_AIRFLOW_DAGS"),
    ("PLATFORMQ_AIRFLOW_DAGS", '["export_dag"]', "PLATFORMQ_AIRFLOW_URL"),
])
def test_airflow_needs_its_url_and_its_dags_together(monkeypatch, given, value, needed):
    # one without the other built no Airflow resource and no sensor: the DAGs were silently not watched
    monkeypatch.setenv(given, value)
    with pytest.raises(ValidationError, match=f"{given} is set without {needed}"):
        Settings()
    monkeypatch.setenv("PLATFORMQ_AIRFLOW_URL", "http://airflow.internal:8080")
    monkeypatch.setenv("PLATFORMQ_AIRFLOW_DAGS", '["export_dag"]')
    assert Settings().airflow_dags == ("export_dag",)


@pytest.mark.parametrize("name, value", [("CATALOG_NAME", "platformq"), ("TRINO_USER", "platformq"),
                                         ("TRINO_PORT", 8080), ("S3_REGION", "us-east-1"), ("SIM_SEED", 7),
                                         ("SERVICE_URLS", {}), ("LANDING_SOURCES", ("partner_quotes", "kyc_events")),
                                         ("PROFILE", "local"), ("SERVICES_IN_PROCESS", None)])
def test_any_variable_set_to_the_empty_string_is_unset(monkeypatch, name, value):
    # a config map's `PLATFORMQ_CATALOG_NAME: ""` gave a catalog named '' (an empty lake beside the real one);
    # a port, a list or a choice failed the load
    monkeypatch.setenv(f"PLATFORMQ_{name}", "")
    assert getattr(Settings(), name.lower()) == value


@pytest.mark.parametrize("field", ["min_metric", "min_improvement"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.5, 1.5])
def test_the_promotion_gates_run_config_is_an_roc_auc_bound(field, value):
    # the run config's own thresholds, like the settings': `challenger < champion + nan` is never true
    from platformq_assets.ml.lifecycle import GateConfig

    with pytest.raises(ValidationError, match=field):
        GateConfig(**{field: value})
    assert getattr(GateConfig(**{field: 0.6}), field) == 0.6
    if field == "min_improvement":  # a tolerance: a challenger slightly worse than the champion may pass
        assert GateConfig(min_improvement=-0.02).min_improvement == -0.02


@pytest.mark.parametrize("tracking", ["postgresql+psycopg2://mlflow:pw@db:5432/mlflow", "sqlite:////srv/mlflow.db"])
def test_production_mlflow_on_a_database_needs_an_artifact_root(monkeypatch, tracking):
    """A database tracking URI has no server to keep artifacts: MLflow put every experiment's models under the step
    pod's ./mlruns, gone with the pod while the registry still points at them. Production names a root instead."""
    for k, v in PRODUCTION_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PLATFORMQ_MLFLOW_TRACKING_URI", tracking)
    with pytest.raises(ValidationError, match="PLATFORMQ_MLFLOW_ARTIFACT_LOCATION") as err:
        Settings()
    assert "pw@" not in str(err.value)
    monkeypatch.setenv("PLATFORMQ_MLFLOW_ARTIFACT_LOCATION", "s3://mlflow/artifacts")
    assert Settings().effective_mlflow_artifact_location == "s3://mlflow/artifacts"
    # a tracking server keeps (or proxies) artifacts where it was told to: nothing more is needed
    monkeypatch.delenv("PLATFORMQ_MLFLOW_ARTIFACT_LOCATION")
    monkeypatch.setenv("PLATFORMQ_MLFLOW_TRACKING_URI", "https://mlflow.internal")
    assert Settings().effective_mlflow_artifact_location is None
