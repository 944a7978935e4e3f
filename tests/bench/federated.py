"""Federated-learning benchmarks on scikit-learn's digits (same MLP everywhere, server-side accuracy
on the same held-out 25 % test set), every federation in a fresh process on Flower's simulation
engine (Ray on loopback):

    FedAvg IID vs centralised      10 participants; the centralised baseline makes the same passes over
                                   the pooled data                              target: within 1 point
    non-IID Dirichlet(α = 0.3)     FedAvg, FedProx and SCAFFOLD: same setting, seeds, data and rounds,
                                   mean over seeds                 target: FedProx, SCAFFOLD > FedAvg
                                   (``mu``, not run by default: FedProx's μ chosen on a validation split
                                   carved from the training data, never the test split; ``stragglers``,
                                   not run by default: the same with half the participants per round
                                   doing partial work, the FedProx paper's systems heterogeneity)
    DP-SGD (Opacus)                accuracy at ε ≈ 1, 3, 8 vs the same federation without DP   (reported;
                                   mean of 5 runs: the noise is secret, each run draws its own)
    time per round                 10 and 100 simulated participants (100 vs 10 as the ratio)  (reported)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 30  # IID comparison
BASE = {"lr": 0.2, "local-epochs": 5, "batch-size": 32, "client-evaluation": False, "min-participants": 2,
        "hidden": 32, "seed": 0}
CENTRAL_EPOCHS = 60  # the centralised baseline trained to convergence
# Non-IID: every strategy gets this setting, the same seeds (each seed: its own Dirichlet draw, initial
# model and local shuffles) and the same round budget. 50 local epochs per round (each participant
# trains close to its own skewed optimum, as with the FedProx paper's E = 20 on larger shares): the
# setting where client drift was largest on the validation split (SCAFFOLD's gain over FedAvg).
NONIID = {"partitioning": "dirichlet", "alpha": 0.3, "num-rounds": 10, "local-epochs": 50, "lr": 0.2}
NONIID_PARTICIPANTS = 10
SEEDS = (0, 1, 2)
MU_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
PROXIMAL_MU = 0.03  # chosen from MU_GRID by the ``mu`` part (validation split), see the README
STRAGGLERS = 0.5  # the ``stragglers`` part: share of participants per round doing partial work


def federate(config: dict, participants: int, timeout: int = 900) -> dict:
    return federate_many([config], participants, timeout)[0]


def federate_many(configs: list[dict], participants: int, timeout: int = 900) -> list[dict]:
    """Several federations one after the other in one fresh process (Ray is started and stopped for each)."""
    work = Path(tempfile.mkdtemp(prefix="fedbench-"))
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    runs = [{**BASE, **config, "output-dir": str(work / str(i))} for i, config in enumerate(configs)]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "models.federated.simulation", "--config", json.dumps(runs),
             "--participants", str(participants)],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                 "RAY_USAGE_STATS_ENABLED": "0", "FLWR_TELEMETRY_ENABLED": "0"})
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        return [json.loads((Path(run["output-dir"]) / "history.json").read_text()) for run in runs]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def final_accuracy(history: dict) -> float:
    return [r for r in history["rounds"] if "server_accuracy" in r][-1]["server_accuracy"]


def centralised_accuracy(epochs: int, participants: int) -> float:
    """The same MLP trained on the union of the participants' training splits (the data the federation sees)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from models.federated.data import digits_partition, digits_train_test
    from models.federated.model import accuracy_and_loss
    from models.federated.training import train_centralised

    _, _, x_te, y_te = digits_train_test()
    splits = [digits_partition(i, participants, "iid", 0.3, BASE["seed"]) for i in range(participants)]
    x_tr, y_tr = np.concatenate([s.x_train for s in splits]), np.concatenate([s.y_train for s in splits])
    model = train_centralised(x_tr, y_tr, 64, 10, hidden=BASE["hidden"], epochs=epochs, batch_size=BASE["batch-size"],
                              lr=0.1, seed=0)
    return accuracy_and_loss(model, x_te, y_te)[0]


PARTS = ("timing", "iid", "noniid", "dp")  # and "mu", "stragglers" on demand


def bench_federated(report, parts=PARTS) -> None:
    pct = lambda a: f"{100 * a:.1f}"  # noqa: E731
    per_round = {}
    for clients in (10, 100) if "timing" in parts else ():
        history = federate({"strategy": "fedavg", "partitioning": "iid", "num-rounds": 4, "local-epochs": 1}, clients)
        seconds = [r["seconds"] for r in history["rounds"] if r["round"] >= 2 and "seconds" in r]  # round 1 warms up
        per_round[clients] = sorted(seconds)[len(seconds) // 2]
    if per_round:
        report("FL time/round (100 clients)", f"{per_round[100]:.2f}", "s", f"{per_round[10]:.2f}", "s (10 cl.)",
               per_round[100] / per_round[10], "(reported)", True)
    if "iid" in parts:
        bench_iid(report, pct)
    if "noniid" in parts:
        bench_noniid(report, pct)
    if "dp" in parts:
        bench_dp(report, pct)
    if "mu" in parts:
        bench_mu(report, pct)
    if "stragglers" in parts:
        bench_noniid(report, pct, stragglers=STRAGGLERS)


def bench_iid(report, pct) -> None:
    central = centralised_accuracy(CENTRAL_EPOCHS, 10)
    iid = final_accuracy(federate({"strategy": "fedavg", "num-rounds": ROUNDS, "partitioning": "iid"}, 10))
    gap = 100 * (central - iid)
    report("FL FedAvg IID (10 clients)", pct(iid), "% acc", pct(central), "% central", iid / central,
           "gap <= 1pt", gap <= 1.0)
    print(f"    {ROUNDS} rounds x {BASE['local-epochs']} local epochs; centralised: {CENTRAL_EPOCHS} epochs on the "
          f"union of the participants' training data; gap {gap:.2f} points", flush=True)


def mean(values) -> float:
    return sum(values) / len(values)


def per_seed(configs: dict[str, dict], validation: bool = False) -> dict[str, list[float]]:
    """Final accuracy of each named strategy config on every seed (one process, same data per seed)."""
    runs = [{**NONIID, **config, "seed": seed, "validation": validation}
            for config in configs.values() for seed in SEEDS]
    accuracies = [final_accuracy(h) for h in federate_many(runs, NONIID_PARTICIPANTS, timeout=1800)]
    return {name: accuracies[i * len(SEEDS):(i + 1) * len(SEEDS)] for i, name in enumerate(configs)}


def bench_noniid(report, pct, stragglers: float = 0.0) -> None:
    """``stragglers`` > 0: that share of participants per round completes only 1..E−1 local epochs (the FedProx
    paper's systems heterogeneity; their partial work is aggregated by every strategy alike)."""
    extra = {"straggler-fraction": stragglers} if stragglers else {}
    configs = {"FedAvg": {"strategy": "fedavg", **extra},
               "FedProx": {"strategy": "fedprox", "proximal-mu": PROXIMAL_MU, **extra},
               "SCAFFOLD": {"strategy": "scaffold", **extra}}
    if stragglers:  # the FedProx paper's FedAvg: a straggler misses the round deadline and its work is dropped
        configs["FedAvg-drop"] = {"strategy": "fedavg", **extra, "straggler-policy": "drop"}
    acc = per_seed(configs)
    fedavg = mean(acc["FedAvg"])
    label = f"FL Dir(0.3) {int(100 * stragglers)}%strag." if stragglers else "FL Dir(0.3)"
    report(f"{label} FedAvg", pct(fedavg), "% acc", pct(fedavg), "% FedAvg", 1.0, "(ref)", True)
    if stragglers:
        dropped = mean(acc["FedAvg-drop"])
        report(f"{label} FedAvg drops", pct(dropped), "% acc", pct(fedavg), "% FedAvg", dropped / fedavg,
               "(reported)", True)
    for name in ("FedProx", "SCAFFOLD"):
        value = mean(acc[name])
        report(f"{label} {name}", pct(value), "% acc", pct(fedavg), "% FedAvg", value / fedavg,
               "> FedAvg" if not stragglers else "(reported)", value > fedavg or bool(stragglers))
    print(f"    {NONIID_PARTICIPANTS} participants, {NONIID['num-rounds']} rounds x {NONIID['local-epochs']} local "
          f"epochs, lr {NONIID['lr']}, FedProx mu {PROXIMAL_MU}"
          + (f", {100 * stragglers:.0f} % stragglers per round doing 1 to {NONIID['local-epochs'] - 1} epochs"
             if stragglers else "")
          + f"; mean over seeds {SEEDS}, test accuracy per seed:", flush=True)
    for name, values in acc.items():
        print(f"      {name:<9} {' '.join(pct(v) for v in values)}  (mean {pct(mean(values))}, "
              f"{100 * (mean(values) - fedavg):+.2f} points vs FedAvg)", flush=True)


def bench_mu(report, pct) -> None:
    """FedProx's μ from MU_GRID on the validation split (the training part's held-out 20 %): highest mean wins."""
    configs = {"FedAvg": {"strategy": "fedavg"},
               **{f"mu={mu:g}": {"strategy": "fedprox", "proximal-mu": mu} for mu in MU_GRID}}
    acc = per_seed(configs, validation=True)
    fedavg = mean(acc["FedAvg"])
    best = max(MU_GRID, key=lambda mu: mean(acc[f"mu={mu:g}"]))
    for name, values in acc.items():
        print(f"    validation {name:<9} {' '.join(pct(v) for v in values)}  (mean {pct(mean(values))})", flush=True)
    value = mean(acc[f"mu={best:g}"])
    report(f"FL FedProx mu={best:g} (val.)", pct(value), "% val", pct(fedavg), "% FedAvg", value / fedavg,
           f"mu={PROXIMAL_MU:g}", best == PROXIMAL_MU)


DP_EPSILONS = (1.0, 3.0, 8.0)
DP_REPEATS = 5  # the noise is secret (never drawn from the run's seed), so each run draws its own: report the mean


def bench_dp(report, pct) -> None:
    dp_base = {"strategy": "fedavg", "partitioning": "iid", "num-rounds": 10, "local-epochs": 1, "lr": 0.5,
               "batch-size": 64}
    configs = [{**dp_base, "dp": "none"}] + [
        {**dp_base, "dp": "client", "dp-target-epsilon": eps, "dp-max-grad-norm": 1.0}
        for eps in DP_EPSILONS for _ in range(DP_REPEATS)]
    histories = federate_many(configs, 3)
    plain = final_accuracy(histories[0])
    for i, eps in enumerate(DP_EPSILONS):
        runs = histories[1 + i * DP_REPEATS:1 + (i + 1) * DP_REPEATS]
        accuracies = [final_accuracy(h) for h in runs]
        spent = max(max(h["epsilon"].values()) for h in runs)
        acc = mean(accuracies)
        report(f"FL DP-SGD eps={eps:g}", pct(acc), "% acc", pct(plain), "% no DP", acc / plain, "(reported)", True)
        print(f"    mean of {DP_REPEATS} runs, each with its own noise: {' '.join(pct(a) for a in accuracies)}; "
              f"ε spent (max over participants and runs, Opacus RDP, δ=1e-5): {spent:.2f}", flush=True)


if __name__ == "__main__":  # python tests/bench/federated.py [timing iid noniid dp mu stragglers]
    sys.path.insert(0, str(ROOT))
    from tests.bench.run import report

    bench_federated(report, tuple(sys.argv[1:]) or PARTS)
