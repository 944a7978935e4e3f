"""Exceptions of the governance domain.

Names follow the custom errors of OpenZeppelin Contracts 5.x (``GovernorUnexpectedProposalState``,
``ERC5805FutureLookup``, ``TimelockUnexpectedOperationState``...) so that a reader who knows the Solidity
contracts recognises each case; every exception carries the offending values as attributes and a message
that says what was expected.
"""

from __future__ import annotations

from typing import Any, Iterable


class GovernanceError(Exception):
    """Base class of every error raised by :mod:`services.governance`."""


# ----------------------------------------------------------------------------- clock
class ClockError(GovernanceError, ValueError):
    """A clock was asked to move backwards or by a negative amount."""


# ----------------------------------------------------------------------------- checkpoints / votes
class CheckpointUnorderedInsertion(GovernanceError):
    """A checkpoint was pushed with a key lower than the last one."""

    def __init__(self, key: int, last_key: int):
        self.key, self.last_key = key, last_key
        super().__init__(f"CheckpointUnorderedInsertion: key {key} is before the last checkpoint key {last_key}")


class ERC5805FutureLookup(GovernanceError):
    """A past-votes lookup at a timepoint that is not yet in the past (``timepoint >= clock.now()``)."""

    def __init__(self, timepoint: int, clock: int):
        self.timepoint, self.clock = timepoint, clock
        super().__init__(
            f"ERC5805FutureLookup: timepoint {timepoint} is not in the past (now is {clock}); "
            "past votes are only final for timepoints strictly before now"
        )


class ERC20InsufficientBalance(GovernanceError):
    def __init__(self, sender: str, balance: int, needed: int):
        self.sender, self.balance, self.needed = sender, balance, needed
        super().__init__(f"ERC20InsufficientBalance: {sender!r} holds {balance}, needs {needed}")


class ERC20InvalidAccount(GovernanceError, ValueError):
    """An account identifier that is not a non-empty string (the Python twin of address(0) checks)."""

    def __init__(self, role: str, account: Any):
        self.role, self.account = role, account
        super().__init__(f"ERC20Invalid{role.capitalize()}: {account!r} is not a valid account (non-empty str)")


class ERC20InvalidAmount(GovernanceError, ValueError):
    def __init__(self, amount: Any):
        self.amount = amount
        super().__init__(f"invalid token amount {amount!r}: must be an int >= 0")


class ERC20ExceededSafeSupply(GovernanceError):
    def __init__(self, increased_supply: int, cap: int):
        self.increased_supply, self.cap = increased_supply, cap
        super().__init__(f"ERC20ExceededSafeSupply: supply {increased_supply} would exceed the cap {cap}")


# ----------------------------------------------------------------------------- actions / treasury
class InvalidAction(GovernanceError, ValueError):
    """A proposal action that no target understands, or with malformed fields."""


class TreasuryInsufficientBalance(GovernanceError):
    def __init__(self, asset: str, balance: int, needed: int):
        self.asset, self.balance, self.needed = asset, balance, needed
        super().__init__(
            f"TreasuryInsufficientBalance: the batch needs {needed} {asset} but the treasury holds {balance}; "
            "nothing was transferred"
        )


class UnauthorizedExecutor(GovernanceError, PermissionError):
    """A target (treasury, parameters, governor settings) was driven by something other than its timelock."""

    def __init__(self, target: str):
        self.target = target
        super().__init__(f"UnauthorizedExecutor: {target} only changes through its bound timelock executing a proposal")


# ----------------------------------------------------------------------------- timelock
class TimelockUnexpectedOperationState(GovernanceError):
    def __init__(self, operation_id: str, state: Any, expected: Iterable[Any], hint: str = ""):
        self.operation_id, self.state = operation_id, state
        self.expected = frozenset(expected)
        names = ", ".join(sorted(getattr(s, "name", str(s)) for s in self.expected))
        msg = (
            f"TimelockUnexpectedOperationState: operation {operation_id} is "
            f"{getattr(state, 'name', state)}, expected one of [{names}]"
        )
        super().__init__(msg + (f" ({hint})" if hint else ""))


class TimelockInsufficientDelay(GovernanceError):
    def __init__(self, delay: int, min_delay: int):
        self.delay, self.min_delay = delay, min_delay
        super().__init__(f"TimelockInsufficientDelay: delay {delay} is below the minimum delay {min_delay}")


class TimelockUnauthorizedAccount(GovernanceError, PermissionError):
    def __init__(self, account: Any, role: str):
        self.account, self.role = account, role
        super().__init__(f"TimelockUnauthorizedAccount: {account!r} lacks the {role} role")


class TimelockAlreadyBound(GovernanceError):
    def __init__(self, what: str):
        super().__init__(f"{what} is already bound; a timelock serves exactly one governor and a target one timelock")


# ----------------------------------------------------------------------------- governor
class GovernorNonexistentProposal(GovernanceError, KeyError):
    def __init__(self, proposal_id: str):
        self.proposal_id = proposal_id
        super().__init__(f"GovernorNonexistentProposal: no proposal {proposal_id}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class GovernorUnexpectedProposalState(GovernanceError):
    """An operation was attempted on a proposal in a state that does not allow it.

    ``expected`` is the set of states that would have been accepted (empty when the operation requires the
    proposal not to exist at all, as OZ's ``bytes32(0)`` bitmap in ``propose``).
    """

    def __init__(self, proposal_id: str, current: Any, expected: Iterable[Any], operation: str = ""):
        self.proposal_id, self.current = proposal_id, current
        self.expected = frozenset(expected)
        self.operation = operation
        names = ", ".join(s.name for s in sorted(self.expected, key=int)) or "nonexistent"
        op = f"{operation}: " if operation else ""
        super().__init__(
            f"GovernorUnexpectedProposalState: {op}proposal {proposal_id} is {current.name}, "
            f"expected one of [{names}]"
        )


class GovernorAlreadyCastVote(GovernanceError):
    def __init__(self, voter: str, proposal_id: str):
        self.voter, self.proposal_id = voter, proposal_id
        super().__init__(f"GovernorAlreadyCastVote: {voter!r} has already voted on proposal {proposal_id}")


class GovernorInvalidVoteType(GovernanceError, ValueError):
    def __init__(self, support: Any):
        self.support = support
        super().__init__(f"GovernorInvalidVoteType: {support!r} is not Against (0), For (1) or Abstain (2)")


class GovernorInsufficientProposerVotes(GovernanceError):
    def __init__(self, proposer: str, votes: int, threshold: int):
        self.proposer, self.votes, self.threshold = proposer, votes, threshold
        super().__init__(
            f"GovernorInsufficientProposerVotes: {proposer!r} had {votes} votes at the last timepoint, "
            f"the proposal threshold is {threshold}"
        )


class GovernorInvalidProposalLength(GovernanceError, ValueError):
    def __init__(self, n_actions: int):
        self.n_actions = n_actions
        super().__init__(f"GovernorInvalidProposalLength: a proposal needs at least one action, got {n_actions}")


class GovernorRestrictedProposer(GovernanceError, PermissionError):
    def __init__(self, proposer: str):
        self.proposer = proposer
        super().__init__(
            f"GovernorRestrictedProposer: the description ends with a '#proposer=' suffix naming someone other "
            f"than {proposer!r}"
        )


class GovernorOnlyProposer(GovernanceError, PermissionError):
    def __init__(self, account: str):
        self.account = account
        super().__init__(f"GovernorOnlyProposer: {account!r} is not the proposer and cannot cancel")


class GovernorInvalidVotingPeriod(GovernanceError, ValueError):
    def __init__(self, voting_period: Any):
        self.voting_period = voting_period
        super().__init__(f"GovernorInvalidVotingPeriod: {voting_period!r} (must be an int > 0)")


class GovernorInvalidQuorumFraction(GovernanceError, ValueError):
    def __init__(self, numerator: Any, denominator: int):
        self.numerator, self.denominator = numerator, denominator
        super().__init__(
            f"GovernorInvalidQuorumFraction: numerator {numerator!r} must be an int in [0, {denominator}]"
        )


class TallyIntegrityError(GovernanceError):
    """A recorded ballot weight no longer matches the token's checkpoint at the snapshot (must never happen)."""


__all__ = [
    "GovernanceError",
    "ClockError",
    "CheckpointUnorderedInsertion",
    "ERC5805FutureLookup",
    "ERC20InsufficientBalance",
    "ERC20InvalidAccount",
    "ERC20InvalidAmount",
    "ERC20ExceededSafeSupply",
    "InvalidAction",
    "TreasuryInsufficientBalance",
    "UnauthorizedExecutor",
    "TimelockUnexpectedOperationState",
    "TimelockInsufficientDelay",
    "TimelockUnauthorizedAccount",
    "TimelockAlreadyBound",
    "GovernorNonexistentProposal",
    "GovernorUnexpectedProposalState",
    "GovernorAlreadyCastVote",
    "GovernorInvalidVoteType",
    "GovernorInsufficientProposerVotes",
    "GovernorInvalidProposalLength",
    "GovernorRestrictedProposer",
    "GovernorOnlyProposer",
    "GovernorInvalidVotingPeriod",
    "GovernorInvalidQuorumFraction",
    "TallyIntegrityError",
]
