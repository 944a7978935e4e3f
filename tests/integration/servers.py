"""Production twins for tests: moto_server as the S3 endpoint, Postgres from infra/scripts/test-services.sh."""

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

PG_DSN = "postgresql+psycopg2://platformq:platformq@127.0.0.1:5432/{db}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_s3():
    """A real S3 API server on 127.0.0.1 (in-memory), stopped on exit."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("moto_server did not start")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


def create_bucket(endpoint: str, bucket: str) -> None:
    from urllib.parse import urlparse

    from minio import Minio

    client = Minio(urlparse(endpoint).netloc, access_key="test", secret_key="test", secure=False)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


@contextlib.contextmanager
def postgres_database():
    """A fresh database on the local Postgres (started by `make test` via test-services.sh)."""
    import psycopg2

    def admin():
        con = psycopg2.connect(host="127.0.0.1", user="platformq", password="platformq", dbname="postgres")
        con.autocommit = True
        return con

    name = f"pq_{uuid.uuid4().hex[:12]}"
    con = admin()
    con.cursor().execute(f"CREATE DATABASE {name}")
    con.close()
    try:
        yield name
    finally:
        con = admin()  # a fresh connection: the test may have restarted the server
        con.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        con.close()
