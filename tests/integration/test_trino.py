"""Trino, tested honestly without a Trino server: dbt compiles every model for the trino target
offline, the generated SQL parses as Trino SQL (sqlglot), and the connector/client configuration
matches the catalog pyiceberg writes. No query is sent to a Trino server here (none can run)."""

import os
import subprocess
from pathlib import Path

import pytest
import sqlglot

from resources import query_resource
from resources.settings import Settings
from tests.conftest import ML_PRODUCTION_ENV, ROOT

pytestmark = pytest.mark.slow


def test_dbt_models_compile_for_trino_and_parse_as_trino_sql(tmp_path):
    env = {**os.environ, "PLATFORMQ_TRINO_HOST": "127.0.0.1", "PLATFORMQ_TRINO_PORT": "9",
           "DBT_TARGET_PATH": str(tmp_path)}
    subprocess.run([str(ROOT / ".venv" / "bin" / "dbt"), "--no-populate-cache", "compile", "--target",
                    "production", "--profiles-dir", ".", "--no-introspect", "--quiet",
                    "--vars", '{"partition_date": "2024-01-02"}'], cwd=ROOT / "dbt", env=env, check=True,
                   capture_output=True)
    compiled = sorted(Path(tmp_path, "compiled").rglob("*.sql"))
    models = [p for p in compiled if p.parent.name in ("silver", "gold")]
    assert {p.stem for p in models} == {"trades", "accounts", "ohlcv_bars", "positions_pnl", "trader_leaderboard"}
    assert len(compiled) > len(models)  # dbt tests compile too
    for path in compiled:
        sql = path.read_text()
        statement = sqlglot.parse_one(sql, read="trino")  # raises on anything Trino would not parse
        assert statement is not None, path
    accounts = Path(tmp_path, "compiled", "platformq", "models", "silver", "accounts.sql").read_text()
    assert "to_hex(sha256(to_utf8(" in accounts  # the Trino branch of the tokenise macro
    assert '"iceberg"."bronze"."accounts"' in accounts  # reads the Iceberg catalog's tables
    with pytest.raises(sqlglot.errors.ParseError):  # the parser is not blind to malformed SQL
        sqlglot.parse_one("select a, from t where", read="trino")

    # column lineage from the Trino SQL: the same derivation the dbt asset reports in production
    from platformq_assets.lake.column_lineage import model_column_lineage, read_tables

    bronze_accounts = ["account_id", "partition_date", "tenant_id", "tenant_name", "user_id", "full_name", "email",
                       "agent_type", "initial_balance_minor"]
    assert read_tables(accounts, "trino") == {("bronze", "accounts")}
    lineage = model_column_lineage(accounts, ["account_id", "email_token"], "trino",
                                   lambda schema, table: bronze_accounts if (schema, table) == ("bronze", "accounts")
                                   else None).deps_by_column
    assert [(d.asset_key.to_user_string(), d.column_name) for d in lineage["account_id"]] == [
        ("bronze/accounts", "account_id")]
    # the tokenised email is computed from the raw email only (the salt is a literal)
    assert [(d.asset_key.to_user_string(), d.column_name) for d in lineage["email_token"]] == [
        ("bronze/accounts", "email")]


def test_trino_connector_reads_the_catalog_pyiceberg_writes():
    props = {}
    for line in (ROOT / "infra" / "trino" / "catalog" / "iceberg.properties").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            props[key] = value
    assert props["connector.name"] == "iceberg" and props["iceberg.catalog.type"] == "jdbc"
    assert props["iceberg.jdbc-catalog.catalog-name"] == Settings.model_fields["catalog_name"].default
    assert props["s3.path-style-access"] == "true"  # MinIO and moto need path-style addressing


def test_query_resource_is_configured_for_trino_from_settings(monkeypatch):
    for k, v in {"PLATFORMQ_PROFILE": "production", "PLATFORMQ_CATALOG_URI": "postgresql+psycopg2://u:p@db/c",
                 "PLATFORMQ_WAREHOUSE": "s3://lake/w", "PLATFORMQ_S3_ENDPOINT": "http://minio:9000",
                 "PLATFORMQ_S3_ACCESS_KEY": "k", "PLATFORMQ_S3_SECRET_KEY": "s", "PLATFORMQ_PII_SALT": "salt", "PLATFORMQ_OBJECT_STORE_BUCKET": "b",
                 "PLATFORMQ_TRINO_HOST": "trino.internal", "PLATFORMQ_TRINO_PORT": "8443",
                 "PLATFORMQ_TRINO_HTTP_SCHEME": "https", "PLATFORMQ_SERVICES_IN_PROCESS": "true", **ML_PRODUCTION_ENV}.items():
        monkeypatch.setenv(k, v)
    engine = query_resource(Settings())
    connection = engine.trino_connection()
    assert (connection.host, connection.port, connection.http_scheme, connection.catalog) == (
        "trino.internal", 8443, "https", "iceberg")
