"""The services' audit trail into governance.audit_log: every line once, in order, malformed ones quarantined
with the reason, a line still being written left for the next run, a crash repaired without duplicates."""

import json

import pytest
from fastapi.testclient import TestClient

from resources.audit_trail import AUDIT_TABLE, CHECKPOINTS, QUARANTINE, ingest_audit_files


def _record(i: int, tenant="t-acme", **overrides) -> dict:
    record = {"ts": f"2026-11-27T10:{i // 60:02d}:{i % 60:02d}.000001+00:00", "correlation_id": f"c{i:04d}",
              "tenant": tenant, "subject": "ops-admin", "method": "POST", "path": f"/v1/orders/{i}", "status": 201}
    return {**record, **overrides}


def _write(path, *lines: str, newline_at_end=True) -> None:
    with open(path, "a") as handle:
        handle.write("\n".join(lines) + ("\n" if newline_at_end else ""))


@pytest.fixture
def audit_dir(tmp_path):
    folder = tmp_path / "services"
    folder.mkdir()
    return folder


def _ids(lake) -> list[str]:
    """Correlation ids in file order (one file) or sorted by offset within files."""
    table = lake.read(AUDIT_TABLE)
    return [c for _, c in sorted(zip(table.column("_offset").to_pylist(), table.column("correlation_id").to_pylist()))]


def test_new_lines_are_taken_once_and_malformed_ones_quarantined_with_the_reason(lake, audit_dir):
    trading = audit_dir / "trading-audit.jsonl"
    good = [json.dumps(_record(i)) for i in range(3)]
    bad = ['{"ts": "2026-11-27T10:00:09", "correlation_id": "x", "tenant": null, "subject": null, '
           '"method": "POST", "path": "/", "status": 401}',  # no zone
           '{"correlation_id": "y"',  # cut off
           json.dumps(_record(4, status="201")),
           json.dumps({**_record(5), "body": "secret"})]
    _write(trading, good[0], bad[0], good[1], bad[1], bad[2], bad[3], good[2])
    # another service's file, and a line still being written at its end
    _write(audit_dir / "governance-audit.jsonl", json.dumps(_record(50, tenant=None)))
    _write(audit_dir / "governance-audit.jsonl", json.dumps(_record(51))[:30], newline_at_end=False)

    reports = {r.service: r for r in ingest_audit_files(lake, audit_dir, batch_id="b1")}

    assert {s: (r.lines_read, r.accepted, r.quarantined) for s, r in reports.items()} == \
        {"trading": (7, 3, 4), "governance": (1, 1, 0)}
    assert all(r.reconciles for r in reports.values())
    assert sorted(_ids(lake)) == ["c0000", "c0001", "c0002", "c0050"]
    rows = {r["correlation_id"]: r for r in lake.read(AUDIT_TABLE).to_pylist()}
    assert rows["c0001"]["service"] == "trading" and rows["c0001"]["tenant_id"] == "t-acme"
    assert rows["c0001"]["status"] == 201 and rows["c0001"]["_line"] == 3
    assert rows["c0050"]["tenant_id"] is None  # an unauthenticated request has no tenant
    held = sorted(lake.read(QUARANTINE).to_pylist(), key=lambda r: r["line"])
    assert [(h["source"], h["line"]) for h in held] == [("audit/trading", 2), ("audit/trading", 4),
                                                        ("audit/trading", 5), ("audit/trading", 6)]
    assert [h["reason"].split(":")[0] for h in held] == ["ts has no time zone", "not JSON", "status is not an integer",
                                                         "unknown field(s) body"]
    assert held[1]["raw_record"] == '{"correlation_id": "y"'

    # nothing new: nothing read, nothing committed
    snapshots = len(lake.load_table(AUDIT_TABLE).snapshots())
    assert ingest_audit_files(lake, audit_dir, batch_id="b2") == []
    assert len(lake.load_table(AUDIT_TABLE).snapshots()) == snapshots

    # the half-written line is finished, and more arrive: only they are taken
    _write(audit_dir / "governance-audit.jsonl", json.dumps(_record(51))[30:], json.dumps(_record(52)))
    _write(trading, json.dumps(_record(8)))
    again = {r.service: r for r in ingest_audit_files(lake, audit_dir, batch_id="b3")}
    assert {s: (r.lines_read, r.accepted) for s, r in again.items()} == {"governance": (2, 2), "trading": (1, 1)}
    assert again["trading"].start_offset == reports["trading"].end_offset
    assert sorted(_ids(lake)) == ["c0000", "c0001", "c0002", "c0008", "c0050", "c0051", "c0052"]
    assert {r["_line"] for r in lake.read(AUDIT_TABLE).to_pylist() if r["correlation_id"] == "c0008"} == {8}
    assert lake.read(QUARANTINE).num_rows == 4


def test_a_rotated_file_is_read_from_its_start(lake, audit_dir):
    trading = audit_dir / "trading-audit.jsonl"
    _write(trading, *(json.dumps(_record(i)) for i in range(3)))
    ingest_audit_files(lake, audit_dir, batch_id="b1")
    trading.rename(audit_dir / "trading-audit.jsonl.1")  # rotated away: no longer read
    _write(trading, json.dumps(_record(10)))  # a new file, shorter than the old checkpoint
    [report] = ingest_audit_files(lake, audit_dir, batch_id="b2")
    assert (report.start_offset, report.accepted) == (0, 1)
    assert sorted(_ids(lake)) == ["c0000", "c0001", "c0002", "c0010"]
    assert lake.read(CHECKPOINTS).num_rows == 2  # one checkpoint per file ever read


def test_a_run_killed_before_its_checkpoint_is_repaired_without_duplicates(lake, audit_dir, monkeypatch):
    from resources.lake import LakeResource

    trading = audit_dir / "trading-audit.jsonl"
    _write(trading, *(json.dumps(_record(i)) for i in range(3)), "not json")
    replace = LakeResource.replace_where

    def die_at_the_checkpoint(self, identifier, *args, **kwargs):
        if identifier == CHECKPOINTS:
            raise RuntimeError("killed")
        return replace(self, identifier, *args, **kwargs)

    monkeypatch.setattr(LakeResource, "replace_where", die_at_the_checkpoint)
    with pytest.raises(RuntimeError, match="killed"):
        ingest_audit_files(lake, audit_dir, batch_id="b1")
    monkeypatch.undo()
    assert lake.read(AUDIT_TABLE).num_rows == 3  # written, but the checkpoint did not move
    _write(trading, json.dumps(_record(3)))

    [report] = ingest_audit_files(lake, audit_dir, batch_id="b2")

    assert (report.start_offset, report.lines_read, report.accepted, report.quarantined) == (0, 5, 4, 1)
    assert _ids(lake) == ["c0000", "c0001", "c0002", "c0003"]
    assert lake.read(QUARANTINE).num_rows == 1
    assert set(lake.read(AUDIT_TABLE).column("_batch_id").to_pylist()) == {"b2"}


def test_a_long_backlog_is_taken_in_checkpointed_pieces(lake, audit_dir, monkeypatch):
    """A run reads a file's new bytes in pieces of about ``chunk_bytes`` (a line longer than a piece is read
    whole), each written and checkpointed before the next: the lake ends as if read in one piece, and a crash in
    a later piece keeps the pieces before it (the next run starts at their checkpoint)."""
    from resources.lake import LakeResource

    trading = audit_dir / "trading-audit.jsonl"
    lines = [json.dumps(_record(i)) for i in range(12)]
    lines[5] = json.dumps(_record(5, path="/v1/orders/" + "x" * 600))  # longer than a piece
    lines[8] = "not json"
    _write(trading, *lines)
    piece = 3 * (len(lines[0]) + 1)  # three of the short lines
    replace, checkpoints = LakeResource.replace_where, []

    def recording(die_at=None):
        def replace_where(self, identifier, table, *args, **kwargs):
            if identifier == CHECKPOINTS:
                checkpoints.append((table.column("offset")[0].as_py(), table.column("lines")[0].as_py()))
                if len(checkpoints) == die_at:
                    raise RuntimeError("killed")
            return replace(self, identifier, table, *args, **kwargs)
        return replace_where

    monkeypatch.setattr(LakeResource, "replace_where", recording(die_at=3))
    with pytest.raises(RuntimeError, match="killed"):
        ingest_audit_files(lake, audit_dir, batch_id="b1", chunk_bytes=piece)
    # 3 lines, then the 2 that fit before the long line; the third piece died at its checkpoint
    assert [lines_ for _, lines_ in checkpoints] == [3, 5, 6]
    [saved] = lake.read(CHECKPOINTS).to_pylist()
    assert (saved["offset"], saved["lines"]) == checkpoints[1]

    checkpoints.clear()
    monkeypatch.setattr(LakeResource, "replace_where", recording())
    [report] = ingest_audit_files(lake, audit_dir, batch_id="b2", chunk_bytes=piece)
    monkeypatch.undo()
    assert checkpoints[0][1] == 6  # the long line alone: read whole, though longer than a piece
    assert (report.start_offset, report.end_offset) == (saved["offset"], trading.stat().st_size)
    assert (report.lines_read, report.accepted, report.quarantined) == (7, 6, 1)
    assert _ids(lake) == [f"c{i:04d}" for i in range(12) if i != 8]
    assert lake.read(QUARANTINE).column("line").to_pylist() == [9]
    [saved] = lake.read(CHECKPOINTS).to_pylist()
    assert (saved["offset"], saved["lines"]) == (trading.stat().st_size, 12)


def test_a_real_services_requests_reach_the_lake_through_the_sensor_and_the_job(settings, lake):
    """The trading service (its real app and audit writer) answers requests; the sensor sees the file grow
    and asks for one run; the job takes the records in and its checks pass; a second tick asks for nothing."""
    from dagster import DagsterInstance, build_sensor_context

    from platformq_assets.definitions import build_definitions
    from resources.audit_trail import AuditTrailResource
    from services.common.app import ServiceContext
    from services.trading.api import create_trading_app
    from services.trading.exchange import Exchange

    folder = settings.effective_audit_dir
    folder.mkdir(parents=True, exist_ok=True)
    ctx = ServiceContext("trading", rate=1000.0, burst=1000, audit_path=str(folder / "trading-audit.jsonl"))
    client = TestClient(create_trading_app(ctx, Exchange(["ACME"])))
    admin = ctx.keys.create("admin-1", "t-acme", ["admin"])
    assert client.post("/auth/keys", json={"subject": "ci", "roles": ["viewer"]},
                       headers={"X-API-Key": admin}).status_code == 201
    assert client.post("/auth/keys", json={"subject": "ci", "roles": ["viewer"]}).status_code == 401
    assert client.get("/health").status_code == 200  # not state-changing: not audited

    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("audit_trail_sensor")
    resources = {"audit_trail": AuditTrailResource(directory=str(folder))}
    instance = DagsterInstance.get()
    with build_sensor_context(instance=instance, resources=resources) as context:
        first = sensor(context)
    assert len(first.run_requests) == 1
    result = defs.resolve_job_def("governance_audit").execute_in_process(instance=instance)
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"audit_lines_reconcile": True, "audit_lines_well_formed": True}
    rows = sorted(lake.read(AUDIT_TABLE).to_pylist(), key=lambda r: r["_offset"])
    assert [(r["tenant_id"], r["path"], r["status"]) for r in rows] == [("t-acme", "/auth/keys", 201),
                                                                          (None, "/auth/keys", 401)]
    assert rows[0]["subject"] == "admin-1" and rows[0]["service"] == "trading"
    with build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as context:
        assert not sensor(context).run_requests


@pytest.mark.slow  # two servers
def test_the_audit_log_on_the_production_twins_postgres_catalog_and_s3(production, tmp_path):
    """The same ingestion with the catalog on Postgres and the tables in an S3 bucket (moto_server)."""
    from resources import lake_resource

    settings, _endpoint, _db = production
    lake = lake_resource(settings)
    folder = tmp_path / "audit"
    folder.mkdir()
    _write(folder / "trading-audit.jsonl", *(json.dumps(_record(i)) for i in range(3)), "{oops")
    [first] = ingest_audit_files(lake, folder, batch_id="b1")
    _write(folder / "trading-audit.jsonl", json.dumps(_record(3)))
    [second] = ingest_audit_files(lake, folder, batch_id="b2")
    assert (first.accepted, first.quarantined, second.start_offset, second.accepted) == (3, 1, first.end_offset, 1)
    assert lake.load_table(AUDIT_TABLE).location().startswith("s3://lake/")
    assert _ids(lake) == ["c0000", "c0001", "c0002", "c0003"]
    assert lake.read(QUARANTINE).column("reason").to_pylist()[0].startswith("not JSON")


def test_a_line_that_is_not_utf8_is_quarantined_as_it_was_written(lake, audit_dir):
    """Decoded with replacement characters it was accepted as a record that differs from the service's line."""
    import base64

    raw = json.dumps(_record(1, path="/v1/accounts/XX/deposits")).encode().replace(b"XX", b"\xff\xfe")
    with open(audit_dir / "trading-audit.jsonl", "ab") as handle:
        handle.write(json.dumps(_record(0)).encode() + b"\n" + raw + b"\n")
    [report] = ingest_audit_files(lake, audit_dir, batch_id="b1")
    assert (report.lines_read, report.accepted, report.quarantined) == (2, 1, 1) and report.reconciles
    [held] = lake.read(QUARANTINE).to_pylist()
    assert held["line"] == 2 and held["reason"].startswith("line is not UTF-8 (byte 0xff")
    assert base64.b64decode(held["raw_record"].removeprefix("base64:")) == raw


def _unreadable(monkeypatch, name: str) -> None:
    """Opening ``name`` fails as for a file a rotation re-created with a mode the reader may not read (the tests
    run as root, whom chmod does not stop)."""
    import builtins

    from resources import audit_trail

    def guarded(path, *args, **kwargs):
        if str(path).endswith(name):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(audit_trail, "open", guarded, raising=False)


def test_an_unreadable_or_vanished_file_does_not_hold_back_the_others(lake, audit_dir, monkeypatch):
    """One file the reader may not open stopped every service's audit trail, run after run (the first file in
    the listing raised); one renamed away between the listing and the read failed the run. Now the others are
    taken and checkpointed, the unreadable one is reported with its error, the vanished one passed over."""
    from resources import audit_trail

    _write(audit_dir / "data-audit.jsonl", json.dumps(_record(1)))
    _write(audit_dir / "trading-audit.jsonl", json.dumps(_record(2)), json.dumps(_record(3)))
    _write(audit_dir / "models-audit.jsonl", json.dumps(_record(4)))
    _unreadable(monkeypatch, "data-audit.jsonl")
    listed = audit_trail.audit_files

    def rotated_meanwhile(directory):
        paths = listed(directory)
        (audit_dir / "models-audit.jsonl").rename(audit_dir / "models-audit.jsonl.1")
        return paths

    monkeypatch.setattr(audit_trail, "audit_files", rotated_meanwhile)
    reports = {r.service: r for r in ingest_audit_files(lake, audit_dir, batch_id="b1")}
    assert set(reports) == {"data", "trading"}
    assert reports["data"].error.startswith("PermissionError") and reports["data"].lines_read == 0
    assert (reports["trading"].accepted, reports["trading"].error) == (2, None)
    assert _ids(lake) == ["c0002", "c0003"]


def test_the_audit_job_takes_the_readable_files_and_fails_naming_the_unreadable_one(settings, lake, monkeypatch):
    from dagster import DagsterInstance

    from platformq_assets.definitions import build_definitions

    folder = settings.effective_audit_dir
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "data-audit.jsonl", json.dumps(_record(1)))
    _write(folder / "trading-audit.jsonl", json.dumps(_record(2)))
    _unreadable(monkeypatch, "data-audit.jsonl")
    result = build_definitions(settings).resolve_job_def("governance_audit").execute_in_process(
        instance=DagsterInstance.get(), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "data-audit.jsonl" in failure.step_failure_data.error.message
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {
        "audit_lines_reconcile": True, "audit_lines_well_formed": True}
    assert _ids(lake) == ["c0002"]
