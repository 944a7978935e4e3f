"""``federated/order_anomaly_model`` end to end: registry CLI -> lake export per tenant -> Flower
simulation in a Pipes subprocess -> metadata, baseline check, MLflow registration, registry update."""

import datetime as dt
import socket
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance

from tests.integration.helpers import QUIET

KEY = AssetKey(["federated", "order_anomaly_model"])
DAY = "2024-03-04"


def seed_lake(lake):
    """One simulated trading day: bronze.orders (with anomaly labels) and the accounts' tenants."""
    import pyarrow as pa

    from pipelines.partitions import LAKE_START_DATE, PARTITION_COLUMN
    from platformq_assets.lake.venue import BRONZE_ORDERS, venue_tables
    from services.trading.simulation import SimulationConfig, accounts, simulate_day

    config = SimulationConfig(seed=7, scale=0.3, start_date=LAKE_START_DATE)
    people = accounts(config)
    tables = venue_tables(simulate_day(dt.date.fromisoformat(DAY), config), people, f"seed:{DAY}",
                          dt.datetime.now(dt.timezone.utc))
    lake.replace_partition("bronze.orders", tables[BRONZE_ORDERS], PARTITION_COLUMN, dt.date.fromisoformat(DAY))
    lake.append("silver.accounts", pa.table({"account_id": [a.account_id for a in people],
                                             "tenant_id": [a.tenant_id for a in people]}))
    return sorted({a.tenant_id for a in people})


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    import ipaddress
    import struct

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in list(handle)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)  # the kernel's words, each in host byte order
                words = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, len(raw), 4))
                ip = ipaddress.ip_address(words)
                found.add(str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip))
    return found


def cli(*args):
    from platformq_assets.federated.cli import participants

    result = CliRunner().invoke(participants, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_tenants_train_the_order_anomaly_model_as_flower_participants(settings, lake):
    from platformq_assets.definitions import build_definitions
    from platformq_assets.federated import participants as registry
    from resources.mlflow import mlflow_resource

    tenants = seed_lake(lake)
    assert len(tenants) == 3
    first, second, third = tenants
    assert "No participants yet" in cli("list")
    cli("enrol", "--all")
    cli("suspend", third, "--reason", "audit in progress")
    listed = cli("list")
    assert third in listed and "suspended" in listed and "audit in progress" in listed

    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={KEY})
    result = job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False, run_config={
        **QUIET, "ops": {"federated__order_anomaly_model": {"config": {
            "rounds": 2, "strategy": "fedprox", "dp": "client", "dp_target_epsilon": 2.0}}}})
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == KEY]
    meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    assert meta["strategy"] == "fedprox" and meta["rounds"] == 2 and meta["rounds_skipped"] == 0
    assert meta["tenants"] == tenants and meta["suspended"] == [third]
    # the suspended tenant's data is not exported: no node trains on it, the baseline does not pool it
    assert set(meta["examples_per_tenant"]) == {first, second} and meta["trained_by"] == [first, second]
    for r in meta["rounds_json"]:
        assert r["sampled"] == [first, second] and r["accepted"] == [first, second]
        assert 0 < r["epsilon_max"] <= 2.0 + 1e-6
    assert "| 2 | 2 |" in meta["round_metrics"]
    assert "ε max (DP-SGD)" in meta["round_metrics"] and "central DP" not in meta["round_metrics"]
    assert set(meta["epsilon_spent"]) == {first, second}
    assert all(v == round(v, 4) for v in meta["epsilon_spent"].values())  # shown rounded in the UI
    assert meta["alias"] == "challenger"
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "matches_centralised_baseline"
    assert {"federated", "centralised", "tolerance"} <= set(check.metadata)

    version = mlflow_resource(settings).version_for("federated_order_anomaly", "challenger")
    assert version is not None and str(version.version) == meta["model_version"]
    assert version.tags["training"] == "federated" and version.tags["platformq.stage"] == "dev"
    assert version.tags["participants"] == f"{first},{second}"
    mlflow = mlflow_resource(settings)._mlflow()  # the tracking and registry URIs set
    path = mlflow.artifacts.download_artifacts(f"models:/federated_order_anomaly/{version.version}")
    logged = mlflow.models.Model.load(path)
    # the input example stored with the model is a row of zeros, not rows of a tenant's data
    example = np.asarray(logged.load_input_example(path))
    assert logged.signature is not None and example.shape[0] == 1 and example.size > 1 and not example.any()

    rows = {r["tenant_id"]: r for r in registry.list_participants(lake)}
    for tenant in (first, second):
        assert rows[tenant]["epsilon_spent"] == pytest.approx(meta["epsilon_spent"][tenant], abs=1e-4)
        assert rows[tenant]["last_seen"] is not None and rows[tenant]["rounds_joined"] == 2
    assert rows[third]["epsilon_spent"] == 0.0 and rows[third]["rounds_joined"] == 0
    assert not list(settings.home.glob("federated-*"))  # the tenants' exported examples are gone
    ray = sys.modules.get("ray")  # the federation ran in its own process: no Ray state here
    assert ray is None or not ray.is_initialized()


@pytest.mark.slow
def test_superlink_and_three_supernodes_run_the_assets_server_app_to_completion(settings, lake, tmp_path, monkeypatch):
    """The deployment engine, the production path: a SuperLink and three SuperNodes as separate processes on
    127.0.0.1, one per tenant. With PLATFORMQ_FLOWER_SUPERLINK set the asset submits the same ServerApp the
    simulation runs with ``flwr run`` (the app's code comes from the project, nothing is installed at run time);
    each tenant's SuperNode names its data in --node-config (data-dir and its tenant id)."""
    from models.federated.deployment import LoopbackFederation
    from platformq_assets.definitions import build_definitions
    from platformq_assets.federated import participants as registry
    from resources.mlflow import mlflow_resource
    from resources.settings import load_settings

    tenants = seed_lake(lake)
    first, second, third = tenants
    cli("enrol", "--all")
    cli("suspend", third, "--reason", "audit in progress")
    export = tmp_path / "tenant-data"
    # each node names its tenant, no partition index (started in reverse order, which must not matter)
    federation = LoopbackFederation(tmp_path / "federation", num_nodes=3,
                                    node_config={"dataset": "npz", "data-dir": str(export)},
                                    node_configs=[{"participant": t} for t in reversed(tenants)])
    with federation:
        for port in federation.ports.values():  # every API listens, and on loopback only
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) == 0
            assert listening_addresses(port) == {"127.0.0.1"}, port
        assert len(federation.processes) == 4 and all(p.poll() is None for p, _ in federation.processes)
        monkeypatch.setenv("PLATFORMQ_FLOWER_SUPERLINK", federation.control_address)
        load_settings.cache_clear()
        assert load_settings().flower_superlink == federation.control_address
        defs = build_definitions(load_settings())
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={KEY})
        result = job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False, run_config={
            **QUIET, "ops": {"federated__order_anomaly_model": {"config": {
                "rounds": 2, "strategy": "fedprox", "dp": "none", "central_dp_noise": 0.001, "central_dp_clip": 5.0,
                "export_dir": str(export)}}}})
        assert all(p.poll() is None for p, _ in federation.processes)  # the federation outlives the run
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == KEY]
    meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    assert meta["engine"] == "superlink" and meta["flower_run_id"]
    assert meta["strategy"] == "fedprox" and meta["rounds"] == 2 and meta["rounds_skipped"] == 0
    assert meta["tenants"] == tenants and meta["suspended"] == [third]
    assert meta["participants"] == tenants  # every node said which tenant it is, the suspended one's too
    assert set(meta["examples_per_tenant"]) == {first, second} and meta["trained_by"] == [first, second]
    assert [r["round"] for r in meta["rounds_json"]] == [1, 2]
    for r in meta["rounds_json"]:  # the suspended tenant's SuperNode is connected but never sampled
        assert r["sampled"] == [first, second] and r["accepted"] == [first, second]
        assert r["failed"] == [] and r["rejected"] == []
        assert r["train_loss"] > 0 and 0 < r["eval_accuracy"] <= 1 and r["evaluated"] == 2
        # central DP: the two updates weigh the same, and the noise std is z·C/2
        assert r["weights"] == {first: 0.5, second: 0.5} and r["central_noise_std"] == pytest.approx(0.001 * 5.0 / 2)
        assert "epsilon_max" not in r  # no DP-SGD ran: its ε is unbounded, not the 0 it used to be reported as
    assert "| 2 | 2 |" in meta["round_metrics"]
    assert "ε (central DP)" in meta["round_metrics"] and "DP-SGD" not in meta["round_metrics"]
    assert meta["central_dp_epsilon"] == meta["rounds_json"][1]["central_epsilon"] > meta["rounds_json"][0]["central_epsilon"]
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "matches_centralised_baseline"

    version = mlflow_resource(settings).version_for("federated_order_anomaly", "challenger")
    assert version is not None and str(version.version) == meta["model_version"]
    assert version.tags["training"] == "federated" and version.tags["strategy"] == "fedprox"
    assert version.tags["participants"] == f"{first},{second}"  # the tenants whose updates made the model
    logged = mlflow_resource(settings).client().get_metric_history(version.tags["mlflow_run_id"], "central_epsilon")
    assert [m.step for m in logged] == [1, 2] and logged[1].value == pytest.approx(meta["central_dp_epsilon"], rel=1e-3)

    rows = {r["tenant_id"]: r for r in registry.list_participants(lake)}
    for tenant in (first, second):
        assert rows[tenant]["last_seen"] is not None and rows[tenant]["rounds_joined"] == 2
    assert rows[third]["rounds_joined"] == 0
    assert not list(export.iterdir())  # the tenants' exported examples are gone
    assert not list(settings.home.glob("federated-*"))


def enrol_all_and_fail_one_round(lake, **config) -> tuple:
    """Seed the lake, enrol every tenant and run one round of FedAvg (plus ``config``), which must fail: returns
    the tenants, the result and the step's error."""
    from platformq_assets.definitions import build_definitions
    from resources.settings import load_settings

    load_settings.cache_clear()
    tenants = seed_lake(lake)
    cli("enrol", "--all")
    job = build_definitions(load_settings()).resolve_implicit_global_asset_job_def().get_subset(asset_selection={KEY})
    result = job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False, run_config={
        **QUIET, "ops": {"federated__order_anomaly_model": {"config": {
            "rounds": 1, "local_epochs": 1, "strategy": "fedavg", **config}}}})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return tenants, result, str(failure.event_specific_data.error)


@pytest.mark.slow
def test_spent_epsilon_is_recorded_even_when_mlflow_is_down_after_the_federation(lake, monkeypatch):
    """The tenants spent ε once their noised updates reached the server: a failure after the federation (here the
    MLflow server is unreachable when the model is logged) must not lose it from the lifetime budget."""
    from platformq_assets.federated import participants as registry
    from resources.settings import load_settings

    with socket.socket() as s:  # a loopback port nothing listens on: "the tracking server is down"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PLATFORMQ_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    tenants, result, error = enrol_all_and_fail_one_round(lake, dp="client", dp_target_epsilon=2.0)
    assert f"127.0.0.1:{port}" in error  # it failed at MLflow, after the run
    rows = {r["tenant_id"]: r for r in registry.list_participants(lake)}
    for tenant in tenants:
        assert 0 < rows[tenant]["epsilon_spent"] <= 2.0 + 1e-6
        assert rows[tenant]["rounds_joined"] == 1 and rows[tenant]["last_seen"] is not None
    assert not list(load_settings().home.glob("federated-*"))  # the exports are still removed


def test_an_invalid_run_config_is_refused_before_any_tenant_data_is_exported(lake):
    """A negative noise multiplier used to switch central DP off without a word (noise > 0 turns it on)."""
    from platformq_assets.federated import participants as registry
    from resources.settings import load_settings

    tenants, result, message = enrol_all_and_fail_one_round(lake, central_dp_noise=-1.0)
    assert "invalid federated run config: central-dp-noise must be >= 0, not -1.0" in message
    assert not result.get_asset_materialization_events()
    assert not list(load_settings().home.glob("federated-*"))  # nothing was exported, or it is gone
    rows = {r["tenant_id"]: r for r in registry.list_participants(lake)}
    assert all(rows[t]["last_seen"] is None and rows[t]["rounds_joined"] == 0 for t in tenants)


@pytest.mark.slow
def test_a_run_in_which_no_round_aggregated_fails_and_registers_no_model(lake, monkeypatch):
    """Every update is rejected (an update-norm ceiling no real update meets): every round is skipped and the global
    model is the untrained initial one. It used to be registered as challenger all the same."""
    from platformq_assets.federated import participants as registry
    from resources.mlflow import mlflow_resource
    from resources.settings import load_settings

    monkeypatch.setenv("PLATFORMQ_FEDERATED_MAX_UPDATE_NORM", "1e-9")
    tenants, result, message = enrol_all_and_fail_one_round(lake)
    assert "no round of 1 aggregated" in message and "was not registered" in message
    assert "update norm" in message and "above 1e-09" in message  # why each update was rejected
    assert not result.get_asset_materialization_events()
    assert mlflow_resource(load_settings()).version_for("federated_order_anomaly", "challenger") is None
    rows = {r["tenant_id"]: r for r in registry.list_participants(lake)}
    for tenant in tenants:  # they took part (and are recorded as seen) but no update of theirs was used
        assert rows[tenant]["last_seen"] is not None and rows[tenant]["rounds_joined"] == 0
    assert not list(load_settings().home.glob("federated-*"))


def test_a_standing_supernode_of_a_tenant_without_consent_is_never_sampled(lake, monkeypatch):
    """On the deployment engine every tenant's SuperNode stays connected. The asset passed the ServerApp the
    suspended tenants only: the node of a tenant that withdrew its consent (or was never enrolled) was sampled for
    training and evaluation every round, sent the global model each time, and failed (its data is not exported)."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

    from models.federated.config import FederatedConfig
    from models.federated.strategies import PlatformStrategy
    from platformq_assets.federated import assets
    from resources.settings import load_settings

    class Grid:  # every tenant's node answers the discovery query with its tenant id
        def __init__(self, names):
            self.names = names

        def get_node_ids(self):
            return list(self.names)

        def push_messages(self, messages):
            self.replies = {}
            for i, m in enumerate(messages):
                m.metadata.__dict__["_message_id"] = f"query-{i}"
                self.replies[m.metadata.message_id] = Message(content=RecordDict({"participant": ConfigRecord(
                    {"participant": self.names[m.metadata.dst_node_id]})}), reply_to=m)
            return list(self.replies)

        def pull_messages(self, message_ids):
            return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    captured = {}

    class Stop(Exception):
        pass

    def run_federation(context, *, extras, **kwargs):  # not started: the run config it would get is all this needs
        captured.update(extras["config"])
        raise Stop()

    monkeypatch.setattr(assets, "run_federation", run_federation)
    load_settings.cache_clear()
    tenants = seed_lake(lake)
    first, second, third = tenants
    cli("enrol", first, second)
    cli("enrol", third, "--no-consent")
    from platformq_assets.definitions import build_definitions

    job = build_definitions(load_settings()).resolve_implicit_global_asset_job_def().get_subset(asset_selection={KEY})
    result = job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False, run_config=QUIET)
    assert not result.success and captured
    strategy = PlatformStrategy(FederatedConfig.from_mapping({**captured, "min-participants": 1}), {})
    grid = Grid({1: first, 2: second, 3: third, 4: "t-not-enrolled"})
    trained = strategy.configure_train(1, ArrayRecord(), ConfigRecord(), grid)
    assert sorted(strategy.participants[m.metadata.dst_node_id] for m in trained) == [first, second]
    evaluated = strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord(), grid)
    assert sorted(strategy.participants[m.metadata.dst_node_id] for m in evaluated) == [first, second]


def _processes_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment has ``name=value`` (this test's own, by its PLATFORMQ_HOME)."""
    import os

    wanted, found = f"{name}={value}".encode(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if wanted in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_federated_run_past_its_time_limit_is_stopped_with_its_processes(lake):
    """PipesSubprocessClient has no timeout: a hung Flower/Ray simulation held the step (and the registry's pool
    slot) for ever. The run is stopped after `timeout_seconds` (default: the rounds' own bound plus a margin), with
    the Ray processes it started, and the step fails saying so; the tenants' exports are removed."""
    import os
    import time

    from models.federated.config import FederatedConfig
    from models.federated.deployment import run_wait_seconds
    from platformq_assets.federated.assets import SETUP_MARGIN_S, run_timeout_s
    from resources.settings import load_settings

    started = time.monotonic()
    # 5,000 rounds would take the best part of an hour; stopped after 12 s, the whole test (seeding the lake and
    # exporting the tenants' data included) takes a minute or two, however loaded the machine
    tenants, result, message = enrol_all_and_fail_one_round(lake, timeout_seconds=12, rounds=5000)
    assert time.monotonic() - started < 600
    assert "the federated run (models.federated.pipes_run) did not finish within 12 s" in message
    assert not list(load_settings().home.glob("federated-*"))
    deadline = time.monotonic() + 15
    while _processes_with_env("PLATFORMQ_HOME", os.environ["PLATFORMQ_HOME"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_with_env("PLATFORMQ_HOME", os.environ["PLATFORMQ_HOME"]) == []
    config = {"num-rounds": 10, "round-timeout": 300, "strategy": "fedavg"}
    assert run_timeout_s(config) == run_wait_seconds(FederatedConfig.from_mapping(config)) + SETUP_MARGIN_S


def test_sigterm_lets_the_federated_run_clean_up():
    """The time limit (and a stopped pod) ends the federation with SIGTERM: Python's default ended the process at
    once, so the run was never stopped on the SuperLink (`flwr stop` sits in an `except BaseException`)."""
    import subprocess
    import sys

    script = ("import os, signal, time\n"
              "from models.federated.pipes_run import exit_on_sigterm\n"
              "exit_on_sigterm()\n"
              "try:\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    time.sleep(10)\n"
              "except BaseException as exc:\n"
              "    print('cleaned up after', type(exc).__name__, flush=True)\n"
              "    raise\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "cleaned up after SystemExit" in done.stdout and done.returncode == 143
