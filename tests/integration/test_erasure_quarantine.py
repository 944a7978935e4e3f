"""Erasure of quarantined landing records that hold a subject's records without being one JSON object of theirs:
a file quarantined whole (base64 of its first bytes) and a JSON array on one line."""

import datetime as dt
import json

import pyarrow as pa

ACME = "t-acme"
DAY = dt.date(2024, 1, 2)
SUBJECT = {"account_id": 2, "email": "a.subject@example.org", "event": "kyc"}
OTHER = {"account_id": 3, "email": "person3@example.org", "event": "kyc"}


def _ingest(lake, tmp_path, name: str, data: bytes, erased=frozenset()) -> dict:
    from platformq_assets.lake.landing import ingest_file
    from resources.landing_zone import LandingFile

    path = tmp_path / name
    path.write_bytes(data)
    return ingest_file(lake, LandingFile("kyc_events", f"kyc_events/{name}", path), "b1", set(), erased)


def _quarantined_text(lake) -> str:
    import base64

    raws = lake.read("quarantine.landing").column("raw_record").to_pylist()
    return "".join(base64.b64decode(r[7:]).decode() if r.startswith("base64:") else r for r in raws)


def test_quarantined_whole_files_naming_the_subject_are_erased_and_kept_out(settings, lake, tmp_path):
    from resources import erasure

    lake.replace_partition("bronze.accounts", pa.table({
        "account_id": pa.array([2, 3], pa.int64()), "tenant_id": [ACME, ACME],
        "email": [SUBJECT["email"], OTHER["email"]], "partition_date": pa.array([DAY] * 2, pa.date32())}),
        "partition_date", DAY)
    _ingest(lake, tmp_path, "export.json", json.dumps([SUBJECT, OTHER], indent=1).encode())  # one document
    _ingest(lake, tmp_path, "array.jsonl", json.dumps([OTHER, SUBJECT]).encode() + b"\n")  # an array on one line
    assert lake.read("quarantine.landing").num_rows == 2
    assert SUBJECT["email"] in _quarantined_text(lake)
    assert erasure.remaining_rows(lake, {2})["quarantine.landing"] == 2

    erasure.request_erasure(lake, ACME, 2, "DSR-40", "dpo")
    summary = erasure.process_requests(lake)
    assert summary["completed"] == 1 and summary["rows_deleted"] >= 3
    assert SUBJECT["email"] not in _quarantined_text(lake)
    assert erasure.remaining_rows(lake, {2}) == {}

    # a later export naming the erased account: read and counted, not stored
    report = _ingest(lake, tmp_path, "late.json", json.dumps([OTHER, SUBJECT], indent=1).encode(),
                     erasure.erased_accounts(lake))
    assert (report["rows_read"], report["rows_quarantined"], report["rows_erased"]) == (1, 0, 1)
    assert SUBJECT["email"] not in _quarantined_text(lake)
