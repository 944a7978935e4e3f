"""Shared service plumbing: Retry-After honoured exactly, and X-Request-ID on every answer, 500 included."""

import time

from fastapi.testclient import TestClient

from services.common.app import ServiceContext, create_service_app
from tests.services.problems import is_problem


def test_waiting_retry_after_seconds_finds_a_token():
    ctx = ServiceContext("t", rate=0.4, burst=1)  # one request per 2.5 s: the true wait is 2.5 s
    client = TestClient(create_service_app(ctx, "t"))
    key = ctx.keys.create("ann", "t1", ["auditor"])
    headers = {"X-API-Key": key}
    assert client.get("/audit", headers=headers).status_code == 200
    denied = client.get("/audit", headers=headers)
    is_problem(denied, 429)
    wait = int(denied.headers["Retry-After"])
    assert wait >= 2.5
    # the bucket as the server keeps it, seen `wait` seconds after the refusal
    key_id = ctx.keys.lookup(key).key_id
    allowed, _ = ctx.limiter.allow(key_id, now=time.monotonic() + wait)
    assert allowed


def test_request_id_header_on_an_unexpected_500():
    ctx = ServiceContext("t")
    app = create_service_app(ctx, "t")

    @app.post("/boom")
    def boom():
        raise RuntimeError("internal detail")

    client = TestClient(app, raise_server_exceptions=False)
    r = client.post("/boom", headers={"X-Request-ID": "req-42"})
    body = is_problem(r, 500)
    assert body["correlation_id"] == "req-42"
    assert r.headers.get("x-request-id") == "req-42"
    assert "internal detail" not in r.text
    # other answers keep exactly one X-Request-ID
    ok = client.get("/health", headers={"X-Request-ID": "req-43"})
    assert ok.headers.get_list("x-request-id") == ["req-43"]
    problem = client.get("/audit", headers={"X-Request-ID": "req-44"})
    is_problem(problem, 401)
    assert problem.headers.get_list("x-request-id") == ["req-44"]


def test_a_bearer_token_is_never_cached():
    """RFC 6749 §5.1: the token response carries Cache-Control: no-store (and Pragma: no-cache)."""
    ctx = ServiceContext("t")
    client = TestClient(create_service_app(ctx, "t"))
    r = client.post("/auth/token", json={"api_key": ctx.keys.create("ann", "t1", ["viewer"])})
    assert r.status_code == 200 and r.json()["access_token"]
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["pragma"] == "no-cache"
