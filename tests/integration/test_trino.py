"""Trino, tested honestly without a Trino server: dbt compiles every model for the trino target
offline, the generated SQL parses as Trino SQL (sqlglot), and the connector/client configuration
matches the catalog pyiceberg writes. No Trino server can run here: the query path runs against a stand-in
coordinator on 127.0.0.1 that speaks the client's HTTP statement protocol (rows as Arrow, connection closed)."""

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
           "DBT_TARGET_PATH": str(tmp_path), "DBT_LOG_PATH": str(tmp_path / "logs")}
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


class _Coordinator:
    """A stand-in Trino coordinator on 127.0.0.1 that speaks the client's statement protocol (POST the statement,
    follow nextUri to the rows): enough to run QueryEngineResource.query's Trino path end to end."""

    COLUMNS = [{"name": "symbol", "type": "varchar", "typeSignature": {"rawType": "varchar",
                                                                   "arguments": [{"kind": "LONG", "value": 2147483647}]}},
               {"name": "n", "type": "bigint", "typeSignature": {"rawType": "bigint", "arguments": []}}]

    def __init__(self):
        import http.server
        import json
        import threading

        from tests.ports import free_port

        self.statements, self.headers, self.open, self.lock = [], [], 0, threading.Lock()
        self.rows = [["AAA", 2], ["BBB", 3]]
        coordinator, port = self, free_port()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a coordinator does: the client pools the socket

            def _send(self, body):
                data = json.dumps({"id": "q1", "infoUri": f"http://127.0.0.1:{port}/ui/q1", **body}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                coordinator.statements.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
                coordinator.headers.append(dict(self.headers))
                self._send({"nextUri": f"http://127.0.0.1:{port}/v1/statement/q1/1", "stats": {"state": "QUEUED"}})

            def do_GET(self):  # noqa: N802
                if coordinator.COLUMNS is None:  # a statement without a result set (DDL): no columns, no data
                    self._send({"updateType": "CREATE TABLE", "stats": {"state": "FINISHED"}})
                    return
                self._send({"columns": coordinator.COLUMNS, "data": coordinator.rows,
                            "stats": {"state": "FINISHED"}})

            def handle(self):  # one client connection, its requests until the client closes it
                with coordinator.lock:
                    coordinator.open += 1
                try:
                    super().handle()
                finally:
                    with coordinator.lock:
                        coordinator.open -= 1

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_trino_query_returns_arrow_and_closes_its_connection():
    import gc
    import time

    from resources.query import QueryEngineResource

    coordinator = _Coordinator()
    try:
        engine = QueryEngineResource(engine="trino", trino_host="127.0.0.1", trino_port=coordinator.port)
        gc.disable()  # what the client leaves open stays open until a collection: none runs here
        try:
            table = engine.query("SELECT symbol, count(*) AS n FROM silver.trades GROUP BY 1", lake=None)
            assert coordinator.statements == ["SELECT symbol, count(*) AS n FROM silver.trades GROUP BY 1"]
            assert table.to_pylist() == [{"symbol": "AAA", "n": 2}, {"symbol": "BBB", "n": 3}]
            coordinator.COLUMNS = [coordinator.COLUMNS[0], {**coordinator.COLUMNS[0]}]  # select a.symbol, b.symbol
            coordinator.rows = [["AAA", "BBB"]]
            twice = engine.query("SELECT a.symbol, b.symbol FROM silver.trades a, silver.trades b", lake=None)
            assert twice.column_names == ["symbol", "symbol"] and [c.to_pylist() for c in twice.columns] == [
                ["AAA"], ["BBB"]]  # both columns, by position (a dict of names kept the last)
            coordinator.COLUMNS = None
            nothing = engine.query("CREATE TABLE iceberg.scratch.t AS SELECT 1 AS x", lake=None)
            assert nothing.num_columns == 0 and nothing.num_rows == 0  # like DuckDB's: no result set, no TypeError
            # the connection's HTTP session is closed with the query, not left to the collector with its socket
            deadline = time.monotonic() + 5
            while coordinator.open and time.monotonic() < deadline:
                time.sleep(0.05)
            assert coordinator.open == 0
        finally:
            gc.enable()
    finally:
        coordinator.server.shutdown()
        coordinator.server.server_close()


def test_a_trino_query_runs_in_utc_whatever_the_machines_zone(monkeypatch):
    """The Trino client sends the machine's zone as the session's: on a machine in Tokyo, `ts >= date '2024-01-02'`
    or `ts >= timestamp '2024-01-02 00:00'` cut at Tokyo's midnight and `current_date` was Tokyo's day, while
    DuckDB's queries (and the lake's days) are UTC: the same SQL answered other rows in production."""
    import tzlocal

    from resources.query import QueryEngineResource

    monkeypatch.setattr(tzlocal, "get_localzone_name", lambda: "Asia/Tokyo")
    coordinator = _Coordinator()
    try:
        engine = QueryEngineResource(engine="trino", trino_host="127.0.0.1", trino_port=coordinator.port)
        engine.query("SELECT count(*) AS n FROM silver.trades WHERE ts >= DATE '2024-01-02'", lake=None)
        [headers] = coordinator.headers
        assert headers["X-Trino-Time-Zone"] == "UTC"
    finally:
        coordinator.server.shutdown()
        coordinator.server.server_close()


def test_dbt_creates_the_trino_tables_partitioned_by_day(tmp_path):
    """dbt-trino run against the stand-in coordinator (every catalog lookup answers no rows, so every model is
    created): each table is created partitioned by partition_date, as the lake's own tables are. Unpartitioned,
    the pre-hook's delete of a rebuilt day could not drop the day's files and wrote position delete files
    instead, on every rebuild, which every later read merges and which keep the lake's compaction off the table.
    Its session is UTC on a machine in another zone, as the platform's own Trino queries are (the days cut by
    `current_date` and zone-less timestamps are the lake's UTC days)."""
    import re

    coordinator = _Coordinator()
    coordinator.COLUMNS = [{"name": "x", "type": "varchar",
                            "typeSignature": {"rawType": "varchar", "arguments": [{"kind": "LONG", "value": 1}]}}]
    coordinator.rows = []
    env = {**os.environ, "PLATFORMQ_TRINO_HOST": "127.0.0.1", "PLATFORMQ_TRINO_PORT": str(coordinator.port),
           "DBT_TARGET_PATH": str(tmp_path), "DBT_LOG_PATH": str(tmp_path / "logs"), "PLATFORMQ_PII_SALT": "s",
           # set but empty (a config map's `KEY: ""`) is unset, as the platform's settings take it: dbt used to
           # write to catalog '' as user '' over scheme '' while Dagster read `iceberg`
           "PLATFORMQ_TRINO_USER": "", "PLATFORMQ_TRINO_CATALOG": "", "PLATFORMQ_TRINO_HTTP_SCHEME": "",
           "TZ": "Asia/Tokyo"}
    try:
        run = subprocess.run([str(ROOT / ".venv" / "bin" / "dbt"), "run", "--target", "production", "--profiles-dir",
                              ".", "--select", "trades accounts ohlcv_bars positions_pnl trader_leaderboard",
                              "--vars", '{"partition_date": "2024-01-02"}'], cwd=ROOT / "dbt", env=env,
                             capture_output=True, text=True)
    finally:
        coordinator.server.shutdown()
        coordinator.server.server_close()
    assert run.returncode == 0, run.stdout[-2000:]
    assert coordinator.headers and {h.get("X-Trino-Time-Zone") for h in coordinator.headers} == {"UTC"}
    created = {}
    for statement in coordinator.statements:
        match = re.search(r'create table "iceberg"\."(\w+)"\."(\w+)"\s*(.*?)\s+as \(', statement, re.S)
        if match:
            created[f"{match[1]}.{match[2]}"] = " ".join(match[3].split())
    assert created == {table: "WITH (partitioning = ARRAY['partition_date'])" for table in (
        "silver.trades", "silver.accounts", "gold.ohlcv_bars", "gold.positions_pnl", "gold.trader_leaderboard")}
