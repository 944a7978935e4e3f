"""The services' audit trail: the file keeps every record, memory keeps each tenant's latest few."""

import json

from services.common.app import AuditLog, AuditRecord


def record(i: int, tenant: str | None) -> AuditRecord:
    return AuditRecord(ts=f"2026-01-01T00:00:{i % 60:02d}+00:00", correlation_id=f"c{i}", tenant=tenant,
                       subject="alice", method="POST", path="/v1/x", status=200)


def test_file_has_every_record_and_memory_stays_bounded_per_tenant(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), keep=50)
    for i in range(400):
        log.append(record(i, "t1" if i % 4 else "t2"))
    log.append(record(400, None))  # unauthenticated: in the file, shown to no tenant

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["correlation_id"] for r in lines] == [f"c{i}" for i in range(401)]  # written as they come
    t1 = log.recent("t1", 1000)
    assert len(t1) == 50 and all(r.tenant == "t1" for r in t1)
    assert [r.correlation_id for r in t1] == [f"c{i}" for i in range(400) if i % 4][-50:]  # latest, oldest first
    assert [r.correlation_id for r in log.recent("t2", 3)] == ["c388", "c392", "c396"]
    assert log.recent("t3", 10) == [] and log.recent("t1", 0) == []
    assert sum(len(d) for d in log._recent.values()) == 100  # 50 per tenant, not 400


def _ids(path) -> list[str]:
    return [json.loads(line)["correlation_id"] for line in path.read_text().splitlines()]


def test_records_after_a_rename_rotation_go_to_the_new_file(tmp_path):
    """logrotate's default: rename the file away, create a new one; the ingester reads only *-audit.jsonl."""
    path = tmp_path / "trading-audit.jsonl"
    log = AuditLog(str(path))
    log.append(record(1, "t1"))
    path.rename(tmp_path / "trading-audit.jsonl.1")
    path.touch()
    log.append(record(2, "t1"))
    log.append(record(3, None))
    assert _ids(tmp_path / "trading-audit.jsonl.1") == ["c1"]
    assert _ids(path) == ["c2", "c3"]
    # renamed away and nothing created in its place: the next record creates the file again
    path.rename(tmp_path / "trading-audit.jsonl.2")
    log.append(record(4, "t1"))
    assert _ids(tmp_path / "trading-audit.jsonl.2") == ["c2", "c3"] and _ids(path) == ["c4"]


def test_records_after_the_file_is_deleted_go_to_a_new_file(tmp_path):
    path = tmp_path / "trading-audit.jsonl"
    log = AuditLog(str(path))
    log.append(record(1, "t1"))
    path.unlink()
    log.append(record(2, "t1"))  # not to the deleted inode
    assert _ids(path) == ["c2"]
    path.unlink()
    path.write_text("")  # deleted and recreated (copy-less rotation by another tool)
    log.append(record(3, "t1"))
    assert _ids(path) == ["c3"]


def test_rotation_under_concurrent_writers_loses_and_duplicates_nothing(tmp_path):
    import threading

    path = tmp_path / "trading-audit.jsonl"
    log = AuditLog(str(path))
    per_thread, threads = 200, 4

    def write(t: int) -> None:
        for i in range(per_thread):
            log.append(record(t * per_thread + i, "t1"))

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    rotated = []
    for n in range(5):  # rotate while they write
        target = tmp_path / f"trading-audit.jsonl.{n}"
        if path.exists():
            path.rename(target)
            rotated.append(target)
            path.touch()
    for worker in workers:
        worker.join()
    ids = [i for p in [*rotated, path] for i in _ids(p)]
    assert sorted(ids) == sorted(f"c{i}" for i in range(per_thread * threads))


def test_a_file_that_cannot_be_reopened_after_a_rotation_fails_no_request(tmp_path, caplog):
    """The folder renamed away (or a new file this process may not write): the records go on into the old file,
    logged once, instead of raising in the middle of a response whose change is already applied."""
    folder = tmp_path / "audit"
    folder.mkdir()
    path = folder / "trading-audit.jsonl"
    log = AuditLog(str(path))
    log.append(record(1, "t1"))
    folder.rename(tmp_path / "audit.old")
    with caplog.at_level("ERROR", logger="platformq.audit"):
        log.append(record(2, "t1"))
        log.append(record(3, "t1"))
    assert _ids(tmp_path / "audit.old" / "trading-audit.jsonl") == ["c1", "c2", "c3"]
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1 and "reopened" in caplog.text
    folder.mkdir()  # back: the next record goes to the path again
    log.append(record(4, "t1"))
    assert _ids(path) == ["c4"]


def test_minting_a_token_is_audited_under_the_keys_tenant_and_subject():
    """POST /auth/token hands out a credential: its audit record named no one (tenant and subject null), so the
    tenant's GET /audit never showed which key minted tokens, and the file could not say either. A refused
    attempt stays anonymous (the key is unknown)."""
    from fastapi.testclient import TestClient

    from services.common.app import ServiceContext, create_service_app

    ctx = ServiceContext("x")
    client = TestClient(create_service_app(ctx, "x"), raise_server_exceptions=False)
    key = ctx.keys.create("ci-pipeline", "t1", ["viewer"])
    assert client.post("/auth/token", json={"api_key": key}).status_code == 200
    assert client.post("/auth/token", json={"api_key": "pq_unknown"}).status_code == 401
    [minted] = ctx.audit.recent("t1", 10)
    assert (minted.subject, minted.method, minted.path, minted.status) == ("ci-pipeline", "POST", "/auth/token", 200)
    assert key not in json.dumps([vars(r) for recs in ctx.audit._recent.values() for r in recs])
