"""Parse landing-zone files into accepted rows and quarantined records.

Pure functions (no Dagster, no catalog): given a file's bytes and the target
table's current column types, return the rows that fit and, for everything
else, the raw record with its file, line and a reason a person can act on.
Nothing is dropped: ``records_read == len(accepted) + len(quarantined)``.
A problem with the whole file (empty, header only, wrong encoding, truncated
Parquet, unknown format) is one quarantined record with ``line = None``.
A reason may quote the offending values; its ``summary`` never does (values
belong in the lake, where masking and erasure reach, not in Dagster's event log).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import decimal
import io
import json
import math
import re
from typing import Any

SUPPORTED_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}

# Column types, in the order inference tries them (most specific first).
LONG, DOUBLE, BOOLEAN, TIMESTAMP, STRING = "long", "double", "boolean", "timestamp", "string"
INFER_ORDER = (LONG, DOUBLE, BOOLEAN, TIMESTAMP, STRING)
# A new column with no value in the file yet: no type is decided (it would stay with the table for good); its
# nulls are stored once a file gives the column a type (LakeResource.ensure_table leaves Arrow's null type out)
EMPTY = "empty"
# A new column takes the most specific type that most (> half) of its non-empty
# values fit; the rest are quarantined rather than silently turning the column
# into strings. A single odd value in a small file therefore cannot decide a type.
# Two exceptions keep bronze raw: digits written with a leading zero or a plus sign ("00123", "+4930...") are
# codes, not numbers (a number column would drop the zero or the sign), so the column is text; and whole
# numbers mixed with decimals make a double column, not a long one that quarantines the decimals.
INFER_MIN_SHARE = 0.5
_CODE = re.compile(r"\s*(\+|-?0[0-9])")
RAW_LIMIT = 4000  # characters of a raw record kept in quarantine

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# The bronze tables' lineage columns: a file column with one of these names (or any leading "_")
# would collide with them, so such a file is quarantined whole.
RESERVED_PREFIX = "_"
CSV_FIELD_LIMIT = 16 * 1024 * 1024  # characters in one CSV field (the csv module's default is 128 KiB)

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


@dataclasses.dataclass
class Quarantined:
    line: int | None
    raw: str
    reason: str  # what is wrong, quoting the offending values (kept in the lake with the raw record)
    summary: str = ""  # the reason without any value from the file (the event log's); default: the reason

    def __post_init__(self):
        self.summary = self.summary or self.reason


@dataclasses.dataclass
class ParsedFile:
    file_format: str
    records_read: int
    columns: dict[str, str]  # column -> type, file's columns in order (new ones inferred)
    accepted: list[dict[str, Any]]
    accepted_lines: list[int]
    quarantined: list[Quarantined]

    @property
    def reconciles(self) -> bool:
        return self.records_read == len(self.accepted) + len(self.quarantined)


class CastError(ValueError):
    """``problem`` says what is wrong without quoting the file; ``str()`` adds the value and the detail."""

    def __init__(self, problem: str, value: Any = None, detail: str | None = None):
        message = problem if value is None else f"{value!r} is {problem}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.problem = problem


def _is_empty(value: Any) -> bool:
    """No value: None or blank text (a NaN is a value, quarantined by its column's cast)."""
    return value is None or (isinstance(value, str) and value.strip() == "")


def _json_text(value: Any) -> str:
    """Text for a value JSON has no type for (Parquet's dates, times, decimals and binary, nested or not)."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no text form")


def _cast(value: Any, kind: str) -> Any:
    """Convert one value to a column type or raise CastError."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, float) and math.isnan(value):
        # a JSON NaN literal or a Parquet NaN is not a missing value: quarantined, as "nan" in a CSV and inf are
        raise CastError("NaN (not a number)")
    if isinstance(value, float) and math.isinf(value):  # a JSON Infinity: quarantined in a text column too
        raise CastError("infinite value")
    try:
        if kind == STRING:
            if isinstance(value, bool):  # as JSON and a CSV write it, not Python's 'True'
                return "true" if value else "false"
            if isinstance(value, (dict, list)):
                return json.dumps(value, sort_keys=True, default=_json_text)
            if isinstance(value, (dt.datetime, dt.date, dt.time, bytes)):
                return _json_text(value)
            text = str(value)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a JSON "\ud83d" (a text cut inside an emoji): no table can store it
                raise CastError("not valid Unicode (an unpaired surrogate)") from None
            return text
        if kind == LONG:
            if isinstance(value, bool):
                raise CastError("boolean is not an integer")
            if isinstance(value, float):
                if not value.is_integer():
                    raise CastError("not a whole number", value)
                value = int(value)
            elif not isinstance(value, int):
                text = str(value).strip()
                if not _INTEGER.fullmatch(text):  # int() would also take "1_000" and " ٣ "
                    raise CastError("not a long (a whole number)", value)
                if _CODE.match(text):  # "01067", "+4935...": a code, whose leading zero or sign a long would lose
                    raise CastError("a code with a leading zero or sign (a long would lose it)", value)
                value = int(text)
            if not INT64_MIN <= value <= INT64_MAX:
                raise CastError("outside the 64-bit integer range", value)
            return value
        if kind == DOUBLE:
            if isinstance(value, bool):
                raise CastError("boolean is not a number")
            if isinstance(value, str):
                text = value.strip()
                if not _DECIMAL.fullmatch(text):  # float() would also take "nan", "inf" and "1_0"
                    raise CastError("not a double (a plain decimal number)", value)
                value = text
            out = float(value)
            if math.isinf(out):
                raise CastError("infinite value")
            return out
        if kind == BOOLEAN:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise CastError("not a boolean", value)
        if kind == TIMESTAMP:
            if isinstance(value, dt.datetime):
                out = value
            elif isinstance(value, dt.date):
                out = dt.datetime.combine(value, dt.time())
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                raise CastError("numbers are not accepted as timestamps")
            else:
                out = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
            if out.tzinfo is None:
                out = out.replace(tzinfo=dt.timezone.utc)
            return out.astimezone(dt.timezone.utc)
    except CastError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise CastError(f"not a {kind}", value, str(exc)) from None
    raise CastError(f"unknown type {kind}")


def _fits(value: Any, kind: str) -> bool:
    if kind == LONG and isinstance(value, float):
        return False  # 2.0 in JSON is a double column, even though it casts to 2
    try:
        _cast(value, kind)
    except CastError:
        return False
    return True


def _is_decimal(value: Any) -> bool:
    """A number written with a fraction or exponent (not a whole number too large for a long: that stays a long
    column's quarantined value, since a double would round it)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        text = value.strip()
        return bool(_DECIMAL.fullmatch(text)) and not _INTEGER.fullmatch(text)
    return False


def _is_huge_integer(value: Any) -> bool:
    """A whole number outside the 64-bit range (a long column cannot hold it, a double would round it)."""
    if isinstance(value, str):
        value = value.strip()
        if not _INTEGER.fullmatch(value):
            return False
        try:
            value = int(value)
        except ValueError:  # more digits than Python converts
            return True
    return isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX


def infer_type(values: list[Any]) -> str:
    present = [v for v in values if not (v is None or (isinstance(v, str) and v.strip() == ""))]
    if not present:
        return EMPTY
    if any(isinstance(v, str) and _CODE.match(v) and _fits(v, DOUBLE) for v in present):
        return STRING  # "00123", "+4930...": a number column would lose the zero or the sign
    for kind in INFER_ORDER:
        fits = [_fits(v, kind) for v in present]
        if sum(fits) / len(present) <= INFER_MIN_SHARE:
            continue
        if kind == LONG and any(not fit and _is_decimal(v) for v, fit in zip(present, fits)):
            continue  # whole numbers and decimals: a double column takes them all
        if kind == DOUBLE and not any(_is_decimal(v) for v in present) and any(map(_is_huge_integer, present)):
            return STRING  # whole numbers past 64 bits (a 20-digit id): a double would round them into each other
        return kind
    return STRING


def file_problem(fmt: str, reason: str, raw: bytes | str = b"", summary: str = "") -> ParsedFile:
    if isinstance(raw, bytes):
        raw_text = "base64:" + base64.b64encode(raw[:RAW_LIMIT]).decode()
    else:
        raw_text = raw[:RAW_LIMIT]
    return ParsedFile(fmt, 1, {}, [], [], [Quarantined(None, raw_text, reason, summary)])


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CastError(
            f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-export it as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _physical_lines(text: str) -> list[str]:
    """Lines split at \\n (and \\r\\n) only: str.splitlines would also split at U+2028, U+0085 and other
    characters that JSON allows inside a value."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _csv_lines(text: str) -> list[str]:
    """Lines as the csv reader counts them: it also ends a line at a lone \\r (old Mac files), so its line
    numbers are these lines'."""
    return [line.removesuffix("\n").removesuffix("\r") for line in io.StringIO(text, newline="").readlines()]


def _records_csv(data: bytes):
    text = _decode(data)
    csv.field_size_limit(CSV_FIELD_LIMIT)
    # strict: an unterminated quote is an error, not a field that swallows the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise CastError("file has no header and no rows") from None
    except csv.Error as exc:
        raise CastError(f"unreadable CSV header: {exc}") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise CastError("header row is empty")
    if not all(header):
        raise CastError(f"header has a blank column name (column {header.index('') + 1})")
    if len(set(header)) != len(header):
        raise CastError(f"header has duplicate column names: {header}")
    # an e-mail address or a date is never a column's name; numbers may be (a year per column), unless most are
    numbers = sum(_fits(h, DOUBLE) for h in header)
    data_like = [h for h in header
                 if "@" in h or _fits(h, TIMESTAMP) or (2 * numbers > len(header) and _fits(h, DOUBLE))]
    if data_like:
        # a file without a header row: its first record would become the column names (in the table's schema and
        # the run's metadata, out of erasure's reach) and be counted nowhere; the values are not quoted here
        raise CastError(f"the first row looks like data, not a header ({len(data_like)} of its {len(header)} "
                        "cells are numbers, dates or e-mail addresses): add a header row naming the columns")
    records, problems = [], []
    lines = _csv_lines(text)
    while True:
        first = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # the reader drops the rest of the line it failed on and goes on with the next one: the broken
            # record's lines are quarantined and the file's later records read as usual (an unterminated quote
            # runs to the end of the file: then the rest is that one record)
            end = max(reader.line_num, first)
            problems.append(Quarantined(first, "\n".join(lines[first - 1:end])[:RAW_LIMIT], f"malformed CSV: {exc}"))
            continue
        line = reader.line_num
        raw = "\n".join(lines[first - 1:line]) if 0 < first <= len(lines) else ",".join(row)
        if not row:
            continue  # blank line: not a record (",," is one, with no values: parse_file quarantines it)
        if len(row) != len(header):
            problems.append(Quarantined(line, raw[:RAW_LIMIT], f"expected {len(header)} fields, found {len(row)}"))
            continue
        records.append((line, raw, dict(zip(header, row))))
    if not records and not problems:
        raise CastError("file has a header but no data rows")
    return header, records, problems


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """An object's pairs as a dict, refusing a key written twice (json.loads keeps the last value silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _records_jsonl(data: bytes):
    text = _decode(data)
    if text.lstrip()[:1] in ("[", "{") and len([line for line in _physical_lines(text) if line.strip()]) > 1:
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            pass  # JSON Lines (the second object is "extra data"), or broken lines, quarantined one by one below
        else:  # one document over several lines: read line by line it is fragments, and its last element accepted
            raise CastError("the file is one JSON document (an array, or an object over several lines), not JSON "
                            "Lines: write one object per line")
    records, problems, header = [], [], []
    seen = set()
    for i, raw in enumerate(_physical_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            problems.append(Quarantined(i, raw[:RAW_LIMIT], f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        except _RepeatedKey as exc:  # the key may belong to nested data (a value): the summary leaves it out
            problems.append(Quarantined(i, raw[:RAW_LIMIT], f"invalid JSON: an object repeats the key {exc.args[0]!r}",
                                        "invalid JSON: an object repeats a key"))
            continue
        except (ValueError, RecursionError) as exc:  # a number of more digits than Python converts, deep nesting
            problem = "a number too long to convert" if isinstance(exc, ValueError) else "nesting too deep"
            problems.append(Quarantined(i, raw[:RAW_LIMIT], f"invalid JSON: {problem}"))
            continue
        if not isinstance(value, dict):
            problems.append(Quarantined(i, raw[:RAW_LIMIT], f"record is a JSON {type(value).__name__}, not an object"))
            continue
        for k in value:
            if k not in seen:
                seen.add(k)
                header.append(k)
        records.append((i, raw, value))
    if not records and not problems:
        raise CastError("file has no records (only blank lines)")
    return header, records, problems


def _records_parquet(data: bytes):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise CastError("unreadable Parquet file (truncated or corrupt)", detail=str(exc)) from None
    if table.num_rows == 0:
        raise CastError("Parquet file has a schema but no rows")
    header = table.column_names
    records = []
    for i, row in enumerate(table.to_pylist(), start=1):
        records.append((i, json.dumps(row, default=str, sort_keys=True), row))
    return header, records, [], {f.name: _arrow_kind(f.type) for f in table.schema}


def _arrow_kind(arrow_type) -> str:
    """A Parquet column's declared type, as a landing type (no inference needed)."""
    import pyarrow as pa

    if pa.types.is_null(arrow_type):
        return EMPTY  # no value to type it by: the table takes the column once a file gives it a type
    if pa.types.is_integer(arrow_type):
        return LONG
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return DOUBLE
    if pa.types.is_boolean(arrow_type):
        return BOOLEAN
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return TIMESTAMP
    return STRING


def parse_file(name: str, data: bytes, table_types: dict[str, str] | None = None) -> ParsedFile:
    """Parse one landing file against the target table's column types (if it exists)."""
    table_types = dict(table_types or {})
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    fmt = SUPPORTED_SUFFIXES.get(suffix)
    if fmt is None:
        return file_problem("unknown", f"unsupported file type {suffix or '(none)'}; "
                             f"expected one of {sorted(SUPPORTED_SUFFIXES)}", data)
    if len(data) == 0:
        return file_problem(fmt, "empty file (0 bytes)")
    try:
        header, records, problems, *declared = {"csv": _records_csv, "jsonl": _records_jsonl,
                                                "parquet": _records_parquet}[fmt](data)
    except CastError as exc:
        return file_problem(fmt, str(exc), data, exc.problem)
    except Exception as exc:  # noqa: BLE001 - a file nobody foresaw is quarantined, not a failed batch
        problem = f"could not be read ({type(exc).__name__})"
        return file_problem(fmt, f"{problem}: {exc}", data, problem)
    declared_types = declared[0] if declared else {}
    reserved = [c for c in header if str(c).startswith(RESERVED_PREFIX)]
    if reserved:
        return file_problem(fmt, f"column names starting with {RESERVED_PREFIX!r} are reserved for the lake's "
                             f"lineage columns: {reserved}; rename them", data)
    if any(str(c).strip() == "" for c in header):
        return file_problem(fmt, "a column has a blank name; name every column", data)

    # Column names are matched without regard to case (DuckDB and Trino read them so, and a second column that
    # differs only in case would hide from the erasure rules and from queries): a file's name takes the table's
    # spelling; a new column is stored in lower case; two names of one file that differ only in case are refused.
    seen: dict[str, str] = {}
    for col in header:
        other = seen.setdefault(str(col).lower(), col)
        if other != col:
            return file_problem(fmt, f"columns {other!r} and {col!r} differ only in case; rename one", data)
    spelling = {name.lower(): name for name in table_types}
    names = {col: spelling.get(str(col).lower(), str(col).lower()) for col in header}  # file's -> stored name

    records_read = len(records) + len(problems)  # every record the file holds, good or bad
    columns: dict[str, str] = {}
    source: dict[str, str] = {}  # stored name -> the file's
    for col in header:
        name = names[col]
        source[name] = col
        columns[name] = (table_types.get(name) or declared_types.get(col)
                         or infer_type([r[2].get(col) for r in records]))

    accepted, accepted_lines = [], []
    for line, raw, record in records:
        if all(_is_empty(value) for value in record.values()):  # ",,", {}, {"a": null}
            problems.append(Quarantined(line, raw[:RAW_LIMIT], "record has no values (every field is empty)"))
            continue
        row, errors, summaries = {}, [], []
        for col, kind in columns.items():
            try:
                row[col] = _cast(record.get(source[col]), kind)
            except CastError as exc:
                origin = "the table's column type" if col in table_types else "the type inferred for this file"
                errors.append(f"column {col!r}: {exc} ({origin} is {kind})")
                summaries.append(f"column {col!r}: {exc.problem} ({origin} is {kind})")
        if errors:
            problems.append(Quarantined(line, raw[:RAW_LIMIT], "; ".join(errors), "; ".join(summaries)))
        else:
            accepted.append(row)
            accepted_lines.append(line)
    problems.sort(key=lambda q: q.line or 0)
    return ParsedFile(fmt, records_read, columns, accepted, accepted_lines, problems)
