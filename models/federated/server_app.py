"""The ServerApp: N rounds of the configured strategy; writes the global model and the round history.

The same app runs on the simulation engine (``simulation.run``, config given as a dict) and
on a SuperLink (``flwr run``, config from ``pyproject.toml`` and ``--run-config``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from models.federated import data as datasets
from models.federated.config import FederatedConfig
from models.federated.model import accuracy_and_loss, build_model, from_record, load_numpy, to_numpy, to_record
from models.federated.strategies import build_strategy

CLIENT_KEYS = ("dataset", "data-dir", "partitioning", "alpha", "seed", "hidden", "local-epochs", "batch-size", "lr",
               "dp", "dp-target-epsilon", "dp-delta", "dp-max-grad-norm", "num-rounds", "epsilon-budget",
               "balanced-loss", "validation", "straggler-fraction",
               "straggler-policy")


def run_federation(grid: Grid, cfg: FederatedConfig) -> dict:
    num_features, num_classes = datasets.dataset_shape(cfg.dataset, cfg.data_dir)
    model = build_model(num_features, num_classes, cfg.hidden, cfg.seed)
    names = list(model.state_dict().keys())
    run_config = cfg.to_run_config()
    client_config = {key: run_config[key] for key in CLIENT_KEYS}
    client_config.update({"num-features": num_features, "num-classes": num_classes})
    strategy, base = build_strategy(cfg, client_config)

    evaluate_fn = None
    if cfg.dataset == "digits" and cfg.server_test:
        _, _, x_test, y_test = datasets.digits_fit_validation() if cfg.validation else datasets.digits_train_test()
        probe = build_model(num_features, num_classes, cfg.hidden)

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            load_numpy(probe, from_record(arrays))
            acc, loss = accuracy_and_loss(probe, x_test, y_test)
            base.rounds.setdefault(server_round, {"round": server_round}).update(
                {"server_accuracy": acc, "server_loss": loss})
            return MetricRecord({"accuracy": acc, "loss": loss})

    started = time.monotonic()
    out = Path(cfg.output_dir) if cfg.output_dir else None

    def history(complete: bool) -> dict:
        return {
            "complete": complete,
            "config": run_config,
            "seconds": time.monotonic() - started,
            # a partial history (written after each round) holds the finished rounds only
            "rounds": [{k: v for k, v in base.rounds[r].items() if k != "started"} for r in sorted(base.rounds)
                       if complete or not base.rounds[r].get("in_progress")],
            "participants": sorted(set(base.participants.values())),
            "suspended": sorted(base.suspended),
            "epsilon": dict(base.epsilon),
            "epsilon_in_flight": dict(base.in_flight),
            "budget_exhausted": sorted(base.exhausted),
            "events": list(base.events),
            "num_features": num_features,
            "num_classes": num_classes,
        }

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        # After every round the history so far (complete: false) replaces the last one: the ε the participants
        # have spent is on disk even if this process dies mid-run, for the caller to record in the registry.
        base.on_round = lambda: _write_json(out / "history.json", history(complete=False))
    initial = to_record(to_numpy(model), names)
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=cfg.num_rounds,
                            timeout=cfg.round_timeout, evaluate_fn=evaluate_fn)
    finished = time.monotonic()
    base.on_round = None
    final = from_record(result.arrays) if len(result.arrays) else from_record(initial)
    # wall time of each round (train + evaluate), from one round's start to the next
    starts = [(r, base.rounds[r].pop("started")) for r in sorted(base.rounds) if "started" in base.rounds[r]]
    for (r, t0), (_, t1) in zip(starts, [*starts[1:], (None, finished)]):
        base.rounds[r]["seconds"] = t1 - t0
    done = history(complete=True)
    if out is not None:
        np.savez(out / "model.npz", **{name: a for name, a in zip(names, final)})
        _write_json(out / "history.json", done)  # last: a complete history means the model is there
    return done


def _write_json(path: Path, value: dict) -> None:
    """Write-then-rename: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, default=float))
    tmp.replace(path)


def server_config(defaults: dict, run_config: dict) -> FederatedConfig:
    """``defaults`` overlaid with the run's config, and with the participant rules of its ``participants-file``."""
    values = {**defaults, **run_config}
    if values.get("participants-file"):
        values.update(json.loads(Path(str(values["participants-file"])).read_text()))
    return FederatedConfig.from_mapping(values)


def make_server_app(defaults: dict | None = None) -> ServerApp:
    """A ServerApp whose config is ``defaults`` overlaid with the run's ``run_config``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, server_config(defaults or {}, dict(context.run_config)))

    return app


app = make_server_app()
