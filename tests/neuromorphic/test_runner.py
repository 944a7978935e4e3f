"""Where the lava side runs: a clear failure without .venv-lava, and the pod PipesK8sClient would submit."""

import pytest
from dagster import AssetKey, DagsterInstance, Failure

from tests.conftest import ML_PRODUCTION_ENV
from tests.integration.helpers import QUIET

PRODUCTION = {"PLATFORMQ_PROFILE": "production", "PLATFORMQ_CATALOG_URI": "postgresql+psycopg2://u:p@db/c",
              "PLATFORMQ_WAREHOUSE": "s3://lake/w", "PLATFORMQ_S3_ENDPOINT": "http://minio:9000",
              "PLATFORMQ_S3_ACCESS_KEY": "k", "PLATFORMQ_S3_SECRET_KEY": "s", "PLATFORMQ_PII_SALT": "salt", "PLATFORMQ_OBJECT_STORE_BUCKET": "b",
              "PLATFORMQ_SQL_ENGINE": "duckdb", "PLATFORMQ_SERVICES_IN_PROCESS": "true", **ML_PRODUCTION_ENV}


def test_missing_side_environment_names_make_setup(tmp_path):
    from platformq_assets.neuromorphic.runner import require_lava_python
    from resources.settings import Settings

    missing = tmp_path / "no-venv" / "bin" / "python"
    with pytest.raises(Failure) as raised:
        require_lava_python(Settings(lava_python=missing))
    assert "`make setup`" in raised.value.description and str(missing) in raised.value.description


def test_location_loads_and_assets_fail_clearly_without_the_side_environment(platform_home, monkeypatch, tmp_path):
    from platformq_assets.definitions import build_definitions
    from resources.settings import load_settings

    monkeypatch.setenv("PLATFORMQ_LAVA_PYTHON", str(tmp_path / "missing" / "python"))
    load_settings.cache_clear()
    defs = build_definitions(load_settings())  # the code location still loads
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={AssetKey(["neuromorphic", "spike_trains"])})
    result = job.execute_in_process(partition_key="2024-01-02", instance=DagsterInstance.get(),
                                    run_config=QUIET, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "neuromorphic side environment is missing" in message and "make setup" in message


def test_production_runs_the_lava_side_in_its_own_pod(monkeypatch):
    from dagster_k8s.pipes import build_pod_body
    from kubernetes.client import ApiClient

    from platformq_assets.neuromorphic.runner import k8s_run_kwargs
    from resources.settings import Settings

    for key, value in {**PRODUCTION, "PLATFORMQ_LAVA_IMAGE": "platformq/lava:1.2.3",
                       "PLATFORMQ_LAVA_WORKDIR": "/mnt/neuromorphic",
                       "PLATFORMQ_LAVA_WORKDIR_CLAIM": "nm-work"}.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.effective_lava_runner == "k8s"
    kwargs = k8s_run_kwargs(settings, "models.neuromorphic.pipes_score", {"spikes": "/mnt/neuromorphic/x.npz"})
    assert kwargs["namespace"] == "platformq" and kwargs["extras"] == {"spikes": "/mnt/neuromorphic/x.npz"}
    # what PipesK8sClient.run submits: its own pod builder, with the bootstrap variables it injects
    pod = build_pod_body(pod_name="dagster-pipes-test", image=kwargs["image"], command=kwargs["command"],
                         env_vars={**kwargs["env"], "DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="},
                         base_pod_meta=kwargs["base_pod_meta"], base_pod_spec=kwargs["base_pod_spec"])
    client = ApiClient()
    body = client.sanitize_for_serialization(pod)
    rebuilt = client._ApiClient__deserialize(body, "V1Pod")  # typed round trip validates every field
    assert client.sanitize_for_serialization(rebuilt) == body
    spec = body["spec"]
    [container] = spec["containers"]
    assert container["image"] == "platformq/lava:1.2.3"
    assert container["command"] == ["python", "-m", "models.neuromorphic.pipes_score"]
    assert spec["restartPolicy"] == "Never"
    assert {"name": "PYTHONPATH", "value": "/opt/platformq"} in container["env"]
    assert container["volumeMounts"] == [{"mountPath": "/mnt/neuromorphic", "name": "neuromorphic-workdir"}]
    assert spec["volumes"] == [{"name": "neuromorphic-workdir", "persistentVolumeClaim": {"claimName": "nm-work"}}]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    # the image's user, in group 0: it writes into the folders the step pod (root) made group-writable for it
    assert container["securityContext"]["runAsUser"] == 1000 and container["securityContext"]["runAsGroup"] == 0
    assert body["metadata"]["labels"]["platformq/domain"] == "neuromorphic"


def test_k8s_runner_refuses_to_run_without_a_shared_work_directory(monkeypatch):
    from platformq_assets.neuromorphic.runner import k8s_run_kwargs
    from resources.settings import Settings

    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(Failure, match="PLATFORMQ_LAVA_WORKDIR_CLAIM and PLATFORMQ_LAVA_WORKDIR:"):
        k8s_run_kwargs(Settings(), "models.neuromorphic.pipes_encode", {})
    # the claim without the folder it is mounted at: the step pod would write on its own disk
    monkeypatch.setenv("PLATFORMQ_LAVA_WORKDIR_CLAIM", "nm-work")
    with pytest.raises(Failure, match="needs PLATFORMQ_LAVA_WORKDIR:"):
        k8s_run_kwargs(Settings(), "models.neuromorphic.pipes_encode", {})


def test_lava_image_builds_the_side_environment_from_its_lock_file():
    from tests.conftest import ROOT

    dockerfile = (ROOT / "infra" / "lava.Dockerfile").read_text()
    assert "python:3.10" in dockerfile and "requirements/lava.txt" in dockerfile
    assert "models/neuromorphic" in dockerfile and "WORKDIR /opt/platformq" in dockerfile


def test_cluster_manifests_give_the_lava_pods_a_shared_volume_and_pod_rights():
    import yaml
    from kubernetes.client import ApiClient

    from tests.conftest import ROOT

    client = ApiClient()
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "infra" / "helm" / "neuromorphic.yaml").read_text())}
    types = {"PersistentVolumeClaim": "V1PersistentVolumeClaim", "Role": "V1Role", "RoleBinding": "V1RoleBinding"}
    assert set(docs) == set(types)
    for kind, model in types.items():  # typed round trip through the kubernetes models
        rebuilt = client._ApiClient__deserialize(docs[kind], model)
        assert client.sanitize_for_serialization(rebuilt) == docs[kind], kind
    claim = docs["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    rules = {r["resources"][0]: set(r["verbs"]) for r in docs["Role"]["rules"]}
    assert {"create", "get", "delete"} <= rules["pods"] and rules["pods/log"] == {"get"}
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    volumes = {v["name"]: v for v in launcher["volumes"]}
    assert volumes["neuromorphic-workdir"] == {"name": "neuromorphic-workdir",
                                               "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    assert docs["RoleBinding"]["subjects"][0]["name"] == values["global"]["serviceAccountName"]
    mounts = {m["name"]: m for m in launcher["volumeMounts"]}
    assert mounts["neuromorphic-workdir"] == {"name": "neuromorphic-workdir", "mountPath": "/mnt/neuromorphic"}


def test_model_without_earlier_spike_trains_fails_with_what_to_materialise(settings):
    from tests.integration.helpers import definitions

    job = definitions(settings).resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={AssetKey(["neuromorphic", "snn_model"])})
    result = job.execute_in_process(partition_key="2024-01-09", instance=DagsterInstance.get(), run_config=QUIET,
                                    raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "no spike trains in the training window of 2024-01-09 (2024-01-04 .. 2024-01-08)" in message
    assert "neuromorphic/spike_trains" in message


def test_folders_the_lava_side_writes_into_are_group_writable_and_keep_their_group(tmp_path):
    """On the shared volume the step pod (root) makes the folders and the lava pod (uid 1000, group 0) writes in
    them: with the default 0755 it could not, on storage that keeps permissions (NFS, CephFS)."""
    import stat

    from platformq_assets.neuromorphic.runner import lava_writable_dir

    made = lava_writable_dir(tmp_path / "spike_trains")
    assert stat.S_IMODE(made.stat().st_mode) == 0o2775
    assert lava_writable_dir(made) == made  # again: fine
    with pytest.raises(FileExistsError):
        lava_writable_dir(made, exist_ok=False)  # a training run's staging folder is its own


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie not yet reaped by its parent is dead for our purpose
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_hung_lava_script_is_stopped_with_its_processes_after_the_timeout(tmp_path, monkeypatch):
    """PipesSubprocessClient has no timeout: a Lava simulation that hung held the step for ever. The script (and
    the processes it forked, as Lava's runtime does) is killed after timeout_s, and the step fails saying so."""
    import sys
    import time
    from types import SimpleNamespace

    from dagster import asset, materialize

    from platformq_assets.neuromorphic import runner

    monkeypatch.setattr(runner, "TERMINATION_GRACE_S", 2.0)
    settings = SimpleNamespace(effective_lava_runner="subprocess", lava_python=sys.executable)
    pids = tmp_path / "pids"

    @asset
    def hangs(context):
        return runner.run_lava_script(context, settings, "tests.neuromorphic.hang_probe", {"pids": str(pids)},
                                      timeout_s=4).get_materialize_result()

    started = time.monotonic()
    result = materialize([hangs], raise_on_error=False)
    assert time.monotonic() - started < 60
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "tests.neuromorphic.hang_probe did not finish within 4 s" in message
    parent, child = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 10
    while (_alive(parent) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(parent) and not _alive(child)


def test_the_lava_pod_has_the_timeout_as_its_deadline(monkeypatch):
    """On Kubernetes the pod's activeDeadlineSeconds ends a hung script (PipesK8sClient's pod_wait_timeout only
    starts once the pod's log stream has ended)."""
    from platformq_assets.neuromorphic.runner import k8s_run_kwargs
    from resources.settings import Settings

    for key, value in {**PRODUCTION, "PLATFORMQ_LAVA_WORKDIR": "/mnt/neuromorphic",
                       "PLATFORMQ_LAVA_WORKDIR_CLAIM": "nm-work"}.items():
        monkeypatch.setenv(key, value)
    from dagster_k8s.pipes import build_pod_body
    from kubernetes.client import ApiClient

    kwargs = k8s_run_kwargs(Settings(), "models.neuromorphic.pipes_score", {}, timeout_s=7200)
    pod = build_pod_body(pod_name="dagster-pipes-test", image=kwargs["image"], command=kwargs["command"],
                         env_vars=kwargs["env"], base_pod_meta=kwargs["base_pod_meta"],
                         base_pod_spec=kwargs["base_pod_spec"])  # what PipesK8sClient.run submits
    assert ApiClient().sanitize_for_serialization(pod)["spec"]["activeDeadlineSeconds"] == 7200
    assert "activeDeadlineSeconds" not in k8s_run_kwargs(Settings(), "models.neuromorphic.pipes_score",
                                                         {})["base_pod_spec"]


def test_every_neuromorphic_asset_bounds_its_lava_script():
    from platformq_assets.neuromorphic.assets import ScoringConfig, SnnTrainingConfig, SpikeEncodingConfig

    for config in (SpikeEncodingConfig(), SnnTrainingConfig(), ScoringConfig()):
        assert config.timeout_seconds > 0
