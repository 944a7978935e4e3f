"""Request bodies have a size limit, enforced before anything parses them: a Content-Length over the limit is
answered 413 without reading a byte, and a body without one (chunked) is read only until it passes the limit."""

import asyncio
import json
import random
import socket
import time

from fastapi.testclient import TestClient

from services.common.app import ServiceContext, create_service_app
from services.trading.api import MAX_BATCH, BatchIn, create_trading_app
from services.trading.exchange import Exchange
from tests.services.serving import serve

MiB = 1024 * 1024
CHUNK = 64 * 1024


def call_asgi(app, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks):
    """Run one request through the ASGI app, its body pulled from ``chunks`` (an iterator of bytes) one
    receive() at a time: (status, response headers, response body, body bytes the app pulled)."""
    pulled = 0
    iterator = iter(chunks)
    pending = next(iterator, None)
    done = False
    sent = []

    async def receive():
        nonlocal pulled, pending, done
        if done:
            return {"type": "http.disconnect"}
        chunk, pending = pending, next(iterator, None)
        if chunk is None:
            done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        done = pending is None
        return {"type": "http.request", "body": chunk, "more_body": pending is not None}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body, pulled


def junk(total: int):
    """``total`` bytes of a JSON-ish body (not valid JSON), in CHUNK-sized pieces."""
    piece = b"[" * CHUNK
    for _ in range(total // CHUNK):
        yield piece


def service(tmp_path):
    ctx = ServiceContext("t", rate=1000.0, burst=1000, audit_path=str(tmp_path / "audit.jsonl"))
    return ctx, create_service_app(ctx, "t")


def assert_413(status, headers, body, ctx, path, tmp_path):
    assert status == 413, body
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["type"] == "https://platformq.dev/problems/payload-too-large"
    assert problem["title"] == "Payload Too Large" and problem["status"] == 413
    assert problem["instance"] == path and "2097152" in problem["detail"]
    # inside the observing middleware: correlated, counted and audited like any other answer
    assert problem["correlation_id"] and headers["x-request-id"] == problem["correlation_id"]
    assert [s.value for m in ctx.registry.collect() for s in m.samples
            if s.name == "http_requests_total" and s.labels["status"] == "413"] == [1.0]
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["correlation_id"], r["path"], r["status"]) for r in audit] == [(problem["correlation_id"], path, 413)]


def test_the_default_limit_is_2_mib():
    assert ServiceContext("t").max_body_bytes == 2 * MiB


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(tmp_path):
    ctx, app = service(tmp_path)
    status, headers, body, pulled = call_asgi(
        app, "POST", "/auth/keys", [(b"content-type", b"application/json"), (b"content-length", b"%d" % (3 * MiB))],
        junk(3 * MiB))
    assert_413(status, headers, body, ctx, "/auth/keys", tmp_path)
    assert pulled == 0  # not one byte read


def test_a_chunked_body_is_read_only_until_it_passes_the_limit(tmp_path):
    ctx, app = service(tmp_path)
    status, headers, body, pulled = call_asgi(
        app, "POST", "/auth/keys", [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        junk(8 * MiB))
    assert_413(status, headers, body, ctx, "/auth/keys", tmp_path)
    assert 2 * MiB < pulled <= 2 * MiB + CHUNK  # stopped at the first chunk past the limit


def test_the_limit_is_a_service_parameter_and_bodies_within_it_get_through():
    ctx = ServiceContext("t", rate=1000.0, burst=1000, max_body_bytes=1000)
    client = TestClient(create_service_app(ctx, "t"))
    key = ctx.keys.create("root", "t1", ["admin"])
    ok = client.post("/auth/keys", json={"subject": "ci", "roles": ["viewer"], "pad": None}, headers={"X-API-Key": key})
    assert ok.status_code == 422  # (extra field) read, parsed and judged: not refused for its size
    at_limit = json.dumps({"subject": "x" * (1000 - len(json.dumps({"subject": "", "roles": ["viewer"]}))),
                           "roles": ["viewer"]}).encode()
    assert len(at_limit) == 1000
    assert client.post("/auth/keys", content=at_limit, headers={"X-API-Key": key, "Content-Type": "application/json"}
                       ).status_code == 422  # subject too long for its schema, but exactly at the size limit
    over = client.post("/auth/keys", content=at_limit + b" ", headers={"X-API-Key": key,
                                                                       "Content-Type": "application/json"})
    assert over.status_code == 413 and "1000" in over.json()["detail"]

    # a chunked body (no Content-Length) within the limit gets through whole
    def stream():
        yield b'{"subject": "ci",'
        yield b' "roles": ["viewer"]}'

    created = client.post("/auth/keys", content=stream(), headers={"X-API-Key": key,
                                                                     "Content-Type": "application/json"})
    assert created.status_code == 201 and created.json()["subject"] == "ci"


def realistic_batch(n: int) -> dict:
    rng = random.Random(3)
    return {"commands": [{"op": "place", "ref": f"ord-{i:06d}", "account_id": f"desk-eu-trader-{i % 50:04d}",
                          "instrument": rng.choice(["ACME", "GLOBEX", "INITECH"]), "side": rng.choice(["BUY", "SELL"]),
                          "type": "LIMIT", "quantity": rng.randint(1, 500), "price_ticks": rng.randint(90_000, 110_000),
                          "time_in_force": "GTC"} for i in range(n)]}


def test_the_largest_trading_batch_fits_well_under_the_limit():
    limit = ServiceContext("t").max_body_bytes
    batch = realistic_batch(MAX_BATCH)
    BatchIn.model_validate(batch)  # a batch the API accepts, of the most commands it accepts
    assert len(json.dumps(batch)) <= limit // 2  # with the spaces json.dumps puts in (httpx sends none)
    # even every field at its longest (ASCII) fits
    longest = {"commands": [{"op": "place", "ref": "r" * 64, "account_id": "a" * 64, "instrument": "I" * 16,
                             "side": "SELL", "type": "MARKET", "quantity": 10**9, "price_ticks": 10**12,
                             "time_in_force": "GTC"}] * MAX_BATCH}
    BatchIn.model_validate(longest)
    assert len(json.dumps(longest)) < limit

    # and the trading service takes it whole
    ctx = ServiceContext("trading", rate=1000.0, burst=1000)
    client = TestClient(create_trading_app(ctx, Exchange(["ACME"])))
    headers = {"X-API-Key": ctx.keys.create("bob", "t1", ["trader"])}
    assert client.post("/v1/accounts", json={"account_id": "a1"}, headers=headers).status_code == 201
    for asset, amount in (("USD", 10**12), ("ACME", 10**9)):
        client.post("/v1/accounts/a1/deposits", json={"asset": asset, "amount": amount}, headers=headers)
    commands = [{"op": "place", "ref": f"ord-{i:06d}", "account_id": "a1", "instrument": "ACME",
                 "side": "BUY" if i % 2 else "SELL", "type": "LIMIT", "quantity": 1,
                 "price_ticks": 100_000 + (-1 - i % 50 if i % 2 else 1 + i % 50), "time_in_force": "GTC"}
                for i in range(MAX_BATCH)]
    r = client.post("/v1/orders/batch", content=json.dumps({"commands": commands}),
                    headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:500]
    assert len(r.json()["results"]) == MAX_BATCH


# ---------------------------------------------------------------- against a real server
def loopback_port() -> int:
    for port in random.sample(range(23400, 23500), 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 23400-23499")


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split(b" ")[1]), rest


def test_a_real_server_answers_413_to_an_anonymous_150_mib_post_without_reading_it():
    ctx = ServiceContext("trading", rate=1000.0, burst=1000)
    with serve(create_trading_app(ctx, Exchange(["ACME"])), loopback_port()) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (150 * MiB))
            status, body = read_response(sock)  # answered with no byte of the body sent
        assert status == 413 and json.loads(body)["title"] == "Payload Too Large"

        # chunked: the server stops reading and answers as soon as the body passes the limit
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            piece = b"%x\r\n%s\r\n" % (CHUNK, b"[" * CHUNK)
            sent, outgoing, deadline, answered = 0, b"", time.monotonic() + 30, False
            sock.setblocking(False)
            while sent < 64 * MiB and time.monotonic() < deadline:
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        answered = True
                        break
                except BlockingIOError:
                    pass
                outgoing = outgoing or piece
                try:
                    n = sock.send(outgoing)
                except BlockingIOError:  # the server is not reading: wait for its answer
                    time.sleep(0.01)
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    answered = True
                    break
                sent, outgoing = sent + n, outgoing[n:]
            assert answered, f"no answer after {sent} bytes"
            sock.settimeout(10)
            status, body = read_response(sock)
        assert status == 413 and json.loads(body)["status"] == 413
        assert sent < 32 * MiB  # the rest was never read: the server answered while the client was still sending
