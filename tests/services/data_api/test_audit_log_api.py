"""The audit log through the data API: auditors (and admins) read their own tenant's records, filtered and
paginated; nobody else reads them, through this route or the generic table route. Real Iceberg lake."""

import json

import pytest
from fastapi.testclient import TestClient

from services.common.app import ServiceContext
from services.data_api.api import create_data_app
from tests.services.problems import is_problem


@pytest.fixture
def api(lake, tmp_path):
    from resources.audit_trail import ingest_audit_files

    folder = tmp_path / "audit"
    folder.mkdir()
    lines = [{"ts": f"2026-11-2{day}T10:00:0{i}+00:00", "correlation_id": f"{tenant}-{day}-{i}", "tenant": tenant,
              "subject": "ops", "method": "POST", "path": "/v1/orders", "status": 201}
             for day in (6, 7) for i, tenant in enumerate(["t-acme", "t-cygnus", "t-acme", None])]
    (folder / "trading-audit.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ingest_audit_files(lake, folder, batch_id="b1")
    ctx = ServiceContext("data", rate=1000.0, burst=1000)
    keys = {"acme_auditor": ctx.keys.create("au", "t-acme", ["auditor"]),
            "acme_admin": ctx.keys.create("ad", "t-acme", ["admin"]),
            "cygnus_auditor": ctx.keys.create("cy", "t-cygnus", ["auditor"]),
            "acme_viewer": ctx.keys.create("vi", "t-acme", ["viewer"])}
    return TestClient(create_data_app(ctx, lake), raise_server_exceptions=False), keys


def get(client, key, path="/v1/audit-log", **params):
    return client.get(path, params=params, headers={"X-API-Key": key} if key else {})


def test_auditors_read_their_own_tenants_records_only(api):
    client, keys = api
    acme = get(client, keys["acme_auditor"])
    assert acme.status_code == 200, acme.text
    assert sorted(r["correlation_id"] for r in acme.json()["rows"]) == [
        "t-acme-6-0", "t-acme-6-2", "t-acme-7-0", "t-acme-7-2"]
    assert acme.json()["table"] == "governance.audit_log"
    assert [r["correlation_id"] for r in get(client, keys["cygnus_auditor"]).json()["rows"]] == \
        ["t-cygnus-6-1", "t-cygnus-7-1"]
    assert len(get(client, keys["acme_admin"]).json()["rows"]) == 4  # admin holds every permission


def test_the_audit_log_filters_and_pages_like_a_table(api):
    client, keys = api
    later = get(client, keys["acme_auditor"], filter="ts:ge:2026-11-27T00:00:00+00:00",
                columns="ts,correlation_id,status", page_size=1)
    body = later.json()
    assert later.status_code == 200 and body["total_rows"] == 2 and body["columns"] == ["ts", "correlation_id",
                                                                                           "status"]
    second = get(client, keys["acme_auditor"], filter="ts:ge:2026-11-27T00:00:00+00:00",
                 columns="ts,correlation_id,status", page_size=1, page_token=body["next_page_token"]).json()
    assert sorted(r["correlation_id"] for r in body["rows"] + second["rows"]) == ["t-acme-7-0", "t-acme-7-2"]
    assert is_problem(get(client, keys["acme_auditor"], filter="ts:ge:yesterday"), 422)


def test_no_one_else_reads_the_audit_log(api):
    client, keys = api
    assert is_problem(get(client, None), 401)
    assert is_problem(get(client, keys["acme_viewer"]), 403)
    # the generic table route serves gold tables only: the audit log is as missing there as any other table
    for key in (keys["acme_viewer"], keys["acme_auditor"]):
        is_problem(get(client, key, "/v1/tables/governance/audit_log/rows"), 404)
    assert "governance.audit_log" not in [t["table"] for t in get(client, keys["acme_auditor"], "/v1/catalog").json()]
