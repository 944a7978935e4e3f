"""AirflowResource and the Airflow sensor against a real Airflow 3 (API server, scheduler, DAG
processor from `airflow standalone`, its own virtual environment built from requirements/airflow.txt).

Airflow's log servers listen on every interface and cannot be told otherwise, so Airflow and the
driver run inside a private network namespace that only has loopback (`unshare -n`)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DAGS = '''
import datetime as dt
from airflow.sdk import dag, task

@dag(dag_id="platformq_export", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False)
def platformq_export():
    @task
    def export(**context):
        return {"rows": 42, "partition": context["dag_run"].conf.get("partition")}
    export()

@dag(dag_id="platformq_broken", schedule=None, start_date=dt.datetime(2024, 1, 1), catchup=False)
def platformq_broken():
    @task(retries=0)
    def fail():
        raise RuntimeError("the export target is unreachable")
    fail()

platformq_export()
platformq_broken()
'''

SCRIPT = r"""
set -euo pipefail
ip link set lo up
export PATH={airflow_bin}:$PATH AIRFLOW_HOME={home} AIRFLOW__CORE__DAGS_FOLDER={home}/dags \
  AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=18080 \
  AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True AIRFLOW__CORE__EXECUTOR=LocalExecutor \
  AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5 AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL=5 \
  AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:18080/execution/
setsid airflow standalone > {home}/standalone.log 2>&1 &
AIRFLOW_PID=$!
trap 'kill -TERM -- -$AIRFLOW_PID 2>/dev/null || true; sleep 3; kill -KILL -- -$AIRFLOW_PID 2>/dev/null || true' EXIT
env -u AIRFLOW_HOME PYTHONPATH={root} {python} {root}/tests/production/airflow_driver.py http://127.0.0.1:18080 {home}/dagster
"""


def airflow_bin() -> Path:
    link = ROOT / ".venv-airflow" / "bin"
    if not (link / "airflow").exists():
        raise RuntimeError("the Airflow test environment is missing: run `make test-production` (it builds .venv-airflow)")
    return link


def test_trigger_wait_and_observe_airflow_dag_runs(tmp_path):
    home = Path(tempfile.mkdtemp(prefix="pqaf-", dir="/tmp"))
    (home / "dags").mkdir()
    (home / "dags" / "platformq_dags.py").write_text(DAGS)
    (home / "dagster").mkdir()
    (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    script = SCRIPT.format(airflow_bin=airflow_bin(), home=home, root=ROOT, python=sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORMQ_", "DAGSTER_"))}
    done = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=500,
                          env=env)
    log = (home / "standalone.log").read_text(errors="replace")[-3000:] if (home / "standalone.log").exists() else ""
    assert done.returncode == 0, done.stderr[-3000:] + log
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"]["state"] == "success" and result["ok"]["conf"] == {"partition": "2024-01-02"}
    assert result["broken"]["state"] == "failed"
    assert "no_such_dag" in result["missing"] and "404" in result["missing"]
    assert result["external"] == ["airflow/platformq_broken", "airflow/platformq_export"]
    observed = {o["key"]: o for o in result["observed"]}
    assert observed["airflow/platformq_export"]["airflow/state"] == "success"
    assert observed["airflow/platformq_export"]["airflow/run_id"] == result["ok"]["run_id"]
    assert observed["airflow/platformq_broken"]["airflow/state"] == "failed"
    assert result["first_is_result"] and result["second_skipped"]  # the cursor moved past both runs
