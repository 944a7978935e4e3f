"""Wiring: one call builds a token, treasury, parameter store, timelock and governor on one clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .actions import PARAMETERS, TREASURY
from .clock import Clock, ManualClock
from .governor import DAY, Governor
from .timelock import DEFAULT_GRACE_PERIOD, Timelock
from .treasury import ParameterStore, Treasury
from .votes import VotesToken


@dataclass
class DAO:
    clock: Clock
    token: VotesToken
    treasury: Treasury
    parameters: ParameterStore
    timelock: Timelock
    governor: Governor

    def bind_parts(self, parts: dict, prefix: str, touch: Callable[[str], None] | None = None) -> None:
        """Keep what grows with the DAO's history (each proposal's record, timelock operation, treasury transfer
        and parameter change) as items of ``parts`` under ``prefix`` (a durable store's parts, each saved in its
        own row), not inside the DAO."""
        self.governor.bind_parts(parts, prefix + "proposal" + PART_SEP, touch)
        self.timelock.bind_parts(parts, prefix + "operation" + PART_SEP, touch)
        self.treasury._bind_parts(parts, prefix + "transfer" + PART_SEP, touch)
        self.parameters._bind_parts(parts, prefix + "parameter-change" + PART_SEP, touch)


PART_SEP = "\x1f"  # between a part key's fields (unit separator: in no tenant id, proposal id or operation id)


def build_dao(clock: Clock | None = None, *, holdings: Mapping[str, int] | None = None, self_delegate: bool = True,
              treasury: Mapping[str, int] | None = None, native_asset: str = "native",
              parameters: Mapping[str, Any] | None = None, min_delay: int = 2 * DAY,
              grace_period: int = DEFAULT_GRACE_PERIOD, voting_delay: int = DAY, voting_period: int = 7 * DAY,
              proposal_threshold: int = 0, quorum_numerator: int = 4, quorum_denominator: int = 100,
              name: str = "platformQ DAO") -> DAO:
    """Mint ``holdings`` (each holder self-delegated unless ``self_delegate=False``) at ``clock.now()``."""
    clock = clock if clock is not None else ManualClock()
    token = VotesToken(clock)
    for holder, amount in (holdings or {}).items():
        token.mint(holder, amount)
        if self_delegate:
            token.delegate(holder, holder)
    vault = Treasury(treasury, native_asset=native_asset)
    params = ParameterStore(parameters)
    timelock = Timelock(clock, min_delay=min_delay, grace_period=grace_period,
                        targets={TREASURY: vault, PARAMETERS: params})
    governor = Governor(token, timelock, name=name, voting_delay=voting_delay, voting_period=voting_period,
                        proposal_threshold=proposal_threshold, quorum_numerator=quorum_numerator,
                        quorum_denominator=quorum_denominator)
    return DAO(clock, token, vault, params, timelock, governor)
