"""Kubernetes pod sizes for heavy steps.

Under dagster-k8s's ``k8s_job_executor`` (the production profile) every step runs in a pod of its own; a step
without a ``dagster-k8s/config`` tag gets the run launcher's ``runK8sConfig`` (infra/helm/values.yaml). Steps that
train, simulate or rewrite tables in their own process name their requests and limits here. Elsewhere the tag is
only a tag.
"""

K8S_CONFIG_TAG = "dagster-k8s/config"


def pod_resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict:
    """``op_tags`` giving the step's container these requests and limits (Kubernetes quantities: "500m", "2Gi")."""
    return {K8S_CONFIG_TAG: {"container_config": {"resources": {
        "requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}}}}


# a step that trains or scores in its own process (Ray Tune's driver, lava-dl through Pipes, Iceberg rewrites)
TRAINING_POD = pod_resources("1", "2Gi", "2", "4Gi")
# the federated simulation: every participant's ClientApp and the ServerApp in the step's subprocess
FEDERATED_POD = pod_resources("2", "4Gi", "4", "8Gi")
