"""Erasure requests through the data API: a tenant admin files one for the tenant named by its credentials,
callers see their own tenant's requests only, and bad input is a problem document. Real Iceberg lake."""

import datetime as dt

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from services.common.app import ServiceContext
from services.data_api.api import create_data_app
from tests.services.problems import is_problem

DAY = dt.date(2024, 1, 2)


@pytest.fixture
def api(lake):
    from resources.erasure import LakeErasureDesk

    lake.replace_partition("bronze.accounts", pa.table({
        "account_id": pa.array([1, 2], pa.int64()), "tenant_id": ["t-acme", "t-cygnus"],
        "email": ["a@acme.example", "c@cygnus.example"], "partition_date": pa.array([DAY] * 2, pa.date32())}),
        "partition_date", DAY)
    ctx = ServiceContext("data", rate=1000.0, burst=1000)
    keys = {"acme_admin": ctx.keys.create("ann", "t-acme", ["admin"]),
            "cygnus_admin": ctx.keys.create("cy", "t-cygnus", ["admin"]),
            "acme_auditor": ctx.keys.create("au", "t-acme", ["auditor"]),
            "acme_engineer": ctx.keys.create("en", "t-acme", ["engineer"]),
            "acme_viewer": ctx.keys.create("vi", "t-acme", ["viewer"])}
    client = TestClient(create_data_app(ctx, lake, erasure=LakeErasureDesk(lake)), raise_server_exceptions=False)
    return client, keys, lake


def post(client, key, body):
    headers = {"X-API-Key": key} if key else {}
    return client.post("/v1/erasure-requests", json=body, headers=headers)


def test_a_tenant_admin_files_a_request_for_its_own_tenant_and_sees_it_carried_out(api):
    from resources.erasure import process_requests

    client, keys, lake = api
    made = post(client, keys["acme_admin"], {"account_id": 1, "reason": "DSR-31"})
    assert made.status_code == 202, made.text
    body = made.json()
    assert (body["tenant_id"], body["account_id"], body["status"], body["requested_by"]) == ("t-acme", 1, "pending",
                                                                                            "ann")
    # an admin of another tenant naming Acme's account files it for its own tenant: rejected when processed
    foreign = post(client, keys["cygnus_admin"], {"account_id": 1, "reason": "not ours"}).json()
    assert foreign["tenant_id"] == "t-cygnus"

    def listed(key):
        return client.get("/v1/erasure-requests", headers={"X-API-Key": key})

    assert [r["request_id"] for r in listed(keys["acme_admin"]).json()] == [body["request_id"]]
    assert [r["request_id"] for r in listed(keys["acme_auditor"]).json()] == [body["request_id"]]
    assert [r["request_id"] for r in listed(keys["cygnus_admin"]).json()] == [foreign["request_id"]]
    is_problem(client.get(f"/v1/erasure-requests/{body['request_id']}", headers={"X-API-Key": keys["cygnus_admin"]}),
               404)

    process_requests(lake)
    one = client.get(f"/v1/erasure-requests/{body['request_id']}", headers={"X-API-Key": keys["acme_auditor"]})
    assert one.status_code == 200 and one.json()["status"] == "completed"
    other = client.get(f"/v1/erasure-requests/{foreign['request_id']}", headers={"X-API-Key": keys["cygnus_admin"]})
    assert other.json()["status"] == "rejected"
    assert other.json()["detail"] == "account 1 is not an account of tenant t-cygnus"
    assert lake.read("bronze.accounts").column("account_id").to_pylist() == [2]


@pytest.mark.parametrize("role, status", [("acme_viewer", 403), ("acme_engineer", 403), ("acme_auditor", 403),
                                          (None, 401)])
def test_only_admins_file_requests(api, role, status):
    client, keys, lake = api
    is_problem(post(client, keys[role] if role else None, {"account_id": 1, "reason": "x"}), status)
    # a malformed body from a caller without the permission is still a 401/403, not a 422
    is_problem(post(client, keys[role] if role else None, {"account_id": "x"}), status)
    assert not lake.table_exists("governance.erasure_requests")


def test_reading_requests_needs_erasure_read(api):
    client, keys, _ = api
    is_problem(client.get("/v1/erasure-requests", headers={"X-API-Key": keys["acme_viewer"]}), 403)
    is_problem(client.get("/v1/erasure-requests"), 401)
    is_problem(client.get("/v1/erasure-requests/not-an-id", headers={"X-API-Key": keys["acme_admin"]}), 422)


@pytest.mark.parametrize("body", [
    {"account_id": -1, "reason": "x"}, {"account_id": 2**63, "reason": "x"}, {"account_id": "7", "reason": "x"}, {"account_id": True, "reason": "x"},
    {"account_id": 1}, {"account_id": 1, "reason": ""}, {"account_id": 1, "reason": "   "},
    {"account_id": 1, "reason": "x" * 501}, {"account_id": 1, "reason": "x", "tenant_id": "t-cygnus"}, [],
])
def test_bad_bodies_are_problem_documents_and_record_nothing(api, body):
    client, keys, lake = api
    is_problem(post(client, keys["acme_admin"], body), 422)
    assert not lake.table_exists("governance.erasure_requests")
