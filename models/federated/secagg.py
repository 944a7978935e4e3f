"""Secure aggregation (SecAgg+) where Flower's API allows it.

In flwr 1.32 SecAgg+ exists only as a *workflow* of the legacy server API:
``SecAggPlusWorkflow`` runs inside ``DefaultWorkflow`` with a ``LegacyContext`` and a legacy
``flwr.server.strategy`` strategy, and the client side is the ``secaggplus_mod`` around a
``NumPyClient``. The Message-API strategies (``flwr.serverapp.strategy``) have no SecAgg+ hook. So:

* composes with **FedAvg** and **FedProx** (legacy strategies; FedProx's μ reaches the client in
  the fit config) and with **client-side DP-SGD** (Opacus runs before masking, on the client);
* does **not** compose with **SCAFFOLD** (the workflow securely sums one parameter vector per client;
  the control-variate updates would need a second masked sum), with the **update screening**
  (the server never sees an individual update, so it cannot reject a NaN/huge one — by design;
  SecAgg+'s quantisation clips parameters to ±clipping_range instead), nor with Flower's
  server-side central-DP wrapper (it clips individual updates).

Clients send masked, quantised ``[n_i, n_i·w_i]``; the server only learns the sum, then the
weighted average. Participants drop out up to ``num_shares − reconstruction_threshold``.
"""

from __future__ import annotations

import os
import json
import time
from pathlib import Path


from flwr.app import Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg, FedProx
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from models.federated import data as datasets
from models.federated.client_app import load_accountant, save_accountant
from models.federated.config import FederatedConfig
from models.federated.model import accuracy_and_loss, build_model, load_numpy, to_numpy
from models.federated.training import DPSpec, train_local


class SecAggParticipant(NumPyClient):
    def __init__(self, cfg: FederatedConfig, context: Context):
        self.cfg = cfg
        self.state = context.state  # the node's state: the Opacus accountant history lives here across rounds
        pid, n = int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])
        self.split = datasets.load_split(cfg.dataset, pid, n, data_dir=str(context.node_config.get("data-dir", cfg.data_dir)),
                                         partitioning=cfg.partitioning, alpha=cfg.alpha, seed=cfg.seed)
        self.num_features, self.num_classes = datasets.dataset_shape(cfg.dataset, cfg.data_dir)

    def _model(self, parameters):
        model = build_model(self.num_features, self.num_classes, self.cfg.hidden)
        load_numpy(model, parameters)
        return model

    def fit(self, parameters, config):
        model = self._model(parameters)
        dp, history = None, []
        if self.cfg.dp == "client":
            dp = DPSpec(self.cfg.dp_target_epsilon, self.cfg.dp_delta, self.cfg.dp_max_grad_norm, self.cfg.num_rounds)
            history = load_accountant(self.state)
        result = train_local(model, self.split.x_train, self.split.y_train, self.num_classes,
                             epochs=self.cfg.local_epochs, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                             seed=self.cfg.seed * 1000 + int(config.get("server_round", 0)),
                             mu=float(config.get("proximal_mu", 0.0)), dp=dp, balanced=self.cfg.balanced_loss,
                             accountant_history=history)
        metrics = {"train_loss": result.loss}
        if dp is not None:  # ε over every round this participant has trained in, as in the main path
            save_accountant(self.state, result.accountant_history)
            metrics["epsilon"] = result.epsilon
        return result.arrays, result.num_examples, metrics

    def evaluate(self, parameters, config):
        acc, loss = accuracy_and_loss(self._model(parameters), self.split.x_test, self.split.y_test)
        return loss, len(self.split.y_test), {"accuracy": acc}


def make_client_app(defaults: dict) -> ClientApp:
    def client_fn(context: Context):
        cfg = FederatedConfig.from_mapping({**defaults, **dict(context.run_config)})
        return SecAggParticipant(cfg, context).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def secagg_config(values: dict) -> FederatedConfig:
    """The run's config, refused where SecAgg+ cannot honour it."""
    cfg = FederatedConfig.from_mapping(values)
    if cfg.strategy not in ("fedavg", "fedprox"):
        raise ValueError(f"SecAgg+ composes with fedavg and fedprox only, not {cfg.strategy}")
    if cfg.central_dp_noise > 0:  # it would otherwise run without the central DP it was asked for
        raise ValueError("SecAgg+ does not compose with server-side central DP: the server never sees an "
                         "individual update to clip (use client-side DP-SGD, dp='client')")
    return cfg


def make_server_app(defaults: dict, num_shares: int | float = 1.0, reconstruction_threshold: int | float = 0.67,
                    clipping_range: float = 8.0) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = secagg_config({**defaults, **dict(context.run_config)})
        nf, nc = datasets.dataset_shape(cfg.dataset, cfg.data_dir)
        model = build_model(nf, nc, cfg.hidden, cfg.seed)
        history: dict[int, dict] = {}
        probe = build_model(nf, nc, cfg.hidden)

        def evaluate_fn(server_round, parameters, config):
            if cfg.dataset != "digits":
                return None
            _, _, x_test, y_test = datasets.digits_train_test()
            load_numpy(probe, parameters)
            acc, loss = accuracy_and_loss(probe, x_test, y_test)
            history.setdefault(server_round, {"round": server_round}).update(server_accuracy=acc, server_loss=loss)
            return loss, {"accuracy": acc}

        common = dict(fraction_fit=cfg.fraction_train, fraction_evaluate=0.0, min_fit_clients=cfg.min_participants,
                      min_available_clients=cfg.min_participants, evaluate_fn=evaluate_fn,
                      on_fit_config_fn=lambda server_round: {"server_round": server_round},
                      initial_parameters=ndarrays_to_parameters(to_numpy(model)))
        base = FedProx if cfg.strategy == "fedprox" else FedAvg

        class Recording(base):
            """Records each round's participants and the largest ε they report (the masked sum hides the rest)."""

            def aggregate_fit(self, server_round, results, failures):
                spent = [float(r.metrics["epsilon"]) for _, r in results if "epsilon" in r.metrics]
                history.setdefault(server_round, {"round": server_round}).update(
                    participants=len(results), failures=len(failures),
                    **({"epsilon_max": max(spent)} if spent else {}))
                return super().aggregate_fit(server_round, results, failures)

        strategy = Recording(**common, **({"proximal_mu": cfg.proximal_mu} if cfg.strategy == "fedprox" else {}))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.num_rounds,
                                                                    round_timeout=cfg.round_timeout),
                               strategy=strategy)
        started = time.monotonic()
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=num_shares,
                                                                   reconstruction_threshold=reconstruction_threshold,
                                                                   clipping_range=clipping_range,
                                                                   timeout=cfg.round_timeout))
        workflow(grid, legacy)
        if cfg.output_dir:
            out = Path(cfg.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "history.json").write_text(json.dumps({
                "secure_aggregation": "secagg+", "strategy": cfg.strategy, "seconds": time.monotonic() - started,
                "rounds": [history[r] for r in sorted(history)]}, default=float))

    return app


def run(config: dict, num_participants: int, *, num_cpus: int = 2) -> dict:
    """A SecAgg+ federation on the simulation engine (call it in a process of its own)."""
    from flwr.simulation import run_simulation

    from models.federated.simulation import prepare_environment

    cfg = FederatedConfig.from_mapping(config)
    if not cfg.output_dir:
        raise ValueError("a SecAgg+ run needs output-dir: its history is read from there")
    history_path = Path(cfg.output_dir) / "history.json"
    history_path.unlink(missing_ok=True)  # an earlier run's history must not pass for this one's
    run_config = cfg.to_run_config()
    created = prepare_environment()
    try:
        run_simulation(server_app=make_server_app(run_config), client_app=make_client_app(run_config),
                       num_supernodes=num_participants,
                       backend_config={"init_args": {"num_cpus": num_cpus, "include_dashboard": False,
                                                     "log_to_driver": False},
                                       "client_resources": {"num_cpus": 1.0, "num_gpus": 0.0}})
    finally:
        if created:
            import shutil

            shutil.rmtree(created, ignore_errors=True)
            del os.environ["RAY_TMPDIR"]
    return json.loads(history_path.read_text())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="one SecAgg+ federation in this process")
    parser.add_argument("--config", required=True)
    parser.add_argument("--participants", type=int, required=True)
    args = parser.parse_args()
    run(json.loads(args.config), args.participants)
