"""The CLI refuses to execute runs in process on an instance whose daemon would fail them.

Run monitoring asks the run launcher for each STARTED run's worker; K8sRunLauncher looks for the run's
Kubernetes Job, and a run the CLI executes in its own process has none: the daemon reports it FAILED while it
is still writing (a false alert, automation starting the partition again, its pool slots freed under it)."""

import subprocess

import pytest
import yaml

from tests.conftest import ROOT, subprocess_env

PLATFORMQ = str(ROOT / ".venv" / "bin" / "platformq")

FAKE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def k8s_launcher(kubeconfig=None) -> dict:
    config = {"service_account_name": "platformq-runs", "instance_config_map": "platformq-dagster-instance",
              "job_image": "platformq/user-code:test", "dagster_home": "/opt/dagster/home"}
    if kubeconfig is None:  # as infra/dagster.production.yaml: the pod's service account, which is not here
        config["load_incluster_config"] = True
    else:
        config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def instance_home(tmp_path, run_launcher: dict | None, monitoring: bool):
    home = tmp_path / "home"
    home.mkdir()
    config = {"telemetry": {"enabled": False},
              "run_monitoring": {"enabled": monitoring, "poll_interval_seconds": 60}}
    if run_launcher is not None:
        config["run_launcher"] = run_launcher
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@pytest.mark.parametrize("where", ["kubeconfig", "in-cluster"])
@pytest.mark.parametrize("args", [["backfill", "--start", "2024-01-02", "--end", "2024-01-02"],
                                  ["erasure", "process"], ["demo", "--days", "1", "--end", "2024-01-04"]])
def test_runs_on_a_k8s_launched_monitored_instance_are_refused_with_the_queued_way(tmp_path, where, args):
    kubeconfig = None
    if where == "kubeconfig":  # a launcher that starts (its API is never called)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(FAKE_KUBECONFIG)
    home = instance_home(tmp_path, k8s_launcher(kubeconfig), monitoring=True)
    out = subprocess.run([PLATFORMQ, *args], cwd=ROOT, env=subprocess_env(home), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "K8sRunLauncher" in out.stderr and "run monitoring" in out.stderr
    assert "dagster job backfill" in out.stderr and "Traceback" not in out.stderr
    assert not list((home / "landing").rglob("*.*"))  # nothing written first (the demo seeds the landing zone)
    # nothing ran: no run was recorded (and so none for the daemon to fail)
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert instance.get_runs_count() == 0


@pytest.mark.parametrize("launcher, monitoring", [(None, True), ("k8s", False)])
def test_runs_in_process_where_the_daemon_checks_no_worker(tmp_path, launcher, monitoring):
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from platformq_assets.cli import _refuse_runs_the_daemon_would_fail

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(FAKE_KUBECONFIG)
    home = instance_home(tmp_path, k8s_launcher(kubeconfig) if launcher else None, monitoring)
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        _refuse_runs_the_daemon_would_fail(instance)  # the local/compose DefaultRunLauncher; monitoring off
