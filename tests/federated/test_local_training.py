"""Fast checks of the pieces under the Flower apps (no simulation)."""

import numpy as np
import pytest

from models.federated.config import FederatedConfig
from models.federated.data import (
    dirichlet_partition,
    digits_partition,
    digits_train_test,
    iid_partition,
    npz_partition,
    write_participant_files,
)
from models.federated.model import build_model, load_numpy, to_numpy
from models.federated.strategies import screen_update
from models.federated.training import (
    DPSpec,
    dp_training_size,
    epsilon_after,
    noise_multiplier_for,
    planned_history,
    sample_rate,
    train_local,
)


def _update_norm(before, after):
    return float(np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before))))


def test_proximal_term_keeps_the_local_model_closer_to_the_global_one():
    split = digits_partition(0, 3, "iid", 0.3, seed=0)
    norms = {}
    for mu in (0.0, 2.0):
        model = build_model(64, 10, 32, seed=0)
        start = to_numpy(model)
        train_local(model, split.x_train, split.y_train, 10, epochs=3, batch_size=32, lr=0.5, seed=1, mu=mu)
        norms[mu] = _update_norm(start, to_numpy(model))
    assert norms[2.0] < 0.8 * norms[0.0]


def test_proximal_step_is_sgd_on_the_loss_plus_mu_half_squared_distance_to_the_global_model():
    """FedProx's local objective exactly: autograd on CE + μ/2·‖w − w_t‖² gives the same weights."""
    import torch

    split = digits_partition(0, 3, "iid", 0.3, seed=0)
    n, mu, lr, epochs = len(split.y_train), 0.5, 0.3, 4
    ours = build_model(64, 10, 32, seed=0)
    train_local(ours, split.x_train, split.y_train, 10, epochs=epochs, batch_size=n, lr=lr, seed=1, mu=mu)

    reference = build_model(64, 10, 32, seed=0)
    anchor = [p.detach().clone() for p in reference.parameters()]
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    for _ in range(epochs):  # one full batch per epoch: the shuffle order cannot matter
        reference.zero_grad()
        loss = torch.nn.functional.cross_entropy(reference(x), y)
        loss = loss + mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(reference.parameters(), anchor))
        loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= lr * p.grad
    for got, want in zip(to_numpy(ours), to_numpy(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    plain = build_model(64, 10, 32, seed=0)
    train_local(plain, split.x_train, split.y_train, 10, epochs=epochs, batch_size=n, lr=lr, seed=1)
    assert _update_norm(to_numpy(plain), to_numpy(ours)) > 1e-3  # and μ did change the result


def test_scaffold_correction_changes_the_step_and_returns_the_control_update():
    split = digits_partition(1, 3, "iid", 0.3, seed=0)
    model = build_model(64, 10, 32, seed=0)
    shapes = [a.shape for a in to_numpy(model)]
    c = [np.full(s, 0.01, dtype=np.float32) for s in shapes]
    ci = [np.zeros(s, dtype=np.float32) for s in shapes]
    result = train_local(model, split.x_train, split.y_train, 10, epochs=1, batch_size=32, lr=0.1, seed=1,
                         server_control=c, client_control=ci)
    plain = build_model(64, 10, 32, seed=0)
    train_local(plain, split.x_train, split.y_train, 10, epochs=1, batch_size=32, lr=0.1, seed=1)
    # every step moved the weights by an extra −lr·(c − c_i) = −0.001 per element (the data
    # gradients differ a little along the shifted path, hence the tolerance)
    diff = to_numpy(plain)[0] - result.arrays[0]
    assert float(diff.mean()) == pytest.approx(0.001 * result.steps, rel=0.25)
    assert all(np.allclose(d, n) for d, n in zip(result.control_delta, result.new_control))


def test_scaffold_step_and_control_update_follow_option_ii_exactly():
    """y ← y − lr·(g(y) + c − c_i) for K steps, then c_i⁺ = c_i − c + (x − y)/(K·lr) (Karimireddy et al.)."""
    import torch

    split = digits_partition(2, 3, "dirichlet", 0.3, seed=0)
    n, lr, epochs = len(split.y_train), 0.2, 3
    rng = np.random.default_rng(7)
    ours = build_model(64, 10, 32, seed=0)
    x0 = to_numpy(ours)
    c = [rng.normal(0, 0.05, a.shape).astype(np.float32) for a in x0]
    ci = [rng.normal(0, 0.05, a.shape).astype(np.float32) for a in x0]
    result = train_local(ours, split.x_train, split.y_train, 10, epochs=epochs, batch_size=n, lr=lr, seed=1,
                         server_control=c, client_control=ci)

    reference = build_model(64, 10, 32, seed=0)
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    for _ in range(epochs):
        reference.zero_grad()
        torch.nn.functional.cross_entropy(reference(x), y).backward()
        with torch.no_grad():
            for p, cc, cci in zip(reference.parameters(), c, ci):
                p -= lr * (p.grad + torch.from_numpy(cc - cci))
    y_k = to_numpy(reference)
    assert result.steps == epochs
    for got, want in zip(result.arrays, y_k):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, cci, cc, a, b in zip(result.new_control, ci, c, x0, y_k):
        np.testing.assert_allclose(got, cci - cc + (a - b) / (epochs * lr), rtol=1e-4, atol=1e-5)
    for delta, new, old in zip(result.control_delta, result.new_control, ci):
        np.testing.assert_allclose(delta, new - old, atol=1e-7)


def test_dp_noise_is_calibrated_to_the_target_epsilon_and_the_accountant_composes():
    spec = DPSpec(target_epsilon=3.0, delta=1e-5, max_grad_norm=1.0, planned_rounds=4)
    noise = noise_multiplier_for(spec, n=400, batch_size=32, epochs=1)
    history = []
    eps = []
    for _ in range(4):
        history = planned_history(history, 400, 32, 1, noise)
        eps.append(epsilon_after(history, 1e-5))
    assert eps == sorted(eps) and eps[0] < eps[-1]
    assert eps[-1] == pytest.approx(3.0, abs=0.05)


def test_dp_training_reports_the_epsilon_opacus_accounts():
    split = digits_partition(0, 3, "iid", 0.3, seed=0)
    model = build_model(64, 10, 32, seed=0)
    spec = DPSpec(target_epsilon=2.0, delta=1e-5, max_grad_norm=1.0, planned_rounds=1)
    result = train_local(model, split.x_train, split.y_train, 10, epochs=1, batch_size=32, lr=0.5, seed=0, dp=spec)
    assert result.noise_multiplier > 0.5
    assert 1.5 < result.epsilon <= 2.05
    assert result.accountant_history and result.accountant_history[0][0] == pytest.approx(result.noise_multiplier)


def test_a_rare_class_survives_dp_sgd_by_rebalanced_sampling():
    """Per-sample clipping cancels class weights: with DP a balanced task draws a balanced set instead."""
    rng = np.random.default_rng(0)
    y = (rng.random(6000) < 0.02).astype(np.int64)  # 2 % positives, as rare as the labelled market abuse
    x = rng.normal(size=(6000, 4)).astype(np.float32)
    x[:, 0] += 3.0 * y  # separable in one feature
    spec = DPSpec(target_epsilon=4.0, delta=1e-5, max_grad_norm=1.0, planned_rounds=5)

    def balanced_accuracy(balanced):
        import torch

        weights, history = to_numpy(build_model(4, 2, 16, seed=0)), []
        for r in range(5):  # five rounds, a fresh model each round as a participant builds it
            model = build_model(4, 2, 16, seed=0)
            load_numpy(model, weights)
            result = train_local(model, x, y, 2, epochs=2, batch_size=64, lr=0.1, seed=r, balanced=balanced, dp=spec,
                                 accountant_history=history)
            weights, history = result.arrays, result.accountant_history

        with torch.no_grad():
            predicted = model(torch.from_numpy(x)).argmax(1).numpy()
        return float(np.mean([np.mean(predicted[y == c] == c) for c in (0, 1)])), result

    weighted_only, _ = balanced_accuracy(False)
    rebalanced, result = balanced_accuracy(True)
    assert weighted_only < 0.6  # the majority class wins without rebalancing
    assert rebalanced > 0.75
    n = dp_training_size(y, 2)
    assert n == 2 * int(y.sum()) and result.num_examples == n  # every class capped at the rarest's count
    assert result.accountant_history[-1][1] == pytest.approx(sample_rate(n, 64))  # accounted for the drawn set
    assert 3.0 < result.epsilon <= 4.05  # the planned budget over the five rounds


def test_update_screening_rejects_nan_and_absurd_norms():
    current = [np.zeros((3, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)]
    ok = [a + 0.1 for a in current]
    nan = [a.copy() for a in ok]
    nan[1][0] = np.nan
    assert screen_update(ok, current, 10.0) is None
    assert "NaN" in screen_update(nan, current, 10.0)
    assert "norm" in screen_update([a + 1e3 for a in current], current, 10.0)
    assert "shape" in screen_update([current[0]], current, 10.0)


def test_dirichlet_split_is_skewed_and_iid_is_not():
    _, y, _, _ = digits_train_test()
    skewed = dirichlet_partition(y, 5, alpha=0.3, seed=0)
    iid = iid_partition(len(y), 5, seed=0)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(len(y)))

    def mean_tv(parts):  # mean total-variation distance between a partition's labels and the pool's
        pool = np.bincount(y, minlength=10) / len(y)
        return np.mean([0.5 * np.abs(np.bincount(y[p], minlength=10) / len(p) - pool).sum() for p in parts])

    assert mean_tv(skewed) > 0.3 > 0.1 > mean_tv(iid)


def test_a_node_that_names_its_participant_reads_that_participants_file(tmp_path):
    import dataclasses

    splits = [dataclasses.replace(digits_partition(i, 3, "iid", 0.3, 0), participant=f"t-{i}") for i in range(3)]
    write_participant_files(tmp_path, splits, 10)
    # the name wins over the index: enrolling another tenant never moves a node onto someone else's file
    mine = npz_partition(str(tmp_path), -1, participant="t-2")
    assert mine.participant == "t-2" and np.array_equal(mine.y_train, splits[2].y_train)
    assert npz_partition(str(tmp_path), 1).participant == "t-1"
    with pytest.raises(ValueError, match="no file"):
        npz_partition(str(tmp_path), 0, participant="t-9")
    with pytest.raises(ValueError, match="not in"):
        npz_partition(str(tmp_path), -1)


def test_config_rejects_central_dp_with_scaffold_and_unknown_strategies():
    with pytest.raises(ValueError, match="straggler-policy must be 'partial' or 'drop'"):
        FederatedConfig.from_mapping({"straggler-policy": "wait"})
    with pytest.raises(ValueError, match="SCAFFOLD"):
        FederatedConfig(strategy="scaffold", central_dp_noise=1.0)
    with pytest.raises(ValueError, match="unknown strategy"):
        FederatedConfig.from_mapping({"strategy": "fedsgd"})
    for bad, message in ((("central-dp-noise", "-1"), "central-dp-noise must be >= 0"),
                         (("central-dp-clip", "0"), "central-dp-clip must be > 0"),
                         (("lr", "nan"), "lr must be > 0, not nan"), (("num-rounds", "0"), "num-rounds must be >= 1"),
                         (("fraction-train", "1.5"), "fraction-train must be at most 1"),
                         (("dp-delta", "1"), "dp-delta must be below 1"), (("proximal-mu", "-0.1"), "proximal-mu"),
                         (("partitioning", "skewed"), "partitioning must be 'iid' or 'dirichlet'")):
        with pytest.raises(ValueError, match=message):
            FederatedConfig.from_mapping(dict([bad]))
    cfg = FederatedConfig.from_mapping({"num-rounds": "4", "suspended": "t-a, t-b", "epsilon-spent": "t-a=1.5"})
    assert cfg.num_rounds == 4 and cfg.suspended_set == {"t-a", "t-b"} and cfg.epsilon_spent_map == {"t-a": 1.5}


def test_the_flower_app_declares_every_config_key_with_the_same_defaults():
    import tomllib

    from models.federated.deployment import APP_DIR

    declared = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert declared == pytest.approx(FederatedConfig().to_run_config())
    assert tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "models.federated.server_app:app", "clientapp": "models.federated.client_app:app"}


def test_simulated_stragglers_do_partial_work_drawn_per_participant_and_round():
    from models.federated.client_app import local_epochs

    config = {"local-epochs": 10, "seed": 3}
    assert all(local_epochs({**config, "server-round": r}, f"p{i}") == 10 for r in range(5) for i in range(20))
    draws = [local_epochs({**config, "straggler-fraction": 0.5, "server-round": r}, f"p{i}")
             for r in range(1, 11) for i in range(20)]
    stragglers = [e for e in draws if e < 10]
    assert 60 <= len(stragglers) <= 140 and set(stragglers) <= set(range(1, 10)) and len(set(stragglers)) >= 7
    again = [local_epochs({**config, "straggler-fraction": 0.5, "server-round": r}, f"p{i}")
             for r in range(1, 11) for i in range(20)]
    assert again == draws  # the same seed repeats the same schedule
    assert local_epochs({"local-epochs": 1, "seed": 0, "server-round": 1, "straggler-fraction": 1.0}, "p") == 1


def test_dp_noise_and_sampling_cannot_be_reproduced_from_the_run_seed():
    """The server sends the run's seed: without DP the same seed repeats training exactly (experiments repeat),
    with DP the noise and Poisson sampling come from a secret seed, so no one can replay and subtract them."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 6)).astype(np.float32), rng.integers(0, 3, 300).astype(np.int64)
    spec = DPSpec(target_epsilon=3.0, delta=1e-5, max_grad_norm=1.0, planned_rounds=2)

    def train(dp):
        model = build_model(6, 3, 8, seed=0)
        return train_local(model, x, y, 3, epochs=1, batch_size=32, lr=0.1, seed=7, dp=dp)

    plain = [train(None) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(plain[0].arrays, plain[1].arrays))
    private = [train(spec) for _ in range(2)]
    assert not all(np.array_equal(a, b) for a, b in zip(private[0].arrays, private[1].arrays))
    assert private[0].epsilon == pytest.approx(private[1].epsilon)  # the accounting does not depend on the draw


def test_central_dp_samples_participants_secretly_and_averages_them_uniformly():
    """Subsampling amplifies central DP only if no one can predict the sample: not from the run's seed."""
    from models.federated.strategies import build_strategy

    def samples(**settings):
        return [build_strategy(FederatedConfig(seed=3, **settings), {})[1].rng.sample(range(1000), 10)
                for _ in range(2)]

    plain = samples()
    assert plain[0] == plain[1]  # without DP the same seed samples the same participants (experiments repeat)
    central = samples(central_dp_noise=1.0)
    assert central[0] != central[1]
    # the noise z·C/m covers an average in which each update weighs 1/m
    assert build_strategy(FederatedConfig(central_dp_noise=1.0), {})[1].uniform_weights
    assert not build_strategy(FederatedConfig(), {})[1].uniform_weights


def test_central_dp_noise_comes_from_a_generator_no_seed_reaches():
    """Flower's wrapper drew the noise from numpy's global generator: a library seeding it with a fixed value made
    the noise of two runs the same (so predictable, and subtractable). Ours is seeded from the OS's entropy: the
    same aggregate noised after the same global seed differs, and the noise has the std z·C/m."""
    from flwr.app import Array, ArrayRecord

    from models.federated.strategies import build_strategy

    def noised():
        central = build_strategy(FederatedConfig(central_dp_noise=1.0, central_dp_clip=2.0), {})[0]
        central.num_sampled_clients = 4
        np.random.seed(0)
        out = central._add_noise_to_aggregated_arrays(ArrayRecord({"w": Array(np.zeros(200_000, np.float32))}))
        return out.to_numpy_ndarrays()[0]

    first, second = noised(), noised()
    assert first.dtype == np.float32 and first.shape == (200_000,)
    assert not np.allclose(first, second)
    assert first.std() == pytest.approx(1.0 * 2.0 / 4, rel=0.02)


def test_loading_the_client_app_imports_no_torch():
    """On a SuperNode every message starts a ClientApp process of its own; a `query` (who is this node?) must not
    pay for importing torch."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = ("import sys, models.federated.client_app; "
            "print(sorted(m for m in ('torch', 'opacus', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_run_config_every_supernode_sees_names_no_tenant_and_no_epsilon(tmp_path, monkeypatch):
    """On the deployment engine every SuperNode's ClientApp gets the run's whole run config (Flower fuses the
    --run-config overrides into each node's Context): it carried every tenant's spent ε, who is suspended and who
    may train. Those go to a file beside the run's output that only the ServerApp reads."""
    import json
    import subprocess

    from models.federated import deployment

    submitted = {}

    class Stop(Exception):
        pass

    def fake_run(command, **kwargs):  # `flwr run`: keep the overrides it would submit, submit nothing
        submitted["text"] = open(command[command.index("--run-config") + 1]).read()
        raise Stop()

    monkeypatch.setattr(subprocess, "run", fake_run)
    config = {"dataset": "npz", "data-dir": str(tmp_path / "data"), "output-dir": str(tmp_path / "out"),
              "suspended": "t-cygnus", "epsilon-spent": "t-acme=1.5,t-borealis=7.25,t-cygnus=0.0",
              "allowed-participants": "t-acme,t-borealis", "epsilon-budget": 8.0}
    with pytest.raises(Stop):
        deployment.run_on_superlink(config, "127.0.0.1:1", workdir=tmp_path / "work")
    for secret in ("t-acme", "t-borealis", "t-cygnus", "7.25"):
        assert secret not in submitted["text"]
    # what the ServerApp makes of that run config: the participant rules are all there
    import tomllib

    from models.federated.server_app import server_config

    cfg = server_config({}, tomllib.loads(submitted["text"]))
    assert cfg.suspended_set == {"t-cygnus"} and cfg.allowed_set == {"t-acme", "t-borealis"}
    assert cfg.epsilon_spent_map == {"t-acme": 1.5, "t-borealis": 7.25, "t-cygnus": 0.0}
    assert json.loads((tmp_path / "out" / "participants.json").read_text())["suspended"] == "t-cygnus"
