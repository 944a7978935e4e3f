"""Kubernetes: the job specs dagster-k8s builds for our steps validate against the Kubernetes API models.

No cluster runs here: the specs are rendered with dagster-k8s's own builder and round-tripped
through the kubernetes client's typed models (which reject unknown or malformed fields)."""

import hashlib

import pytest
import yaml

from tests.conftest import ML_PRODUCTION_ENV, ROOT

pytestmark = pytest.mark.slow
IMAGE = "platformq/user-code:test"


def rendered_jobs(settings, job_name: str = "lake_daily"):
    from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job
    from dagster_k8s.job import get_user_defined_k8s_config

    from platformq_assets.definitions import build_definitions

    job = build_definitions(settings).resolve_job_def(job_name)
    config = DagsterK8sJobConfig(job_image=IMAGE, dagster_home="/opt/dagster/dagster_home",
                                 image_pull_policy="IfNotPresent", instance_config_map="platformq-dagster-instance",
                                 env_config_maps=["platformq-env"], env_secrets=["platformq-secrets"])
    out = {}
    for node in job.graph.node_defs:
        user = get_user_defined_k8s_config(node.tags)
        out[node.name] = construct_dagster_k8s_job(
            config, args=["dagster", "api", "execute_step"],
            job_name=f"dagster-step-{hashlib.md5(node.name.encode()).hexdigest()[:16]}",  # as dagster-k8s names them
            user_defined_k8s_config=user, labels={"dagster/job": "lake_daily", "dagster/op": node.name})
    return out


def test_step_jobs_validate_against_kubernetes_models(settings):
    from kubernetes.client import ApiClient

    client = ApiClient()
    jobs = rendered_jobs(settings)
    assert {"dbt_lake", "venue_session"} <= set(jobs)
    for name, job in jobs.items():
        body = client.sanitize_for_serialization(job)
        assert body["kind"] == "Job" and body["apiVersion"] == "batch/v1"
        # typed round trip: the kubernetes client rebuilds V1Job from plain JSON, validating every field
        rebuilt = client._ApiClient__deserialize(body, "V1Job")
        assert client.sanitize_for_serialization(rebuilt) == body, name
        container = body["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == IMAGE
        assert {"configMapRef": {"name": "platformq-env"}} in container["envFrom"]
    dbt = client.sanitize_for_serialization(jobs["dbt_lake"])["spec"]["template"]["spec"]["containers"][0]
    assert dbt["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}


def test_heavy_steps_size_their_own_pods_in_every_job_that_runs_them(settings):
    """Training, simulation and table rewrites get requests and limits of their own; every other step the run
    launcher's runK8sConfig (no resources in its step Job)."""
    from kubernetes.client import ApiClient

    from platformq_assets.definitions import build_definitions

    client = ApiClient()
    training = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    expected = {
        "venue_session": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        "dbt_lake": training, "ml__account_anomaly": training, "ml__price_direction": training,
        "neuromorphic__snn_model": training, "neuromorphic__anomaly_scores": training,
        "maintenance__compaction": training,
        "federated__order_anomaly_model": {"requests": {"cpu": "2", "memory": "4Gi"},
                                           "limits": {"cpu": "4", "memory": "8Gi"}},
    }
    seen = {}
    for job in build_definitions(settings).get_repository_def().get_all_jobs():
        for name, rendered in rendered_jobs(settings, job.name).items():
            body = client.sanitize_for_serialization(rendered)
            assert client.sanitize_for_serialization(client._ApiClient__deserialize(body, "V1Job")) == body
            seen[name] = body["spec"]["template"]["spec"]["containers"][0].get("resources")
    assert set(expected) <= set(seen)
    for name, resources in seen.items():
        assert (resources or None) == expected.get(name), name


def test_production_profile_selects_the_k8s_job_executor(monkeypatch):
    from resources.settings import Settings

    for k, v in {"PLATFORMQ_PROFILE": "production", "PLATFORMQ_CATALOG_URI": "postgresql+psycopg2://u:p@db/c",
                 "PLATFORMQ_WAREHOUSE": "s3://lake/w", "PLATFORMQ_S3_ENDPOINT": "http://minio:9000",
                 "PLATFORMQ_S3_ACCESS_KEY": "k", "PLATFORMQ_S3_SECRET_KEY": "s", "PLATFORMQ_PII_SALT": "salt", "PLATFORMQ_OBJECT_STORE_BUCKET": "b",
                 "PLATFORMQ_SQL_ENGINE": "duckdb", "PLATFORMQ_SERVICES_IN_PROCESS": "true",
                 **ML_PRODUCTION_ENV}.items():
        monkeypatch.setenv(k, v)
    from platformq_assets.definitions import build_definitions

    job = build_definitions(Settings()).resolve_job_def("lake_daily")
    assert job.executor_def.name == "k8s"


def test_helm_values_use_the_k8s_run_launcher_and_external_postgres():
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    # the chart renders `concurrency` into the instance: the same limits as the production dagster.yaml
    instance = yaml.safe_load((ROOT / "infra" / "dagster.production.yaml").read_text())["concurrency"]
    chart = values["concurrency"]
    assert chart["pools"] == {"defaultLimit": instance["pools"]["default_limit"],
                              "granularity": instance["pools"]["granularity"]}
    assert chart["runs"]["maxConcurrentRuns"] == instance["runs"]["max_concurrent_runs"]
    assert chart["runs"]["tagConcurrencyLimits"] == instance["runs"]["tag_concurrency_limits"]
    assert "config" not in values["dagsterDaemon"]["runCoordinator"]  # the chart refuses limits in both places
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "platformq_assets.definitions", "-a", "defs"]
    # a node holding an older image under the same tag must not run it: code server and run pods pull the current
    launcher = yaml.safe_load((ROOT / "infra" / "dagster.production.yaml").read_text())["run_launcher"]["config"]
    assert deployment["image"]["pullPolicy"] == launcher["image_pull_policy"] == "Always"
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert "platformq_assets.definitions" in dockerfile and "requirements/main.txt" in dockerfile


def test_the_services_audit_files_are_mounted_where_the_sensor_and_the_steps_read_them():
    """The audit_trail_sensor runs in the code-location server, the governance_audit step in a run's pod: both
    mount the services' state volume read-only, and the mounts validate as Kubernetes objects."""
    from kubernetes.client import ApiClient

    client = ApiClient()
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    claim = yaml.safe_load((ROOT / "infra" / "helm" / "service-state.yaml").read_text())
    rebuilt = client._ApiClient__deserialize(claim, "V1PersistentVolumeClaim")
    assert client.sanitize_for_serialization(rebuilt) == claim
    assert claim["metadata"]["name"] == "platformq-service-state"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # the services write, Dagster's pods read
    [deployment] = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for where in (deployment, launcher):
        volumes = {v["name"]: client._ApiClient__deserialize(v, "V1Volume") for v in where["volumes"]}
        mounts = {m["name"]: client._ApiClient__deserialize(m, "V1VolumeMount") for m in where["volumeMounts"]}
        assert volumes["service-audit"].persistent_volume_claim.claim_name == "platformq-service-state"
        assert (mounts["service-audit"].mount_path, mounts["service-audit"].read_only) == ("/mnt/service-audit", True)
        assert set(mounts) <= set(volumes)


def chart_instance_sections(values: dict) -> dict:
    """What the official chart's configmap-instance template writes into the instance's dagster.yaml for
    these sections: `concurrency` only when `concurrency.enabled`, run retries and run monitoring (and the
    sensor/schedule workers) from `dagsterDaemon`, whatever else the values hold."""
    daemon, out = values.get("dagsterDaemon", {}), {}
    concurrency = values.get("concurrency", {})
    if concurrency.get("enabled"):
        pools, runs = concurrency.get("pools", {}), concurrency.get("runs", {})
        out["concurrency"] = {
            "pools": {"default_limit": pools.get("defaultLimit"), "granularity": pools.get("granularity")},
            "runs": {"max_concurrent_runs": runs.get("maxConcurrentRuns"),
                     "tag_concurrency_limits": runs.get("tagConcurrencyLimits", [])}}
    if daemon.get("enabled") and daemon.get("runRetries", {}).get("enabled"):
        out["run_retries"] = {"enabled": True, "max_retries": daemon["runRetries"].get("maxRetries")}
    monitoring = daemon.get("runMonitoring", {})
    if daemon.get("enabled") and monitoring.get("enabled"):
        out["run_monitoring"] = {"enabled": True, "start_timeout_seconds": monitoring.get("startTimeoutSeconds"),
                                 "max_resume_run_attempts": monitoring.get("maxResumeRunAttempts"),
                                 "poll_interval_seconds": monitoring.get("pollIntervalSeconds"),
                                 "free_slots_after_run_end_seconds": monitoring.get("freeSlotsAfterRunEndSeconds")}
    for kind in ("sensors", "schedules"):
        if daemon.get("enabled") and daemon.get(kind, {}).get("useThreads"):
            out[kind] = {"use_threads": True, "num_workers": daemon[kind].get("numWorkers")}
    return out


def test_the_chart_renders_the_production_instance_limits():
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    instance = yaml.safe_load((ROOT / "infra" / "dagster.production.yaml").read_text())
    # the chart's values schema allows only these keys under `concurrency` (helm install fails otherwise)
    assert set(values["concurrency"]) <= {"enabled", "pools", "runs"}
    assert set(values["concurrency"]["pools"]) <= {"defaultLimit", "granularity", "opGranularityRunBuffer"}
    assert set(values["concurrency"]["runs"]) <= {"maxConcurrentRuns", "tagConcurrencyLimits"}
    rendered = chart_instance_sections(values)
    for section in ("concurrency", "run_retries", "run_monitoring", "sensors", "schedules"):
        assert rendered.get(section) == instance[section], section


def test_the_chart_uses_the_deployments_postgres_password():
    """The chart generates its own Postgres password secret unless told not to, from its default password
    ("test"): the values must leave the password to the secret the deployment creates."""
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in values["postgresql"]  # no password in the values file
    assert values["global"]["postgresqlSecretName"]


def test_run_pods_get_the_user_code_image_without_the_chart(tmp_path, monkeypatch):
    """Self-managed (infra/dagster.production.yaml): the launcher's job_image comes from PLATFORMQ_USER_CODE_IMAGE,
    the image dagster-k8s falls back to when the code location reports none (no DAGSTER_CURRENT_IMAGE in the
    server's environment); the Job it renders runs that image. A missing variable is an error naming it."""
    import shutil
    from types import SimpleNamespace

    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext

    for k, v in {"PLATFORMQ_DAGSTER_PG_URL": "postgresql+psycopg2://u:p@db:5432/dagster",
                 "PLATFORMQ_K8S_NAMESPACE": "platformq", "PLATFORMQ_USER_CODE_IMAGE": IMAGE}.items():
        monkeypatch.setenv(k, v)
    shutil.copy(ROOT / "infra" / "dagster.production.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    launcher_config = config["run_launcher"]["config"]
    processed = process_config(K8sRunLauncher.config_type(), launcher_config)
    assert processed.success, processed.errors
    values = processed.value
    assert values["job_image"] == IMAGE
    # the launcher's attributes its Job config reads (constructing K8sRunLauncher needs a cluster to connect to)
    launcher = SimpleNamespace(job_image=values["job_image"], dagster_home="/opt/dagster/dagster_home",
                               instance_config_map=values["instance_config_map"], postgres_password_secret=None)
    # as _launch_k8s_job_with_args builds the run's Job: the origin's image first (none here), then job_image
    job_config = K8sContainerContext().get_k8s_job_config(job_image=None, run_launcher=launcher)
    from dagster_k8s import construct_dagster_k8s_job

    job = construct_dagster_k8s_job(job_config, args=["dagster", "api", "execute_run"], job_name="dagster-run-x")
    assert job.spec.template.spec.containers[0].image == IMAGE
    monkeypatch.delenv("PLATFORMQ_USER_CODE_IMAGE")
    missing = process_config(K8sRunLauncher.config_type(), launcher_config)
    assert not missing.success and "PLATFORMQ_USER_CODE_IMAGE" in str(missing.errors)


def chart_code_location_container_context(values: dict) -> dict | None:
    """The container context the official chart gives the code-location server (DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT,
    its dagsterUserDeployments.k8sContainerContext helper) unless the deployment sets
    includeConfigInLaunchedRuns.enabled: false; every run launched from the location merges it over the launcher's."""
    [deployment] = values["dagster-user-deployments"]["deployments"]
    if not (deployment.get("includeConfigInLaunchedRuns") or {"enabled": True})["enabled"]:
        return None
    k8s = {"image_pull_policy": deployment["image"]["pullPolicy"],
           "env_config_maps": [f"platformq-dagster-user-deployments-{deployment['name']}-user-env",
                               *(c["name"] for c in deployment.get("envConfigMaps", []))],
           "env_secrets": [s["name"] for s in deployment.get("envSecrets", [])],
           "namespace": "platformq", "service_account_name": values["global"]["serviceAccountName"]}
    for key, field in (("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("resources", "resources")):
        if deployment.get(key):
            k8s[field] = deployment[key]
    return {"k8s": k8s}


def test_run_and_step_pods_get_the_run_launchers_resources_not_the_code_servers():
    """The chart passes the code-location deployment's own settings (its resources: 1 CPU, 2 GiB) into every run it
    launches, over the run launcher's runK8sConfig: run pods and every step pod without a dagster-k8s/config tag ran
    with the code server's limits, not the 2 CPU / 4 GiB the values give runs."""
    from types import SimpleNamespace

    from dagster_k8s.container_context import K8sContainerContext

    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    launcher_values = values["runLauncher"]["config"]["k8sRunLauncher"]
    # the K8sRunLauncher the chart's instance template configures from these values
    launcher = SimpleNamespace(
        image_pull_policy="Always", image_pull_secrets=[], service_account_name=values["global"]["serviceAccountName"],
        env_config_maps=["platformq-dagster-pipeline-env", *(c["name"] for c in launcher_values["envConfigMaps"])],
        env_secrets=[s["name"] for s in launcher_values["envSecrets"]], env_vars=[],
        volume_mounts=launcher_values["volumeMounts"], volumes=launcher_values["volumes"], labels={},
        job_namespace="platformq", resources={}, scheduler_name=None, security_context={},
        run_k8s_config={"container_config": launcher_values["runK8sConfig"]["containerConfig"]},
        only_allow_user_defined_k8s_config_fields=None, only_allow_user_defined_env_vars=None)
    origin = SimpleNamespace(repository_origin=SimpleNamespace(
        container_context=chart_code_location_container_context(values)))
    run = SimpleNamespace(job_code_origin=origin, tags={})
    # as K8sRunLauncher builds a run's pod, and k8s_job_executor a step's (before the step's own tags)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    container = context.run_k8s_config.container_config
    assert container["resources"] == launcher_values["runK8sConfig"]["containerConfig"]["resources"]
    # and the run pods still get the environment, the secrets and both volumes
    env_from = container["env_from"]
    assert {"config_map_ref": {"name": "platformq-env"}} in env_from
    assert {"secret_ref": {"name": "platformq-secrets"}} in env_from
    volumes = [v["name"] for v in context.run_k8s_config.pod_spec_config["volumes"]]
    assert sorted(volumes) == ["landing", "neuromorphic-workdir", "service-audit"]


def test_self_managed_run_and_step_pods_mount_the_volumes_the_config_map_points_at(tmp_path, monkeypatch):
    """infra/dagster.production.yaml (no chart) launches run pods, and through them the step pods, with the same
    volumes as the chart's values: platformq-env names PLATFORMQ_AUDIT_DIR=/mnt/service-audit and
    PLATFORMQ_LAVA_WORKDIR=/mnt/neuromorphic for both deployments. Without the mounts the governance_audit step read
    an empty pod folder and the neuromorphic steps handed their spike trains over in a folder the lava pod's claim
    never saw."""
    import shutil
    from types import SimpleNamespace

    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    from pipelines.pods import K8S_CONFIG_TAG, TRAINING_POD

    for k, v in {"PLATFORMQ_DAGSTER_PG_URL": "postgresql+psycopg2://u:p@db:5432/dagster",
                 "PLATFORMQ_K8S_NAMESPACE": "platformq", "PLATFORMQ_USER_CODE_IMAGE": IMAGE}.items():
        monkeypatch.setenv(k, v)
    shutil.copy(ROOT / "infra" / "dagster.production.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    processed = process_config(K8sRunLauncher.config_type(), config["run_launcher"]["config"])
    assert processed.success, processed.errors
    cfg = processed.value
    launcher = SimpleNamespace(
        image_pull_policy=cfg.get("image_pull_policy"), image_pull_secrets=cfg.get("image_pull_secrets") or [],
        service_account_name=cfg.get("service_account_name"), env_config_maps=cfg.get("env_config_maps") or [],
        env_secrets=cfg.get("env_secrets") or [], env_vars=cfg.get("env_vars") or [],
        volume_mounts=cfg.get("volume_mounts") or [], volumes=cfg.get("volumes") or [], labels={},
        job_namespace=cfg["job_namespace"], resources=cfg.get("resources") or {}, scheduler_name=None,
        security_context={}, run_k8s_config=cfg.get("run_k8s_config") or {},
        only_allow_user_defined_k8s_config_fields=None, only_allow_user_defined_env_vars=None)
    run = SimpleNamespace(job_code_origin=SimpleNamespace(repository_origin=SimpleNamespace(container_context=None)),
                          tags={})
    run_context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    # a step pod: the run's context with the step's own dagster-k8s/config merged over it (as k8s_job_executor does)
    step_context = run_context.merge(K8sContainerContext(
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(TRAINING_POD[K8S_CONFIG_TAG])))
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    for context in (run_context, step_context):
        pod, container = context.run_k8s_config.pod_spec_config, context.run_k8s_config.container_config
        claims = {v["name"]: v["persistent_volume_claim"]["claim_name"] for v in pod.get("volumes", [])}
        mounts = {m["name"]: (m["mount_path"], bool(m.get("read_only"))) for m in container.get("volume_mounts", [])}
        assert claims == {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in chart["volumes"]}
        assert mounts == {m["name"]: (m["mountPath"], bool(m.get("readOnly"))) for m in chart["volumeMounts"]}
        assert mounts["service-audit"] == ("/mnt/service-audit", True)
        assert mounts["neuromorphic-workdir"] == ("/mnt/neuromorphic", False)
        assert {"config_map_ref": {"name": "platformq-env"}} in container["env_from"]
        assert {"secret_ref": {"name": "platformq-secrets"}} in container["env_from"]


def test_the_landing_zone_is_one_volume_the_sensor_and_the_ingest_steps_both_read():
    """The landing_zone_sensor lists PLATFORMQ_LANDING_DIR in the code-location server; the ingest_landing steps read
    the same files in their own pods. On Kubernetes that is only one folder when both mount one claim at one path:
    with none, the sensor listed the image's empty data/landing and no delivery was ever ingested (no error)."""
    from kubernetes.client import ApiClient

    client = ApiClient()
    claim = yaml.safe_load((ROOT / "infra" / "helm" / "landing.yaml").read_text())
    assert client.sanitize_for_serialization(client._ApiClient__deserialize(claim, "V1PersistentVolumeClaim")) == claim
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # senders write, Dagster's pods read
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    instance = yaml.safe_load((ROOT / "infra" / "dagster.production.yaml").read_text())["run_launcher"]["config"]
    [deployment] = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for where, (volumes_key, mounts_key) in ((deployment, ("volumes", "volumeMounts")),
                                             (launcher, ("volumes", "volumeMounts")),
                                             (instance, ("volumes", "volume_mounts"))):
        volumes = {v["name"]: client._ApiClient__deserialize(v, "V1Volume") for v in where[volumes_key]}
        mounts = {m["name"]: client._ApiClient__deserialize(m, "V1VolumeMount") for m in where[mounts_key]}
        assert volumes["landing"].persistent_volume_claim.claim_name == claim["metadata"]["name"]
        assert (mounts["landing"].mount_path, mounts["landing"].read_only) == ("/mnt/landing", True)
