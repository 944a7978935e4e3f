"""The contract between the timelock (the executor) and the things proposals change.

A target is bound to exactly one executor, which hands it a private capability ``key`` at binding time.
Execution is two-phase so that a batch is atomic, like a reverted EVM transaction: the timelock calls
``_prepare(actions, ctx, key)`` on every target (which validates against current state and returns a
``commit`` callable that cannot fail), and only when every target prepared does it call the commits.
``validate_action`` is the static check run when a proposal is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from .actions import Action
from .errors import InvalidAction, TimelockAlreadyBound, UnauthorizedExecutor

Commit = Callable[[], None]


@dataclass(frozen=True)
class ExecutionContext:
    operation_id: str
    proposal_id: str | None
    timepoint: int


class ExecutionTarget(Protocol):
    def validate_action(self, action: Action) -> None: ...

    def _bind_executor(self, key: object) -> None: ...

    def _prepare(self, actions: Sequence[Action], ctx: ExecutionContext, key: object) -> Commit: ...


class BoundTarget:
    """Mixin: remembers the executor's capability and refuses every other caller."""

    _target_label = "target"
    _executor_key: object | None = None

    def _bind_executor(self, key: object) -> None:
        if self._executor_key is not None:
            raise TimelockAlreadyBound(self._target_label)
        self._executor_key = key

    def _require_executor(self, key: object) -> None:
        if self._executor_key is None or key is not self._executor_key:
            raise UnauthorizedExecutor(self._target_label)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_set_parameter(action: Action, validators: Mapping[str, Callable[[Any], bool]] | None,
                       target_label: str) -> tuple[str, Any]:
    """Check a ``{"type": "set_parameter", "name", "value"}`` payload; ``validators`` None = any name."""
    p = action.payload
    if action.value != 0:
        raise InvalidAction(f"{target_label}: actions on {action.target!r} cannot carry value ({action.value})")
    if p.get("type") != "set_parameter":
        raise InvalidAction(f"{target_label}: unsupported payload type {p.get('type')!r} (expected 'set_parameter')")
    extra = set(p) - {"type", "name", "value"}
    if extra or "value" not in p:
        raise InvalidAction(f"{target_label}: set_parameter needs exactly 'name' and 'value' (extra: {sorted(extra)})")
    name, value = p.get("name"), p["value"]
    if not isinstance(name, str) or not name:
        raise InvalidAction(f"{target_label}: parameter name must be a non-empty str, got {name!r}")
    if validators is not None:
        check = validators.get(name)
        if check is None:
            raise InvalidAction(f"{target_label}: unknown parameter {name!r} (known: {sorted(validators)})")
        if not check(value):
            raise InvalidAction(f"{target_label}: invalid value {value!r} for parameter {name!r}")
    return name, value
