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
