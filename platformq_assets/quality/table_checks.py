"""Reusable data checks over Arrow tables, returning (passed, metadata).

Assets declare their checks next to themselves (``check_specs``) and call
these on the data they just wrote; results go back as ``AssetCheckResult``s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


def not_empty(table: "pa.Table") -> tuple[bool, dict]:
    return table.num_rows > 0, {"rows": table.num_rows}


def unique_not_null(table: "pa.Table", columns: Iterable[str]) -> tuple[bool, dict]:
    """Key columns have no nulls and no duplicate combinations."""
    import pyarrow.compute as pc

    columns = list(columns)
    nulls = sum(table.column(c).null_count for c in columns)
    if table.num_rows == 0:
        return True, {"nulls": 0, "duplicates": 0}
    grouped = table.select(columns).group_by(columns).aggregate([([], "count_all")])
    duplicates = int(pc.sum(pc.greater(grouped.column("count_all"), 1)).as_py() or 0)
    return nulls == 0 and duplicates == 0, {"key": ", ".join(columns), "nulls": nulls, "duplicate_keys": duplicates}


def accepted_values(table: "pa.Table", column: str, values: Iterable, allow_null: bool = False) -> tuple[bool, dict]:
    import pyarrow as pa
    import pyarrow.compute as pc

    values = list(values)
    col = table.column(column)
    if pa.types.is_dictionary(col.type):  # a pandas categorical: its values are checked
        col = col.cast(col.type.value_type)
    bad_mask = pc.invert(pc.is_in(col, value_set=pa.array(values, type=col.type)))
    if allow_null:
        bad_mask = pc.and_(bad_mask, pc.is_valid(col))
    else:
        bad_mask = pc.or_(bad_mask, pc.is_null(col))
    bad_mask = pc.fill_null(bad_mask, True)
    bad = col.filter(bad_mask)
    unexpected = sorted({str(v) for v in bad.to_pylist()})[:10]
    return len(bad) == 0, {"column": column, "unexpected_rows": len(bad), "unexpected_values": ", ".join(unexpected)}


def all_positive(table: "pa.Table", column: str) -> tuple[bool, dict]:
    import pyarrow.compute as pc

    import pyarrow as pa

    col = table.column(column)
    bad_mask = pc.fill_null(pc.less_equal(col, 0), True)  # a null is not positive
    if pa.types.is_floating(col.type):
        bad_mask = pc.or_(bad_mask, pc.fill_null(pc.is_nan(col), False))  # NaN <= 0 is false, NaN is not positive
    bad = int(pc.sum(bad_mask).as_py() or 0)
    return bad == 0, {"column": column, "non_positive_rows": bad}
