"""Compute resources: Ray (Tune) and Spark, local by default, clusters in production.

Ray: with no address, a single-node Ray starts in the step process (``RAY_ADDRESS`` in the environment
is not joined) and stays on loopback
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; Ray otherwise binds the machine's address) with
its own temp folder; with ``PLATFORMQ_RAY_ADDRESS`` the step connects to that cluster.
Spark: dagster-pyspark's ``LazyPySparkResource`` (the session starts on first use) with
``local[2]`` or ``PLATFORMQ_SPARK_MASTER``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from dagster import ConfigurableResource
from pydantic import Field


class RayResource(ConfigurableResource):
    address: str | None = None  # None, "" or "local": start Ray in this process (never $RAY_ADDRESS); else a cluster
    num_cpus: int = 2
    temp_dir: str = "/tmp/platformq-ray"

    @contextlib.contextmanager
    def session(self) -> Iterator[dict]:
        """ray.init for the length of a block; shut down after (nothing leaks into the next step)."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        local = self.address in (None, "", "local")
        guard = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
        if local:  # single node on loopback (Ray binds the machine's address otherwise)
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray_constants, cluster_flag = None, None
        try:  # whatever happens from here (ray.init failing too), the process is left as it was
            import ray
            from ray._private import ray_constants

            # Ray reads that variable once, when first imported: a Ray imported earlier in this process (another
            # library, an earlier step of an in-process run) would bind the machine's address; its flag is set too
            cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
            if local:
                ray_constants.ENABLE_RAY_CLUSTER = False
            os.makedirs(self.temp_dir, exist_ok=True)
            already = ray.is_initialized()
            if not already:
                if not local:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    # "local": a new single-node Ray, always (address=None would join $RAY_ADDRESS, or the cluster
                    # started last on this machine, when there is one)
                    ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                             _temp_dir=self.temp_dir, log_to_driver=False, configure_logging=False)
            try:
                yield {"address": self.address or "local", "resources": ray.cluster_resources()}
            finally:
                if not already:
                    ray.shutdown()
        finally:
            if local:  # leave the environment as it was (child processes started later inherit it)
                if ray_constants is not None:
                    ray_constants.ENABLE_RAY_CLUSTER = cluster_flag
                if guard is None:
                    os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
                else:
                    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = guard


def ray_resource(settings) -> RayResource:
    import hashlib

    # Ray puts Unix sockets under its temp dir: keep the path short (sockets allow ~107 bytes).
    tag = hashlib.sha1(str(settings.home).encode()).hexdigest()[:8]
    return RayResource(address=settings.ray_address, num_cpus=settings.ray_num_cpus, temp_dir=f"/tmp/pqray-{tag}")


class SparkResource(ConfigurableResource):
    """dagster-pyspark's LazyPySparkResource behind a light shell: importing dagster_pyspark
    imports pyspark, which the code location must not pay for at load."""

    spark_config: dict[str, str]
    # a step's Spark jobs are cancelled after this long; at most a week (as the setting: threading.Timer fails past
    # threading.TIMEOUT_MAX, leaving no deadline)
    job_timeout_s: float = Field(default=1800.0, gt=0, le=7 * 86400)

    def session(self):
        # Spark advertises SPARK_LOCAL_IP as the driver's address: loopback only when the cluster runs on this host
        # (a remote master's executors would dial their own loopback and never reach the driver)
        if _same_host(self.spark_config.get("spark.master", "local")):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        from dagster_pyspark import LazyPySparkResource

        return LazyPySparkResource(spark_config=self.spark_config).spark_session

    @contextlib.contextmanager
    def deadline(self, session) -> Iterator[None]:
        """Cancel this step's Spark jobs after ``job_timeout_s``. A standalone cluster whose workers are
        gone does not fail a job, it waits for executors forever; this turns that into a clean failure."""
        import threading
        import uuid

        context = session.sparkContext
        group = f"platformq-{uuid.uuid4().hex[:12]}"
        context.setJobGroup(group, "platformq asset step", interruptOnCancel=True)
        fired = threading.Event()

        def cancel():
            fired.set()
            context.cancelJobGroup(group)

        timer = threading.Timer(self.job_timeout_s, cancel)
        timer.daemon = True
        timer.start()
        try:
            yield
        except Exception as exc:
            if fired.is_set():
                raise TimeoutError(f"Spark jobs on {context.master} did not finish in {self.job_timeout_s:.0f} s "
                                   "and were cancelled (are the cluster's workers up?)") from exc
            raise
        finally:
            timer.cancel()

    def stop(self) -> None:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


def _same_host(master: str) -> bool:
    """Whether a Spark master URL keeps the executors on this host: local[...], or spark://127.0.0.1 / localhost."""
    if master.startswith("local"):
        return True
    if not master.startswith("spark://"):
        return False  # k8s://, yarn, mesos: executors elsewhere
    hosts = [part.rsplit(":", 1)[0] for part in master.removeprefix("spark://").split(",")]
    return all(host in ("127.0.0.1", "localhost", "[::1]") for host in hosts)


def spark_resource(settings) -> SparkResource:
    config = {
        "spark.master": settings.effective_spark_master,
        "spark.app.name": "platformq",
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "4",
        "spark.executor.memory": "512m",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if settings.is_local:
        config["spark.driver.host"] = "127.0.0.1"
        config["spark.driver.bindAddress"] = "127.0.0.1"
    config.update(settings.spark_conf)  # PLATFORMQ_SPARK_CONF: a k8s:// master's image and namespace, sizes
    return SparkResource(spark_config=config, job_timeout_s=settings.spark_job_timeout_s)
