"""Server strategies: FedAvg, FedProx and SCAFFOLD on Flower's Message API, with the platform's
participant rules.

All three share :class:`PlatformStrategy` (a ``flwr.serverapp.strategy.FedAvg``):

* **participants** – before sampling, unknown nodes are asked (a ``query`` message) which
  participant they are; suspended participants, those whose ε budget is spent and (when
  ``allowed-participants`` names them) any not named are never sampled, for training or evaluation; a node
  that answers without a participant name is never sampled, and one that does not answer within
  ``discovery_timeout`` is not waited for again (its late answer is still taken up);
* **screening** – an update with a NaN/inf or with ‖w_i − w_t‖ above ``max_update_norm`` is
  rejected and recorded; a node that errors (crash) or does not answer within the round
  timeout is recorded as failed;
* **minimum participants** – the round aggregates when at least ``min_participants`` updates
  are accepted, and is skipped (global model unchanged, recorded) otherwise;
* **history** – every round's sample, accepted/failed/rejected participants, metrics and the
  ε each participant has spent, for the caller to report.

FedProx is FedAvg plus ``proximal-mu`` in the train config (what ``flwr``'s FedProx does); the
client adds the proximal term. SCAFFOLD (Karimireddy et al. 2020, option II) is ours: the server
sends its control variate ``c`` with the model, clients keep ``c_i`` across rounds and return
``Δc_i``, and c is kept the mean of the c_i over the N participants that may train in the run (each node
that was ever eligible once: not a second node naming a tenant, nor a suspended or budget-exhausted one).
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterable
from logging import INFO, WARNING

import numpy as np

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore.differential_privacy import compute_stdv

from models.federated.config import FederatedConfig
from models.federated.model import from_record, to_record


def screen_update(update: list[np.ndarray], current: list[np.ndarray], max_norm: float) -> str | None:
    """Why an update must be rejected, or None."""
    if len(update) != len(current) or any(u.shape != c.shape for u, c in zip(update, current)):
        return "shape mismatch"
    if not all(np.isfinite(u).all() for u in update):
        return "non-finite values (NaN/inf)"
    norm = float(np.sqrt(sum(float(((u - c).astype(np.float64) ** 2).sum()) for u, c in zip(update, current))))
    if norm > max_norm:
        return f"update norm {norm:.3g} above {max_norm:g}"
    return None


def _finite_metrics(msg: Message, names: tuple[str, ...]) -> bool:
    if "metrics" not in msg.content.metric_records:
        return False
    metrics = msg.content["metrics"]
    return all(name in metrics and isinstance(metrics[name], (int, float)) and np.isfinite(float(metrics[name]))
               for name in names)


def malformed_reply(msg: Message) -> str | None:
    """Why a training reply cannot be used at all (its records missing), or None: rejected like a bad update."""
    if "metrics" not in msg.content.metric_records:
        return "no metrics in the reply"
    metrics = msg.content["metrics"]
    if int(metrics.get("straggler-dropped", 0)) or int(metrics.get("budget-exhausted", 0)):
        return None  # no update expected
    if "arrays" not in msg.content.array_records:
        return "no model update in the reply"
    if not _finite_metrics(msg, ("num-examples", "train-loss")) or float(metrics["num-examples"]) <= 0:
        return "no finite example count and training loss"
    return None


def _steps(history: list) -> int:
    return sum(int(h[2]) for h in history)


def error_summary(reason: str) -> str:
    """The last meaningful line of a ClientApp error (simulation wraps it in a Ray traceback)."""
    lines = [line.strip() for line in reason.splitlines() if line.strip() and set(line.strip()) - set("^~")]
    return (lines[-1] if lines else "error")[-300:]


class PlatformStrategy(FedAvg):
    def __init__(self, cfg: FederatedConfig, client_config: dict):
        super().__init__(fraction_train=cfg.fraction_train, fraction_evaluate=1.0,
                         min_train_nodes=cfg.min_participants, min_evaluate_nodes=1,
                         min_available_nodes=cfg.min_participants)
        self.cfg = cfg
        self.client_config = client_config
        self.rng = random.Random(cfg.seed)
        self.participants: dict[int, str] = {}
        self.unnamed: set[int] = set()  # nodes whose query reply named no participant
        self._pending_queries: dict[str, int] = {}  # message id of a query not answered yet: its node
        self.suspended = cfg.suspended_set
        self.allowed = cfg.allowed_set  # empty: any participant
        self.spent_before = cfg.epsilon_spent_map
        # a participant whose lifetime budget was spent in earlier runs is never sampled, not even once to refuse,
        # whatever this run's privacy: a run without DP-SGD would have it train with no bound at all
        self.exhausted: set[str] = ({p for p, eps in self.spent_before.items() if eps >= cfg.epsilon_budget}
                                    if cfg.epsilon_budget > 0 else set())
        self.epsilon: dict[str, float] = {}
        # each participant's DP-SGD accountant history in this run (noise, sample rate, steps), as its replies
        # report it: sent back with every round, so a node that lost its state (a SuperNode restarted) goes on
        # from it instead of from nothing, and its ε is computed here too (the larger counts)
        self.dp_history: dict[str, list[tuple[float, float, int]]] = {}
        # participants sent a DP round's training message whose replies are not recorded yet, with the most ε
        # they can have spent by then (see configure_train); and those that never answered one
        self.in_flight: dict[str, float] = {}
        self.unanswered: set[str] = set()
        self.rounds: dict[int, dict] = {}
        self.events: list[dict] = []
        # every participant eligible at some point of this run (one that ran out of budget mid-run stays: its c_i
        # is still in SCAFFOLD's sum)
        self.ever_eligible: set[str] = set()
        self._sampled: dict[int, str] = {}
        self._current: list[np.ndarray] = []
        self._round = 0
        self.uniform_weights = False  # True under central DP: every accepted update weighs 1/m
        self.on_round = None  # called when the history changed: after each aggregation, and before a DP round starts

    def _round_done(self) -> None:
        if self.on_round is not None:
            self.on_round()

    # -- participants ------------------------------------------------------
    def discover(self, grid: Grid) -> list[int]:
        deadline = time.monotonic() + self.cfg.discovery_timeout
        while len(nodes := list(grid.get_node_ids())) < self.min_available_nodes and time.monotonic() < deadline:
            log(INFO, "waiting for nodes: %d connected, %d needed", len(nodes), self.min_available_nodes)
            time.sleep(1)
        # A node is asked once; its answer is read whenever it comes (a node that answered no query within
        # discovery_timeout is not waited for again in every training and evaluation step, only its late answer
        # taken up), and one that answered without a participant name is never asked again nor sampled.
        ask = [n for n in nodes if n not in self.participants and n not in self.unnamed
               and n not in self._pending_queries.values()]
        waiting: set[str] = set()
        if ask:
            config = ConfigRecord(dict(self.client_config))
            queries = [Message(content=RecordDict({"config": config}), message_type=MessageType.QUERY, dst_node_id=n)
                       for n in ask]
            # by the id each pushed message was given (set on it by either grid), not by position: the simulation
            # engine's grid leaves a message it could not store out of the list (the gRPC one puts None there), and
            # pairing by position would give the next node's answer another node's tenant
            pushed = {message_id for message_id in grid.push_messages(queries) if message_id}
            for query in queries:
                if query.metadata.message_id in pushed:
                    self._pending_queries[query.metadata.message_id] = query.metadata.dst_node_id
                    waiting.add(query.metadata.message_id)
        deadline = time.monotonic() + (self.cfg.discovery_timeout if waiting else 0.0)
        while self._pending_queries:
            for reply in grid.pull_messages(list(self._pending_queries)):
                node = self._pending_queries.pop(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
                self._query_answered(node, reply)
            if not waiting & self._pending_queries.keys() or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        for message_id in waiting & self._pending_queries.keys():
            node = self._pending_queries[message_id]
            self.events.append({"event": "query-unanswered", "node": node})
            log(WARNING, "node %d did not say who it is within %gs: not waited for again", node,
                self.cfg.discovery_timeout)
        return [n for n in nodes if n in self.participants]

    def _query_answered(self, node: int, reply: Message) -> None:
        if reply.has_error():
            self.events.append({"event": "query-failed", "node": node, "reason": reply.error.reason})
            return
        name = ""
        if "participant" in reply.content.config_records and "participant" in reply.content["participant"]:
            name = str(reply.content["participant"]["participant"])
        if not name:  # not one of our ClientApps (or one that cannot tell): never sampled, not asked again
            self.unnamed.add(node)
            self.events.append({"event": "unnamed-node", "node": node})
            log(WARNING, "node %d answered without naming a participant: left out", node)
            return
        self.participants[node] = name

    def eligible(self, grid: Grid) -> list[int]:
        nodes, claimed = [], {}
        for n in sorted(self.discover(grid)):
            who = self.participants[n]
            if who in claimed:  # two nodes naming one tenant would train on its data twice, under one ε
                event = {"event": "duplicate-participant", "participant": who, "node": n, "kept": claimed[who]}
                if event not in self.events:
                    self.events.append(event)
                    log(WARNING, "node %d also claims participant %s (node %d): left out", n, who, claimed[who])
                continue
            claimed[who] = n
            if who in self.suspended or who in self.exhausted:
                continue
            if self.allowed and who not in self.allowed:  # e.g. a tenant without consent whose node still runs
                event = {"event": "not-a-participant", "participant": who, "node": n}
                if event not in self.events:
                    self.events.append(event)
                    log(WARNING, "node %d names %s, which may not take part in this run: left out", n, who)
                continue
            nodes.append(n)
            self.ever_eligible.add(who)
        return nodes

    def node_config(self, participant: str) -> dict:
        """Per-participant entries of the round's config."""
        history = self.dp_history.get(participant, [])
        return {"epsilon-spent-before": float(self.spent_before.get(participant, 0.0)),
                "dp-history-noise": [float(h[0]) for h in history], "dp-history-rate": [float(h[1]) for h in history],
                "dp-history-steps": [int(h[2]) for h in history]}

    def extra_records(self, arrays: ArrayRecord) -> dict:
        return {}

    def _messages(self, node_ids: list[int], arrays: ArrayRecord, config: ConfigRecord, kind: str,
                  with_extra: bool) -> list[Message]:
        extra = self.extra_records(arrays) if with_extra else {}
        messages = []
        for node in node_ids:
            participant = self.participants[node]
            node_config = ConfigRecord({**dict(config), **self.client_config, **self.node_config(participant)})
            messages.append(Message(content=RecordDict({"arrays": arrays, "config": node_config, **extra}),
                                    message_type=kind, dst_node_id=node))
        return messages

    # -- training ----------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        eligible = self.eligible(grid)
        size = min(len(eligible), max(int(len(eligible) * self.fraction_train), self.min_train_nodes))
        sampled = sorted(self.rng.sample(eligible, size))
        self._sampled = {n: self.participants[n] for n in sampled}
        self._current = from_record(arrays)
        self._round = server_round
        config["server-round"] = server_round
        self.rounds[server_round] = {"round": server_round, "sampled": sorted(self._sampled.values()),
                                     "eligible": len(eligible),
                                     "accepted": [], "failed": [], "rejected": [], "skipped": False,
                                     "started": time.monotonic(), "in_progress": True}
        log(INFO, "configure_train: %d of %d eligible participants sampled (suspended: %s, budget spent: %s)",
            len(sampled), len(eligible), sorted(self.suspended), sorted(self.exhausted))
        if self.cfg.dp == "client":
            # Once these messages leave, each participant trains and sends a noised update, whether or not this
            # server lives to record its reply. Its noise is calibrated so that the whole run costs at most
            # dp-target-epsilon, so that (plus what it spent before) bounds what it has spent: on disk before
            # the messages leave, so a server dying mid-round still has it charged (more, never less).
            self.in_flight.update({p: self.spent_before.get(p, 0.0) + self.cfg.dp_target_epsilon
                                   for p in self._sampled.values()})
            self._round_done()
        return self._messages(sampled, arrays, config, MessageType.TRAIN, with_extra=True)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        record = self.rounds[server_round]
        record.pop("in_progress", None)
        accepted: list[Message] = []
        replied = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            replied.add(node)
            who = self.participants.get(node, str(node))
            if msg.has_error():
                record["failed"].append({"participant": who, "reason": error_summary(msg.error.reason)})
                continue
            malformed = malformed_reply(msg)
            if malformed is not None:
                self.charge_malformed(who, msg)
                record["rejected"].append({"participant": who, "reason": malformed})
                log(WARNING, "round %d: reply from %s rejected: %s", server_round, who, malformed)
                continue
            metrics = msg.content["metrics"]
            record.setdefault("clients", {})[who] = {k: v for k, v in dict(metrics).items()
                                                     if not k.startswith("dp-history-")}
            self.record_epsilon(who, metrics)
            if int(metrics.get("straggler-dropped", 0)):
                record["failed"].append({"participant": who, "reason": "straggler: missed the round deadline after "
                                         f"{int(metrics.get('epochs-done', 0))} of {self.cfg.local_epochs} epochs"})
                continue
            if int(metrics.get("budget-exhausted", 0)):
                self.exhausted.add(who)
                record["failed"].append({"participant": who, "reason": "epsilon budget spent"})
                continue
            reason = screen_update(from_record(msg.content["arrays"]), self._current, self.cfg.max_update_norm)
            if reason is None:
                reason = self.screen_extra(msg)
            if reason is not None:
                record["rejected"].append({"participant": who, "reason": reason})
                log(WARNING, "round %d: update from %s rejected: %s", server_round, who, reason)
                continue
            accepted.append(msg)
        for node, who in self._sampled.items():
            if node not in replied:
                record["failed"].append({"participant": who, "reason": f"no reply within {self.cfg.round_timeout:g}s"})
                self.unanswered.add(who)
        # A reply's ε is recorded (self.epsilon). A participant that did not reply in time may still have trained
        # and sent its noised update, only late: it stays charged its bound for the rest of the run.
        self.in_flight = {p: eps for p, eps in self.in_flight.items() if p in self.unanswered}
        # a fixed order (not arrival order) for the float sums below: the same inputs give the same model
        accepted.sort(key=lambda m: self.participants.get(m.metadata.src_node_id, str(m.metadata.src_node_id)))
        record["accepted"] = [self.participants.get(m.metadata.src_node_id, str(m.metadata.src_node_id))
                              for m in accepted]
        record["participants"] = len(accepted)
        if self.cfg.dp == "client":  # without DP-SGD there is no ε to report (it is not 0: it is unbounded)
            record["epsilon_max"] = max(self.epsilon.values(), default=0.0)
        if len(accepted) < self.cfg.min_participants:
            record["skipped"] = True
            log(WARNING, "round %d skipped: %d accepted updates, %d needed", server_round, len(accepted),
                self.cfg.min_participants)
            self._round_done()
            return None, None
        weights = np.array([1.0 if self.uniform_weights else float(m.content["metrics"]["num-examples"])
                            for m in accepted])
        weights = weights / weights.sum()
        record["weights"] = {who: float(w) for who, w in zip(record["accepted"], weights)}
        updates = [from_record(m.content["arrays"]) for m in accepted]
        averaged = [sum(w * u[i] for w, u in zip(weights, updates)).astype(np.float32)
                    for i in range(len(self._current))]
        self.after_aggregate(accepted)
        loss = float(sum(w * float(m.content["metrics"]["train-loss"]) for w, m in zip(weights, accepted)))
        record["train_loss"] = loss
        names = list(accepted[0].content["arrays"].keys())
        self._round_done()
        metrics = {"train-loss": loss, "participants": len(accepted)}
        if "epsilon_max" in record:
            metrics["epsilon-max"] = record["epsilon_max"]
        return to_record(averaged, names), MetricRecord(metrics)

    def record_epsilon(self, who: str, metrics: MetricRecord) -> None:
        """The ε a reply reports, never less than its accountant history gives or than recorded before: a node
        that restarted reports from a shorter history, and two replies must not lower what was spent."""
        spent = [self.epsilon.get(who, 0.0)]
        if "epsilon" in metrics:
            spent.append(float(metrics["epsilon"]))
        if "dp-history-steps" in metrics:
            reported = list(zip(metrics["dp-history-noise"], metrics["dp-history-rate"], metrics["dp-history-steps"]))
            if _steps(reported) >= _steps(self.dp_history.get(who, [])):
                self.dp_history[who] = [(float(z), float(q), int(k)) for z, q, k in reported]
            if self.dp_history.get(who):
                from models.federated.training import epsilon_after

                spent.append(self.spent_before.get(who, 0.0) + epsilon_after(self.dp_history[who], self.cfg.dp_delta))
        if len(spent) > 1 or who in self.epsilon:
            self.epsilon[who] = max(spent)

    def charge_malformed(self, who: str, msg: Message) -> None:
        """Under DP-SGD a malformed reply (no update, no finite loss or example count) still comes from a
        participant that was sent the round and may have trained with noise and released an update: it is charged
        the round's in-flight bound (more than it can have spent, never less), never less than recorded. The ε
        such a reply reports is not taken: a reply that is malformed anyway could report 0 and spend nothing."""
        if self.cfg.dp != "client" or who not in self.in_flight:
            return
        self.epsilon[who] = max(self.epsilon.get(who, 0.0), self.in_flight[who])

    def screen_extra(self, msg: Message) -> str | None:
        """Why a reply's strategy-specific records must be rejected, or None."""
        return None

    def after_aggregate(self, accepted: list[Message]) -> None:
        pass

    # -- evaluation --------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if not self.cfg.client_evaluation:
            return []
        config["server-round"] = server_round
        return self._messages(self.eligible(grid), arrays, config, MessageType.EVALUATE, with_extra=False)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        # a participant without held-out examples (a small tenant) has nothing to say: its NaN would make the
        # round's accuracy NaN; a reply without finite metrics is left out likewise
        ok = [m for m in replies if not m.has_error() and _finite_metrics(m, ("num-examples", "accuracy", "loss"))
              and float(m.content["metrics"]["num-examples"]) > 0]
        if not ok:
            return None
        n = np.array([float(m.content["metrics"]["num-examples"]) for m in ok])
        acc = float((n * [float(m.content["metrics"]["accuracy"]) for m in ok]).sum() / n.sum())
        loss = float((n * [float(m.content["metrics"]["loss"]) for m in ok]).sum() / n.sum())
        self.rounds.setdefault(server_round, {"round": server_round}).update(
            {"eval_accuracy": acc, "eval_loss": loss, "evaluated": len(ok)})
        self._round_done()
        return MetricRecord({"accuracy": acc, "loss": loss})


class Scaffold(PlatformStrategy):
    server_control: list[np.ndarray] | None = None

    def __init__(self, cfg: FederatedConfig, client_config: dict):
        super().__init__(cfg, client_config)
        # the last round whose update of each participant went into c: its node makes that update's c_i its own
        self.control_accepted: dict[str, int] = {}
        # Σ c_i over the participants (the sum of every Δc_i aggregated): c is this sum over the number of
        # participants that may train, so it stays their mean when one connects later (its c_i is 0)
        self.control_sum: list[np.ndarray] | None = None

    def node_config(self, participant: str) -> dict:
        return {**super().node_config(participant), "control-accepted-round": self.control_accepted.get(participant, 0)}

    def extra_records(self, arrays: ArrayRecord) -> dict:
        if self.control_sum is None:
            self.control_sum = [np.zeros(a.shape, np.float64) for a in from_record(arrays)]
        # called once the round's eligible participants are known (configure_train)
        n = max(len(self.ever_eligible), 1)
        self.server_control = [(s / n).astype(a.dtype) for s, a in zip(self.control_sum, from_record(arrays))]
        return {"control": to_record(self.server_control)}

    def screen_extra(self, msg: Message) -> str | None:
        # Δc_i is added to c for every participant: a missing, misshapen (a scalar would broadcast onto every
        # entry) or non-finite one must be rejected like a bad model update, not crash or poison the run.
        if "control-delta" not in msg.content.array_records:
            return "no control-variate update"
        deltas = from_record(msg.content["control-delta"])
        if len(deltas) != len(self._current) or any(d.shape != c.shape for d, c in zip(deltas, self._current)):
            return "control variate shape mismatch"
        if not all(np.isfinite(d).all() for d in deltas):
            return "non-finite control variate"
        # Option II fixes Δc_i = (x − y_i)/(K·lr) − c from what the server already holds (x, c, the update y_i, the
        # K local steps the participant reports, the lr it sent): a Δc_i of any other size is refused, so a
        # participant cannot steer c for everyone (its size is bounded by max-update-norm / lr).
        steps = msg.content["metrics"].get("steps")
        if steps is None or int(steps) != steps or int(steps) < 0:
            return "no local step count for the control variate"
        scale = 1.0 / (max(int(steps), 1) * float(self.client_config["lr"]))
        update = from_record(msg.content["arrays"])
        expected = [(x.astype(np.float64) - y) * scale - c for x, y, c in zip(self._current, update, self.server_control)]
        error = np.sqrt(sum(float(((d - e) ** 2).sum()) for d, e in zip(deltas, expected)))
        size = np.sqrt(sum(float((e ** 2).sum()) for e in expected))
        if error > 1e-3 * size + 1e-5:
            return f"control variate update inconsistent with the model update ({error:.3g} off in {size:.3g})"
        return None

    def after_aggregate(self, accepted: list[Message]) -> None:
        # N counts the participants that may train (not every node that answered: a second node naming a tenant,
        # or a suspended or budget-exhausted tenant's standing SuperNode, would shrink c towards 0)
        deltas = [from_record(m.content["control-delta"]) for m in accepted]
        self.control_sum = [s + sum(d[i].astype(np.float64) for d in deltas) for i, s in enumerate(self.control_sum)]
        total = max(len(self.ever_eligible), len(accepted))
        self.server_control = [(s / total).astype(c.dtype) for s, c in zip(self.control_sum, self.server_control)]
        for m in accepted:
            self.control_accepted[self.participants[m.metadata.src_node_id]] = int(self._round)


class CentralDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping DP wrapper: each update w_i − w_t is clipped to norm C, and Gaussian
    noise of std z·C/m is added to the average of the m updates. That calibration holds only when each
    averaged update weighs 1/m, and m is the number actually averaged. Flower's wrapper leaves both to the
    wrapped strategy: ours would weigh updates by example count (a large participant would move the average
    by more than the C/m the noise covers), and Flower divides by the number sampled (fewer accepted: too
    little noise) and skips every round in which any participant errored. Here the base strategy averages
    uniformly, m is the number of updates it accepted, and a crashed, timed-out or rejected participant is
    recorded like in any other round. The ε of the run (participant-level) is tracked with Opacus's RDP
    accountant: one Gaussian mechanism of multiplier z per aggregated round, sampled (secretly) at
    sampled/eligible."""

    def __init__(self, strategy: PlatformStrategy, noise_multiplier: float, clipping_norm: float):
        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients=1)
        strategy.uniform_weights = True
        # the ε below counts on subsampling, which amplifies privacy only if no one can predict the sample: the
        # run's seed travels in the run config, so the participants are drawn from the OS's entropy instead
        strategy.rng = random.SystemRandom()
        # Flower draws the noise from numpy's global generator, which any library in the process may seed (a fixed
        # np.random.seed makes the noise predictable, and whoever predicts it subtracts it): a generator of our
        # own, seeded from the OS's entropy, never stored or sent
        self._noise = np.random.Generator(np.random.PCG64(secrets.randbits(128)))
        self._sample_rates: list[float] = []

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        current = self.current_arrays.to_numpy_ndarrays()
        for reply in replies:
            if reply.has_error() or malformed_reply(reply) is not None or "arrays" not in reply.content.array_records:
                continue  # the base strategy records it
            names = list(reply.content["arrays"].keys())
            update = from_record(reply.content["arrays"])
            if screen_update(update, current, float("inf")) is not None:
                continue  # misshapen or not finite: left as it came, for the base strategy to reject and record
            reply.content["arrays"] = to_record(clip_update(update, current, self.clipping_norm), names)
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics  # skipped: the global model is unchanged, nothing was released
        record = self.strategy.rounds[server_round]
        self.num_sampled_clients = record["participants"]
        self._sample_rates.append(len(record["sampled"]) / max(record.get("eligible", 1), 1))
        record["central_noise_std"] = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
        record["central_epsilon"] = self.epsilon()
        return self._add_noise_to_aggregated_arrays(arrays), metrics

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        """Gaussian noise of std z·C/m on every aggregated array, as Flower's wrapper adds it, from our generator."""
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
        noised = {name: Array(np.asarray(value + self._noise.normal(0.0, std, np.shape(value)).astype(value.dtype)))
                  for name, value in zip(aggregated_arrays.keys(), aggregated_arrays.to_numpy_ndarrays())}
        log(INFO, "aggregate_train: central DP noise with %.4f stdev added", std)
        return ArrayRecord(noised)

    def epsilon(self) -> float:
        """The run's ε so far at the configured δ."""
        from opacus.accountants import RDPAccountant

        accountant = RDPAccountant()
        for rate in self._sample_rates:
            accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=rate)
        return float(accountant.get_epsilon(delta=self.strategy.cfg.dp_delta))


def clip_update(update: list[np.ndarray], current: list[np.ndarray], clip: float) -> list[np.ndarray]:
    """w_t + (w_i − w_t)·min(1, C/‖w_i − w_t‖): Flower's fixed clipping, with an unchanged model (norm 0, a
    participant sending the global model back) kept as it is instead of dividing by zero."""
    deltas = [(u.astype(np.float64) - c) for u, c in zip(update, current)]
    norm = float(np.sqrt(sum(float((d ** 2).sum()) for d in deltas)))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return [(c + d * scale).astype(u.dtype) for u, c, d in zip(update, current, deltas)]


def build_strategy(cfg: FederatedConfig, client_config: dict):
    """The configured strategy; the platform rules live in the returned object's ``base``."""
    base = (Scaffold if cfg.strategy == "scaffold" else PlatformStrategy)(cfg, client_config)
    if cfg.strategy == "fedprox":
        client_config["proximal-mu"] = cfg.proximal_mu
    if cfg.central_dp_noise > 0:
        return CentralDP(base, cfg.central_dp_noise, cfg.central_dp_clip), base
    return base, base
