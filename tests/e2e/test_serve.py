"""`platformq serve`: every service answers on 127.0.0.1 with its OpenAPI docs, one key works on all."""

import http.client
import re
import subprocess
import time

import httpx
import pytest

from tests.conftest import ROOT, subprocess_env
from tests.ports import free_ports

pytestmark = pytest.mark.slow


def _start(tmp_path, *args: str, ports: int = 6, base: int | None = None) -> tuple[subprocess.Popen, int, str]:
    """`platformq serve ARGS` on free consecutive ports (from ``base`` when given): the process, the first port
    and the admin key."""
    base = base if base is not None else free_ports(ports)
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "platformq"), "serve", "--port", str(base), *args], cwd=ROOT,
                            env=subprocess_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "admin API key" in line or not line:
            break
    match = re.search(r"(pq_\S+)", lines[-1])
    if not match:
        proc.kill()
        raise AssertionError("platformq serve did not start:\n" + "".join(lines))
    return proc, base, match.group(1)


def _derivatives(proc: subprocess.Popen, base: int) -> str:
    """The derivatives service's URL once it answers /health (serve's second port)."""
    url = f"http://127.0.0.1:{base + 1}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/health")
            return url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the derivatives service did not answer (exit code {proc.wait()}):\n"
                         + proc.stdout.read()[-3000:])


def test_serve_starts_every_service_on_loopback(tmp_path):
    proc, base, key = _start(tmp_path)
    try:
        for offset, name in enumerate(["trading", "derivatives", "governance", "credentials", "data"]):
            url = f"http://127.0.0.1:{base + offset}"
            for _ in range(100):
                try:
                    health = httpx.get(f"{url}/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            assert health.json() == {"status": "ok", "service": name}
            assert httpx.get(f"{url}/docs").status_code == 200
            assert httpx.get(f"{url}/openapi.json").json()["info"]["title"].startswith("platformQ")
        # one identity across services: the bootstrap key reads trading and the data catalog
        assert httpx.get(f"http://127.0.0.1:{base}/v1/instruments", headers={"X-API-Key": key}).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{base + 4}/v1/catalog", headers={"X-API-Key": key}).status_code == 200
        # a keep-alive client is answered at once: the connections have TCP_NODELAY (without it each answer's
        # second write waited for the client's delayed ACK: ~44 ms per request on Linux, every request)
        connection = http.client.HTTPConnection("127.0.0.1", base)
        times = []
        for _ in range(21):
            t = time.perf_counter()
            connection.request("GET", "/v1/instruments", headers={"X-API-Key": key})
            response = connection.getresponse()
            assert response.status == 200 and response.read()
            times.append(time.perf_counter() - t)
        connection.close()
        assert sorted(times)[10] < 0.02, f"median {sorted(times)[10] * 1000:.1f} ms per keep-alive request"
    finally:
        proc.terminate()
        proc.wait(20)


def test_serve_applies_the_rate_limit_it_is_given(tmp_path):
    """--rate/--burst set each key's token bucket: past the burst, one consistent 429 problem with Retry-After."""
    proc, base, key = _start(tmp_path, "--only", "derivatives", "--rate", "0.01", "--burst", "3")
    try:
        url = f"{_derivatives(proc, base)}/v1/options/price"
        body = {"model": "bsm", "option_type": "call", "underlying_price": 100, "strike": 100, "rate": 0.01, "vol": 0.2,
                "time": 1}
        statuses = [httpx.post(url, json=body, headers={"X-API-Key": key}) for _ in range(4)]
        assert [r.status_code for r in statuses[:3]] == [200, 200, 200], statuses[0].text
        limited = statuses[3]
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert limited.json()["type"].endswith("rate-limited") and int(limited.headers["Retry-After"]) >= 1
    finally:
        proc.terminate()
        proc.wait(20)


def test_serve_keeps_keys_across_restarts_and_replaces_the_bootstrap_key(tmp_path):
    """Keys live in <home>/api-keys.json: a restart prints a new bootstrap admin key and revokes the last one, while
    a key an admin created keeps working."""
    import os
    import stat

    proc, base, first = _start(tmp_path, "--only", "derivatives", "--tenant", "t-acme")
    try:
        url = _derivatives(proc, base)
        created = httpx.post(f"{url}/auth/keys", json={"subject": "ci", "roles": ["viewer"]},
                             headers={"X-API-Key": first})
        assert created.status_code == 201, created.text
        ci_key = created.json()["api_key"]
        token = httpx.post(f"{url}/auth/token", json={"api_key": ci_key}).json()["access_token"]
    finally:
        proc.terminate()
        proc.wait(20)
    proc, base, second = _start(tmp_path, "--only", "derivatives", "--tenant", "t-acme", base=base)  # same address
    try:
        url = _derivatives(proc, base)
        assert second != first
        assert httpx.get(f"{url}/auth/keys", headers={"X-API-Key": first}).status_code == 401  # revoked
        listed = httpx.get(f"{url}/auth/keys", headers={"X-API-Key": second})
        assert listed.status_code == 200
        active = sorted(k["subject"] for k in listed.json() if k["revoked_at"] is None)
        assert active == ["bootstrap-admin", "ci"]
        assert httpx.post(f"{url}/auth/token", json={"api_key": ci_key}).status_code == 200  # survived the restart
        # so did a token minted before it: the signing key is <home>/jwt-signing-key.pem, not the process's
        bearer = httpx.get(f"{url}/v1/futures/contracts", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200, bearer.text
    finally:
        proc.terminate()
        proc.wait(20)
    store = tmp_path / "home" / "api-keys.json"
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "home" / "jwt-signing-key.pem").st_mode) == 0o600
    assert first not in store.read_text() and ci_key not in store.read_text()


def test_a_serve_that_cannot_start_changes_no_key(tmp_path):
    """A second serve on ports in use fails before it rotates the bootstrap key: the running one's admin key
    keeps working (it was revoked by the failed start, and every service reloads the shared key file)."""
    proc, base, key = _start(tmp_path, "--only", "derivatives")
    try:
        url = _derivatives(proc, base)
        assert httpx.get(f"{url}/auth/keys", headers={"X-API-Key": key}).status_code == 200
        again = subprocess.run([str(ROOT / ".venv" / "bin" / "platformq"), "serve", "--port", str(base), "--only",
                                "derivatives"], cwd=ROOT, env=subprocess_env(tmp_path / "home"), capture_output=True,
                               text=True, timeout=120)
        assert again.returncode == 1 and "Traceback" not in again.stderr, again.stdout + again.stderr
        assert "cannot listen" in again.stderr and "admin API key" not in again.stdout
        time.sleep(1.5)  # the key file is re-read on change: give a revocation the time it would need
        assert httpx.get(f"{url}/auth/keys", headers={"X-API-Key": key}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_two_hosts_share_keys_and_tokens_through_a_database_and_one_signing_key(tmp_path, monkeypatch):
    """Two serves with nothing on disk in common (two hosts behind one address): API keys in one database
    (PLATFORMQ_API_KEY_STORE_URL, Postgres), one signing key file (a mounted secret) and one issuer, so a key
    created on one works on the other, a token minted on one verifies on the other, and a revocation on one
    ends both at the other at the next request."""
    from tests.integration.servers import PG_DSN, postgres_database

    secret = tmp_path / "secret" / "jwt.pem"
    with postgres_database() as db:
        shared = {"PLATFORMQ_API_KEY_STORE_URL": PG_DSN.format(db=db), "PLATFORMQ_SERVICES_JWT_KEY_FILE": str(secret),
                  "PLATFORMQ_SERVICES_TOKEN_ISSUER": "https://api.platformq.example"}
        for key, value in shared.items():
            monkeypatch.setenv(key, value)  # _start hands the environment on
        a, base_a, admin = _start(tmp_path / "host-a", "--only", "derivatives", "--tenant", "t-acme")
        b = None
        try:
            url_a = _derivatives(a, base_a)
            created = httpx.post(f"{url_a}/auth/keys", json={"subject": "ci", "roles": ["viewer"]},
                                 headers={"X-API-Key": admin})
            assert created.status_code == 201, created.text
            ci = created.json()
            token = httpx.post(f"{url_a}/auth/token", json={"api_key": ci["api_key"]}).json()["access_token"]
            b, base_b, admin_b = _start(tmp_path / "host-b", "--only", "derivatives", "--tenant", "t-acme")
            url_b = _derivatives(b, base_b)
            assert not (tmp_path / "host-b" / "home" / "api-keys.json").exists()  # nothing read from a file
            contracts = f"{url_b}/v1/futures/contracts"
            assert httpx.get(contracts, headers={"X-API-Key": ci["api_key"]}).status_code == 200
            bearer = {"Authorization": f"Bearer {token}"}
            assert httpx.get(contracts, headers=bearer).status_code == 200, "a token minted on A, at B"
            assert httpx.delete(f"{url_b}/auth/keys/{ci['key_id']}",
                                headers={"X-API-Key": admin_b}).status_code == 200
            at_a = f"{url_a}/v1/futures/contracts"
            assert httpx.get(at_a, headers={"X-API-Key": ci["api_key"]}).status_code == 401
            assert httpx.get(at_a, headers=bearer).status_code == 401
            assert httpx.get(at_a, headers={"X-API-Key": admin}).status_code == 401  # B's start replaced it
        finally:
            for proc in (a, b):
                if proc is not None:
                    proc.terminate()
                    proc.wait(20)


def test_two_serves_behind_one_address_share_each_keys_rate_limit_through_redis(tmp_path, monkeypatch):
    """--rate/--burst per key across processes (PLATFORMQ_RATE_LIMIT_REDIS_URL): with a bucket per process, two
    processes let a key through twice as often."""
    from tests.integration.servers import PG_DSN, postgres_database, redis_server

    with postgres_database() as db, redis_server() as redis_url:
        monkeypatch.setenv("PLATFORMQ_API_KEY_STORE_URL", PG_DSN.format(db=db))
        monkeypatch.setenv("PLATFORMQ_RATE_LIMIT_REDIS_URL", redis_url)
        limits = ("--only", "derivatives", "--rate", "0.01", "--burst", "3")
        a, base_a, _ = _start(tmp_path / "host-a", *limits)
        b = None
        try:
            b, base_b, key = _start(tmp_path / "host-b", *limits)
            urls = [_derivatives(a, base_a), _derivatives(b, base_b)]
            answers = [httpx.get(f"{urls[i % 2]}/v1/futures/contracts", headers={"X-API-Key": key})
                       for i in range(4)]
            assert [r.status_code for r in answers] == [200, 200, 200, 429], [r.text for r in answers]
            assert answers[3].headers["retry-after"] == "100"
            assert httpx.get(f"{urls[0]}/v1/futures/contracts", headers={"X-API-Key": key}).status_code == 429
        finally:
            for proc in (a, b):
                if proc is not None:
                    proc.terminate()
                    proc.wait(20)
