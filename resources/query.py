"""SQL over the lake: DuckDB locally, Trino (Iceberg connector) in production."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from dagster import ConfigurableResource

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from resources.lake import LakeResource

_TABLE_REF = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\b")


class QueryEngineResource(ConfigurableResource):
    engine: str = "duckdb"  # "duckdb" or "trino"
    trino_host: str | None = None
    trino_port: int = 8080
    trino_user: str = "platformq"
    trino_catalog: str = "iceberg"
    trino_http_scheme: str = "http"

    def trino_connection(self):
        import trino

        # the session's zone is UTC, as DuckDB's here: the client's default is the machine's zone, in which Trino
        # reads a zone-less literal compared with an instant (ts >= date '2024-01-02') and says current_date
        return trino.dbapi.connect(host=self.trino_host, port=self.trino_port, user=self.trino_user,
                                   catalog=self.trino_catalog, http_scheme=self.trino_http_scheme, timezone="UTC")

    def query(self, sql: str, lake: "LakeResource") -> "pa.Table":
        """Run SQL that names lake tables as ``layer.table`` and return an Arrow table."""
        if self.engine == "trino":
            import pyarrow as pa

            # closed when done: each connection holds an HTTP session and its pooled sockets
            with contextlib.closing(self.trino_connection()) as connection:
                with contextlib.closing(connection.cursor()) as cursor:
                    cursor.execute(sql)
                    rows = cursor.fetchall()
                    # a statement without a result set (DDL, INSERT's count aside) has no description
                    names = [d[0] for d in cursor.description or ()]
            # by position: a name the query repeats (select a.id, b.id) keeps both columns, as DuckDB's does
            return pa.Table.from_arrays([pa.array([r[i] for r in rows]) for i in range(len(names))], names=names)
        return self._duckdb(sql, lake)

    @staticmethod
    def _duckdb(sql: str, lake: "LakeResource") -> "pa.Table":
        import duckdb

        known = set(lake.list_tables())
        # UTC whatever the machine's zone, as the lake stores instants and dbt's DuckDB profile reads them:
        # date_trunc('day', ts) cuts at UTC midnight, and instants come back in UTC
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")  # after connecting: the icu extension that knows zones is loaded
            # Register only the tables the statement names, read through the catalog
            # (never by globbing data files, which would see uncommitted or deleted files).
            for schema, name in set(_TABLE_REF.findall(sql)):
                identifier = f"{schema}.{name}"
                if identifier in known:
                    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                    arrow = lake.read(identifier)
                    con.register(f"__{schema}_{name}", arrow)
                    con.execute(f'CREATE OR REPLACE VIEW "{schema}"."{name}" AS SELECT * FROM "__{schema}_{name}"')
            relation = con.sql(sql)
            if relation is None:  # a statement without a result set
                import pyarrow as pa

                return pa.table({})
            return relation.to_arrow_table()
        finally:
            con.close()
