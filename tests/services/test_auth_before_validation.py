"""A request to an endpoint that needs a permission is authenticated before its body's validation errors are
shown: FastAPI parses a JSON body before it runs the auth dependency, so a malformed body must not let an
anonymous caller see parser details, nor leave the audit record without the caller's tenant."""

import json

import pytest
from fastapi.testclient import TestClient

from services.common.app import ServiceContext
from services.trading.api import create_trading_app
from services.trading.exchange import Exchange
from tests.services.problems import is_problem

MALFORMED = b'{"subject": "ci", "roles": ['


@pytest.fixture
def svc(tmp_path):
    ctx = ServiceContext("trading", rate=1000.0, burst=1000, audit_path=str(tmp_path / "audit.jsonl"))
    client = TestClient(create_trading_app(ctx, Exchange(["ACME"])))
    keys = {role: ctx.keys.create(f"{role}-1", "t1", [role]) for role in ("admin", "viewer", "auditor", "trader")}
    return ctx, client, keys, tmp_path / "audit.jsonl"


def post(client, path, body=MALFORMED, **headers):
    return client.post(path, content=body, headers={"Content-Type": "application/json", **headers})


def audit_file(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_anonymous_malformed_json_is_a_401_not_a_422(svc):
    ctx, client, keys, audit_path = svc
    for path in ("/auth/keys", "/v1/orders", "/v1/orders/batch", "/v1/accounts"):
        r = post(client, path)
        body = is_problem(r, 401)
        assert body["type"].endswith("/missing-credentials") and "errors" not in body
        assert r.headers["www-authenticate"] == "Bearer"
    # a wrong key or token is refused the way the dependency refuses it
    assert is_problem(post(client, "/auth/keys", **{"X-API-Key": "pq_nope"}), 401)["type"].endswith("/invalid-api-key")
    bad = post(client, "/auth/keys", Authorization="Bearer not-a-jwt")
    assert is_problem(bad, 401)["type"].endswith("/invalid-token")
    assert "invalid_token" in bad.headers["www-authenticate"]
    assert [r["tenant"] for r in audit_file(audit_path)] == [None] * 6


def test_a_body_too_deeply_nested_to_parse_is_a_401_for_an_anonymous_caller(svc):
    ctx, client, keys, _ = svc
    nested = b"[" * 100_000  # under the size limit; the JSON parser gives up (RecursionError): FastAPI's 400
    is_problem(post(client, "/v1/orders", body=nested), 401)
    is_problem(post(client, "/v1/orders", body=nested, **{"X-API-Key": keys["viewer"]}), 403)
    is_problem(post(client, "/v1/orders", body=nested, **{"X-API-Key": keys["trader"]}), 400)
    is_problem(post(client, "/auth/token", body=nested), 400)  # no auth needed: as before


def test_malformed_json_from_a_caller_without_the_permission_is_a_403(svc):
    ctx, client, keys, _ = svc
    body = is_problem(post(client, "/auth/keys", **{"X-API-Key": keys["viewer"]}), 403)
    assert "keys:admin" in body["detail"] and "errors" not in body
    is_problem(post(client, "/v1/orders", **{"X-API-Key": keys["auditor"]}), 403)


def test_an_authenticated_callers_malformed_json_is_a_422_audited_under_its_tenant(svc):
    ctx, client, keys, audit_path = svc
    r = post(client, "/auth/keys", **{"X-API-Key": keys["admin"], "X-Request-ID": "bad-json-1"})
    body = is_problem(r, 422)
    assert body["errors"] and body["errors"][0]["location"].startswith("body")
    token = client.post("/auth/token", json={"api_key": keys["trader"]}).json()["access_token"]
    is_problem(post(client, "/v1/orders", Authorization=f"Bearer {token}", **{"X-Request-ID": "bad-json-2"}), 422)

    records = {r["correlation_id"]: r for r in audit_file(audit_path)}
    assert (records["bad-json-1"]["tenant"], records["bad-json-1"]["subject"]) == ("t1", "admin-1")
    assert (records["bad-json-2"]["tenant"], records["bad-json-2"]["subject"]) == ("t1", "trader-1")
    # so the tenant's auditor sees its own admin's failed write
    seen = client.get("/audit", headers={"X-API-Key": keys["auditor"]}).json()
    assert {(r["correlation_id"], r["status"]) for r in seen} >= {("bad-json-1", 422), ("bad-json-2", 422)}


def test_an_endpoint_without_auth_still_answers_422(svc):
    ctx, client, keys, _ = svc
    body = is_problem(post(client, "/auth/token", body=b'{"api_key": '), 422)
    assert body["errors"]


def test_malformed_json_counts_once_against_the_rate_limit(tmp_path):
    ctx = ServiceContext("trading", rate=0.001, burst=2)
    client = TestClient(create_trading_app(ctx, Exchange(["ACME"])))
    key = ctx.keys.create("bob", "t1", ["trader"])
    # valid JSON the schema refuses: the dependency authenticated the request (one token); the 422 reuses it
    is_problem(post(client, "/v1/orders", body=b'{"quantity": "many"}', **{"X-API-Key": key}), 422)
    is_problem(post(client, "/v1/orders", **{"X-API-Key": key}), 422)  # malformed: authenticated once, here
    limited = post(client, "/v1/orders", **{"X-API-Key": key})  # the bucket is empty now, and says so
    assert is_problem(limited, 429)["type"].endswith("/rate-limited") and int(limited.headers["retry-after"]) >= 1
