"""Run the apps on Flower's simulation engine (Ray), on loopback only.

Call :func:`run` in a process of its own (the platform uses a Dagster Pipes subprocess):
Ray's state lives as long as the process does.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from models.federated.config import FederatedConfig

LOOPBACK_ENV = {
    # Single-node Ray binds 127.0.0.1 only with this set (it refuses multi-node clusters).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "FLWR_TELEMETRY_ENABLED": "0",
}


def prepare_environment(tmp_root: str | None = None) -> str | None:
    """Loopback-only Ray settings; returns the RAY_TMPDIR it created (the caller removes it), if any."""
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)
    if "RAY_TMPDIR" not in os.environ:
        # short path: Ray's unix socket names must fit in 108 bytes
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir=tmp_root or "/tmp")
        return os.environ["RAY_TMPDIR"]
    return None


def run(config: dict, num_participants: int, *, num_cpus: int = 2, client_cpus: float = 1.0,
        client_app=None, server_app=None) -> dict:
    """Run a whole federation; returns the history the ServerApp wrote (plus where it wrote it)."""
    created = prepare_environment()
    try:
        return _run(config, num_participants, num_cpus=num_cpus, client_cpus=client_cpus, client_app=client_app,
                    server_app=server_app)
    finally:
        if created:
            import shutil

            shutil.rmtree(created, ignore_errors=True)
            del os.environ["RAY_TMPDIR"]


def _run(config: dict, num_participants: int, *, num_cpus: int, client_cpus: float, client_app,
         server_app=None) -> dict:
    """``server_app``: None (the platform's ServerApp) or a factory taking the run config and returning one."""
    from flwr.simulation import run_simulation

    from models.federated.client_app import app as default_client_app
    from models.federated.server_app import make_server_app

    cfg = FederatedConfig.from_mapping(config)
    output_dir = cfg.output_dir or tempfile.mkdtemp(prefix="flower-run-")
    run_config = {**cfg.to_run_config(), "output-dir": output_dir}
    backend = {"init_args": {"num_cpus": num_cpus, "include_dashboard": False, "log_to_driver": False},
               "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0}}
    run_simulation(server_app=(server_app or make_server_app)(run_config), client_app=client_app or default_client_app,
                   num_supernodes=num_participants, backend_config=backend)
    history_path = Path(output_dir) / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else {}
    if not history.get("complete"):
        done = sum(1 for r in history.get("rounds", []) if r.get("round", 0) > 0)
        raise RuntimeError(f"the federated run ended after {done} round(s) without completing (the ServerApp "
                           "failed: see the log above)")
    history["output_dir"] = output_dir
    return history


def _load(spec: str):
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _load_client_app(spec: str, kwargs: dict):
    from flwr.clientapp import ClientApp

    target = _load(spec)
    return target if isinstance(target, ClientApp) else target(**kwargs)


def main(argv: list[str] | None = None) -> None:
    """``python -m models.federated.simulation --config '{...}' --participants N``: one run, one process
    (``--config '[{...}, {...}]'``: several runs one after the other, Ray started and stopped for each)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", required=True, help="run config as JSON (a list: one run each)")
    parser.add_argument("--participants", type=int, required=True)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--client-app", default="", help="module:attr of a ClientApp or a factory returning one")
    parser.add_argument("--client-args", default="{}", help="JSON kwargs for a client-app factory")
    parser.add_argument("--server-app", default="",
                        help="module:attr of a factory (run_config, **server-args) -> ServerApp")
    parser.add_argument("--server-args", default="{}", help="JSON kwargs for the server-app factory")
    args = parser.parse_args(argv)
    client_app = _load_client_app(args.client_app, json.loads(args.client_args)) if args.client_app else None
    server_app = None
    if args.server_app:
        factory, server_kwargs = _load(args.server_app), json.loads(args.server_args)
        server_app = lambda run_config: factory(run_config, **server_kwargs)  # noqa: E731
    configs = json.loads(args.config)
    for config in configs if isinstance(configs, list) else [configs]:
        history = run(config, args.participants, num_cpus=args.num_cpus, client_app=client_app,
                      server_app=server_app)
        print(json.dumps({"output_dir": history["output_dir"]}), flush=True)


if __name__ == "__main__":
    main()
