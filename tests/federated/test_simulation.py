"""Small real federations on Flower's simulation engine (Ray on loopback), each in its own process."""

import numpy as np
import pytest

from models.federated.client_app import local_epochs
from tests.federated.helpers import rounds, simulate

FAST = {"num-rounds": 3, "lr": 0.5, "local-epochs": 2, "min-participants": 2}


def _learned(history, floor):
    r = rounds(history)
    last = r[max(r)]
    assert last["server_accuracy"] > floor, last
    assert last["server_accuracy"] > r[0]["server_accuracy"] + 0.3
    assert all(not r[i]["skipped"] for i in r if i > 0)
    return last


def test_fedprox_sends_mu_and_clients_train_with_it_under_central_dp(tmp_path):
    # 4 local epochs, half the participants per round straggling (1 to 3): more work per round than FAST's 2.
    # p0 crashes in round 2 (Flower's central-DP wrapper used to skip such a round, leaving it unrecorded).
    stragglers = {"local-epochs": 4, "straggler-fraction": 0.5}
    history = simulate(tmp_path, {**FAST, **stragglers, "strategy": "fedprox", "proximal-mu": 0.1,
                                  "central-dp-noise": 0.01, "central-dp-clip": 5.0}, participants=3,
                       chaos={"crash": {"0": [2]}})
    last = _learned(history, 0.6)
    assert [c["proximal-mu"] for c in last["clients"].values()] == [pytest.approx(0.1)] * 3
    assert "central DP noise with" in history["log"]  # Flower's server-side clipping wrapper added noise
    r = rounds(history)
    assert r[2]["accepted"] == ["p1", "p2"] and "crashed" in r[2]["failed"][0]["reason"]
    # the noise std z·C/m holds for an average in which each of the m updates weighs 1/m (not by examples)
    for i, m in ((1, 3), (2, 2), (3, 3)):
        assert r[i]["weights"] == {p: pytest.approx(1 / m) for p in r[i]["accepted"]}
        assert r[i]["central_noise_std"] == pytest.approx(0.01 * 5.0 / m)
    assert 0 < r[1]["central_epsilon"] < r[2]["central_epsilon"] < r[3]["central_epsilon"] < float("inf")
    # Simulated stragglers: each participant's local work per round is the one its seeded draw gives, and
    # their partial updates are aggregated (every sampled participant accepted in every round but p0's crash).
    epochs_seen = set()
    for number, record in r.items():
        if number == 0:
            continue
        assert sorted(record["accepted"]) == sorted(record["clients"]) and len(record["clients"]) == 3 - (number == 2)
        for participant, metrics in record["clients"].items():
            epochs = local_epochs({**FAST, **stragglers, "seed": 0, "server-round": number}, participant)
            per_epoch = -(-metrics["num-examples"] // 32)  # batches of 32, the last one partial
            assert metrics["steps"] == epochs * per_epoch, (number, participant)
            epochs_seen.add(epochs)
    assert 4 in epochs_seen and epochs_seen - {4}  # both full and partial work happened in this run


def test_fedavg_that_drops_stragglers_records_them_as_failed_and_averages_the_others(tmp_path):
    # The FedProx paper's FedAvg baseline: a participant that cannot finish its E epochs misses the round's
    # deadline and its work is dropped (the same stragglers as the FedProx test above: same seed and draws).
    stragglers = {"local-epochs": 4, "straggler-fraction": 0.5, "straggler-policy": "drop"}
    history = simulate(tmp_path, {**FAST, **stragglers, "strategy": "fedavg", "min-participants": 1},
                       participants=3)
    dropped = accepted = 0
    for number, record in rounds(history).items():
        if number == 0:
            continue
        failed = {f["participant"]: f["reason"] for f in record["failed"]}
        for participant in ("p0", "p1", "p2"):
            epochs = local_epochs({**FAST, **stragglers, "seed": 0, "server-round": number}, participant)
            if epochs < 4:
                assert failed[participant] == f"straggler: missed the round deadline after {epochs} of 4 epochs"
                assert participant not in record["accepted"]
                dropped += 1
            else:
                assert participant in record["accepted"] and participant not in failed
                accepted += 1
        if record["skipped"]:  # every participant dropped
            assert not record["accepted"] and "weights" not in record
            continue
        examples = {p: record["clients"][p]["num-examples"] for p in record["accepted"]}  # weighted by examples
        assert record["weights"] == {p: pytest.approx(n / sum(examples.values())) for p, n in examples.items()}
    assert dropped and accepted  # both happened in this run
    assert rounds(history)[3]["server_accuracy"] > rounds(history)[0]["server_accuracy"] + 0.3


def test_dp_sgd_accounts_epsilon_per_participant_and_the_budget_stops_them(tmp_path):
    # noise calibrated for ε = 8 over 3 rounds (ε ≈ 5.4, 6.8, 8.0 after each), budget 7.5;
    # p1 already spent 2.0 in an earlier run. p2 answers round 3 after the round's timeout. (The nodes import torch
    # and Opacus when first asked who they are: cold, round 1 alone missed a 12 s timeout on a loaded machine.)
    history = simulate(tmp_path, {**FAST, "strategy": "fedavg", "dp": "client", "dp-target-epsilon": 8.0,
                                  "epsilon-budget": 7.5, "epsilon-spent": "p1=2.0", "min-participants": 1,
                                  "round-timeout": 12}, participants=3,
                       chaos={"sleep": {"2": 14}, "sleep_rounds": [3], "warm": True})
    r = rounds(history)
    assert r[1]["accepted"] == ["p0", "p1", "p2"]
    assert r[2]["accepted"] == ["p0", "p2"]
    assert {f["participant"]: f["reason"] for f in r[2]["failed"]} == {"p1": "epsilon budget spent"}
    # round 3 would take p0 and p2 to ε ≈ 8 > 7.5: p0 refuses, p2 does not answer in time; the round is skipped
    assert r[3]["sampled"] == ["p0", "p2"] and r[3]["accepted"] == [] and r[3]["skipped"]
    assert {f["participant"]: f["reason"] for f in r[3]["failed"]} == {"p0": "epsilon budget spent",
                                                                       "p2": "no reply within 12s"}
    # p2 may have trained and sent its noised update late: it stays charged the run's bound (0 before + 8)
    assert history["epsilon_in_flight"] == {"p2": pytest.approx(8.0)}
    eps = history["epsilon"]
    assert 6.0 < eps["p0"] < 7.5 and 6.0 < eps["p2"] < 7.5
    assert eps["p1"] == pytest.approx(2.0 + r[1]["clients"]["p1"]["epsilon-run"])
    assert r[1]["clients"]["p0"]["epsilon"] < r[2]["clients"]["p0"]["epsilon"]
    # the server never heard p2's refusal; the registry charges p2 its bound (8 > 7.5), which stops it there
    assert sorted(history["budget_exhausted"]) == ["p0", "p1"]
    assert r[2]["server_accuracy"] > r[0]["server_accuracy"] + 0.2


def test_unreliable_participants_do_not_fail_a_round_and_too_few_replies_skip_it(tmp_path):
    # p0 crashes in every round, p1 sends NaN, p2 a huge update, p3 is suspended, p4 sleeps past the round timeout
    # in round 1, p5 and p7 crash in round 2 (leaving two replies, below the minimum of three).
    history = simulate(tmp_path, {**FAST, "strategy": "fedavg", "suspended": "p3", "min-participants": 3,
                                  "round-timeout": 6}, participants=8,
                       chaos={"crash": {"0": [], "5": [2], "7": [2]}, "nan": [1], "huge": [2],
                              "sleep": {"4": 7}, "sleep_rounds": [1]})
    r = rounds(history)
    for i in (1, 2, 3):
        assert "p3" not in r[i]["sampled"] and len(r[i]["sampled"]) == 7
        failed = {f["participant"]: f["reason"] for f in r[i]["failed"]}
        assert "crashed" in failed.pop("p0")
        reasons = {x["participant"]: x["reason"] for x in r[i]["rejected"]}
        assert "NaN" in reasons["p1"] and "norm" in reasons["p2"]
        assert r[i]["evaluated"] == 7  # suspended p3 is not evaluated either
        if i == 1:
            assert failed == {"p4": "no reply within 6s"}
        elif i == 2:
            assert sorted(failed) == ["p5", "p7"] and all("crashed" in v for v in failed.values())
        else:
            assert failed == {}
    assert r[1]["accepted"] == ["p5", "p6", "p7"] and not r[1]["skipped"]
    assert r[2]["accepted"] == ["p4", "p6"] and r[2]["skipped"]
    assert r[2]["server_accuracy"] == r[1]["server_accuracy"]  # skipped: the global model did not move
    assert r[3]["accepted"] == ["p4", "p5", "p6", "p7"] and not r[3]["skipped"]
    assert r[3]["server_accuracy"] > r[0]["server_accuracy"] + 0.3
    assert r[3]["eval_accuracy"] > 0.6  # federated evaluation on the participants' own held-out data
    with np.load(f"{history['output_dir']}/model.npz") as model:  # the global model the server wrote
        assert model["0.weight"].shape == (32, 64) and np.isfinite(model["0.weight"]).all()


def test_scaffold_keeps_control_variates_across_rounds_and_rejects_a_bad_control_update(tmp_path):
    # p0 sends no Δc (the server used to crash with KeyError), p1 one scalar per array (it used to broadcast onto
    # every entry of c and get every participant's next update rejected), p2 an inf in Δc, p3 a finite Δc of the
    # right shape but 1000 times the size option II gives for its own model update (it would steer c for everyone).
    history = simulate(tmp_path, {**FAST, "strategy": "scaffold"}, participants=6,
                       chaos={"control": {"0": "missing", "1": "scalar", "2": "inf", "3": "scaled"}})
    _learned(history, 0.6)
    r = rounds(history)
    for i in (1, 2, 3):
        assert r[i]["accepted"] == ["p4", "p5"] and not r[i]["skipped"]
        reasons = {x["participant"]: x["reason"] for x in r[i]["rejected"]}
        assert reasons.pop("p3").startswith("control variate update inconsistent with the model update")
        assert reasons == {"p0": "no control-variate update", "p1": "control variate shape mismatch",
                           "p2": "non-finite control variate"}
        # an accepted participant's c_i was updated once per round it took part in (the node state persisted); a
        # rejected one's new c_i never became its own (the server did not add its Δc_i to c): it counts 0 + this one
        clients = r[i]["clients"]
        assert clients["p4"]["control-rounds"] == clients["p5"]["control-rounds"] == i
        assert {clients[p]["control-rounds"] for p in ("p0", "p1", "p2", "p3")} == {1}
    assert all(r[3]["clients"][p]["control-norm"] > 0 for p in ("p4", "p5"))


def test_a_budget_spent_in_earlier_runs_is_never_sampled_and_a_server_failure_keeps_the_epsilon_spent(tmp_path):
    # ε 4 per run of 3 rounds against a lifetime budget of 7.5: p1 spent 7.5 before, p2 6.5 (its first round would
    # exceed the budget). The ServerApp's process fails in round 3, after p0's noised update came back. The
    # history used to be written once, at the end: a server failure lost the ε the participants had spent, and
    # the registry under-counted their lifetime budget.
    history = simulate(tmp_path, {**FAST, "local-epochs": 1, "strategy": "fedavg", "dp": "client",
                                  "dp-target-epsilon": 4.0, "epsilon-budget": 7.5,
                                  "epsilon-spent": "p1=7.5,p2=6.5", "min-participants": 1}, participants=3,
                       server_crash_after=2, mid_round=True)
    assert "ServerCrashed: server process failed in round 3, with the replies in" in history["log"]  # the run failed
    assert history["complete"] is False and not (tmp_path / "run" / "model.npz").exists()
    r = rounds(history)
    assert sorted(i for i in r if i > 0) == [1, 2]  # the rounds that finished, on disk
    assert r[1]["sampled"] == ["p0", "p2"] and r[2]["sampled"] == ["p0"]  # p1 never, p2 until it refuses
    assert r[1]["accepted"] == ["p0"] and r[2]["accepted"] == ["p0"]
    assert r[1]["failed"] == [{"participant": "p2", "reason": "epsilon budget spent"}]
    assert "p1" not in r[1]["clients"] and r[1]["evaluated"] == 1 and r[2]["evaluated"] == 1
    assert sorted(history["budget_exhausted"]) == ["p1", "p2"]
    assert "p1" not in history["epsilon"]
    assert history["epsilon"]["p0"] == r[2]["clients"]["p0"]["epsilon"] > r[1]["clients"]["p0"]["epsilon"] > 0
    assert history["epsilon"]["p0"] < 4.0
    # round 3's reply never reached the record: p0 is charged the most the run can have cost it (0 before + 4)
    assert history["epsilon_in_flight"] == {"p0": pytest.approx(4.0)}
