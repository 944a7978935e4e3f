import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests that share a node id are marked ``serial``: Schemathesis makes one test per API operation, all under
    its test function's id, and pytest-xdist's per-file scheduling (``make test``) keeps tests by node id, so it
    would run one of them and count the rest as never collected. ``make test`` runs ``serial`` tests in one
    process after the others."""
    from collections import Counter

    shared = Counter(item.nodeid for item in items)
    for item in items:
        if shared[item.nodeid] > 1:
            item.add_marker(pytest.mark.serial)


@pytest.fixture
def platform_home(tmp_path, monkeypatch):
    """A private platformQ + Dagster home (lake, catalog, landing zone) for one test."""
    from resources.settings import load_settings

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("PLATFORMQ_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PLATFORMQ_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.delenv("PLATFORMQ_PROFILE", raising=False)
    load_settings.cache_clear()
    yield home
    load_settings.cache_clear()


@pytest.fixture
def settings(platform_home):
    from resources.settings import load_settings

    return load_settings()


@pytest.fixture
def lake(settings):
    from resources import lake_resource

    return lake_resource(settings)


def subprocess_env(home: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"PLATFORMQ_HOME": str(home), "DAGSTER_HOME": str(home),
                "PLATFORMQ_LANDING_DIR": str(home / "landing"), "PYTHONPATH": str(ROOT)})
    env.pop("PLATFORMQ_PROFILE", None)
    env.update(extra)
    return env


# The ML backends production names (tracking server, Feast registry + Redis, Ray, Spark). Tests
# that only build definitions or run the lakehouse part never connect to them.
ML_PRODUCTION_ENV = {
    "PLATFORMQ_MLFLOW_TRACKING_URI": "http://127.0.0.1:5055",
    "PLATFORMQ_FEAST_REGISTRY_URI": "postgresql+psycopg2://platformq:platformq@127.0.0.1:5432/feast",
    "PLATFORMQ_FEAST_REDIS_URL": "redis://127.0.0.1:6390/0",
    "PLATFORMQ_RAY_ADDRESS": "127.0.0.1:6380",
    "PLATFORMQ_SPARK_MASTER": "spark://127.0.0.1:7077",
}
