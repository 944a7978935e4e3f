"""DAO governance, pure domain code (no Dagster, no HTTP).

A Python model of OpenZeppelin 5.x ``Governor`` + ``GovernorVotes`` + ``GovernorVotesQuorumFraction`` +
``GovernorCountingSimple`` + ``GovernorTimelockControl`` over an injected clock (timestamp mode), with a
checkpointed voting token, a timelock with a grace period, and a treasury / parameter store that change only
when a proposal is executed. ``build_dao`` wires everything; ``bench_tally`` is the ``make bench`` helper.
"""

from .actions import (
    GOVERNOR,
    PARAMETERS,
    TIMELOCK,
    TREASURY,
    Action,
    as_action,
    canonical_json,
    hash_description,
    hash_operation,
    hash_proposal,
    set_parameter,
    transfer,
)
from .bench import bench_tally
from .checkpoints import Checkpoint, Checkpoints
from .clock import CLOCK_MODE, Clock, ManualClock, SystemClock
from .dao import DAO, build_dao
from . import errors as _errors
from .errors import *  # noqa: F401,F403  (the exception hierarchy is part of the API)
from .governor import DAY, Ballot, Governor, GovernorEvent, Proposal, ProposalState, Tally, VoteType
from .targets import ExecutionContext, ExecutionTarget
from .timelock import DEFAULT_GRACE_PERIOD, Operation, OperationState, Timelock
from .treasury import ParameterChange, ParameterStore, TransferRecord, Treasury
from .votes import MAX_SUPPLY, VotesToken

__all__ = [
    "Action", "as_action", "transfer", "set_parameter", "canonical_json", "hash_description", "hash_operation",
    "hash_proposal", "TREASURY", "PARAMETERS", "GOVERNOR", "TIMELOCK",
    "bench_tally", "Checkpoint", "Checkpoints", "CLOCK_MODE", "Clock", "ManualClock", "SystemClock",
    "DAO", "build_dao", "DAY", "Ballot", "Governor", "GovernorEvent", "Proposal",
    "ProposalState", "Tally", "VoteType", "ExecutionContext", "ExecutionTarget", "DEFAULT_GRACE_PERIOD",
    "Operation", "OperationState", "Timelock", "ParameterChange", "ParameterStore", "TransferRecord", "Treasury",
    "MAX_SUPPLY", "VotesToken",
] + list(_errors.__all__)
