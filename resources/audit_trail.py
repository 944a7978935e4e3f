"""The services' audit trail into the lake: ``governance.audit_log``.

Every service appends one JSON line per state-changing request to ``<service>-audit.jsonl`` (services/common/
app.py). This tails those files as a log shipper does: a checkpoint per file in ``ops.audit_files`` (the
byte offset after the last complete line taken, and the line count), so each run takes only what was added;
a line still being written (no newline yet) waits for the next run. A file is known by its service and the
hash of its first line, so a file rotated or recreated under the same name is a new file, read from the start.

Per file and run, the new lines' records and their quarantined lines replace whatever rows an earlier,
interrupted attempt left for the same file from the same offset, and the checkpoint moves last: a crash at
any point is repaired by the next run, never duplicated, never skipped. Lines that are not an audit record
(bad JSON, a missing or mistyped field, a timestamp without a zone) go to ``quarantine.audit_log`` with the
reason (source ``audit/<service>``); for every file and run, lines read = records accepted + quarantined.

``AuditTrailResource`` names the folder the services write to: ``<home>/services`` where the services run in
process or beside Dagster; in production a volume the services and the user-code pods both mount
(``PLATFORMQ_AUDIT_DIR``).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

if TYPE_CHECKING:
    import pyarrow as pa

    from resources.lake import LakeResource

AUDIT_TABLE = "governance.audit_log"
CHECKPOINTS = "ops.audit_files"
QUARANTINE = "quarantine.audit_log"
SUFFIX = "-audit.jsonl"
# A run takes a file's new bytes in pieces of about this size, each written and checkpointed before the next is
# read: memory stays bounded however far behind the runs are (a paused sensor, a week of requests).
CHUNK_BYTES = 32 << 20
# field -> (JSON type, may be null)
FIELDS: dict[str, tuple[type, bool]] = {"ts": (str, False), "correlation_id": (str, False), "tenant": (str, True),
                                        "subject": (str, True), "method": (str, False), "path": (str, False),
                                        "status": (int, False)}
_KIND = {str: "a string", int: "an integer"}


@dataclass
class FileReport:
    service: str
    file: str
    file_id: str
    start_offset: int
    end_offset: int
    lines_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # the file could not be read (its pieces before the error are in and checkpointed)

    @property
    def reconciles(self) -> bool:
        return self.lines_read == self.accepted + self.quarantined


def audit_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob(f"*{SUFFIX}") if p.is_file())


def _file_id(service: str, first_line: bytes) -> str:
    return hashlib.sha256(service.encode() + b"\n" + first_line).hexdigest()


def parse_record(line: str) -> dict[str, Any]:
    """One audit line as a row; ValueError with the reason when it is not a well-formed record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object but {type(record).__name__}")
    row: dict[str, Any] = {}
    for name, (kind, nullable) in FIELDS.items():
        value = record.get(name)
        if value is None:
            if not nullable:
                raise ValueError(f"missing {name}")
        elif not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{name} is not {_KIND[kind]}: {json.dumps(value)[:40]}")
        row[name] = value
    try:
        ts = dt.datetime.fromisoformat(row["ts"])
    except ValueError:
        raise ValueError(f"ts is not an ISO 8601 time: {row['ts'][:40]}") from None
    if ts.tzinfo is None:
        raise ValueError("ts has no time zone")
    row["ts"] = ts.astimezone(dt.timezone.utc)
    if not 100 <= row["status"] <= 599:
        raise ValueError(f"status {row['status']} is not an HTTP status")
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    return row


def _checkpoints(lake: "LakeResource") -> dict[str, dict]:
    if not lake.table_exists(CHECKPOINTS):
        return {}
    return {row["file_id"]: row for row in lake.read(CHECKPOINTS).to_pylist()}


def _new_lines(path: Path, offset: int, max_bytes: int = CHUNK_BYTES) -> tuple[list[tuple[int, bytes]], int]:
    """The complete lines in about ``max_bytes`` after ``offset`` (at least one line, however long) with the
    offset each starts at, and the offset after the last."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(max_bytes)
        if len(data) == max_bytes and b"\n" not in data:
            data += handle.readline()  # one line longer than the chunk: read to its end
    end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
    lines, position = [], 0
    for raw in data[:end].split(b"\n")[:-1]:
        lines.append((offset + position, raw))
        position += len(raw) + 1
    return lines, offset + end


def ingest_audit_files(lake: "LakeResource", directory: Path, batch_id: str,
                       now: dt.datetime | None = None, chunk_bytes: int = CHUNK_BYTES) -> list[FileReport]:
    """Take the lines added to every audit file since its checkpoint into ``governance.audit_log``: in pieces of
    about ``chunk_bytes``, each checkpointed; one report per file for all its pieces.

    A file that cannot be read (its mode after a rotation made it with another owner) gets a report with its
    ``error`` and the others are taken all the same: it stopped every service's audit trail, run after run. A
    file renamed or deleted since the listing (a rotation) is passed over: its lines are under another name."""
    now = now or dt.datetime.now(dt.timezone.utc)
    checkpoints = _checkpoints(lake)
    reports = []
    for path in audit_files(directory):
        service = path.name[: -len(SUFFIX)]
        try:
            with open(path, "rb") as handle:
                first = handle.readline()
        except FileNotFoundError:
            continue
        except OSError as exc:
            reports.append(FileReport(service=service, file=path.name, file_id="", start_offset=0, end_offset=0,
                                      error=f"{type(exc).__name__}: {exc.strerror or exc}"))
            continue
        if not first.endswith(b"\n"):
            continue  # not one complete line yet
        fid = _file_id(service, first)
        seen = checkpoints.get(fid, {"offset": 0, "lines": 0})
        report = FileReport(service=service, file=path.name, file_id=fid, start_offset=seen["offset"],
                            end_offset=seen["offset"])
        offset, done = seen["offset"], seen["lines"]
        while True:
            try:
                lines, end = _new_lines(path, offset, chunk_bytes)
            except FileNotFoundError:
                break
            except OSError as exc:
                report.error = f"{type(exc).__name__}: {exc.strerror or exc}"
                break
            if not lines:
                break
            _ingest_piece(lake, report, service, path.name, fid, lines, offset, done, end, batch_id, now)
            offset, done = end, done + len(lines)
        if report.lines_read or report.error:
            reports.append(report)
    return reports


def _ingest_piece(lake: "LakeResource", report: FileReport, service: str, name: str, fid: str,
                  lines: list[tuple[int, bytes]], offset: int, done: int, end: int, batch_id: str,
                  now: dt.datetime) -> None:
    """One piece of a file (its lines from byte ``offset``, after ``done`` lines): records, quarantine, then the
    checkpoint; added to ``report``."""
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual

    accepted, held = [], []
    for number, (start, raw) in enumerate(lines, start=done + 1):
        try:
            # strictly: a replacement character would make a record that differs from the service's line
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"line is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
            report.reasons["line is not UTF-8"] = report.reasons.get("line is not UTF-8", 0) + 1
            held.append({"line": number, "raw_record": "base64:" + base64.b64encode(raw).decode(), "reason": reason})
            continue
        try:
            row = parse_record(text)
        except ValueError as exc:
            reason = str(exc)
            report.reasons[reason.split(":")[0]] = report.reasons.get(reason.split(":")[0], 0) + 1
            held.append({"line": number, "raw_record": text, "reason": reason})
            continue
        accepted.append({**row, "service": service, "_file_id": fid, "_offset": start, "_line": number})
    # a failed earlier attempt may have left rows from this offset on: they are replaced, not added to
    redo = And(EqualTo("_file_id", fid), GreaterThanOrEqual("_offset", offset))
    lake.replace_where(AUDIT_TABLE, _audit_rows(accepted, batch_id, now), redo)
    if held or lake.table_exists(QUARANTINE):
        lake.replace_where(QUARANTINE, _quarantine_rows(held, service, name, fid, batch_id, now),
                           And(And(EqualTo("source", f"audit/{service}"), EqualTo("file_sha256", fid)),
                               GreaterThanOrEqual("line", done + 1)))
    report.lines_read += len(lines)
    report.accepted += len(accepted)
    report.quarantined += len(held)
    report.end_offset = end
    lake.replace_where(CHECKPOINTS, _checkpoint_row(report, done + len(lines), now), EqualTo("file_id", fid))


def _audit_rows(rows: list[dict], batch_id: str, now: dt.datetime) -> "pa.Table":
    import pyarrow as pa

    return pa.table({
        "ts": pa.array([r["ts"] for r in rows], pa.timestamp("us", tz="UTC")),
        "service": pa.array([r["service"] for r in rows], pa.string()),
        "tenant_id": pa.array([r["tenant"] for r in rows], pa.string()),
        "subject": pa.array([r["subject"] for r in rows], pa.string()),
        "method": pa.array([r["method"] for r in rows], pa.string()),
        "path": pa.array([r["path"] for r in rows], pa.string()),
        "status": pa.array([r["status"] for r in rows], pa.int32()),
        "correlation_id": pa.array([r["correlation_id"] for r in rows], pa.string()),
        "_file_id": pa.array([r["_file_id"] for r in rows], pa.string()),
        "_offset": pa.array([r["_offset"] for r in rows], pa.int64()),
        "_line": pa.array([r["_line"] for r in rows], pa.int64()),
        "_batch_id": pa.array([batch_id] * len(rows), pa.string()),
        "_ingested_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
    })


def _quarantine_rows(held: list[dict], service: str, name: str, fid: str, batch_id: str,
                     now: dt.datetime) -> "pa.Table":
    import pyarrow as pa

    # the landing quarantine's columns, so one query reads every record the lake refused
    return pa.table({
        "source": pa.array([f"audit/{service}"] * len(held), pa.string()),
        "file": pa.array([name] * len(held), pa.string()),
        "file_sha256": pa.array([fid] * len(held), pa.string()),
        "line": pa.array([h["line"] for h in held], pa.int64()),
        "raw_record": pa.array([h["raw_record"] for h in held], pa.string()),
        "reason": pa.array([h["reason"] for h in held], pa.string()),
        "batch_id": pa.array([batch_id] * len(held), pa.string()),
        "quarantined_at": pa.array([now] * len(held), pa.timestamp("us", tz="UTC")),
    })


def _checkpoint_row(report: FileReport, lines: int, now: dt.datetime) -> "pa.Table":
    import pyarrow as pa

    return pa.table({
        "file_id": pa.array([report.file_id], pa.string()),
        "service": pa.array([report.service], pa.string()),
        "file": pa.array([report.file], pa.string()),
        "offset": pa.array([report.end_offset], pa.int64()),
        "lines": pa.array([lines], pa.int64()),
        "updated_at": pa.array([now], pa.timestamp("us", tz="UTC")),
    })


class AuditTrailResource(ConfigurableResource):
    """The folder of the services' ``<service>-audit.jsonl`` files."""

    directory: str

    def files(self) -> list[Path]:
        return audit_files(Path(self.directory))

    def sizes(self) -> dict[str, int]:
        """File name -> size: what the sensor compares between ticks."""
        out = {}
        for path in self.files():
            try:
                out[path.name] = path.stat().st_size
            except FileNotFoundError:  # rotated away between the listing and the stat
                continue
        return out
