"""The deployment engine: a Flower SuperLink and SuperNodes as separate processes, and ``flwr run``.

``run_on_superlink`` submits the same ServerApp the simulation runs to a SuperLink's control API
(the platform's production path, chosen by ``PLATFORMQ_FLOWER_SUPERLINK``) and waits for it to
finish. ``start_superlink`` / ``start_supernode`` start the loopback twin the tests use. All
addresses are 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "flower_app"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONNECTION = "platformq"
FINISHED = "finished"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def process_env(**extra: str) -> dict:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    # The SuperLink and SuperNodes spawn `flower-superexec` (and app processes) by name.
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env.update(extra)
    return env


def write_flwr_home(flwr_home: Path, control_address: str) -> Path:
    """``flwr run APP platformq`` finds the SuperLink through ``$FLWR_HOME/config.toml``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{control_address}"\n'
        "insecure = true\n")
    return flwr_home


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


# time for the ServerApp to start (and install nothing) and to write its model once the rounds are done
RUN_MARGIN = 600.0


def run_wait_seconds(cfg) -> float:
    """The longest a run of ``cfg`` can take on a SuperLink: in each round the server may wait for nodes and for
    their answers to its query (``discovery-timeout`` each) and for their replies (``round-timeout``), once for
    training and once for evaluation; plus a margin."""
    steps = 2 if cfg.client_evaluation else 1
    return cfg.num_rounds * steps * (cfg.round_timeout + 2 * cfg.discovery_timeout) + RUN_MARGIN


def stop_run(run_id, env: dict, log=print) -> None:
    """``flwr stop``: a run given up on must not go on training on the SuperLink (its files are removed)."""
    try:
        stopped = subprocess.run([_bin("flwr"), "stop", str(run_id), CONNECTION], env=env, capture_output=True,
                                 text=True, timeout=60)
        if stopped.returncode != 0:
            log(f"flwr stop {run_id} failed: {stopped.stdout[-1000:]} {stopped.stderr[-1000:]}")
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"flwr stop {run_id} failed: {exc}")


def run_on_superlink(config: dict, control_address: str, *, timeout: float | None = None,
                     workdir: Path | None = None, log=print) -> dict:
    """Submit a run with ``flwr run`` and wait until the SuperLink reports it finished: at most ``timeout`` seconds
    (default: as long as the run's rounds, round timeout and discovery timeout allow, see ``run_wait_seconds``),
    after which the run is stopped on the SuperLink and ``TimeoutError`` raised."""
    from models.federated.config import PARTICIPANT_RULES, FederatedConfig

    workdir = Path(workdir or tempfile.mkdtemp(prefix="flwr-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = FederatedConfig.from_mapping(config)
    if timeout is None:
        timeout = run_wait_seconds(cfg)
    output_dir = cfg.output_dir or str(workdir / "output")
    run_config = {**cfg.to_run_config(), "output-dir": output_dir}
    # Flower gives every SuperNode's ClientApp the run's config: the keys naming tenants (who is suspended, who may
    # train, each one's spent ε) go to a file beside the output, which only the ServerApp reads
    rules = Path(output_dir) / "participants.json"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(json.dumps({key: run_config[key] for key in PARTICIPANT_RULES}))
    run_config.update({key: "" for key in PARTICIPANT_RULES})
    run_config["participants-file"] = str(rules)
    overrides = workdir / "run_config.toml"
    overrides.write_text("".join(f'"{k}" = {_toml_value(v)}\n' for k, v in run_config.items()))
    env = process_env(FLWR_HOME=str(write_flwr_home(workdir / "flwr_home", control_address)))
    submitted = subprocess.run([_bin("flwr"), "run", str(APP_DIR), CONNECTION, "--run-config", str(overrides),
                                "--format", "json"], env=env, capture_output=True, text=True, timeout=120)
    if submitted.returncode != 0:
        raise RuntimeError(f"flwr run failed: {submitted.stdout[-2000:]} {submitted.stderr[-2000:]}")
    run_id = json.loads(submitted.stdout)["run-id"]
    log(f"submitted run {run_id} to the SuperLink at {control_address}")
    server_log = workdir / "serverapp.log"
    # given up on (its deadline, an error, the step interrupted), the run must not go on training on the tenants'
    # files, which the asset removes next
    try:
        status = _wait_for_run(run_id, env, time.monotonic() + timeout, server_log)
    except TimeoutError as exc:
        stop_run(run_id, env, log)
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s ({exc}) and was stopped; "
                           f"ServerApp log: {_tail(server_log)}") from None
    except BaseException:
        stop_run(run_id, env, log)
        raise
    history_path = Path(output_dir) / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else {}
    if not status.endswith("completed") or not history.get("complete"):
        raise RuntimeError(f"run {run_id} ended with status {status!r}"
                           + ("" if history.get("complete") else " and an incomplete history")
                           + f"; ServerApp log: {_tail(server_log)}")
    history.update({"output_dir": output_dir, "run_id": run_id, "status": status, "server_log": str(server_log)})
    return history


def _wait_for_run(run_id, env: dict, deadline: float, server_log: Path) -> str:
    """The run's final status; raises TimeoutError at ``deadline`` (the caller stops the run)."""
    # `flwr log --stream` returns when the SuperLink has sent the whole log of a finished run: one process
    # waits for the run (a `flwr ls` every few seconds would start a Python process each time).
    with open(server_log, "w") as handle:
        streamer = subprocess.Popen([_bin("flwr"), "log", str(run_id), CONNECTION, "--stream"], env=env,
                                    stdout=handle, stderr=subprocess.STDOUT)
        try:
            streamer.wait(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            streamer.kill()
            streamer.wait()
            if not isinstance(sys.exc_info()[1], subprocess.TimeoutExpired):
                raise
    status = ""
    while True:  # the stream may also have ended early (a dropped connection): the status decides
        try:
            listed = subprocess.run([_bin("flwr"), "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"],
                                    env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:  # a SuperLink slow to answer: asked again until the deadline
            listed = None
        if listed is not None and listed.returncode == 0 and listed.stdout.strip():
            runs = json.loads(listed.stdout).get("runs", [])
            status = runs[0].get("status", "") if runs else ""
            if status.startswith(FINISHED):
                return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"last status {status!r}")
        time.sleep(2)


def _tail(path: Path, chars: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:] if text.strip() else "(empty)"


@dataclass
class LoopbackFederation:
    """A SuperLink plus N SuperNodes on 127.0.0.1, each a separate process (for tests and demos)."""

    workdir: Path
    num_nodes: int
    ports: dict = field(default_factory=dict)
    processes: list = field(default_factory=list)
    node_config: dict = field(default_factory=dict)  # given to every node
    node_configs: list = field(default_factory=list)  # node i also gets node_configs[i] (e.g. its participant)

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.ports['control']}"

    def start(self) -> "LoopbackFederation":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {"serverappio": free_port(), "fleet": free_port(), "control": free_port()}
        env = process_env()
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        self._spawn([_bin("flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                     "--database", str(self.workdir / "superlink.db"),
                     "--serverappio-api-address", f"127.0.0.1:{self.ports['serverappio']}",
                     "--fleet-api-address", f"127.0.0.1:{self.ports['fleet']}",
                     "--control-api-address", self.control_address], env, logs / "superlink.log")
        self._wait_for_port(self.ports["fleet"])
        self._wait_for_port(self.ports["control"])
        for i in range(self.num_nodes):
            own = self.node_configs[i] if i < len(self.node_configs) else {}
            # a node that names its participant (a tenant's node) finds its file by name, not by index
            index = {} if "participant" in own else {"partition-id": i, "num-partitions": self.num_nodes}
            items = {**index, **self.node_config, **own}
            node_config = " ".join(f"{k}={_toml_value(v)}" for k, v in items.items())
            self._spawn([_bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.ports['fleet']}",
                         "--clientappio-api-address", f"127.0.0.1:{free_port()}", "--node-config", node_config],
                        env, logs / f"supernode-{i}.log")
        return self

    def _spawn(self, command: list[str], env: dict, log_path: Path) -> None:
        handle = open(log_path, "w")
        self.processes.append((subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                                start_new_session=True), handle))

    def _wait_for_port(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc, _ in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: see {self.workdir / 'logs'}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")

    def stop(self) -> None:
        import signal

        for proc, handle in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, handle in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            handle.close()

    def __enter__(self) -> "LoopbackFederation":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
