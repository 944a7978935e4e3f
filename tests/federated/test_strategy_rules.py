"""The server strategy's participant rules, fed Flower messages directly (no simulation engine): who may be
sampled, which replies are used, and what ε is recorded. The simulation tests run the same code end to end."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from models.federated.config import FederatedConfig
from models.federated.model import from_record, to_record
from models.federated.strategies import PlatformStrategy, Scaffold, build_strategy


class Grid:
    """A grid of nodes that answer discovery queries with the participant each names (what the ClientApp's
    ``query`` handler answers); training replies are made by the tests."""

    def __init__(self, participants: dict[int, str]):
        self.names = participants
        self.queried: list[int] = []
        self.outbox: dict[str, Message] = {}

    def get_node_ids(self):
        return list(self.names)

    def answer(self, query: Message) -> Message | None:
        return Message(content=RecordDict({"participant": ConfigRecord(
            {"participant": self.names[query.metadata.dst_node_id]})}), reply_to=query)

    def push_messages(self, messages):
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = f"query-{len(self.queried)}"
            self.queried.append(m.metadata.dst_node_id)
            ids.append(m.metadata.message_id)
            if (answer := self.answer(m)) is not None:
                self.outbox[m.metadata.message_id] = answer
        return ids

    def pull_messages(self, message_ids):
        return [self.outbox.pop(i) for i in list(message_ids) if i in self.outbox]

    def send_and_receive(self, messages, timeout=None):  # Flower's: push, then pull until all answered or timeout
        ids = set(self.push_messages(messages))
        replies = self.pull_messages(ids)
        if len(replies) < len(ids) and timeout and getattr(self, "clock", None):
            self.clock.sleep(timeout)
        return replies


WEIGHTS = [np.zeros((2, 3), np.float32), np.zeros(3, np.float32)]


def arrays(values=WEIGHTS) -> ArrayRecord:
    return to_record([np.asarray(v, np.float32) for v in values], ["w", "b"])


def reply(to: Message, update=None, **metrics) -> Message:
    content = RecordDict({"metrics": MetricRecord({"num-examples": 10, "train-loss": 0.5, **metrics})})
    if update is not False:
        content["arrays"] = arrays(update if update is not None else [w + 0.1 for w in WEIGHTS])
    return Message(content=content, reply_to=to)


def start_round(strategy, grid, server_round=1):
    messages = list(strategy.configure_train(server_round, arrays(), ConfigRecord(), grid))
    return {m.metadata.dst_node_id: m for m in messages}


def config(**settings) -> FederatedConfig:
    return FederatedConfig(**{"min_participants": 1, "fraction_train": 1.0, **settings})


def test_a_spent_budget_keeps_the_participant_out_of_runs_without_dp_sgd():
    """The budget was only applied to DP-SGD runs: a tenant that had spent it trained with no bound at all in the
    next run without DP."""
    for dp in ("none", "client"):
        strategy = PlatformStrategy(config(dp=dp, epsilon_budget=8.0, epsilon_spent="t-a=8.0,t-b=7.5"), {})
        assert strategy.exhausted == {"t-a"}
        sent = start_round(strategy, Grid({1: "t-a", 2: "t-b"}))
        assert [strategy.participants[n] for n in sent] == ["t-b"]


def test_two_nodes_naming_one_participant_train_once():
    strategy = PlatformStrategy(config(), {})
    sent = start_round(strategy, Grid({3: "t-b", 1: "t-a", 2: "t-a"}))
    assert sorted(sent) == [1, 3]
    assert {"event": "duplicate-participant", "participant": "t-a", "node": 2, "kept": 1} in strategy.events
    start_round(strategy, Grid({3: "t-b", 1: "t-a", 2: "t-a"}), 2)
    assert sum(e["event"] == "duplicate-participant" for e in strategy.events) == 1  # recorded once


def test_replies_without_records_are_rejected_not_raised():
    strategy = PlatformStrategy(config(), {})
    sent = start_round(strategy, Grid({1: "t-a", 2: "t-b", 3: "t-c", 4: "t-d"}))
    no_metrics = Message(content=RecordDict({"arrays": arrays()}), reply_to=sent[2])
    nan_loss = reply(sent[4], **{"train-loss": float("nan")})
    model, _ = strategy.aggregate_train(1, [reply(sent[1]), no_metrics, reply(sent[3], update=False), nan_loss])
    record = strategy.rounds[1]
    assert record["accepted"] == ["t-a"]
    assert {r["participant"]: r["reason"] for r in record["rejected"]} == {
        "t-b": "no metrics in the reply", "t-c": "no model update in the reply",
        "t-d": "no finite example count and training loss"}
    assert np.allclose(from_record(model)[0], 0.1)


@pytest.mark.filterwarnings("ignore:Optimal order is the smallest alpha")  # tiny noise: a huge ε, as meant
def test_central_dp_records_a_zero_or_misshapen_update_instead_of_crashing():
    """Flower's clipping divides by the update's norm (a participant sending the global model back: division by
    zero) and zips the arrays strictly (one array too few: ValueError): either ended the whole run."""
    central, base = build_strategy(config(central_dp_noise=0.01, central_dp_clip=1.0), {})
    sent = start_round(central, Grid({1: "t-a", 2: "t-b", 3: "t-c"}))
    unchanged = reply(sent[1], update=WEIGHTS)
    short = Message(content=RecordDict({"arrays": to_record([WEIGHTS[0]], ["w"]),
                                        "metrics": MetricRecord({"num-examples": 10, "train-loss": 0.5})}),
                    reply_to=sent[2])
    large = reply(sent[3], update=[w + 10.0 for w in WEIGHTS])
    model, _ = central.aggregate_train(1, [unchanged, short, large])
    record = base.rounds[1]
    assert record["accepted"] == ["t-a", "t-c"]
    assert record["rejected"] == [{"participant": "t-b", "reason": "shape mismatch"}]
    # t-c's update was clipped to norm 1 before averaging (the noise is tiny): the average moves by ~1/2
    delta = np.sqrt(sum(float((a ** 2).sum()) for a in from_record(model)))
    assert delta == pytest.approx(0.5, abs=0.1)


def test_a_participant_without_held_out_examples_leaves_the_round_accuracy_finite():
    strategy = PlatformStrategy(config(), {})
    start_round(strategy, Grid({1: "t-a", 2: "t-b"}))
    evaluations = list(strategy.configure_evaluate(1, arrays(), ConfigRecord(), Grid({1: "t-a", 2: "t-b"})))
    replies = [Message(content=RecordDict({"metrics": MetricRecord({"num-examples": n, "accuracy": acc, "loss": loss})}),
                       reply_to=m) for m, (n, acc, loss) in zip(evaluations, [(20, 0.75, 0.4),
                                                                               (0, float("nan"), float("nan"))])]
    metrics = strategy.aggregate_evaluate(1, replies)
    assert metrics["accuracy"] == 0.75 and metrics["loss"] == pytest.approx(0.4)
    assert strategy.rounds[1]["evaluated"] == 1


def test_epsilon_is_never_recorded_lower_than_the_accountant_history_gives():
    """A SuperNode that restarted mid-run lost its accountant history: it reported ε from the rounds after the
    restart only, and that smaller value replaced the one recorded. The server keeps each participant's history,
    sends it back with each round (the node goes on from it) and records the larger ε."""
    from models.federated.client_app import run_history
    from models.federated.training import epsilon_after

    strategy = PlatformStrategy(config(dp="client", epsilon_spent="t-a=0.5"), {})
    grid = Grid({1: "t-a"})
    history = [(1.1, 0.05, 40)]
    sent = start_round(strategy, grid)
    strategy.aggregate_train(1, [reply(sent[1], epsilon=0.5 + epsilon_after(history, 1e-5), **{
        "dp-history-noise": [1.1], "dp-history-rate": [0.05], "dp-history-steps": [40]})])
    first = strategy.epsilon["t-a"]
    assert first == pytest.approx(0.5 + epsilon_after(history, 1e-5))
    # round 2: the config carries the history, and a node without state takes it
    sent = start_round(strategy, grid, 2)
    node_config = sent[1].content["config"]
    assert list(node_config["dp-history-steps"]) == [40]
    assert run_history(node_config, RecordDict()) == history
    # a node that restarted and did not get the history reports one round's worth only: ε does not go down
    strategy.aggregate_train(2, [reply(sent[1], epsilon=0.5 + epsilon_after(history, 1e-5) / 2, **{
        "dp-history-noise": [1.1], "dp-history-rate": [0.05], "dp-history-steps": [20]})])
    assert strategy.epsilon["t-a"] == pytest.approx(first)
    assert strategy.dp_history["t-a"] == history


def test_scaffold_client_keeps_a_control_variate_only_once_the_server_used_its_update():
    """The client made its new c_i its own before the server had decided: after a rejected update (or a skipped
    round) c = mean(c_i) no longer held for the rest of the run."""
    from models.federated.client_app import STATE_CONTROL, STATE_PENDING_CONTROL, STATE_PENDING_ROUND, \
        commit_pending_control

    state = RecordDict()
    state.array_records[STATE_PENDING_CONTROL] = to_record([np.ones(2, np.float32)])
    state.config_records[STATE_PENDING_ROUND] = ConfigRecord({"round": 3})
    commit_pending_control(state, accepted_round=2)  # round 3's update was not used
    assert STATE_CONTROL not in state.array_records and STATE_PENDING_CONTROL not in state.array_records
    state.array_records[STATE_PENDING_CONTROL] = to_record([np.ones(2, np.float32)])
    state.config_records[STATE_PENDING_ROUND] = ConfigRecord({"round": 4})
    commit_pending_control(state, accepted_round=4)
    assert np.array_equal(from_record(state.array_records[STATE_CONTROL])[0], np.ones(2))

    # the server tells each participant the last round whose update went into c
    strategy = Scaffold(config(min_participants=2, max_update_norm=5.0), {"lr": 0.1})
    grid = Grid({1: "t-a", 2: "t-b"})
    sent = start_round(strategy, grid)
    assert {m.content["config"]["control-accepted-round"] for m in sent.values()} == {0}

    def scaffold_reply(message, update):
        x = WEIGHTS
        delta = [(xi - yi) / (1 * 0.1) for xi, yi in zip(x, update)]  # c and c_i are zero in round 1
        answer = reply(message, update=update, steps=1)
        answer.content["control-delta"] = to_record(delta)
        return answer

    strategy.aggregate_train(1, [scaffold_reply(sent[1], [w + 0.1 for w in WEIGHTS]),
                                 scaffold_reply(sent[2], [w + 100.0 for w in WEIGHTS])])  # t-b's norm: rejected
    assert strategy.rounds[1]["skipped"]  # one accepted, two needed: c unchanged, no one's update used
    sent = start_round(strategy, grid, 2)
    assert {m.content["config"]["control-accepted-round"] for m in sent.values()} == {0}
    assert all(not c.any() for c in strategy.server_control)
    strategy.aggregate_train(2, [scaffold_reply(sent[1], [w + 0.1 for w in WEIGHTS]),
                                 scaffold_reply(sent[2], [w + 0.2 for w in WEIGHTS])])
    sent = start_round(strategy, grid, 3)
    assert {m.content["config"]["control-accepted-round"] for m in sent.values()} == {2}


def test_rounds_joined_count_aggregated_rounds_only(lake):
    from platformq_assets.federated import participants as registry

    registry.enrol(lake, "t-a")
    rows = registry.list_participants(lake)
    registry.record_run(lake, rows, {"participants": ["t-a"], "rounds": [
        {"round": 1, "accepted": ["t-a"], "skipped": True}, {"round": 2, "accepted": ["t-a"]}]})
    assert {r["tenant_id"]: r["rounds_joined"] for r in registry.list_participants(lake)} == {"t-a": 1}


def test_scaffold_server_variate_is_the_mean_over_the_participants_that_can_train():
    """c must stay the mean of the c_i of the participants that may train in this run. N counted every node that said
    who it is: a second node naming a tenant, and the standing SuperNode of a tenant whose budget was spent (never
    sampled, its c_i zero), so c was shrunk towards 0 (here by half); a participant connecting later left c the mean
    over the old N while later Δc_i were divided by the new one."""
    strategy = Scaffold(config(min_participants=2, epsilon_budget=8.0, epsilon_spent="t-c=8.0"), {"lr": 0.1})
    grid = Grid({1: "t-a", 2: "t-a", 3: "t-b", 4: "t-c"})

    def scaffold_reply(message, shift):
        c = from_record(message.content["control"])
        update = [w + shift for w in WEIGHTS]
        answer = reply(message, update=update, steps=1)
        answer.content["control-delta"] = to_record([(x - y) / 0.1 - ci for x, y, ci in zip(WEIGHTS, update, c)])
        return answer

    sent = start_round(strategy, grid)
    assert sorted(sent) == [1, 3]
    strategy.aggregate_train(1, [scaffold_reply(sent[1], 0.1), scaffold_reply(sent[3], 0.3)])
    assert not strategy.rounds[1]["skipped"]
    # Δc_a = −1, Δc_b = −3 (c was 0): the mean over t-a and t-b is −2
    sent = start_round(strategy, Grid({1: "t-a", 2: "t-a", 3: "t-b", 4: "t-c"}), 2)
    assert all(np.allclose(c, -2.0) for c in from_record(sent[1].content["control"]))
    # t-d connects: its c_i is 0, so the mean over the three is −4/3
    sent = start_round(strategy, Grid({1: "t-a", 2: "t-a", 3: "t-b", 4: "t-c", 5: "t-d"}), 3)
    assert sorted(sent) == [1, 3, 5]
    assert all(np.allclose(c, -4.0 / 3) for c in from_record(sent[5].content["control"]))


def test_a_malformed_dp_reply_is_still_charged_its_epsilon():
    """Under DP-SGD a reply with a NaN loss, no example count or no model update was rejected before its ε was
    recorded, and its in-flight bound was dropped: the participant had trained with noise and released an update,
    but that round was never charged."""
    strategy = PlatformStrategy(config(dp="client", dp_target_epsilon=4.0, epsilon_spent="t-a=1.0,t-b=0.5,t-c=2.0"),
                                {})
    sent = start_round(strategy, Grid({1: "t-a", 2: "t-b", 3: "t-c", 4: "t-d", 5: "t-e"}))
    nan_loss = reply(sent[1], epsilon=0.0, **{"train-loss": float("nan")})  # its report is not taken: the bound
    no_update = reply(sent[2], update=False, epsilon=float("nan"))  # no valid ε: charged the run's bound
    no_metrics = Message(content=RecordDict({"arrays": arrays()}), reply_to=sent[3])  # likewise
    no_count = reply(sent[4], **{"num-examples": float("inf"), "epsilon": 0.9})  # likewise (not 0.9)
    strategy.aggregate_train(1, [nan_loss, no_update, no_metrics, no_count, reply(sent[5], epsilon=0.3)])
    record = strategy.rounds[1]
    assert record["accepted"] == ["t-e"]
    assert sorted(r["participant"] for r in record["rejected"]) == ["t-a", "t-b", "t-c", "t-d"]
    # the in-flight bound: spent before the run + the run's target (4.0)
    assert strategy.epsilon == {"t-a": pytest.approx(5.0), "t-b": pytest.approx(4.5), "t-c": pytest.approx(6.0),
                                "t-d": pytest.approx(4.0), "t-e": pytest.approx(0.3)}
    # a later malformed reply never lowers what was charged
    sent = start_round(strategy, Grid({1: "t-a", 2: "t-b", 3: "t-c", 4: "t-d", 5: "t-e"}), 2)
    strategy.aggregate_train(2, [reply(sent[1], epsilon=0.0, **{"train-loss": float("nan")})])
    assert strategy.epsilon["t-a"] == pytest.approx(5.0)
    assert strategy.epsilon["t-b"] == pytest.approx(4.5)


class GridWithUnnamedNode(Grid):
    """Nodes 8 and 9 answer the query without saying which participant they are (another app, an older ClientApp)."""

    def __init__(self, participants, unnamed=(8, 9)):
        super().__init__(participants)
        self.unnamed = list(unnamed)

    def get_node_ids(self):
        return [*self.names, *self.unnamed]

    def answer(self, query):
        node = query.metadata.dst_node_id
        if node not in self.unnamed:
            return super().answer(query)
        blank = RecordDict({"participant": ConfigRecord({"participant": ""})}) if self.unnamed.index(node) else RecordDict()
        return Message(content=blank, reply_to=query)


def test_a_node_that_names_no_participant_is_recorded_and_never_sampled():
    """A query reply without a participant name raised KeyError in discovery and ended the whole run."""
    strategy = PlatformStrategy(config(), {})
    grid = GridWithUnnamedNode({1: "t-a", 2: "t-b"})
    sent = start_round(strategy, grid)
    assert sorted(sent) == [1, 2]
    assert {"event": "unnamed-node", "node": 8} in strategy.events
    assert {"event": "unnamed-node", "node": 9} in strategy.events
    assert sorted(grid.queried) == [1, 2, 8, 9]
    sent = start_round(strategy, grid, 2)
    assert sorted(sent) == [1, 2]
    assert sorted(grid.queried) == [1, 2, 8, 9]  # not asked again
    assert sum(e["event"] == "unnamed-node" for e in strategy.events) == 2


class GridWithSilentNode(Grid):
    """Node 7 is connected but does not answer the query (until ``late`` is set)."""

    def __init__(self, participants):
        super().__init__({**participants, 7: "t-late"})
        self.late = False
        self.held: dict[str, Message] = {}

    def answer(self, query):
        if query.metadata.dst_node_id == 7:
            self.held[query.metadata.message_id] = super().answer(query)
            return None
        return super().answer(query)

    def pull_messages(self, message_ids):
        if self.late:
            self.outbox.update(self.held)
            self.held.clear()
        return super().pull_messages(message_ids)


def test_a_node_that_never_answers_the_query_is_waited_for_once(monkeypatch):
    """A node online that never answered the query was asked again in every training and evaluation step, each
    waiting discovery-timeout (120 s): 240 s a round. It is waited for once; a late answer is still taken up."""
    from models.federated import strategies

    class Clock:
        now = 0.0

        def monotonic(self):
            return self.now

        def sleep(self, seconds):
            self.now += seconds

    clock = Clock()
    monkeypatch.setattr(strategies, "time", clock)
    strategy = PlatformStrategy(config(discovery_timeout=120.0), {})
    grid = GridWithSilentNode({1: "t-a", 2: "t-b"})
    grid.clock = clock
    sent = start_round(strategy, grid)
    assert sorted(sent) == [1, 2]
    assert 120 <= clock.now < 130
    list(strategy.configure_evaluate(1, arrays(), ConfigRecord(), grid))
    sent = start_round(strategy, grid, 2)
    assert sorted(sent) == [1, 2]
    assert clock.now < 130  # not waited for again
    assert grid.queried.count(7) == 1
    grid.late = True  # its answer arrives: it takes part from then on
    sent = start_round(strategy, grid, 3)
    assert sorted(sent) == [1, 2, 7] and strategy.participants[7] == "t-late"
    assert grid.queried.count(7) == 1
    assert {"event": "query-unanswered", "node": 7} in strategy.events


class GridDroppingAFailedPush(Grid):
    """The simulation engine's InMemoryGrid leaves a message it could not store (a node gone since
    get_node_ids) out of push_messages' list, where the gRPC grid puts None."""

    def __init__(self, participants, gone):
        super().__init__(participants)
        self.gone = gone

    def push_messages(self, messages):
        messages = list(messages)
        ids = super().push_messages(messages)
        return [i for i, m in zip(ids, messages) if m.metadata.dst_node_id != self.gone]


def test_a_query_reply_goes_to_the_node_that_was_asked_when_a_push_failed():
    """Pairing the pushed ids with the nodes by position gave node 3 the tenant of node 2's answer (and with
    it that tenant's DP history, spent ε and SCAFFOLD c_i) once node 2's push had failed."""
    strategy = PlatformStrategy(config(), {})
    grid = GridDroppingAFailedPush({1: "t-a", 2: "t-b", 3: "t-c"}, gone=2)
    strategy.discover(grid)
    assert strategy.participants == {1: "t-a", 3: "t-c"}
