"""`platformq serve`: every service answers on 127.0.0.1 with its OpenAPI docs, one key works on all."""

import re
import subprocess
import time

import httpx
import pytest

from tests.conftest import ROOT, subprocess_env
from tests.services.serving import free_port

pytestmark = pytest.mark.slow


def test_serve_starts_every_service_on_loopback(tmp_path):
    base = free_port()
    while any(_busy(base + i) for i in range(5)):
        base = free_port()
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "platformq"), "serve", "--port", str(base)], cwd=ROOT,
                            env=subprocess_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "admin API key" in line:
                break
        key = re.search(r"(pq_\S+)", lines[-1]).group(1)
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
    finally:
        proc.terminate()
        proc.wait(20)


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
