"""Production twins for tests: moto_server as the S3 endpoint, Postgres from infra/scripts/test-services.sh."""

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.ports import free_port

PG_DSN = "postgresql+psycopg2://platformq:platformq@127.0.0.1:5432/{db}"


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


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not open 127.0.0.1:{port} in {timeout:.0f} s")


@contextlib.contextmanager
def redis_server():
    """A private Redis (Debian redis-server, installed by test-services.sh) on a free loopback port."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make services` (infra/scripts/test-services.sh)")
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--protected-mode", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc, "redis-server", 20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: str, s3_endpoint: str, workdir: Path):
    """`mlflow server` with a Postgres backend and artifacts proxied to S3 (moto), on loopback."""
    import os

    port = free_port()
    env = dict(os.environ, MLFLOW_S3_ENDPOINT_URL=s3_endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_DEFAULT_REGION="us-east-1", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(workdir / "mlflow-server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1", "--backend-store-uri", backend_uri,
                             "--artifacts-destination", artifacts, "--serve-artifacts"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        _wait_port(port, proc, "mlflow server", 120)
        import httpx

        deadline = time.time() + 60
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class SparkCluster:
    """A Spark standalone master and one worker from the scripts inside the pyspark wheel."""

    def __init__(self, workdir: Path):
        import os

        import pyspark

        self.home = Path(pyspark.__file__).parent
        self.workdir = workdir
        self.port = free_port()
        self.master = f"spark://127.0.0.1:{self.port}"
        self.env = dict(os.environ, SPARK_HOME=str(self.home), SPARK_LOCAL_IP="127.0.0.1",
                        SPARK_LOG_DIR=str(workdir / "logs"), SPARK_PID_DIR=str(workdir / "pids"),
                        SPARK_WORKER_DIR=str(workdir / "work"), PYSPARK_PYTHON=sys.executable)
        self.daemon = str(self.home / "sbin" / "spark-daemon.sh")
        self.workers_started = 0

    def _daemon(self, *args) -> None:
        subprocess.run(["bash", self.daemon, *args], env=self.env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def start_master(self) -> None:
        self._daemon("start", "org.apache.spark.deploy.master.Master", "1", "--host", "127.0.0.1",
                     "--port", str(self.port), "--webui-port", str(free_port()))

    def start_worker(self, timeout: float = 90.0) -> None:
        self.workers_started += 1
        self._daemon("start", "org.apache.spark.deploy.worker.Worker", "1", self.master, "--host", "127.0.0.1",
                     "--cores", "1", "--memory", "1g", "--webui-port", str(free_port()))
        deadline = time.time() + timeout
        while time.time() < deadline:
            # spark-daemon rotates a restarted worker's log to .out.1: count registrations across all of them
            logs = "".join(p.read_text(errors="replace") for p in (self.workdir / "logs").glob("*Worker*.out*"))
            if logs.count("Successfully registered with master") >= self.workers_started:
                return
            time.sleep(0.5)
        raise RuntimeError("the Spark worker did not register with the master")

    def kill_worker(self) -> None:
        """SIGKILL the worker JVM (and with it its executors): a lost machine, not a clean stop."""
        import signal

        [pid_file] = (self.workdir / "pids").glob("*Worker*.pid")
        pid = int(pid_file.read_text().strip())
        subprocess.run(["pkill", "-9", "-P", str(pid)], check=False)
        os_kill(pid, signal.SIGKILL)
        pid_file.unlink()

    def stop(self) -> None:
        for cls in ("org.apache.spark.deploy.worker.Worker", "org.apache.spark.deploy.master.Master"):
            subprocess.run(["bash", self.daemon, "stop", cls, "1"], env=self.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def os_kill(pid: int, sig) -> None:
    import os

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@contextlib.contextmanager
def spark_standalone(workdir: Path):
    """A running SparkCluster (master + one registered worker), stopped on exit."""
    cluster = SparkCluster(workdir)
    cluster.start_master()
    try:
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()
