"""A ClientApp for robustness tests: the real handlers, with real faults injected per partition; and a
ServerApp (the real ``run_federation``) whose process fails after a given round.

Nothing in Flower is mocked: a crash is an exception raised inside the ClientApp, a slow
participant really sleeps past the round timeout, a poisoned update really carries NaN or a huge
norm through Flower's messages.
"""

from __future__ import annotations

import time

import numpy as np

from flwr.app import Context, Message, MessageType
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from models.federated.client_app import handle_evaluate, handle_query, handle_train
from models.federated.model import from_record, to_record


def build(crash: list[int] | dict = (), nan: list[int] = (), huge: list[int] = (), sleep: dict | None = None,
          sleep_rounds: list[int] = (), control: dict | None = None, warm: bool = False) -> ClientApp:
    """``crash``: partitions that crash in every round, or partition -> the rounds it crashes in (empty: every
    round). ``sleep``: partition -> seconds it sleeps before training (in ``sleep_rounds``; empty: every round).
    ``control``: partition -> "missing" (no SCAFFOLD Δc in the reply), "scalar" (one scalar per array, which
    would broadcast), "scaled" (Δc × 1000) or "inf" (an inf in Δc). ``warm``: a node imports the training stack
    (torch, Opacus) when it is asked who it is, before round 1, so that a short round timeout measures the
    round's work and not the simulation workers' first imports (a test of round 3's deadline then needs no
    timeout long enough for a cold round 1 on a loaded machine)."""
    crash = {int(k): list(v) for k, v in crash.items()} if isinstance(crash, dict) else {int(k): [] for k in crash}
    sleep = {int(k): float(v) for k, v in (sleep or {}).items()}
    control = {int(k): str(v) for k, v in (control or {}).items()}
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        if warm:
            import opacus  # noqa: F401

            import models.federated.training  # noqa: F401
        return handle_query(msg, context)

    app.evaluate()(handle_evaluate)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        if pid in crash and (not crash[pid] or rnd in crash[pid]):
            raise RuntimeError(f"participant {pid} crashed mid-round")
        if pid in sleep and (not sleep_rounds or rnd in sleep_rounds):
            time.sleep(sleep[pid])
        reply = handle_train(msg, context)
        if pid in nan or pid in huge:
            names = list(reply.content["arrays"].keys())
            arrays = from_record(reply.content["arrays"])
            if pid in nan:
                arrays[0][0, 0] = np.nan
            else:
                arrays = [a + 1e4 for a in arrays]
            reply.content["arrays"] = to_record(arrays, names)
        if pid in control:
            deltas = from_record(reply.content["control-delta"])
            if control[pid] == "missing":
                del reply.content["control-delta"]
            elif control[pid] == "scaled":  # right shape, finite, 1000 times too large
                reply.content["control-delta"] = to_record([d * 1e3 for d in deltas])
            elif control[pid] == "scalar":
                reply.content["control-delta"] = to_record([np.array(1e3, dtype=np.float32) for _ in deltas])
            else:
                deltas[0][0, 0] = np.inf
                reply.content["control-delta"] = to_record(deltas)
        return reply

    return app


class ServerCrashed(RuntimeError):
    pass


class _CrashingGrid:
    """The real Grid, except that round ``after_round + 1``'s training messages make it raise: before they are
    sent, or (``mid_round``) once they were sent and the participants' replies are back."""

    def __init__(self, grid: Grid, after_round: int, mid_round: bool = False):
        self._grid, self._after, self._mid_round, self._train_rounds = grid, after_round, mid_round, 0

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *args, **kwargs):
        messages = list(messages)
        if any(m.metadata.message_type == MessageType.TRAIN for m in messages):
            self._train_rounds += 1
            if self._train_rounds > self._after:
                if self._mid_round:
                    self._grid.send_and_receive(messages, *args, **kwargs)
                    raise ServerCrashed(f"server process failed in round {self._after + 1}, with the replies in")
                raise ServerCrashed(f"server process failed after round {self._after}")
        return self._grid.send_and_receive(messages, *args, **kwargs)


def crashing_server(run_config: dict, after_round: int, mid_round: bool = False) -> ServerApp:
    from models.federated.config import FederatedConfig
    from models.federated.server_app import run_federation

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(_CrashingGrid(grid, after_round, mid_round), FederatedConfig.from_mapping(run_config))

    return app
