"""Profiling metadata attached to every lake materialisation.

Per column: null fraction, distinct count, min and max, rendered as a
Markdown table in the UI, plus Dagster's standard column schema and row count.

Min and max are given for numeric and temporal columns only. A string column's
extremes are raw values (a name, an email, a KYC field of a landing file), and
the metadata lands in Dagster's event log, which the lake's masking and erasure
never reach, so a profile never quotes a string value. Landing tables (partners' data,
whose numbers and times can be personal: a date of birth, an id stored as a number) get no
min and max at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import MetadataValue, TableColumn, TableSchema

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 32 else text[:29] + "..."


def column_profile(table: "pa.Table", extremes: bool = True) -> list[dict]:
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = table.num_rows
    out = []
    for name in table.column_names:
        col = table.column(name)
        declared = str(col.type)
        if pa.types.is_dictionary(col.type):  # a pandas categorical: profiled as its values
            col = col.cast(col.type.value_type)
        missing = col.null_count
        if rows and pa.types.is_floating(col.type):  # NaN is a missing value here, not a distinct one
            nan = pc.fill_null(pc.is_nan(col), False)
            missing += int(pc.sum(nan).as_py() or 0)
            col = col.filter(pc.invert(nan))
        entry = {
            "column": name,
            "type": declared,
            "null_fraction": (missing / rows) if rows else 0.0,
            "distinct": _distinct(col) if rows else 0,
            "min": None,
            "max": None,
        }
        # decimals are numbers too: DuckDB's sum of integers is one (dbt's volume, fill_count, lots columns)
        if extremes and rows and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                                  or pa.types.is_decimal(col.type) or pa.types.is_temporal(col.type)):
            entry["min"], entry["max"] = _min_max(col)
        out.append(entry)
    return out


def _distinct(col) -> int | None:
    """Distinct non-null values; None where Arrow cannot count them (lists, structs, maps): a profile never
    fails the materialisation it describes, which has already been written."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return int(pc.count_distinct(col, mode="only_valid").as_py())
    except pa.ArrowNotImplementedError:
        return None


def _min_max(col) -> tuple:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_duration(col.type):  # no min_max kernel for durations: their counts in the same unit
        mm = pc.min_max(col.cast(pa.int64()))
        return tuple(pa.scalar(mm[k].as_py(), col.type).as_py() for k in ("min", "max"))
    try:
        mm = pc.min_max(col)
    except pa.ArrowNotImplementedError:
        return None, None
    return mm["min"].as_py(), mm["max"].as_py()


def profile_metadata(table: "pa.Table", descriptions: dict[str, str] | None = None, extremes: bool = True) -> dict:
    """Row count, column schema (with ``descriptions`` by column name, shown in the UI) and a profile table.
    ``extremes=False`` leaves min and max out: for tables of data whose meaning the platform does not know
    (landing sources), where a number or a time can be a person's (a date of birth, an id stored as a number)."""
    descriptions = descriptions or {}
    profile = column_profile(table, extremes)
    lines = ["| column | type | null % | distinct | min | max |", "|---|---|---|---|---|---|"]
    for p in profile:
        lines.append(
            f"| {p['column']} | {p['type']} | {100 * p['null_fraction']:.1f} | {_fmt(p['distinct'])} "
            f"| {_fmt(p['min'])} | {_fmt(p['max'])} |"
        )
    return {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=f.name, type=str(f.type), description=descriptions.get(f.name))
                     for f in table.schema]
        ),
        "profile": MetadataValue.md("\n".join(lines)),
    }
