"""Timelock executor (OpenZeppelin ``TimelockController`` with a Compound-style grace period).

An operation scheduled at ``t`` with ``delay >= min_delay`` gets ``eta = t + delay``; it is *Waiting* before
``eta``, *Ready* on ``[eta, eta + grace_period)``, *Expired* from ``eta + grace_period`` on, and *Done* once
executed (exactly once). Only the governor bound with :meth:`attach_governor` may schedule, execute or
cancel. The timelock owns the execution targets (treasury, parameter store, governor settings, itself) and
executes a batch atomically: every target validates its part first, then all changes are applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Mapping, MutableMapping, Sequence

from services.common.state_store import PartMap

from .actions import GOVERNOR, TIMELOCK, TREASURY, Action, hash_operation
from .clock import Clock
from .errors import (
    InvalidAction,
    TimelockAlreadyBound,
    TimelockInsufficientDelay,
    TimelockUnauthorizedAccount,
    TimelockUnexpectedOperationState,
)
from .targets import BoundTarget, Commit, ExecutionContext, ExecutionTarget, is_int, read_set_parameter

DEFAULT_GRACE_PERIOD = 14 * 24 * 3600  # Compound Timelock.GRACE_PERIOD
# Delays and periods, the governor's too: at most ten years, whether set when the DAO is created or by a proposal
# (a proposal setting 10**30 would lock the DAO for good).
MAX_TIME = 10 * 365 * 24 * 3600


class OperationState(IntEnum):
    UNSET = 0
    WAITING = 1
    READY = 2
    DONE = 3
    EXPIRED = 4


@dataclass
class Operation:
    id: str
    actions: tuple[Action, ...]
    proposal_id: str | None
    scheduled_at: int
    eta: int
    expires_at: int  # eta + the grace period in force when scheduled
    done: bool = False
    executed_at: int | None = None
    canceled: bool = False  # as if never scheduled (UNSET); kept, so a durable store never deletes a part


_SETTINGS = {
    "min_delay": lambda v: is_int(v) and 0 <= v <= MAX_TIME,
    "grace_period": lambda v: is_int(v) and 0 < v <= MAX_TIME,
}


class Timelock(BoundTarget):
    _target_label = "timelock"

    def __init__(self, clock: Clock, min_delay: int = 2 * 24 * 3600, grace_period: int = DEFAULT_GRACE_PERIOD,
                 targets: Mapping[str, ExecutionTarget] | None = None):
        if not _SETTINGS["min_delay"](min_delay):
            raise ValueError(f"min_delay must be an int in 0..{MAX_TIME}, got {min_delay!r}")
        if not _SETTINGS["grace_period"](grace_period):
            raise ValueError(f"grace_period must be an int in 1..{MAX_TIME}, got {grace_period!r}")
        self.clock = clock
        self._min_delay = min_delay
        self._grace_period = grace_period
        self.__key = object()  # capability handed to bound targets
        self._targets: dict[str, ExecutionTarget] = {}
        self._ops: MutableMapping[str, Operation] = PartMap()  # a part each when the DAO is durable
        self._governor: Any = None
        self._register(TIMELOCK, self)
        for name, target in (targets or {}).items():
            self.register_target(name, target)

    # ------------------------------------------------------------------ wiring
    def register_target(self, name: str, target: ExecutionTarget) -> None:
        """Bind ``target`` under ``name``; only before a governor is attached (the wiring is then frozen)."""
        if self._governor is not None:
            raise TimelockAlreadyBound("timelock wiring (a governor is attached)")
        self._register(name, target)

    def _register(self, name: str, target: ExecutionTarget) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"target name must be a non-empty str, got {name!r}")
        if name in self._targets:
            raise TimelockAlreadyBound(f"target name {name!r}")
        target._bind_executor(self.__key)
        self._targets[name] = target

    def attach_governor(self, governor: Any) -> None:
        """Make ``governor`` the sole proposer, executor and canceller, and register it as target "governor"."""
        if self._governor is not None:
            raise TimelockAlreadyBound("timelock (governor)")
        self._register(GOVERNOR, governor)
        self._governor = governor

    @property
    def governor(self) -> Any:
        return self._governor

    @property
    def targets(self) -> dict[str, ExecutionTarget]:
        return dict(self._targets)

    @property
    def min_delay(self) -> int:
        return self._min_delay

    @property
    def grace_period(self) -> int:
        return self._grace_period

    # ------------------------------------------------------------------ routing and validation
    def _route(self, action: Action) -> ExecutionTarget:
        target = self._targets.get(action.target)
        if target is not None:
            return target
        treasury = self._targets.get(TREASURY)
        if treasury is None:
            raise InvalidAction(f"unknown target {action.target!r} (registered: {sorted(self._targets)})")
        return treasury  # a native payment to an account: the treasury checks the shape

    def validate_actions(self, actions: Sequence[Action]) -> None:
        for action in actions:
            self._route(action).validate_action(action)

    # ------------------------------------------------------------------ operations
    @staticmethod
    def hash_operation(actions: Sequence[Action], predecessor: str = "", salt: str = "") -> str:
        return hash_operation(actions, predecessor, salt)

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("_ops"), dict):  # pickled before operations were kept in a PartMap
            state["_ops"] = PartMap(state["_ops"])
        self.__dict__.update(state)

    def bind_parts(self, parts: dict, prefix: str, touch: Callable[[str], None] | None = None) -> None:
        """Keep each operation in ``parts`` under ``prefix`` (see :meth:`PartMap.bind`): a durable DAO saves an
        operation as a part of its own, so the timelock pickles without them."""
        self._ops.bind(parts, prefix, touch)

    def get_operation(self, operation_id: str) -> Operation | None:
        op = self._ops.get(operation_id)
        return None if op is None or op.canceled else op

    def get_operation_state(self, operation_id: str) -> OperationState:
        op = self.get_operation(operation_id)
        if op is None:
            return OperationState.UNSET
        if op.done:
            return OperationState.DONE
        now = self.clock.now()
        if now < op.eta:
            return OperationState.WAITING
        if now < op.expires_at:
            return OperationState.READY
        return OperationState.EXPIRED

    def is_operation_pending(self, operation_id: str) -> bool:
        return self.get_operation_state(operation_id) in (OperationState.WAITING, OperationState.READY)

    def is_operation_ready(self, operation_id: str) -> bool:
        return self.get_operation_state(operation_id) is OperationState.READY

    def is_operation_done(self, operation_id: str) -> bool:
        return self.get_operation_state(operation_id) is OperationState.DONE

    def _only_governor(self, caller: Any, role: str) -> None:
        if self._governor is None or caller is not self._governor:
            raise TimelockUnauthorizedAccount(caller, role)

    def schedule(self, actions: Sequence[Action], *, caller: Any, salt: str = "", predecessor: str = "",
                 delay: int | None = None, proposal_id: str | None = None) -> Operation:
        self._only_governor(caller, "PROPOSER_ROLE")
        actions = tuple(actions)
        op_id = hash_operation(actions, predecessor, salt)
        state = self.get_operation_state(op_id)
        if state is not OperationState.UNSET:
            raise TimelockUnexpectedOperationState(op_id, state, {OperationState.UNSET})
        delay = self._min_delay if delay is None else delay
        if not is_int(delay) or delay < self._min_delay:
            raise TimelockInsufficientDelay(delay, self._min_delay)
        self.validate_actions(actions)
        now = self.clock.now()
        op = Operation(op_id, actions, proposal_id, now, now + delay, now + delay + self._grace_period)
        self._ops[op_id] = op
        return op

    def execute(self, operation_id: str, *, caller: Any) -> Operation:
        self._only_governor(caller, "EXECUTOR_ROLE")
        state = self.get_operation_state(operation_id)
        if state is not OperationState.READY:
            op = self.get_operation(operation_id)
            hint = {
                OperationState.UNSET: "not scheduled: queue it first",
                OperationState.WAITING: f"eta is {op.eta if op else '?'}, now is {self.clock.now()}",
                OperationState.EXPIRED: f"the grace period ended at {op.expires_at if op else '?'}",
                OperationState.DONE: "already executed",
            }[state]
            raise TimelockUnexpectedOperationState(operation_id, state, {OperationState.READY}, hint)
        op = self._ops[operation_id]
        now = self.clock.now()
        ctx = ExecutionContext(operation_id, op.proposal_id, now)
        groups: dict[int, tuple[ExecutionTarget, list[Action]]] = {}
        for action in op.actions:
            target = self._route(action)
            groups.setdefault(id(target), (target, []))[1].append(action)
        key = self.__key
        commits = [target._prepare(acts, ctx, key) for target, acts in groups.values()]  # may raise: no change
        op.done, op.executed_at = True, now
        for commit in commits:
            commit()
        return op

    def cancel(self, operation_id: str, *, caller: Any) -> None:
        self._only_governor(caller, "CANCELLER_ROLE")
        state = self.get_operation_state(operation_id)
        if state not in (OperationState.WAITING, OperationState.READY):
            raise TimelockUnexpectedOperationState(operation_id, state,
                                                   {OperationState.WAITING, OperationState.READY})
        self._ops[operation_id].canceled = True

    # ------------------------------------------------------------------ self-governed settings (updateDelay)
    def validate_action(self, action: Action) -> None:
        read_set_parameter(action, _SETTINGS, TIMELOCK)

    def _prepare(self, actions: Sequence[Action], ctx: ExecutionContext, key: object) -> Commit:
        self._require_executor(key)
        changes = [read_set_parameter(a, _SETTINGS, TIMELOCK) for a in actions]

        def commit() -> None:
            for name, value in changes:
                setattr(self, "_" + name, value)

        return commit
