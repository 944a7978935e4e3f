"""The DAO's treasury and parameter store: both change only when the timelock executes a proposal.

Neither class has a public mutator. Their private ``_prepare`` requires the capability handed over when the
timelock bound them, and every change is appended to an audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from services.common.state_store import PartMap

from .actions import PARAMETERS, TREASURY, Action
from .errors import InvalidAction, TreasuryInsufficientBalance
from .targets import BoundTarget, Commit, ExecutionContext, is_int, read_set_parameter


class AuditLog:
    """An append-only log whose entries are :class:`PartMap` items: a part each when the DAO is durable, so the
    log's owner pickles without its history and an execution saves only the entries it appended."""

    def __init__(self, entries: Sequence = ()):
        self._entries = PartMap({self._key(i): e for i, e in enumerate(entries)})
        self._length = len(entries)

    @staticmethod
    def _key(i: int) -> str:
        return f"{i:012d}"

    def append(self, make: Callable[[int], Any]) -> None:
        """Append ``make(seq)``."""
        self._entries[self._key(self._length)] = make(self._length)
        self._length += 1

    def bind_parts(self, parts: dict, prefix: str, touch: Callable[[str], None] | None = None) -> None:
        self._entries.bind(parts, prefix, touch)

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator:
        return (self._entries[self._key(i)] for i in range(self._length))


class LoggedTarget(BoundTarget):
    """A target that appends each change to the :class:`AuditLog` in its attribute ``_log_attribute``."""

    _log_attribute: str

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get(self._log_attribute), list):  # pickled before the log kept its entries apart
            state[self._log_attribute] = AuditLog(state[self._log_attribute])
        self.__dict__.update(state)

    def _bind_parts(self, parts: dict, prefix: str, touch: Callable[[str], None] | None = None) -> None:
        """(Wiring, by :meth:`DAO.bind_parts`; not public: a target has no public method that changes it.)
        Keep the log's entries in ``parts`` under ``prefix`` (see :meth:`PartMap.bind`)."""
        getattr(self, self._log_attribute).bind_parts(parts, prefix, touch)


@dataclass(frozen=True)
class TransferRecord:
    seq: int
    proposal_id: str | None
    operation_id: str
    timepoint: int
    asset: str
    to: str
    amount: int


class Treasury(LoggedTarget):
    _target_label = "treasury"
    _log_attribute = "_audit"

    def __init__(self, balances: Mapping[str, int] | None = None, native_asset: str = "native"):
        balances = dict(balances or {})
        for asset, amount in balances.items():
            if not isinstance(asset, str) or not asset or not is_int(amount) or amount < 0:
                raise ValueError(f"treasury balance {asset!r}: {amount!r} must be a str asset and an int >= 0")
        if not isinstance(native_asset, str) or not native_asset:
            raise ValueError("native_asset must be a non-empty str")
        self.native_asset = native_asset
        self._initial = dict(balances)
        self._balances = dict(balances)
        self._audit = AuditLog()

    # ------------------------------------------------------------------ views
    def balance_of(self, asset: str) -> int:
        return self._balances.get(asset, 0)

    def balances(self) -> dict[str, int]:
        return dict(self._balances)

    @property
    def initial_balances(self) -> dict[str, int]:
        return dict(self._initial)

    @property
    def audit_log(self) -> tuple[TransferRecord, ...]:
        return tuple(self._audit)

    def total_outflows(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self._audit:
            out[r.asset] = out.get(r.asset, 0) + r.amount
        return out

    # ------------------------------------------------------------------ execution target
    def transfer_of(self, action: Action) -> tuple[str, str, int]:
        """``(asset, to, amount)`` of a transfer action (or of a native payment to an account)."""
        if action.target != TREASURY:  # native payment routed by the timelock: value -> target
            if dict(action.payload):
                raise InvalidAction(f"unknown target {action.target!r}: only empty-payload native payments "
                                    "may go to an account")
            if action.value <= 0:
                raise InvalidAction(f"a payment to account {action.target!r} needs value > 0")
            return self.native_asset, action.target, action.value
        p = action.payload
        if action.value != 0:
            raise InvalidAction("treasury actions cannot carry value; put the amount in the payload")
        if p.get("type") != "transfer":
            raise InvalidAction(f"treasury: unsupported payload type {p.get('type')!r} (expected 'transfer')")
        extra = set(p) - {"type", "to", "amount", "asset"}
        if extra:
            raise InvalidAction(f"treasury: unexpected transfer fields {sorted(extra)}")
        to, amount, asset = p.get("to"), p.get("amount"), p.get("asset", self.native_asset)
        if not isinstance(to, str) or not to:
            raise InvalidAction(f"treasury: transfer 'to' must be a non-empty str, got {to!r}")
        if not is_int(amount) or amount <= 0:
            raise InvalidAction(f"treasury: transfer 'amount' must be an int > 0, got {amount!r}")
        if not isinstance(asset, str) or not asset:
            raise InvalidAction(f"treasury: transfer 'asset' must be a non-empty str, got {asset!r}")
        return asset, to, amount

    def validate_action(self, action: Action) -> None:
        self.transfer_of(action)

    def _prepare(self, actions: Sequence[Action], ctx: ExecutionContext, key: object) -> Commit:
        self._require_executor(key)
        transfers = [self.transfer_of(a) for a in actions]
        need: dict[str, int] = {}
        for asset, _, amount in transfers:
            need[asset] = need.get(asset, 0) + amount
        for asset, amount in need.items():
            if self._balances.get(asset, 0) < amount:
                raise TreasuryInsufficientBalance(asset, self._balances.get(asset, 0), amount)

        def commit() -> None:
            for asset, to, amount in transfers:
                self._balances[asset] -= amount
                self._audit.append(lambda seq: TransferRecord(seq, ctx.proposal_id, ctx.operation_id,
                                                              ctx.timepoint, asset, to, amount))

        return commit


@dataclass(frozen=True)
class ParameterChange:
    seq: int
    proposal_id: str | None
    operation_id: str
    timepoint: int
    name: str
    old: Any
    new: Any



class ParameterStore(LoggedTarget):
    """Named platform parameters (e.g. ``"ml/price_direction_model.champion"``) set only by governance."""

    _target_label = "parameters"
    _log_attribute = "_history"

    def __init__(self, initial: Mapping[str, Any] | None = None):
        self._values: dict[str, Any] = dict(initial or {})
        self._history = AuditLog()

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def history(self) -> tuple[ParameterChange, ...]:
        return tuple(self._history)

    def validate_action(self, action: Action) -> None:
        read_set_parameter(action, None, PARAMETERS)

    def _prepare(self, actions: Sequence[Action], ctx: ExecutionContext, key: object) -> Commit:
        self._require_executor(key)
        changes = [read_set_parameter(a, None, PARAMETERS) for a in actions]

        def commit() -> None:
            for name, value in changes:
                old = self._values.get(name)
                self._values[name] = value
                self._history.append(lambda seq: ParameterChange(seq, ctx.proposal_id, ctx.operation_id,
                                                                 ctx.timepoint, name, old, value))

        return commit
