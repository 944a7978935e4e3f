"""``federated/order_anomaly_model``: tenants train an order-anomaly classifier together with Flower.

The asset reads the registry (only enrolled, consenting tenants take part; suspended ones are
passed to the ServerApp, which never samples them), exports each tenant's examples to its own
file, and runs the federation in a fresh subprocess through Dagster Pipes — the simulation
engine locally (Ray on loopback, private ``RAY_TMPDIR``), ``flwr run`` against the SuperLink when
``PLATFORMQ_FLOWER_SUPERLINK`` is set. Per-round metrics come back as metadata and the
centralised-baseline comparison as an asset check; the global model is logged to MLflow and
registered as ``challenger``; the registry records last contact and spent ε.
"""


import json
import shutil
import sys
import tempfile
from pathlib import Path

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    asset,
)
from pydantic import Field

from pipelines.pods import FEDERATED_POD
from pipelines.pools import table_pool
from platformq_assets.federated.participants import PARTICIPANTS_TABLE
from resources.lake import LakeResource
from resources.mlflow import CHALLENGER, MlflowResource

MODEL = "order_anomaly"
MODEL_KEY = AssetKey(["federated", f"{MODEL}_model"])
CHECK_NAME = "matches_centralised_baseline"  # same name the Pipes script reports
PROJECT_ROOT = Path(__file__).resolve().parents[2]
OWNERS = ["team:ml-platform"]


class FederatedRunConfig(Config):
    """Per-run overrides; anything left unset comes from the platform settings."""

    strategy: str | None = None  # fedavg | fedprox | scaffold
    rounds: int | None = None
    dp: str | None = None  # none | client
    dp_target_epsilon: float | None = None
    central_dp_noise: float = 0.0  # > 0: Flower's server-side clipping wrapper with this noise multiplier
    central_dp_clip: float = 1.0  # the norm each participant's update is clipped to under central DP
    local_epochs: int = 2
    lr: float = 0.03  # class weights up to 50x make larger steps oscillate
    proximal_mu: float = 0.01
    seed: int = 0
    # The run's time limit (the federation subprocess and its Ray/Flower processes are stopped after it and the step
    # fails); unset: as long as its rounds, round timeout and discovery timeout allow, plus SETUP_MARGIN_S
    timeout_seconds: int | None = Field(default=None, ge=1)
    # Where the tenants' files are written. With a SuperLink: the data-dir the tenants' SuperNodes name in
    # --node-config (with participant="<tenant>"). Unset: a temporary directory. Either way the files are
    # removed after the run.
    export_dir: str | None = None


def subprocess_env(ray_tmp: str) -> dict:
    """Ray on loopback only, with a private temp dir; Flower without telemetry."""
    return {"PYTHONPATH": str(PROJECT_ROOT), "RAY_TMPDIR": ray_tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_USAGE_STATS_ENABLED": "0", "FLWR_TELEMETRY_ENABLED": "0"}


# beyond the rounds' own bound: starting Ray or reaching the SuperLink, the centralised baseline, writing the model
SETUP_MARGIN_S = 600
# after SIGTERM, before SIGKILL: time for the run to be stopped on the SuperLink (`flwr stop` may take up to 60 s)
STOP_GRACE_S = 90.0


def run_timeout_s(run_config: dict) -> float:
    """How long a federated run may take before it is stopped: the longest its rounds can wait for nodes and replies
    (``run_wait_seconds``, the same bound the SuperLink path waits by) plus ``SETUP_MARGIN_S``."""
    from models.federated.config import FederatedConfig
    from models.federated.deployment import run_wait_seconds

    return run_wait_seconds(FederatedConfig.from_mapping(run_config)) + SETUP_MARGIN_S


def run_federation(context, *, env: dict, extras: dict, timeout_s: float):
    """``models.federated.pipes_run`` through Pipes, bounded: PipesSubprocessClient has no timeout, and a hung Flower
    or Ray simulation held the step and the registry's pool slot for ever (platformq_assets/pipes_process.py)."""
    from platformq_assets.pipes_process import run_bounded

    return run_bounded(context, [sys.executable, "-m", "models.federated.pipes_run"], cwd=PROJECT_ROOT, env=env,
                       extras=extras, timeout_s=timeout_s, grace_s=STOP_GRACE_S,
                       what="the federated run (models.federated.pipes_run)")


@asset(
    key=MODEL_KEY,
    pool=table_pool(PARTICIPANTS_TABLE),  # it records each participant's rounds and spent ε in the registry
    deps=[AssetKey(["bronze", "orders"]), AssetKey(["silver", "accounts"])],
    group_name="federated",
    kinds={"flower", "pytorch", "mlflow"},
    owners=OWNERS,
    op_tags=FEDERATED_POD,
    check_specs=[AssetCheckSpec(CHECK_NAME, asset=MODEL_KEY, blocking=False,
                                description="The federated model scores within the configured tolerance of the same "
                                            "model trained centrally on the pooled tenants' data.")],
    description="Order-anomaly classifier trained by the tenants as Flower participants (FedAvg/FedProx/SCAFFOLD, "
                "optional Opacus DP-SGD), registered in MLflow as challenger.",
)
def order_anomaly_model(context: AssetExecutionContext, config: FederatedRunConfig, lake: LakeResource,
                        mlflow: MlflowResource):
    from models.federated.config import FederatedConfig
    from platformq_assets.federated import participants as registry
    from platformq_assets.federated.datasets import FEATURES, order_examples, write_tenant_files
    from resources.settings import load_settings

    settings = load_settings()
    rows = registry.list_participants(lake)
    examples = order_examples(lake)
    with_data = set(examples.column("tenant_id").to_pylist())
    # Tenants without consent take no part at all. Only the tenants that may train have their data exported:
    # a suspended tenant's (or one whose ε budget is spent) is neither trained on nor pooled for the baseline;
    # its node (deployment engine) still says who it is, and the server never samples it.
    members = [r for r in rows if r["consent"] and r["tenant_id"] in with_data]
    tenants = [r["tenant_id"] for r in members]
    suspended = [r["tenant_id"] for r in members if r["status"] != registry.ENROLLED]
    budget = settings.federated_epsilon_budget
    spent = [r["tenant_id"] for r in members if r["tenant_id"] not in suspended and budget > 0
             and float(r["epsilon_spent"] or 0.0) >= budget]
    training = [t for t in tenants if t not in suspended and t not in spent]
    if len(training) < settings.federated_min_participants:
        raise Failure(f"{len(training)} enrolled, consenting tenants with data and ε budget left "
                      f"(suspended: {suspended or 'none'}; budget of {budget:g} spent: {spent or 'none'}); the "
                      f"federation needs {settings.federated_min_participants} (enrol them with "
                      f"`platformq participants enrol`)")

    workdir = Path(tempfile.mkdtemp(prefix="federated-", dir=settings.home))
    data_dir = Path(config.export_dir) if config.export_dir else workdir / "data"

    def remove_exports() -> None:
        # the tenants' exported examples and the run's files do not outlive it (the model is in MLflow)
        shutil.rmtree(workdir, ignore_errors=True)
        for name in [f"{i}.npz" for i in range(len(training))] + ["manifest.json"]:
            (data_dir / name).unlink(missing_ok=True)

    output = workdir / "output"

    def record_history() -> dict | None:
        # The tenants spent ε once their updates left their nodes: a federation that wrote its history is recorded
        # in the registry even when a later step (the baseline, MLflow, Pipes) fails. The ServerApp rewrites the
        # history after every round, so a run that died mid-way still records the rounds it completed.
        path = output / "history.json"
        if not path.exists():
            return None
        history = json.loads(path.read_text())
        registry.record_run(lake, rows, history)
        return history

    run_config = {
        "strategy": config.strategy or settings.federated_strategy,
        "num-rounds": config.rounds or settings.federated_rounds,
        "min-participants": settings.federated_min_participants,
        "dataset": "npz", "data-dir": str(data_dir), "output-dir": str(workdir / "output"),
        "hidden": 16, "balanced-loss": True, "batch-size": 64, "lr": config.lr, "local-epochs": config.local_epochs,
        "proximal-mu": config.proximal_mu, "seed": config.seed,
        "dp": config.dp or settings.federated_dp,
        "dp-target-epsilon": config.dp_target_epsilon or settings.federated_dp_epsilon,
        "dp-delta": settings.federated_dp_delta, "epsilon-budget": settings.federated_epsilon_budget,
        "central-dp-noise": config.central_dp_noise, "central-dp-clip": config.central_dp_clip,
        "max-update-norm": settings.federated_max_update_norm,
        "round-timeout": settings.federated_round_timeout,
        "suspended": ",".join(suspended),
        # only these are ever sampled: a standing SuperNode of a tenant without consent (or never enrolled) is not
        "allowed-participants": ",".join(training),
        "epsilon-spent": ",".join(f"{r['tenant_id']}={float(r['epsilon_spent'] or 0.0)}" for r in members),
    }
    try:  # refused here, before any tenant's data is exported, not by the ServerApp in a subprocess
        FederatedConfig.from_mapping(run_config)
    except ValueError as exc:
        remove_exports()
        raise Failure(f"invalid federated run config: {exc}") from exc
    try:
        counts = write_tenant_files(examples, training, data_dir, seed=config.seed)
    except BaseException:
        remove_exports()
        raise
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    context.log.info(f"federation of {training} (suspended: {suspended}; budget spent: {spent}); "
                     f"config {json.dumps(run_config)}")
    try:
        timeout_s = config.timeout_seconds or run_timeout_s(run_config)
        invocation = run_federation(
            context, env=subprocess_env(ray_tmp), timeout_s=timeout_s,
            extras={"config": run_config, "participants": len(training), "superlink": settings.flower_superlink or "",
                    "baseline_tolerance": settings.federated_baseline_tolerance, "num_cpus": settings.ray_num_cpus,
                    "timeout_s": timeout_s})
        results = list(invocation.get_results())
    except BaseException:
        try:
            record_history()
        finally:
            remove_exports()
        raise
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    try:
        history = record_history()
        if history is None:
            raise Failure("the federated run reported success but wrote no history.json")
        refuse_untrained(history, run_config)
        summary = json.loads((output / "summary.json").read_text())
        version, run = log_and_register(context, mlflow, output, history, summary, run_config, counts, FEATURES)
    finally:
        remove_exports()
    extra = {"mlflow_run_id": run.info.run_id, "mlflow_run": mlflow.run_url(run), "model_version": str(version.version),
             "alias": CHALLENGER, "tenants": tenants, "suspended": suspended, "budget_spent": spent,
             "trained_by": trained_by(history), "examples_per_tenant": counts}
    for result in results:
        if isinstance(result, MaterializeResult):
            yield MaterializeResult(asset_key=result.asset_key, metadata={**(result.metadata or {}), **extra},
                                    data_version=result.data_version)
        else:
            yield result


def trained_by(history: dict) -> list[str]:
    """The participants whose updates went into the model (an aggregated round accepted them)."""
    return sorted({p for r in history["rounds"] if r["round"] > 0 and not r.get("skipped")
                   for p in r.get("accepted", [])})


def refuse_untrained(history: dict, run_config: dict) -> None:
    """A run in which no round aggregated leaves the initial, untrained model: it must not become a challenger."""
    done = [r for r in history["rounds"] if r["round"] > 0]
    if any(not r.get("skipped") for r in done):
        return
    why = "; ".join(
        f"round {r['round']}: accepted {r.get('accepted', [])}, "
        f"rejected {[x['participant'] + ' (' + x['reason'] + ')' for x in r.get('rejected', [])]}, "
        f"failed {[x['participant'] + ' (' + x['reason'] + ')' for x in r.get('failed', [])]}" for r in done[:3])
    raise Failure(
        description=f"no round of {len(done)} aggregated (each needs {run_config['min-participants']} accepted "
                    f"updates): the global model is the untrained initial one and was not registered. {why}",
        metadata={"rounds_skipped": len(done), "min_participants": run_config["min-participants"]})


def log_and_register(context, mlflow: MlflowResource, output: Path, history: dict, summary: dict, run_config: dict,
                     counts: dict, features):
    import mlflow as mlflow_lib
    import numpy as np
    from mlflow import pytorch as mlflow_pytorch

    from models.federated.model import build_model, load_numpy

    model = build_model(history["num_features"], history["num_classes"], int(run_config["hidden"]))
    with np.load(output / "model.npz") as arrays:
        load_numpy(model, [arrays[k] for k in model.state_dict().keys()])
    with mlflow.start_run(f"platformq/federated_{MODEL}", run_name=f"{MODEL}-{context.run.run_id[:8]}",
                          tags={"dagster.run_id": context.run.run_id, "platformq.training": "federated",
                                "flower.strategy": run_config["strategy"]}) as run:
        mlflow_lib.log_params({k: v for k, v in run_config.items() if k not in ("data-dir", "output-dir")})
        for r in history["rounds"]:
            step = int(r["round"])
            mlflow_lib.log_metrics({name: float(r[key]) for name, key in (
                ("eval_accuracy", "eval_accuracy"), ("eval_loss", "eval_loss"), ("train_loss", "train_loss"),
                ("epsilon_max", "epsilon_max"), ("central_epsilon", "central_epsilon"),
                ("participants", "participants")) if r.get(key) is not None}, step=step)
        comparison = summary["comparison"]
        mlflow_lib.log_metrics({f"pooled_test_{k}": v for k, v in comparison["federated"].items()})
        mlflow_lib.log_metrics({f"centralised_{k}": v for k, v in comparison["centralised"].items()})
        mlflow_lib.log_dict({"history": history, "examples_per_tenant": counts, "features": list(features)},
                            "federated_history.json")
        # the input example (the traced format needs one, and the signature comes from it) is a row of zeros,
        # not a tenant's rows: it is stored with the model, for anyone who can read the registry, and no DP covers it
        example = np.zeros((1, history["num_features"]), dtype=np.float32)
        info = mlflow_pytorch.log_model(model, name="model", input_example=example, pip_requirements=["torch"])
    version = mlflow.register(info.model_uri, f"federated_{MODEL}", tags={
        "training": "federated", "strategy": run_config["strategy"], "dp": run_config["dp"],
        "mlflow_run_id": run.info.run_id, "dagster_run_id": context.run.run_id,
        "participants": ",".join(trained_by(history))},
        description=f"Flower {run_config['strategy']} over {len(trained_by(history))} tenants, "
                    f"{run_config['num-rounds']} rounds, dp={run_config['dp']}.")
    return version, run
