"""Dagster Pipes entry point: one federated run in this (fresh) process, reported back to the asset.

``python -m models.federated.pipes_run`` with Pipes extras:
``config`` (run config), ``participants`` (node count), ``superlink`` (control API address, or
empty for the simulation engine) and ``baseline_tolerance``. Reports per-round metrics as
materialisation metadata and the centralised-baseline comparison as an asset check. Uses only
``dagster_pipes`` (no Dagster), so it also runs in a bare environment.
"""

from __future__ import annotations

import json

import numpy as np

from dagster_pipes import open_dagster_pipes

CHECK_NAME = "matches_centralised_baseline"


def pooled(config) -> tuple:
    from models.federated import data as datasets

    if config.dataset == "digits":
        # the split the participants train on and the server tests with (seed 0), not one drawn with the run's seed
        return datasets.digits_fit_validation() if config.validation else datasets.digits_train_test()
    manifest = json.loads((__import__("pathlib").Path(config.data_dir) / "manifest.json").read_text())
    parts = [datasets.npz_partition(config.data_dir, i) for i in range(len(manifest["participants"]))]
    return (np.concatenate([p.x_train for p in parts]), np.concatenate([p.y_train for p in parts]),
            np.concatenate([p.x_test for p in parts]), np.concatenate([p.y_test for p in parts]))


def scores(model, x, y, num_classes: int) -> dict:
    import torch

    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(1).numpy()
    recalls = [float((predicted[y == c] == c).mean()) for c in range(num_classes) if (y == c).any()]
    return {"accuracy": float((predicted == y).mean()), "balanced_accuracy": float(np.mean(recalls))}


def compare_with_centralised(config, history: dict) -> dict:
    """Train the same model centrally on the pooled data (same passes over the data) and score both."""
    from models.federated.model import build_model, load_numpy
    from models.federated.training import train_centralised

    x_tr, y_tr, x_te, y_te = pooled(config)
    nf, nc = history["num_features"], history["num_classes"]
    central = train_centralised(x_tr, y_tr, nf, nc, hidden=config.hidden, epochs=config.num_rounds * config.local_epochs,
                                batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                                balanced=config.balanced_loss)
    federated = build_model(nf, nc, config.hidden)
    with np.load(f"{history['output_dir']}/model.npz") as arrays:
        load_numpy(federated, [arrays[k] for k in federated.state_dict().keys()])
    return {"federated": scores(federated, x_te, y_te, nc), "centralised": scores(central, x_te, y_te, nc),
            "test_examples": int(len(y_te))}


def rounds_markdown(history: dict) -> str:
    """The round table shown in the UI. ε columns only for the DP that ran: without it ε is not 0 but unbounded."""
    done = [r for r in history["rounds"] if r["round"] > 0]
    columns = [("participants", "participants"), ("train loss", "train_loss"), ("eval loss", "eval_loss"),
               ("eval accuracy", "eval_accuracy")]
    columns += [(title, key) for title, key in (("ε max (DP-SGD)", "epsilon_max"), ("ε (central DP)", "central_epsilon"))
                if any(key in r for r in done)]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "—" if v is None else str(v)  # noqa: E731
    lines = ["| round | " + " | ".join(t for t, _ in columns) + " | rejected | failed |",
             "|---" * (len(columns) + 3) + "|"]
    for r in done:
        lines.append(f"| {r['round']}{' (skipped)' if r.get('skipped') else ''} | "
                     + " | ".join(fmt(r.get(key, 0 if key == "participants" else None)) for _, key in columns)
                     + f" | {len(r.get('rejected', []))} | {len(r.get('failed', []))} |")
    return "\n".join(lines)


def exit_on_sigterm() -> None:
    """SIGTERM (the asset's time limit, a pod stopped) raises SystemExit like Ctrl-C raises KeyboardInterrupt, so
    cleanup runs: a run given up on is stopped on the SuperLink (Python's default SIGTERM ends the process at once,
    and the run went on training on the tenants' files, which the asset removes)."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


# seconds kept from the asset's time limit for what follows the rounds (the baseline, writing the model)
AFTER_ROUNDS_S = 300


def main() -> None:
    from models.federated.config import FederatedConfig

    exit_on_sigterm()
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        config = dict(extras["config"])
        cfg = FederatedConfig.from_mapping(config)
        if extras.get("superlink"):
            from models.federated.deployment import run_on_superlink, run_wait_seconds

            # within the asset's time limit: given up on here, the run is stopped on the SuperLink
            wait = run_wait_seconds(cfg)
            if extras.get("timeout_s"):
                wait = min(wait, max(60.0, float(extras["timeout_s"]) - AFTER_ROUNDS_S))
            pipes.log.info(f"submitting to the SuperLink at {extras['superlink']}")
            history = run_on_superlink(config, extras["superlink"], timeout=wait, log=pipes.log.info)
        else:
            from models.federated.simulation import run

            pipes.log.info(f"simulating {extras['participants']} participants, {cfg.num_rounds} rounds, {cfg.strategy}")
            history = run(config, int(extras["participants"]), num_cpus=int(extras.get("num_cpus", 2)))
        for r in history["rounds"]:
            if r["round"] > 0:
                pipes.log.info(f"round {r['round']}: accepted {r.get('accepted')} rejected {r.get('rejected')} "
                               f"failed {[f['participant'] for f in r.get('failed', [])]} "
                               f"eval accuracy {r.get('eval_accuracy')}")
        comparison = compare_with_centralised(cfg, history)
        fed, central = comparison["federated"], comparison["centralised"]
        tolerance = float(extras.get("baseline_tolerance", 0.05))
        metric = "balanced_accuracy" if cfg.balanced_loss else "accuracy"
        done = [r for r in history["rounds"] if r["round"] > 0]
        last = done[-1] if done else {}
        summary = {
            "strategy": cfg.strategy, "rounds": cfg.num_rounds, "dp": cfg.dp, "participants": history["participants"],
            "rounds_skipped": sum(1 for r in done if r.get("skipped")),
            "final_eval_accuracy": last.get("eval_accuracy"), "final_eval_loss": last.get("eval_loss"),
            "pooled_test_" + metric: fed[metric], "centralised_" + metric: central[metric],
            "epsilon_spent": history["epsilon"], "budget_exhausted": history["budget_exhausted"],
            "central_dp_epsilon": max((r["central_epsilon"] for r in done if "central_epsilon" in r), default=None),
            "rejected_updates": sum(len(r.get("rejected", [])) for r in done),
            "failed_participants": sum(len(r.get("failed", [])) for r in done),
            "seconds": history["seconds"],
            "engine": "superlink" if extras.get("superlink") else "simulation",
            "flower_run_id": str(history["run_id"]) if "run_id" in history else None,
        }
        (__import__("pathlib").Path(history["output_dir"]) / "summary.json").write_text(
            json.dumps({**summary, "comparison": comparison}, default=float))
        shown = _rounded(summary)  # summary.json, MLflow and the registry keep the exact values
        pipes.report_asset_materialization(metadata={
            **{k: ({"raw_value": v, "type": "json"} if isinstance(v, (dict, list)) else v)
               for k, v in shown.items() if v is not None},
            "round_metrics": {"raw_value": rounds_markdown(history), "type": "md"},
            "rounds_json": {"raw_value": _rounded([{k: v for k, v in r.items() if k != "clients"} for r in done]),
                            "type": "json"},
        })
        pipes.report_asset_check(
            CHECK_NAME, passed=fed[metric] >= central[metric] - tolerance, severity="WARN",
            metadata={"federated": fed[metric], "centralised": central[metric], "tolerance": tolerance,
                      "metric": metric, "test_examples": comparison["test_examples"]})


def _rounded(value, digits: int = 4):
    """Floats cut to ``digits`` decimals for display in the Dagster UI (0.4841, not 0.4841148487937479)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


if __name__ == "__main__":
    main()
