"""Proposal actions as data, and the deterministic ids derived from them.

An :class:`Action` is the Python twin of one ``(target, value, calldata)`` triple of an OpenZeppelin
proposal: ``target`` names a registered execution target (``"treasury"``, ``"parameters"``,
``"governor"``, ``"timelock"``) or, for a plain native-asset payment, the receiving account; ``value`` is an
amount of the treasury's native asset sent to ``target``; ``payload`` is the "calldata", a flat JSON
object with a ``"type"``. The recognised payloads are::

    {"type": "transfer", "to": "alice", "amount": 100, "asset": "USDC"}   # target "treasury"; asset optional
    {"type": "set_parameter", "name": "voting_period", "value": 86400}    # target "governor" / "timelock"
    {"type": "set_parameter", "name": "ml/champion", "value": "v7"}       # target "parameters"

Ids are sha256 hex strings over canonical JSON (sorted keys, no whitespace), so equal actions and
description give equal ids in every process: ``proposal_id = H([actions, H(description)])``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from .errors import InvalidAction

TREASURY = "treasury"
PARAMETERS = "parameters"
GOVERNOR = "governor"
TIMELOCK = "timelock"


def canonical_json(obj: Any) -> str:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidAction(f"action data must be JSON-serialisable (str keys, no NaN): {exc}") from None


def _h(text: str) -> str:
    return "0x" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Action:
    target: str
    value: int = 0
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise InvalidAction(f"action target must be a non-empty str, got {self.target!r}")
        if not isinstance(self.value, int) or isinstance(self.value, bool) or self.value < 0:
            raise InvalidAction(f"action value must be an int >= 0, got {self.value!r}")
        if not isinstance(self.payload, Mapping):
            raise InvalidAction(f"action payload must be a mapping, got {type(self.payload).__name__}")
        frozen = dict(self.payload)
        canonical_json(frozen)  # validates serialisability now, not at hashing time
        object.__setattr__(self, "payload", MappingProxyType(frozen))

    def __reduce__(self):
        # the read-only payload view does not pickle: rebuild the action from a plain copy (and re-check it)
        return (Action, (self.target, self.value, dict(self.payload)))

    @property
    def kind(self) -> str | None:
        return self.payload.get("type")

    def to_json(self) -> list:
        return [self.target, self.value, dict(self.payload)]

    def __hash__(self) -> int:
        return hash(canonical_json(self.to_json()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.to_json() == other.to_json()


def as_action(a: Action | Sequence | Mapping) -> Action:
    """Accept an :class:`Action`, a ``(target, value, payload)`` triple or a mapping with those keys."""
    if isinstance(a, Action):
        return a
    if isinstance(a, Mapping):
        return Action(a["target"], a.get("value", 0), a.get("payload", {}))
    if isinstance(a, (tuple, list)) and len(a) == 3:
        return Action(*a)
    raise InvalidAction(f"cannot read an action from {a!r}")


def transfer(to: str, amount: int, asset: str | None = None) -> Action:
    """A treasury payment of ``amount`` ``asset`` (default: the treasury's native asset) to ``to``."""
    payload: dict[str, Any] = {"type": "transfer", "to": to, "amount": amount}
    if asset is not None:
        payload["asset"] = asset
    return Action(TREASURY, 0, payload)


def set_parameter(name: str, value: Any, target: str = PARAMETERS) -> Action:
    """Set ``name`` to ``value`` on ``target`` (the parameter store, the governor or the timelock)."""
    return Action(target, 0, {"type": "set_parameter", "name": name, "value": value})


def hash_description(description: str) -> str:
    return _h(description)


def hash_actions(actions: Iterable[Action]) -> str:
    return _h(canonical_json([a.to_json() for a in actions]))


def hash_proposal(actions: Sequence[Action | Sequence | Mapping], description: str) -> str:
    """``proposal_id``: deterministic over the actions (order matters) and the description."""
    acts = [as_action(a).to_json() for a in actions]
    return _h(canonical_json([acts, hash_description(description)]))


def hash_operation(actions: Sequence[Action], predecessor: str, salt: str) -> str:
    """Timelock operation id (``TimelockController.hashOperationBatch``)."""
    return _h(canonical_json([[a.to_json() for a in actions], predecessor, salt]))
