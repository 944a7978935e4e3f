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
