"""The Spark driver's address: loopback only when the cluster is on this host.

Spark advertises SPARK_LOCAL_IP as the driver's address (spark.driver.host defaults to it): a driver told
127.0.0.1 while its master is spark://spark-master:7077 sends executors on other machines to their own loopback,
and the job waits for executors until its deadline. No cluster here: the session factory is stood in for, and
the environment it starts Spark in is what is checked."""

import os
import sys
import types

import pytest

from resources.compute import SparkResource


@pytest.fixture
def started_with(monkeypatch):
    """Stand in for dagster_pyspark: record SPARK_LOCAL_IP as it is when the session is created."""
    seen = {}

    class LazyPySparkResource:
        def __init__(self, spark_config):
            seen["config"] = spark_config
            seen["SPARK_LOCAL_IP"] = os.environ.get("SPARK_LOCAL_IP")

        @property
        def spark_session(self):
            return "session"

    monkeypatch.setitem(sys.modules, "dagster_pyspark", types.SimpleNamespace(LazyPySparkResource=LazyPySparkResource))
    for name in ("SPARK_LOCAL_IP", "PYSPARK_PYTHON"):  # what session() sets is undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return seen


@pytest.mark.parametrize("master", ["spark://spark-master.lake.svc:7077", "spark://m1:7077,m2:7077",
                                    "k8s://https://kubernetes.default.svc", "yarn"])
def test_a_driver_for_a_remote_cluster_is_not_pinned_to_loopback(started_with, master):
    assert SparkResource(spark_config={"spark.master": master}).session() == "session"
    assert started_with["SPARK_LOCAL_IP"] is None  # Spark finds the host's (the pod's) own address


@pytest.mark.parametrize("master", ["local[2]", "spark://127.0.0.1:7077", "spark://localhost:7077"])
def test_a_local_or_same_host_driver_stays_on_loopback(started_with, master):
    SparkResource(spark_config={"spark.master": master}).session()
    assert started_with["SPARK_LOCAL_IP"] == "127.0.0.1"


def test_an_address_the_deployment_sets_is_kept(started_with, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.1.2.3")
    SparkResource(spark_config={"spark.master": "local[2]"}).session()
    assert started_with["SPARK_LOCAL_IP"] == "10.1.2.3"


@pytest.mark.parametrize("seconds", [float("inf"), 1e12, 0])
def test_a_spark_deadline_past_what_a_timer_can_wait_is_refused(seconds):
    """The setting was bounded, the resource was not: built with inf (or past threading.TIMEOUT_MAX), its
    deadline's timer failed in its thread and the step had no deadline at all."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="job_timeout_s"):
        SparkResource(spark_config={}, job_timeout_s=seconds)
