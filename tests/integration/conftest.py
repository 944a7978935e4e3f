"""Fixtures shared by the integration tests."""

import pytest

from resources.settings import load_settings
from tests.conftest import ML_PRODUCTION_ENV
from tests.integration.servers import PG_DSN, create_bucket, moto_s3, postgres_database


@pytest.fixture
def production(platform_home, monkeypatch):
    """The production profile: Iceberg catalog on Postgres, warehouse and object store on S3 (moto_server)."""
    with moto_s3() as endpoint, postgres_database() as db:
        create_bucket(endpoint, "lake")
        create_bucket(endpoint, "platformq-objects")
        env = {
            "PLATFORMQ_PROFILE": "production",
            "PLATFORMQ_CATALOG_URI": PG_DSN.format(db=db),
            "PLATFORMQ_WAREHOUSE": "s3://lake/warehouse",
            "PLATFORMQ_S3_ENDPOINT": endpoint,
            "PLATFORMQ_S3_ACCESS_KEY": "test",
            "PLATFORMQ_S3_SECRET_KEY": "test", "PLATFORMQ_PII_SALT": "test-deployment-salt",
            "PLATFORMQ_OBJECT_STORE_BUCKET": "platformq-objects",
            "PLATFORMQ_SQL_ENGINE": "duckdb",
            "PLATFORMQ_SERVICES_IN_PROCESS": "true",
            **ML_PRODUCTION_ENV,
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        load_settings.cache_clear()
        yield load_settings(), endpoint, db
        load_settings.cache_clear()


@pytest.fixture(scope="session")
def _built_days(tmp_path_factory):
    """Where ``built_day`` keeps its days: one folder the tests work in and a saved copy of each built day."""
    return {"root": tmp_path_factory.mktemp("built-day"), "results": {}}


@pytest.fixture
def built_day(_built_days, monkeypatch):
    """``built_day(job, day)``: a platform home holding ``day`` materialised by ``job`` (the small venue), for tests
    that start from a built day and then change, rebuild or break it.

    The day is materialised once per session, by the real job, and saved; each test gets its own copy of the saved
    home, restored at the same absolute path (Iceberg metadata and the catalog name their files by absolute path),
    so no test sees another's changes. Returns the settings, the lake, the home and the build's Dagster result."""
    import shutil
    from types import SimpleNamespace

    from resources import lake_resource
    from tests.integration.helpers import definitions, run_day

    root = _built_days["root"]
    live = root / "live"

    def point_at_live():
        monkeypatch.setenv("PLATFORMQ_HOME", str(live / "home"))
        monkeypatch.setenv("DAGSTER_HOME", str(live / "home"))
        monkeypatch.setenv("PLATFORMQ_LANDING_DIR", str(live / "landing"))
        monkeypatch.delenv("PLATFORMQ_PROFILE", raising=False)
        load_settings.cache_clear()
        return load_settings()

    def restore(job: str = "lake_daily", day: str = "2024-01-02"):
        saved = root / f"saved-{job}-{day}"
        shutil.rmtree(live, ignore_errors=True)
        if (job, day) in _built_days["results"]:
            shutil.copytree(saved, live, symlinks=True)
            settings = point_at_live()
        else:
            (live / "home").mkdir(parents=True)
            (live / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            settings = point_at_live()
            result = run_day(definitions(settings), day, job=job)
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            shutil.copytree(live, saved, symlinks=True)
            _built_days["results"][job, day] = result
        return SimpleNamespace(settings=settings, lake=lake_resource(settings), home=live / "home",
                               result=_built_days["results"][job, day])

    yield restore
    load_settings.cache_clear()
