"""Voting token with delegation and checkpoints (OpenZeppelin ``ERC20Votes`` in timestamp mode).

* Balances do not vote by themselves: an account's balance counts as voting power of its *delegatee*, and
  an account must delegate to itself to vote with its own tokens (as in ERC20Votes).
* Every change of a delegatee's votes and of the total supply is checkpointed at ``clock.now()``, so
  ``get_past_votes(account, t)`` and ``get_past_total_supply(t)`` are exact for every ``t < now``.
* ``mint``, ``burn`` and ``transfer`` move voting power between the delegatees of the two sides.

Accounts are non-empty strings; ``None`` plays the role of ``address(0)`` (no delegatee).
"""

from __future__ import annotations

from typing import Iterator

from .checkpoints import Checkpoint, Checkpoints
from .clock import CLOCK_MODE, Clock
from .errors import (
    ERC5805FutureLookup,
    ERC20ExceededSafeSupply,
    ERC20InsufficientBalance,
    ERC20InvalidAccount,
    ERC20InvalidAmount,
)

MAX_SUPPLY = 2**208 - 1  # ERC20Votes._maxSupply(): checkpoints hold uint208


def _check_account(account, role: str) -> None:
    if not isinstance(account, str) or not account:
        raise ERC20InvalidAccount(role, account)


def _check_amount(amount) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise ERC20InvalidAmount(amount)


class VotesToken:
    def __init__(self, clock: Clock, name: str = "platformQ Governance", symbol: str = "PQG",
                 max_supply: int = MAX_SUPPLY):
        self.clock = clock
        self.name = name
        self.symbol = symbol
        self.max_supply = max_supply
        self._balances: dict[str, int] = {}
        self._total_supply = 0
        self._delegatee: dict[str, str] = {}
        self._votes: dict[str, Checkpoints] = {}
        self._supply = Checkpoints()

    # ------------------------------------------------------------------ ERC-6372 clock
    def now(self) -> int:
        return self.clock.now()

    @staticmethod
    def clock_mode() -> str:
        return CLOCK_MODE

    # ------------------------------------------------------------------ ERC-20 views
    @property
    def total_supply(self) -> int:
        return self._total_supply

    def balance_of(self, account: str) -> int:
        return self._balances.get(account, 0)

    def holders(self) -> Iterator[str]:
        """Accounts that have ever held a balance (including those now at zero)."""
        return iter(tuple(self._balances))

    # ------------------------------------------------------------------ ERC-20 mutators
    def mint(self, to: str, amount: int) -> None:
        _check_account(to, "receiver")
        self._update(None, to, amount)

    def burn(self, account: str, amount: int) -> None:
        _check_account(account, "sender")
        self._update(account, None, amount)

    def transfer(self, sender: str, to: str, amount: int) -> None:
        _check_account(sender, "sender")
        _check_account(to, "receiver")
        self._update(sender, to, amount)

    def _update(self, sender: str | None, to: str | None, amount: int) -> None:
        _check_amount(amount)
        bal = 0
        if sender is None:
            new_supply = self._total_supply + amount
            if new_supply > self.max_supply:
                raise ERC20ExceededSafeSupply(new_supply, self.max_supply)
        else:
            bal = self._balances.get(sender, 0)
            if bal < amount:
                raise ERC20InsufficientBalance(sender, bal, amount)
        # all checks passed: apply (nothing below can fail)
        now = self.clock.now()
        if sender is None:
            self._total_supply += amount
            self._supply.push(now, self._total_supply)
        else:
            self._balances[sender] = bal - amount
        if to is None:
            self._total_supply -= amount
            self._supply.push(now, self._total_supply)
        else:
            self._balances[to] = self._balances.get(to, 0) + amount
        self._move_delegate_votes(
            None if sender is None else self._delegatee.get(sender),
            None if to is None else self._delegatee.get(to),
            amount,
            now,
        )

    # ------------------------------------------------------------------ delegation
    def delegates(self, account: str) -> str | None:
        return self._delegatee.get(account)

    def delegate(self, delegator: str, delegatee: str | None) -> None:
        """Point ``delegator``'s whole balance (now and in future) at ``delegatee`` (``None``: nobody)."""
        _check_account(delegator, "delegator")
        if delegatee is not None:
            _check_account(delegatee, "delegatee")
        old = self._delegatee.get(delegator)
        if delegatee is None:
            self._delegatee.pop(delegator, None)
        else:
            self._delegatee[delegator] = delegatee
        self._move_delegate_votes(old, delegatee, self._balances.get(delegator, 0), self.clock.now())

    def _move_delegate_votes(self, src: str | None, dst: str | None, amount: int, now: int) -> None:
        if src == dst or amount <= 0:
            return
        votes = self._votes
        if src is not None:
            ckpt = votes[src]  # src had this amount delegated to it, so it has checkpoints
            ckpt.push(now, ckpt.latest() - amount)
        if dst is not None:
            ckpt = votes.get(dst)
            if ckpt is None:
                ckpt = votes[dst] = Checkpoints()
            ckpt.push(now, ckpt.latest() + amount)

    # ------------------------------------------------------------------ votes (ERC-5805)
    def get_votes(self, account: str) -> int:
        ckpt = self._votes.get(account)
        return ckpt.latest() if ckpt is not None else 0

    def get_past_votes(self, account: str, timepoint: int) -> int:
        """Votes of ``account`` at the end of ``timepoint``; ``timepoint`` must be strictly before now."""
        now = self.clock.now()
        if timepoint >= now:
            raise ERC5805FutureLookup(timepoint, now)
        ckpt = self._votes.get(account)
        return ckpt.upper_lookup(timepoint) if ckpt is not None else 0

    def get_past_votes_many(self, accounts, timepoint: int) -> list[int]:
        """``get_past_votes`` for many accounts at one timepoint (one clock check, then a bisect each)."""
        now = self.clock.now()
        if timepoint >= now:
            raise ERC5805FutureLookup(timepoint, now)
        get = self._votes.get
        out = []
        for account in accounts:
            ckpt = get(account)
            out.append(ckpt.upper_lookup(timepoint) if ckpt is not None else 0)
        return out

    def get_past_total_supply(self, timepoint: int) -> int:
        now = self.clock.now()
        if timepoint >= now:
            raise ERC5805FutureLookup(timepoint, now)
        return self._supply.upper_lookup(timepoint)

    def num_checkpoints(self, account: str) -> int:
        ckpt = self._votes.get(account)
        return len(ckpt) if ckpt is not None else 0

    def checkpoints(self, account: str, pos: int) -> Checkpoint:
        return self._votes[account].at(pos)

    def delegated_supply(self) -> int:
        """Sum of balances whose holder has a delegatee: always equals the sum of all current votes."""
        bal = self._balances
        return sum(bal.get(a, 0) for a in self._delegatee)

    def voters(self) -> Iterator[str]:
        """Accounts that have ever had votes delegated to them."""
        return iter(tuple(self._votes))
