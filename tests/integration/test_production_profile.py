"""The production profile against real servers on loopback: Iceberg catalog on Postgres,
warehouse and object store on an S3 endpoint (moto_server), dbt on DuckDB over those tables.

Trino itself cannot run here (no JVM distribution on PyPI/Debian that we can start), so
PLATFORMQ_SQL_ENGINE=duckdb: the same graph, catalog and storage, with dbt-duckdb as the engine.
"""

import pytest
from dagster import DagsterInstance

from tests.integration.helpers import QUIET, SMALL_VENUE, definitions

pytestmark = pytest.mark.slow


def test_lakehouse_graph_runs_on_postgres_catalog_and_s3(production, platform_home):
    from resources import lake_resource, object_store_resource

    settings, endpoint, db = production
    assert settings.profile == "production"
    defs = definitions(settings)
    job = defs.resolve_job_def("lake_daily")
    result = job.execute_in_process(partition_key="2024-01-02", instance=DagsterInstance.get(),
                                    run_config={**QUIET, **SMALL_VENUE}, raise_on_error=False)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())

    lake = lake_resource(settings)
    assert lake.catalog().__class__.__name__ == "SqlCatalog" and lake.catalog_uri.startswith("postgresql")
    fills, trades = lake.read("bronze.fills"), lake.read("silver.trades")
    assert fills.num_rows > 0 and fills.num_rows == 2 * trades.num_rows
    assert lake.read("gold.trader_leaderboard").num_rows > 0
    # data files live in the S3 bucket, not on local disk
    assert lake.load_table("silver.trades").location().startswith("s3://lake/warehouse")
    assert not (platform_home / "warehouse").exists() and not (platform_home / "catalog.db").exists()
    from urllib.parse import urlparse

    from minio import Minio

    s3 = Minio(urlparse(endpoint).netloc, access_key="test", secret_key="test", secure=False)
    objects = [o.object_name for o in s3.list_objects("lake", prefix="warehouse/", recursive=True)]
    assert any(name.endswith(".parquet") for name in objects) and any("metadata" in n for n in objects)
    # the venue journal went to the object store bucket
    store = object_store_resource(settings)
    assert store.list_keys("venue/journal/") == ["venue/journal/partition_date=2024-01-02.jsonl"]
    assert store.get_bytes("venue/journal/partition_date=2024-01-02.jsonl").startswith(b'["N"')

    # re-running replaces the partition in the Postgres-backed catalog: no duplicates
    again = job.execute_in_process(partition_key="2024-01-02", instance=DagsterInstance.get(),
                                   run_config={**QUIET, **SMALL_VENUE}, raise_on_error=False)
    assert again.success and lake.read("silver.trades").num_rows == trades.num_rows
