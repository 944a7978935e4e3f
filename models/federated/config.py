"""The federated run configuration: one flat mapping of Flower ``run_config`` keys.

The same keys come from ``pyproject.toml``'s ``[tool.flwr.app.config]`` (``flwr run``),
from ``--run-config`` overrides, or from the dict the simulation runner is given, so one
ServerApp serves the simulation and the deployment engine alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

STRATEGIES = ("fedavg", "fedprox", "scaffold")
# run-config keys that name tenants: for the server only (see participants_file)
PARTICIPANT_RULES = ("suspended", "epsilon-spent", "allowed-participants")


# (field, lower bound, strict): every number a run can be given, with the least it may be
_RANGES = (("num_rounds", 1, False), ("fraction_train", 0, True), ("min_participants", 1, False),
           ("round_timeout", 0, True), ("discovery_timeout", 0, True), ("local_epochs", 1, False),
           ("straggler_fraction", 0, False), ("batch_size", 1, False), ("lr", 0, True), ("proximal_mu", 0, False),
           ("hidden", 1, False), ("alpha", 0, True), ("dp_target_epsilon", 0, True), ("dp_delta", 0, True),
           ("dp_max_grad_norm", 0, True), ("epsilon_budget", 0, False), ("central_dp_noise", 0, False),
           ("central_dp_clip", 0, True), ("max_update_norm", 0, True))


@dataclasses.dataclass(frozen=True)
class FederatedConfig:
    strategy: str = "fedavg"
    num_rounds: int = 3
    fraction_train: float = 1.0
    min_participants: int = 2  # a round with fewer accepted updates is skipped (model unchanged)
    round_timeout: float = 600.0  # seconds the server waits for replies in a round
    discovery_timeout: float = 120.0  # seconds to wait for nodes to connect and say who they are
    local_epochs: int = 1
    straggler_fraction: float = 0.0  # simulated systems heterogeneity: see client_app.local_epochs
    # what becomes of a straggler's work: "partial" (aggregated like any other update: FedProx's inexact local
    # solutions) or "drop" (it missed the round's deadline: no update, recorded as failed, which is what FedAvg
    # with a fixed number of local epochs and a round timeout does, and the FedProx paper's FedAvg baseline)
    straggler_policy: str = "partial"
    batch_size: int = 32
    lr: float = 0.1
    proximal_mu: float = 0.0  # FedProx μ (the client adds μ/2·‖w − w_t‖²)
    hidden: int = 32
    balanced_loss: bool = False  # weight classes by inverse frequency (rare-event tasks)
    seed: int = 0
    # data: "digits" (scikit-learn, split here) or "npz" (one file per participant in data_dir)
    dataset: str = "digits"
    data_dir: str = ""
    partitioning: str = "iid"  # digits only: iid | dirichlet
    alpha: float = 0.3
    # digits only: train on 80 % of the training part, the server scores on the other 20 % (for choosing
    # settings such as FedProx's μ without looking at the test split)
    validation: bool = False
    # privacy
    dp: str = "none"  # none | client (Opacus DP-SGD on every participant)
    dp_target_epsilon: float = 3.0  # ε the noise is calibrated for over the whole run
    dp_delta: float = 1e-5
    dp_max_grad_norm: float = 1.0
    epsilon_budget: float = 0.0  # > 0: a participant whose spent ε would exceed it stops training
    central_dp_noise: float = 0.0  # > 0: Flower's server-side fixed-clipping DP wrapper
    central_dp_clip: float = 1.0
    # robustness and participants
    max_update_norm: float = 100.0  # ‖w_i − w_t‖ above this (or any NaN/inf) is rejected
    suspended: str = ""  # comma-separated participant ids never sampled
    # comma-separated participant ids that may be sampled (empty: any node's participant). The platform names the
    # tenants that may train: a standing SuperNode of a tenant without consent, or never enrolled, is never sampled
    allowed_participants: str = ""
    epsilon_spent: str = ""  # "pid=eps,pid=eps": ε already spent in earlier runs (budget carries over)
    output_dir: str = ""  # where the server writes model.npz and history.json
    # a JSON file with the PARTICIPANT_RULES keys, read by the ServerApp only (the deployment engine: the run config
    # itself reaches every SuperNode, which must not learn the other tenants' ids, suspensions and spent ε)
    participants_file: str = ""
    server_test: bool = True  # digits: evaluate the global model on the held-out test set each round
    client_evaluation: bool = True  # federated evaluation on every eligible participant after each round

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.dp not in ("none", "client"):
            raise ValueError(f"dp must be 'none' or 'client', not {self.dp!r}")
        if self.straggler_policy not in ("partial", "drop"):
            raise ValueError(f"straggler-policy must be 'partial' or 'drop', not {self.straggler_policy!r}")
        if self.dataset not in ("digits", "npz"):
            raise ValueError(f"dataset must be 'digits' or 'npz', not {self.dataset!r}")
        if self.partitioning not in ("iid", "dirichlet"):
            raise ValueError(f"partitioning must be 'iid' or 'dirichlet', not {self.partitioning!r}")
        # written as "not (x > bound)" so that NaN is refused too
        for name, low, strict in _RANGES:
            value = getattr(self, name)
            if not (value > low if strict else value >= low):
                raise ValueError(f"{name.replace('_', '-')} must be {'>' if strict else '>='} {low:g}, not {value!r}")
        for name in ("fraction_train", "straggler_fraction"):
            if not getattr(self, name) <= 1:
                raise ValueError(f"{name.replace('_', '-')} must be at most 1, not {getattr(self, name)!r}")
        if not self.dp_delta < 1:
            raise ValueError(f"dp-delta must be below 1, not {self.dp_delta!r}")
        if self.central_dp_noise > 0 and self.strategy == "scaffold":
            raise ValueError("central DP (Flower's clipping wrapper) does not compose with SCAFFOLD: it would clip "
                             "the control-variate updates as if they were model updates")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "FederatedConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in fields:
                continue
            kind = type(getattr(cls, name)) if hasattr(cls, name) else str
            kwargs[name] = kind(value) if kind is not bool else _as_bool(value)
        return cls(**kwargs)

    def to_run_config(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def suspended_set(self) -> set[str]:
        return {p.strip() for p in self.suspended.split(",") if p.strip()}

    @property
    def allowed_set(self) -> set[str]:
        return {p.strip() for p in self.allowed_participants.split(",") if p.strip()}

    @property
    def epsilon_spent_map(self) -> dict[str, float]:
        out = {}
        for item in self.epsilon_spent.split(","):
            if "=" in item:
                pid, eps = item.split("=", 1)
                out[pid.strip()] = float(eps)
        return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
