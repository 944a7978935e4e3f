"""Tenant-scoped, paginated reads of lake tables (pure: no HTTP, no Dagster).

``lake`` is anything with ``list_tables()`` and ``load_table(identifier)``
returning a pyiceberg table (the platform's LakeResource qualifies). Filters
and columns are validated against the schema of the snapshot being read; rows
of tables that carry a ``tenant_id`` column are restricted to the caller's
tenant; pages are pinned to one snapshot, so paging never mixes two versions of
a table. A filter selects exactly the rows for which it is true: on a decimal
column the value is compared as a decimal, never rounded to the column's scale.

Tenancy fails closed: a table without ``tenant_id`` is served only if it is in
``SHARED_TABLES`` (market-wide data every tenant may see). Any other such table
(per-account rows that do not say whose they are) is answered like a table that
does not exist, to every tenant, in the catalog and on reads.

A snapshot never changes, so the rows a read selects from one (filtered, scoped
and sorted) are kept in a byte-bounded LRU cache: the next pages of the same read
are slices of them, not scans of the whole table again. An entry is dropped as
soon as a read of its table finds its snapshot gone (expired, e.g. after an
erasure), so nothing outlives its snapshot for longer than that.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import json
import math
import threading
from collections import OrderedDict
from typing import Any, Protocol

READABLE_NAMESPACES = ("gold",)
TENANT_COLUMN = "tenant_id"
# Gold tables without a tenant_id that hold market-wide data only (rows per instrument, none per account).
SHARED_TABLES = frozenset({
    "gold.ohlcv_bars",  # per instrument and bar, from the public trade tape
    "gold.price_direction_predictions",  # per instrument (features/repo.py ENTITY_KEYS)
    "gold.snn_anomaly_scores",  # per instrument window (platformq_assets/neuromorphic/scores.py)
})
# Columns of a market-wide table that no tenant is served: surveillance's ground truth (which windows held a
# known manipulation, and which one) is about other participants' conduct; the model's scores and flags are
# the product.
WITHHELD_COLUMNS = {
    "gold.snn_anomaly_scores": frozenset({"label", "anomaly_type", "anomaly_id"}),
}
OPERATORS = {"eq", "ne", "lt", "le", "gt", "ge"}
MAX_PAGE = 1000
DEFAULT_CACHE_BYTES = 256 * 2**20


class ReadError(ValueError):
    def __init__(self, message: str, status: int = 422, kind: str = "invalid-read"):
        super().__init__(message)
        self.status = status
        self.kind = kind


class Lake(Protocol):
    def list_tables(self) -> list[str]: ...
    def load_table(self, identifier: str): ...


@dataclasses.dataclass
class Page:
    table: str
    snapshot_id: int | None
    columns: list[str]
    rows: list[dict]
    next_page_token: str | None
    total_rows: int


def _encode_token(snapshot_id: int | None, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"s": snapshot_id, "o": offset}).encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int | None, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        snapshot, offset = data["s"], data["o"]
        if (snapshot is not None and type(snapshot) is not int) or type(offset) is not int or offset < 0:
            raise ValueError
        return snapshot, offset
    except Exception:
        raise ReadError("page_token is not valid") from None


def _iceberg_kind(field_type) -> str:
    from pyiceberg.types import ListType

    if isinstance(field_type, ListType):
        return "array"
    if not field_type.is_primitive:
        return "object"  # a map or a struct
    name = str(field_type)
    if name in ("long", "int"):
        return "integer"
    if name in ("double", "float") or name.startswith("decimal"):
        return "number"
    if name == "boolean":
        return "boolean"
    if name == "date":
        return "date"
    if name.startswith("timestamp"):
        return "timestamp"
    return "string"


def _cast(field_type, column: str, raw: str):
    kind = _iceberg_kind(field_type)
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":  # a decimal column's values are compared exactly, so its bounds are decimals too
            value = decimal.Decimal(raw) if str(field_type).startswith("decimal") else float(raw)
            # pyiceberg refuses NaN literals; bounds must be real numbers alike
            if not (value.is_finite() if isinstance(value, decimal.Decimal) else math.isfinite(value)):
                raise ValueError
            return value
        if kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ValueError
            return raw.lower() == "true"
        if kind == "date":
            return dt.date.fromisoformat(raw).isoformat()
        if kind == "timestamp":
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
            # pyiceberg refuses a literal whose zone-ness differs from the column's, so align it:
            # a zone-less value on a timestamptz column is UTC, and an offset value on a timestamp
            # column (which holds UTC wall times) becomes the naive UTC time.
            if str(field_type).startswith("timestamptz"):
                return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
            return (value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value).isoformat()
        return raw
    except (ValueError, ArithmeticError):  # ArithmeticError: no such decimal, or a time outside datetime's range
        raise ReadError(f"filter value {raw!r} is not a valid {kind} for column {column!r}") from None


def _condition(field_type, column: str, op: str, raw: str):
    """The pyiceberg expression for ``column op raw``, holding for exactly the rows where that is true."""
    from pyiceberg.expressions import (
        AlwaysFalse,
        EqualTo,
        GreaterThan,
        GreaterThanOrEqual,
        LessThan,
        LessThanOrEqual,
        NotEqualTo,
        NotNull,
    )

    ops = {"eq": EqualTo, "ne": NotEqualTo, "lt": LessThan, "le": LessThanOrEqual, "gt": GreaterThan,
           "ge": GreaterThanOrEqual}
    value = _cast(field_type, column, raw)
    if isinstance(value, decimal.Decimal):
        largest = decimal.Decimal((0, (9,) * field_type.precision, -field_type.scale))
        if value.copy_abs() > largest:
            raise ReadError(f"filter value {raw!r} is outside the range of column {column!r} ({field_type})")
        # pyiceberg rounds a literal to the column's scale, to the nearest (gt 4.6 would become gt 5 and miss 5):
        # a value between two that the column can hold is moved onto the one that keeps the same rows
        up = op in ("gt", "ge")
        bound = value.quantize(decimal.Decimal((0, (1,), -field_type.scale)),
                               decimal.ROUND_CEILING if up else decimal.ROUND_FLOOR,
                               decimal.Context(prec=field_type.precision))
        if bound != value:
            if op == "eq":
                return AlwaysFalse()
            if op == "ne":
                return NotNull(column)  # as ne on a value the column holds: every row but the nulls
            op = "ge" if up else "le"  # on scale 0: gt/ge 4.6 are ge 5, lt/le 4.6 are le 4
        value = bound
    try:
        return ops[op](column, value)
    except (ValueError, TypeError) as exc:  # pyiceberg refuses some literals as it builds them
        raise ReadError(f"filter value {raw!r} is not valid for column {column!r}: {exc}") from None


class PageCache:
    """The rows of recent reads (Arrow tables), least recently used first out, at most ``max_bytes`` in all;
    a read larger than that is not kept."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple):
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: tuple, data) -> None:
        size = data.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = data
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def keep_only(self, identifier: str, table_uuid: str, snapshots: set[int]) -> None:
        """Drop the table's entries of snapshots it no longer has (or of an earlier table of that name)."""
        with self._lock:
            stale = [k for k in self._entries if k[0] == identifier and (k[1] != table_uuid or k[2] not in snapshots)]
            for key in stale:
                self._bytes -= self._entries.pop(key).nbytes


class LakeReader:
    def __init__(self, lake: Lake, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.lake = lake
        self.cache = PageCache(cache_bytes)

    def catalog(self) -> list[dict]:
        out = []
        for identifier in self.lake.list_tables():
            if identifier.split(".")[0] not in READABLE_NAMESPACES:
                continue
            table = self.lake.load_table(identifier)
            fields = table.schema().fields
            if not _servable(identifier, fields):
                continue
            snapshot = table.current_snapshot()
            out.append({
                "table": identifier,
                "snapshot_id": snapshot.snapshot_id if snapshot else None,
                "tenant_scoped": any(f.name == TENANT_COLUMN for f in fields),
                "columns": [{"name": f.name, "type": _iceberg_kind(f.field_type)}
                            for f in _served_fields(identifier, fields)],
            })
        return out

    def read(self, identifier: str, tenant: str, columns: list[str] | None = None,
             filters: list[str] | None = None, snapshot_id: int | None = None, page_size: int = 100,
             page_token: str | None = None, namespaces: tuple[str, ...] = READABLE_NAMESPACES) -> Page:
        """A page of the table's rows of the tenant. ``namespaces`` are the ones the calling route serves
        (the gold tables by default; the audit route names the audit log's)."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
        from pyiceberg.expressions import AlwaysTrue, And, EqualTo
        from pyiceberg.expressions.visitors import bind

        if identifier.split(".")[0] not in namespaces:
            raise _unknown_table(identifier)
        try:
            table = self.lake.load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            raise _unknown_table(identifier) from None
        if not _servable(identifier, table.schema().fields):
            raise _unknown_table(identifier)  # the same answer as a missing table: its existence is not revealed
        if not 1 <= page_size <= MAX_PAGE:
            raise ReadError(f"page_size must be between 1 and {MAX_PAGE}")
        offset = 0
        if page_token:
            token_snapshot, offset = _decode_token(page_token)
            if snapshot_id is not None and token_snapshot != snapshot_id:
                raise ReadError("page_token belongs to another snapshot")
            snapshot_id = token_snapshot
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
            raise _unknown_snapshot(identifier, snapshot_id)
        if snapshot_id is None:
            current = table.current_snapshot()
            snapshot_id = current.snapshot_id if current else None
        # columns, filters and tenancy follow the schema the snapshot was written with, which the scan reads:
        # an older snapshot may lack columns added since, tenant_id among them
        schema = table.scan(snapshot_id=snapshot_id).projection()
        if not _servable(identifier, schema.fields):
            raise _unknown_snapshot(identifier, snapshot_id)  # its rows do not say whose they are
        served = _served_fields(identifier, schema.fields)
        kinds = {f.name: _iceberg_kind(f.field_type) for f in served}
        types = {f.name: f.field_type for f in served}

        selected = columns or [c for c in kinds]
        unknown = [c for c in selected if c not in kinds]
        if unknown:
            raise ReadError(f"unknown columns {unknown}; the table has {sorted(kinds)}")
        repeated = sorted({c for c in selected if selected.count(c) > 1})
        if repeated:
            raise ReadError(f"columns named more than once: {repeated}")
        predicate = AlwaysTrue()
        for raw in filters or []:
            parts = raw.split(":", 2)
            if len(parts) != 3 or parts[1] not in OPERATORS:
                raise ReadError(f"filter {raw!r} must look like column:op:value with op in {sorted(OPERATORS)}")
            column, op, value = parts
            if column not in kinds:
                raise ReadError(f"cannot filter on unknown column {column!r}")
            if not types[column].is_primitive:
                raise ReadError(f"cannot filter on column {column!r} of type {types[column]}: filters compare one "
                                f"value (number, text, date or time)")
            predicate = And(predicate, _condition(types[column], column, op, value))
        try:  # binding converts the literals to the columns' types: a value that does not fit is the caller's
            bind(schema, predicate, case_sensitive=True)
        except (ValueError, TypeError) as exc:  # TypeError: a literal for a list, map or struct column
            raise ReadError(f"filters do not fit the table's columns: {exc}") from None
        if TENANT_COLUMN in kinds:
            predicate = And(predicate, EqualTo(TENANT_COLUMN, tenant))
        if snapshot_id is None:
            return Page(identifier, None, selected, [], None, 0)
        table_uuid = str(table.metadata.table_uuid)
        self.cache.keep_only(identifier, table_uuid, {s.snapshot_id for s in table.snapshots()})
        # everything the selected rows depend on (a shared table's rows are the same for every tenant)
        key = (identifier, table_uuid, snapshot_id, tenant if TENANT_COLUMN in kinds else None, tuple(selected),
               tuple(filters or ()))
        data = self.cache.get(key)
        if data is None:
            data = table.scan(row_filter=predicate, selected_fields=tuple(selected),
                              snapshot_id=snapshot_id).to_arrow().select(selected)
            if data.num_rows:
                sort_keys = [(c, "ascending") for c in selected
                             if kinds[c] in ("integer", "date", "string", "timestamp")][:3]
                if sort_keys:  # a stable order makes offsets meaningful across pages
                    data = data.sort_by(sort_keys)
            self.cache.put(key, data)
        page = data.slice(offset, page_size)
        rows = _json_rows(page)
        next_offset = offset + page.num_rows
        token = _encode_token(snapshot_id, next_offset) if next_offset < data.num_rows else None
        return Page(identifier, snapshot_id, selected, rows, token, data.num_rows)


def _servable(identifier: str, fields) -> bool:
    return identifier in SHARED_TABLES or any(f.name == TENANT_COLUMN for f in fields)


def _served_fields(identifier: str, fields) -> list:
    """The table's columns a tenant may read: all but those withheld (they are unknown columns to a read)."""
    withheld = WITHHELD_COLUMNS.get(identifier, frozenset())
    return [f for f in fields if f.name not in withheld]


def _unknown_table(identifier: str) -> ReadError:
    return ReadError(f"unknown table {identifier!r}", 404, "unknown-table")


def _unknown_snapshot(identifier: str, snapshot_id: int) -> ReadError:
    return ReadError(f"table {identifier} has no snapshot {snapshot_id}", 404, "unknown-snapshot")


def _json_rows(page) -> list[dict]:
    """The page's rows as JSON-ready dicts, converted a column at a time: only dates, times, decimals and floats
    need a look at each value (integers, strings and booleans come out of Arrow as they are served)."""
    import pyarrow as pa

    columns = []
    for field, column in zip(page.schema, page.columns):
        values = column.to_pylist()
        kind = field.type
        if pa.types.is_temporal(kind) or pa.types.is_decimal(kind) or pa.types.is_floating(kind):
            values = [_jsonable(v) for v in values]
        columns.append(values)
    return [dict(zip(page.column_names, row)) for row in zip(*columns)]


def _jsonable(value: Any):
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "is_finite"):  # Decimal
        return float(value)
    if isinstance(value, float) and value != value:
        return None
    return value
