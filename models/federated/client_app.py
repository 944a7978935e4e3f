"""The ClientApp: one participant (a tenant) training and evaluating on its own data only.

Handlers (Message API):
* ``query``    – identifies the participant behind a node (the server uses it to skip
  suspended tenants and to keep per-participant ε);
* ``train``    – local training from the global model; SCAFFOLD's client control variate and
  the Opacus accountant history are kept in ``context.state`` (per node, across rounds);
* ``evaluate`` – accuracy and loss on the participant's local held-out split.

Data settings come from the node's config (``--node-config`` on a SuperNode: partition-id,
num-partitions, optionally dataset, data-dir and participant: a tenant's node names its own data,
by its tenant id in the npz manifest when ``participant`` is given) and otherwise from the config
the server sends.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from models.federated import data as datasets

# torch (through models.federated.model/training) is imported by the handlers that train or evaluate: on a
# SuperNode every message starts a ClientApp process of its own, and a `query` needs no torch.

STATE_CONTROL = "scaffold-client-control"
STATE_CONTROL_ROUNDS = "scaffold-control-rounds"
STATE_PENDING_CONTROL = "scaffold-pending-control"
STATE_PENDING_ROUND = "scaffold-pending-round"
STATE_ACCOUNTANT = "dp-accountant"


def partition_of(context: Context) -> tuple[int, int]:
    if "participant" in context.node_config and "partition-id" not in context.node_config:
        return -1, 0  # an npz node that names its tenant: its file is found in the manifest by name
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


@functools.lru_cache(maxsize=8)
def _split(dataset: str, partition_id: int, num_partitions: int, data_dir: str, partitioning: str,
           alpha: float, seed: int, participant: str, validation: bool) -> datasets.Split:
    return datasets.load_split(dataset, partition_id, num_partitions, data_dir=data_dir,
                               partitioning=partitioning, alpha=alpha, seed=seed, participant=participant,
                               validation=validation)


def participant_split(config: ConfigRecord, context: Context) -> datasets.Split:
    pid, n = partition_of(context)
    data_dir = str(context.node_config.get("data-dir", config.get("data-dir", "")))
    dataset = str(context.node_config.get("dataset", config["dataset"]))
    return _split(dataset, pid, n, data_dir, str(config.get("partitioning", "iid")),
                  float(config.get("alpha", 0.3)), int(config.get("seed", 0)),
                  str(context.node_config.get("participant", "")), bool(config.get("validation", False)))


def _model(config: ConfigRecord, arrays: ArrayRecord):
    from models.federated.model import build_model, from_record, load_numpy

    model = build_model(int(config["num-features"]), int(config["num-classes"]), int(config["hidden"]))
    load_numpy(model, from_record(arrays))
    return model


def local_epochs(config: ConfigRecord, participant: str) -> int:
    """The round's local epochs; with ``straggler-fraction`` f > 0 (simulated systems heterogeneity, as in the
    FedProx paper) each participant is, with probability f in each round, a straggler that completes only
    1..E−1 epochs, drawn from (seed, round, participant). Its partial work is aggregated like any other."""
    epochs = int(config["local-epochs"])
    fraction = float(config.get("straggler-fraction", 0.0))
    if fraction <= 0 or epochs <= 1:
        return epochs
    rng = np.random.default_rng([int(config.get("seed", 0)), int(config["server-round"]),
                                 zlib.crc32(participant.encode())])
    return int(rng.integers(1, epochs)) if rng.random() < fraction else epochs


def handle_query(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    pid, _ = partition_of(context)
    named = str(context.node_config.get("participant", ""))
    try:
        split = participant_split(config, context)
    except (FileNotFoundError, KeyError, ValueError):
        if not named:
            raise
        # a tenant's node says who it is even when this run exported none of its data (a suspended tenant's)
        content = RecordDict({"participant": ConfigRecord({"participant": named, "partition-id": pid}),
                              "metrics": MetricRecord({"num-examples": 0})})
        return Message(content=content, reply_to=msg)
    content = RecordDict({"participant": ConfigRecord({"participant": split.participant, "partition-id": pid}),
                          "metrics": MetricRecord({"num-examples": len(split.y_train)})})
    return Message(content=content, reply_to=msg)


def run_history(config: ConfigRecord, state: RecordDict) -> list[tuple]:
    """The participant's accountant history in this run: its own, or the server's record of it when that holds
    more steps (this node lost its state: a SuperNode restarted mid-run, and must not start again from zero)."""
    own = load_accountant(state)
    sent = list(zip(config.get("dp-history-noise", []), config.get("dp-history-rate", []),
                    config.get("dp-history-steps", [])))
    if sum(int(h[2]) for h in sent) > sum(int(h[2]) for h in own):
        return [(float(z), float(q), int(k)) for z, q, k in sent]
    return own


def handle_train(msg: Message, context: Context) -> Message:
    from models.federated.model import from_record, to_record
    from models.federated.training import (
        DPSpec,
        dp_training_size,
        epsilon_after,
        noise_multiplier_for,
        planned_history,
        train_local,
    )

    config = msg.content["config"]
    split = participant_split(config, context)
    model = _model(config, msg.content["arrays"])
    epochs, batch_size = local_epochs(config, split.participant), int(config["batch-size"])
    dp = None
    history: list = []
    if str(config.get("dp", "none")) == "client":
        dp = DPSpec(float(config["dp-target-epsilon"]), float(config["dp-delta"]), float(config["dp-max-grad-norm"]),
                    int(config["num-rounds"]))
        history = run_history(config, context.state)
    participant = ConfigRecord({"participant": split.participant})
    if epochs < int(config["local-epochs"]) and str(config.get("straggler-policy", "partial")) == "drop":
        # A simulated straggler that must finish every epoch misses the round's deadline: no update is sent (and
        # nothing leaves the device, so no ε is spent).
        metrics = MetricRecord({"num-examples": 0, "straggler-dropped": 1, "epochs-done": epochs})
        return Message(content=RecordDict({"metrics": metrics, "participant": participant}), reply_to=msg)

    budget = float(config.get("epsilon-budget", 0.0))
    spent_before = float(config.get("epsilon-spent-before", 0.0))
    if dp is not None and budget > 0:
        n = (dp_training_size(split.y_train, int(config["num-classes"])) if config.get("balanced-loss")
             else len(split.y_train))
        noise = noise_multiplier_for(dp, n, batch_size, epochs)
        would_be = spent_before + epsilon_after(planned_history(history, n, batch_size, epochs, noise), dp.delta)
        if would_be > budget:
            # The budget is the participant's own guarantee: it refuses rather than trusting the server.
            metrics = MetricRecord({"num-examples": 0, "budget-exhausted": 1,
                                    "epsilon": spent_before + epsilon_after(history, dp.delta)})
            return Message(content=RecordDict({"metrics": metrics, "participant": participant}), reply_to=msg)

    scaffold = "control" in msg.content.array_records
    server_control = client_control = None
    if scaffold:
        server_control = from_record(msg.content["control"])
        commit_pending_control(context.state, int(config.get("control-accepted-round", 0)))
        if STATE_CONTROL in context.state.array_records:
            client_control = from_record(context.state.array_records[STATE_CONTROL])
        else:
            client_control = [np.zeros_like(c) for c in server_control]
    result = train_local(model, split.x_train, split.y_train, int(config["num-classes"]), epochs=epochs,
                         batch_size=batch_size, lr=float(config["lr"]),
                         seed=int(config.get("seed", 0)) * 1000 + int(config["server-round"]),
                         mu=float(config.get("proximal-mu", 0.0)), balanced=bool(config.get("balanced-loss", False)),
                         server_control=server_control, client_control=client_control, dp=dp,
                         accountant_history=history)
    content = RecordDict({"arrays": to_record(result.arrays, list(msg.content["arrays"].keys())),
                          "participant": participant})
    metrics = {"num-examples": result.num_examples, "train-loss": result.loss, "steps": result.steps,
               "budget-exhausted": 0, "proximal-mu": float(config.get("proximal-mu", 0.0))}
    if dp is not None:
        save_accountant(context.state, result.accountant_history)
        metrics.update({"epsilon": spent_before + result.epsilon, "epsilon-run": result.epsilon,
                        "noise-multiplier": result.noise_multiplier,
                        "dp-history-noise": [float(h[0]) for h in result.accountant_history],
                        "dp-history-rate": [float(h[1]) for h in result.accountant_history],
                        "dp-history-steps": [int(h[2]) for h in result.accountant_history]})
    if scaffold:
        # c_i becomes the new one only once the server has used this update (it says so in a later round's
        # config): an update it rejected, or a round it skipped, leaves c_i as c's sum counts it
        context.state.array_records[STATE_PENDING_CONTROL] = to_record(result.new_control)
        context.state.config_records[STATE_PENDING_ROUND] = ConfigRecord({"round": int(config["server-round"])})
        rounds = int(context.state.config_records[STATE_CONTROL_ROUNDS]["n"]) \
            if STATE_CONTROL_ROUNDS in context.state.config_records else 0
        metrics["control-rounds"] = rounds + 1
        content["control-delta"] = to_record(result.control_delta)
        metrics["control-norm"] = float(np.sqrt(sum(float((c ** 2).sum()) for c in result.new_control)))
    content["metrics"] = MetricRecord(metrics)
    return Message(content=content, reply_to=msg)


def commit_pending_control(state: RecordDict, accepted_round: int) -> None:
    """Make the control variate of the last update c_i if the server aggregated that update (round
    ``accepted_round``); either way the pending one is dropped."""
    if STATE_PENDING_ROUND not in state.config_records:
        return
    pending_round = int(state.config_records[STATE_PENDING_ROUND]["round"])
    if pending_round == accepted_round and STATE_PENDING_CONTROL in state.array_records:
        state.array_records[STATE_CONTROL] = state.array_records[STATE_PENDING_CONTROL]
        rounds = int(state.config_records[STATE_CONTROL_ROUNDS]["n"]) if STATE_CONTROL_ROUNDS in state.config_records \
            else 0
        state.config_records[STATE_CONTROL_ROUNDS] = ConfigRecord({"n": rounds + 1})
    del state.config_records[STATE_PENDING_ROUND]
    if STATE_PENDING_CONTROL in state.array_records:
        del state.array_records[STATE_PENDING_CONTROL]


def load_accountant(state: RecordDict) -> list[tuple]:
    """The participant's Opacus accountant history (noise, sample rate, steps) kept in its node state."""
    if STATE_ACCOUNTANT not in state.config_records:
        return []
    saved = state.config_records[STATE_ACCOUNTANT]
    return list(zip(saved["noise"], saved["rate"], saved["steps"]))


def save_accountant(state: RecordDict, history: list[tuple]) -> None:
    state.config_records[STATE_ACCOUNTANT] = ConfigRecord({
        "noise": [float(h[0]) for h in history], "rate": [float(h[1]) for h in history],
        "steps": [int(h[2]) for h in history]})


def handle_evaluate(msg: Message, context: Context) -> Message:
    from models.federated.model import accuracy_and_loss

    config = msg.content["config"]
    split = participant_split(config, context)
    model = _model(config, msg.content["arrays"])
    acc, loss = accuracy_and_loss(model, split.x_test, split.y_test)
    content = RecordDict({"metrics": MetricRecord({"num-examples": len(split.y_test), "accuracy": acc, "loss": loss}),
                          "participant": ConfigRecord({"participant": split.participant})})
    return Message(content=content, reply_to=msg)


app = ClientApp()
app.query()(handle_query)
app.train()(handle_train)
app.evaluate()(handle_evaluate)
