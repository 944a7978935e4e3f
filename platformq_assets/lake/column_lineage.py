"""Column lineage of dbt models, from the SQL dbt compiled, with sqlglot.

For each column a model outputs, sqlglot's lineage walks the compiled query (CTEs, stars,
unions, window functions) down to the columns of the tables it reads; those tables are lake
tables (dbt sources and upstream models), named in the compiled SQL as
``<catalog>.<schema>.<table>`` and mapped to asset keys ``[schema, table]``. The result is
Dagster's ``dagster/column_lineage`` metadata (stored with each materialisation; Dagster+ draws
it, the open-source UI does not) and the OpenLineage ``columnLineage`` facet the lineage sensor
emits (Marquez draws it). Star expansion needs the
read tables' columns: the caller passes them from the lake.

sqlglot is imported inside the function (it is only needed when dbt runs).
"""

from __future__ import annotations

from typing import Callable

from dagster import AssetKey, TableColumnDep, TableColumnLineage

DIALECTS = {"local": "duckdb", "production": "trino"}


def read_tables(sql: str, dialect: str) -> set[tuple[str, str]]:
    """(schema, table) of every table the compiled SQL reads."""
    import sqlglot
    from sqlglot import exp

    parsed = sqlglot.parse_one(sql, dialect=dialect)
    return {(t.db, t.name) for t in parsed.find_all(exp.Table) if t.db}  # a CTE reference has no schema


def model_column_lineage(sql: str, columns: list[str], dialect: str,
                         table_columns: Callable[[str, str], list[str] | None]) -> TableColumnLineage:
    """Column -> the (asset, column) pairs it is computed from. ``table_columns(schema, table)``
    gives a read table's columns (None when unknown: its stars cannot be expanded)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.lineage import lineage
    from sqlglot.optimizer.qualify import qualify

    parsed = sqlglot.parse_one(sql, dialect=dialect)
    schema: dict = {}
    for table in parsed.find_all(exp.Table):
        if not table.db:  # a CTE reference
            continue
        known = table_columns(table.db, table.name)
        if known:
            # types do not matter for lineage; names do (star expansion, column resolution)
            level = schema.setdefault(table.catalog, {}) if table.catalog else schema
            level.setdefault(table.db, {})[table.name] = {c: "VARCHAR" for c in known}
    qualified = qualify(parsed, schema=schema, dialect=dialect, validate_qualify_columns=False)
    deps_by_column: dict[str, list[TableColumnDep]] = {}
    for column in columns:
        node = lineage(column, qualified, schema=schema, dialect=dialect)
        found = set()
        for n in node.walk():
            if isinstance(n.source, exp.Table) and not n.downstream and n.source.db:
                found.add((n.source.db, n.source.name, n.name.split(".")[-1].strip('"')))
        deps_by_column[column] = [TableColumnDep(asset_key=AssetKey([db, table]), column_name=col)
                                  for db, table, col in sorted(found)]
    return TableColumnLineage(deps_by_column=deps_by_column)


__all__ = ["DIALECTS", "model_column_lineage", "read_tables"]
