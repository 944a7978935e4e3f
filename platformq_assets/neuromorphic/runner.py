"""Where the lava-side scripts run: a subprocess in ``.venv-lava`` locally, a pod per script in production.

The code location never imports lava: each script is a module of ``models.neuromorphic`` launched
through Dagster Pipes (extras in, metadata and checks out; bulk data through files in the work
directory). ``settings.lava_runner`` picks the client: ``subprocess`` (PipesSubprocessClient with
``settings.lava_python``) or ``k8s`` (dagster-k8s PipesK8sClient with ``settings.lava_image``, the
work directory mounted from ``settings.lava_workdir_claim``).
"""

from __future__ import annotations

from pathlib import Path

from dagster import Failure

PROJECT_ROOT = Path(__file__).resolve().parents[2]
IMAGE_WORKDIR = "/opt/platformq"  # where infra/lava.Dockerfile puts the repository


def require_lava_python(settings) -> Path:
    python = Path(settings.lava_python)
    if not python.exists():
        raise Failure(
            allow_retries=False,
            description=(f"the neuromorphic side environment is missing ({python}): create it with `make setup` "
                         "(Python 3.10 + lava-dl, see requirements/lava.txt), or point PLATFORMQ_LAVA_PYTHON at "
                         "an interpreter that has lava-dl and dagster-pipes"),
            metadata={"lava_python": str(python), "create_with": "make setup"},
        )
    return python


def lava_writable_dir(path: Path, *, exist_ok: bool = True) -> Path:
    """A folder the lava side writes into: on Kubernetes the step pod (root) makes it and the lava pod (uid 1000,
    group 0) writes there, so it is group-writable, and setgid so what is made inside keeps the group."""
    import os

    path.mkdir(parents=True, exist_ok=exist_ok)
    try:
        os.chmod(path, 0o2775)
    except PermissionError:  # made by someone else (who set its mode); the lava side's own access is theirs
        pass
    return path


def lava_pod_spec(settings) -> dict:
    """The base pod spec of a lava pod: resources, the shared work directory, no restarts."""
    container = {
        "name": "lava",
        "workingDir": IMAGE_WORKDIR,
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        # uid 1000 (the image's user), in group 0: the folders the step pod (root) makes for it on the shared
        # volume are group-writable (lava_writable_dir), so it can write there on any storage, NFS included
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 0,
                            "allowPrivilegeEscalation": False},
    }
    spec = {"restartPolicy": "Never", "containers": [container]}
    if settings.lava_workdir_claim:
        container["volumeMounts"] = [{"name": "neuromorphic-workdir",
                                      "mountPath": str(settings.effective_lava_workdir)}]
        spec["volumes"] = [{"name": "neuromorphic-workdir",
                            "persistentVolumeClaim": {"claimName": settings.lava_workdir_claim}}]
    return spec


def k8s_run_kwargs(settings, module: str, extras: dict, timeout_s: float | None = None) -> dict:
    """What ``PipesK8sClient.run`` receives for one lava-side script (tests validate the pod it builds).

    ``timeout_s`` becomes the pod's ``activeDeadlineSeconds``: Kubernetes stops a pod still running then, and
    PipesK8sClient fails the step and deletes the pod (its own ``pod_wait_timeout`` only starts once the pod's log
    stream ends, so it cannot end a hung script)."""
    missing = [name for name, value in (("PLATFORMQ_LAVA_WORKDIR_CLAIM", settings.lava_workdir_claim),
                                        ("PLATFORMQ_LAVA_WORKDIR", settings.lava_workdir)) if not value]
    if missing:
        # without the folder the step pod writes under PLATFORMQ_HOME on its own disk, where the lava pod's mount
        # finds nothing: every run failed later with a missing file instead of this
        raise Failure(allow_retries=False,
                      description=f"the k8s lava runner needs {' and '.join(missing)}: a ReadWriteMany volume "
                      "(the claim) mounted at PLATFORMQ_LAVA_WORKDIR in both the step pod and the lava pod (files "
                      "travel there)")
    spec = lava_pod_spec(settings)
    if timeout_s:
        spec["activeDeadlineSeconds"] = max(1, int(timeout_s))
    return {
        "image": settings.lava_image,
        "command": ["python", "-m", module],
        "namespace": settings.lava_namespace,
        "env": {"PYTHONPATH": IMAGE_WORKDIR, "PYTHONUNBUFFERED": "1"},
        "base_pod_meta": {"labels": {"app.kubernetes.io/part-of": "platformq", "platformq/domain": "neuromorphic"}},
        "base_pod_spec": spec,
        "extras": extras,
    }


# after a timeout or a cancelled run: how long the script's processes get to stop before they are killed
TERMINATION_GRACE_S = 20.0


def _run_subprocess(context, python: Path, module: str, extras: dict, timeout_s: float | None):
    """The script in a process group of its own, stopped with its children (Lava's runtime forks a process per Lava
    process) after ``timeout_s`` or when the run is cancelled (platformq_assets/pipes_process.py)."""
    from platformq_assets.pipes_process import run_bounded

    return run_bounded(context, [str(python), "-m", module], cwd=PROJECT_ROOT,
                       env={"PYTHONPATH": str(PROJECT_ROOT), "PYTHONWARNINGS": "ignore"}, extras=extras,
                       timeout_s=timeout_s, grace_s=TERMINATION_GRACE_S, what=f"the lava-side script {module}")


def run_lava_script(context, settings, module: str, extras: dict, timeout_s: float | None = None):
    """Run ``python -m module`` on the lava side through Pipes; returns the completed invocation. ``timeout_s``
    bounds it: the subprocess (and its children) or the pod is stopped and the step fails."""
    if settings.effective_lava_runner == "subprocess":
        python = require_lava_python(settings)
        return _run_subprocess(context, python, module, extras, timeout_s)
    from dagster_k8s import PipesK8sClient  # only production pays for the kubernetes client import

    return PipesK8sClient(load_incluster_config=True).run(context=context,
                                                          **k8s_run_kwargs(settings, module, extras, timeout_s))
