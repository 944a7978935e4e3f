"""The governor: OpenZeppelin 5.x ``Governor`` + ``GovernorVotes`` + ``GovernorVotesQuorumFraction`` +
``GovernorCountingSimple`` + ``GovernorTimelockControl`` (with a Compound-style grace period, hence
``Expired``), in plain Python over an injected clock.

Lifecycle of a proposal created at ``t``::

    snapshot = t + voting_delay            deadline = snapshot + voting_period
    Pending   while now <= snapshot        (cancel by the proposer is allowed only here)
    Active    while snapshot < now <= deadline   (votes weigh get_past_votes(voter, snapshot))
    Defeated  after the deadline unless quorum(snapshot) <= For + Abstain and For > Against
    Succeeded after the deadline otherwise, until queued
    Queued    after queue(): eta = now + timelock.min_delay; executable on [eta, eta + grace_period)
    Expired   when eta + grace_period has passed without execution
    Executed  after execute() (exactly once);  Canceled after cancel()

``quorum(t) = token.get_past_total_supply(t) * quorum_numerator(t) // quorum_denominator``, the numerator
being checkpointed so that changing it by governance never alters proposals already past their snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Callable, Iterable, Mapping, MutableMapping, Sequence

from services.common.state_store import PartMap

from .actions import GOVERNOR, Action, as_action, hash_description, hash_proposal
from .checkpoints import Checkpoints
from .clock import CLOCK_MODE
from .errors import (
    ERC20InvalidAccount,
    GovernorAlreadyCastVote,
    GovernorInsufficientProposerVotes,
    GovernorInvalidProposalLength,
    GovernorInvalidQuorumFraction,
    GovernorInvalidVoteType,
    GovernorInvalidVotingPeriod,
    GovernorNonexistentProposal,
    GovernorOnlyProposer,
    GovernorRestrictedProposer,
    GovernorUnexpectedProposalState,
    TallyIntegrityError,
)
from .targets import BoundTarget, Commit, ExecutionContext, is_int, read_set_parameter
from .timelock import MAX_TIME, OperationState, Timelock
from .votes import VotesToken

DAY = 24 * 3600


class ProposalState(IntEnum):
    """Exactly OpenZeppelin's ``IGovernor.ProposalState`` (same names, same order)."""

    Pending = 0
    Active = 1
    Canceled = 2
    Defeated = 3
    Succeeded = 4
    Queued = 5
    Expired = 6
    Executed = 7


class VoteType(IntEnum):
    """``GovernorCountingSimple.VoteType``."""

    Against = 0
    For = 1
    Abstain = 2


ALL_STATES = frozenset(ProposalState)


@dataclass
class Proposal:
    id: str
    proposer: str
    actions: tuple[Action, ...]
    description: str
    created_at: int
    vote_start: int  # the snapshot
    vote_duration: int
    executed: bool = False
    canceled: bool = False
    eta: int | None = None

    @property
    def snapshot(self) -> int:
        return self.vote_start

    @property
    def deadline(self) -> int:
        return self.vote_start + self.vote_duration

    @property
    def description_hash(self) -> str:
        return hash_description(self.description)


@dataclass(frozen=True)
class Ballot:
    voter: str
    support: VoteType
    weight: int
    reason: str
    timepoint: int


@dataclass(frozen=True)
class Tally:
    proposal_id: str
    snapshot: int
    against_votes: int
    for_votes: int
    abstain_votes: int
    voters: int
    quorum: int | None  # None while the snapshot is not yet in the past
    quorum_reached: bool
    vote_succeeded: bool

    @property
    def total_votes(self) -> int:
        return self.against_votes + self.for_votes + self.abstain_votes


@dataclass(frozen=True)
class GovernorEvent:
    name: str  # ProposalCreated, VoteCast, ProposalQueued, ProposalExecuted, ProposalCanceled
    timepoint: int
    proposal_id: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Counts:
    against: int = 0
    for_: int = 0
    abstain: int = 0
    ballots: dict[str, Ballot] = field(default_factory=dict)


@dataclass
class ProposalRecord:
    """A proposal with everything that changes with it (counters and ballots, its events, its timelock operation's
    id): a part of its own when the DAO is durable, so a vote writes its proposal's record and nothing else."""

    seq: int  # 1 for the governor's first proposal: the order proposals are listed in
    proposal: Proposal
    counts: _Counts = field(default_factory=_Counts)
    events: list[GovernorEvent] = field(default_factory=list)
    timelock_id: str | None = None


_PROPOSER_MARKER = "#proposer="


class Governor(BoundTarget):
    COUNTING_MODE = "support=bravo&quorum=for,abstain"
    _target_label = "governor"

    def __init__(self, token: VotesToken, timelock: Timelock, *, name: str = "platformQ DAO",
                 voting_delay: int = DAY, voting_period: int = 7 * DAY, proposal_threshold: int = 0,
                 quorum_numerator: int = 4, quorum_denominator: int = 100):
        if not is_int(quorum_denominator) or quorum_denominator <= 0:
            raise ValueError(f"quorum_denominator must be an int > 0, got {quorum_denominator!r}")
        self.name = name
        self.token = token
        self.clock = token.clock
        self.timelock = timelock
        self._quorum_denominator = quorum_denominator
        if not self._settings["voting_delay"](voting_delay):
            raise ValueError(f"voting_delay must be an int in 0..{MAX_TIME}, got {voting_delay!r}")
        if not self._settings["voting_period"](voting_period):
            raise GovernorInvalidVotingPeriod(voting_period)
        if not self._settings["proposal_threshold"](proposal_threshold):
            raise ValueError(f"proposal_threshold must be an int >= 0, got {proposal_threshold!r}")
        if not self._settings["quorum_numerator"](quorum_numerator):
            raise GovernorInvalidQuorumFraction(quorum_numerator, quorum_denominator)
        self._voting_delay = voting_delay
        self._voting_period = voting_period
        self._proposal_threshold = proposal_threshold
        self._quorum_numerators = Checkpoints()
        self._quorum_numerators.push(self.clock.now(), quorum_numerator)
        self._records: MutableMapping[str, ProposalRecord] = PartMap()  # a part each when the DAO is durable
        self._proposal_seq = 0
        timelock.attach_governor(self)

    def __setstate__(self, state: dict) -> None:
        if "_records" not in state:  # pickled before a proposal's record was kept apart (state store format 2)
            events: dict[str, list[GovernorEvent]] = {}
            for event in state.pop("_events"):
                events.setdefault(event.proposal_id, []).append(event)
            counts, ids, proposals = state.pop("_counts"), state.pop("_timelock_ids"), state.pop("_proposals")
            state["_records"] = PartMap({pid: ProposalRecord(seq, p, counts[pid], events.get(pid, []), ids.get(pid))
                                         for seq, (pid, p) in enumerate(proposals.items(), 1)})
            state["_proposal_seq"] = len(proposals)
        self.__dict__.update(state)

    def bind_parts(self, parts: dict, prefix: str, touch: Callable[[str], None] | None = None) -> None:
        """Keep each proposal's record in ``parts`` under ``prefix`` (see :meth:`PartMap.bind`): a durable DAO saves
        a record as a part of its own, so the governor pickles without them (its size no longer grows with the
        proposals)."""
        self._records.bind(parts, prefix, touch)

    # ------------------------------------------------------------------ settings and clock
    @property
    def _settings(self) -> dict[str, Callable[[Any], bool]]:
        """The settings a proposal may change, with their validators (built on use: the governor pickles)."""
        return {
            "voting_delay": lambda v: is_int(v) and 0 <= v <= MAX_TIME,
            "voting_period": lambda v: is_int(v) and 0 < v <= MAX_TIME,
            "proposal_threshold": lambda v: is_int(v) and v >= 0,
            "quorum_numerator": lambda v: is_int(v) and 0 <= v <= self._quorum_denominator,
        }

    @staticmethod
    def clock_mode() -> str:
        return CLOCK_MODE

    def now(self) -> int:
        return self.clock.now()

    @property
    def voting_delay(self) -> int:
        return self._voting_delay

    @property
    def voting_period(self) -> int:
        return self._voting_period

    @property
    def proposal_threshold(self) -> int:
        return self._proposal_threshold

    @property
    def quorum_denominator(self) -> int:
        return self._quorum_denominator

    def quorum_numerator(self, timepoint: int | None = None) -> int:
        """The numerator in force at the end of ``timepoint`` (now when omitted)."""
        ckpt = self._quorum_numerators
        return ckpt.latest() if timepoint is None else ckpt.upper_lookup(timepoint)

    def quorum(self, timepoint: int) -> int:
        """Votes (For + Abstain) needed at a proposal whose snapshot is ``timepoint`` (< now)."""
        supply = self.token.get_past_total_supply(timepoint)
        return supply * self.quorum_numerator(timepoint) // self._quorum_denominator

    def get_votes(self, account: str, timepoint: int) -> int:
        return self.token.get_past_votes(account, timepoint)

    @property
    def events(self) -> tuple[GovernorEvent, ...]:
        """Every proposal's events in time order (events in the same second: by proposal, then as emitted)."""
        records = [self._records[pid] for pid in self._records]
        return tuple(e for _, _, _, e in sorted((e.timepoint, r.seq, i, e) for r in records
                                                for i, e in enumerate(r.events)))

    # ------------------------------------------------------------------ proposal views
    @staticmethod
    def hash_proposal(actions: Sequence[Action | Sequence | Mapping], description: str) -> str:
        return hash_proposal(actions, description)

    def _record(self, proposal_id: str) -> ProposalRecord:
        record = self._records.get(proposal_id)
        if record is None:
            raise GovernorNonexistentProposal(proposal_id)
        return record

    def _get(self, proposal_id: str) -> Proposal:
        return self._record(proposal_id).proposal

    def proposal(self, proposal_id: str) -> Proposal:
        """A copy of the proposal's core record."""
        return replace(self._get(proposal_id))

    def proposal_count(self) -> int:
        return len(self._records)

    def proposal_ids(self) -> list[str]:
        """In the order they were proposed."""
        return sorted(self._records, key=lambda pid: self._records[pid].seq)

    def proposal_snapshot(self, proposal_id: str) -> int:
        return self._get(proposal_id).vote_start

    def proposal_deadline(self, proposal_id: str) -> int:
        return self._get(proposal_id).deadline

    def proposal_proposer(self, proposal_id: str) -> str:
        return self._get(proposal_id).proposer

    def proposal_eta(self, proposal_id: str) -> int | None:
        return self._get(proposal_id).eta

    def proposal_needs_queuing(self, proposal_id: str) -> bool:
        return True

    def timelock_operation_id(self, proposal_id: str) -> str | None:
        record = self._records.get(proposal_id)
        return record.timelock_id if record is not None else None

    def has_voted(self, proposal_id: str, account: str) -> bool:
        return account in self._record(proposal_id).counts.ballots

    def proposal_votes(self, proposal_id: str) -> tuple[int, int, int]:
        """``(against, for, abstain)``, maintained incrementally as votes are cast."""
        c = self._record(proposal_id).counts
        return c.against, c.for_, c.abstain

    def ballots(self, proposal_id: str) -> tuple[Ballot, ...]:
        return tuple(self._record(proposal_id).counts.ballots.values())

    def _quorum_reached(self, p: Proposal) -> bool:
        c = self._record(p.id).counts
        return self.quorum(p.vote_start) <= c.for_ + c.abstain

    def _vote_succeeded(self, p: Proposal) -> bool:
        c = self._record(p.id).counts
        return c.for_ > c.against

    def state(self, proposal_id: str) -> ProposalState:
        p = self._get(proposal_id)
        if p.executed:
            return ProposalState.Executed
        if p.canceled:
            return ProposalState.Canceled
        if p.eta is None:
            now = self.clock.now()
            if p.vote_start >= now:
                return ProposalState.Pending
            if p.deadline >= now:
                return ProposalState.Active
            if not self._quorum_reached(p) or not self._vote_succeeded(p):
                return ProposalState.Defeated
            return ProposalState.Succeeded
        # Queued once, never back to voting: a service restarted on a wall clock that stepped back before the
        # deadline (SystemClock is monotonic within one process only) reopened the vote on a queued proposal.
        # GovernorTimelockControl.state: the timelock is the authority on a queued proposal
        op_state = self.timelock.get_operation_state(self._record(proposal_id).timelock_id)
        if op_state in (OperationState.WAITING, OperationState.READY):
            return ProposalState.Queued
        if op_state is OperationState.EXPIRED:
            return ProposalState.Expired
        if op_state is OperationState.DONE:
            return ProposalState.Executed
        return ProposalState.Canceled

    def _validate_state(self, proposal_id: str, allowed: Iterable[ProposalState], operation: str) -> ProposalState:
        current = self.state(proposal_id)
        allowed = frozenset(allowed)
        if current not in allowed:
            raise GovernorUnexpectedProposalState(proposal_id, current, allowed, operation)
        return current

    # ------------------------------------------------------------------ propose
    @staticmethod
    def _is_valid_description_for_proposer(proposer: str, description: str) -> bool:
        """GovernorRestrictedProposer: a description ending in ``#proposer=<account>`` binds the proposer."""
        idx = description.rfind(_PROPOSER_MARKER)
        if idx == -1:
            return True
        suffix = description[idx + len(_PROPOSER_MARKER):]
        if not suffix or any(ch.isspace() for ch in suffix):
            return True  # not a well-formed restriction: anyone may propose
        return suffix == proposer

    def propose(self, proposer: str, actions: Sequence[Action | Sequence | Mapping], description: str) -> str:
        if not isinstance(proposer, str) or not proposer:
            raise ERC20InvalidAccount("proposer", proposer)
        if not isinstance(description, str):
            raise TypeError("description must be a str")
        if not self._is_valid_description_for_proposer(proposer, description):
            raise GovernorRestrictedProposer(proposer)
        now = self.clock.now()
        threshold = self._proposal_threshold
        if threshold > 0:
            votes = self.token.get_past_votes(proposer, now - 1) if now > 0 else 0
            if votes < threshold:
                raise GovernorInsufficientProposerVotes(proposer, votes, threshold)
        acts = tuple(as_action(a) for a in actions)
        if not acts:
            raise GovernorInvalidProposalLength(0)
        proposal_id = hash_proposal(acts, description)
        if proposal_id in self._records:
            raise GovernorUnexpectedProposalState(proposal_id, self.state(proposal_id), (), "propose")
        self.timelock.validate_actions(acts)
        snapshot = now + self._voting_delay
        p = Proposal(proposal_id, proposer, acts, description, now, snapshot, self._voting_period)
        self._proposal_seq += 1
        self._records[proposal_id] = ProposalRecord(self._proposal_seq, p, events=[GovernorEvent(
            "ProposalCreated", now, proposal_id,
            {"proposer": proposer, "vote_start": snapshot, "vote_end": p.deadline, "description": description})])
        return proposal_id

    # ------------------------------------------------------------------ vote
    def cast_vote(self, proposal_id: str, voter: str, support: int | VoteType, reason: str = "") -> int:
        """Count ``voter``'s votes at the snapshot for ``support``; returns the weight (may be 0)."""
        if not isinstance(voter, str) or not voter:
            raise ERC20InvalidAccount("voter", voter)
        self._validate_state(proposal_id, {ProposalState.Active}, "cast_vote")
        record = self._record(proposal_id)
        p, c = record.proposal, record.counts
        if voter in c.ballots:
            raise GovernorAlreadyCastVote(voter, proposal_id)
        if not is_int(support) or support not in (0, 1, 2):
            raise GovernorInvalidVoteType(support)
        support = VoteType(support)
        weight = self.token.get_past_votes(voter, p.vote_start)
        if support is VoteType.For:
            c.for_ += weight
        elif support is VoteType.Against:
            c.against += weight
        else:
            c.abstain += weight
        now = self.clock.now()
        c.ballots[voter] = Ballot(voter, support, weight, reason, now)
        record.events.append(GovernorEvent("VoteCast", now, proposal_id, {
            "voter": voter, "support": int(support), "weight": weight, "reason": reason}))
        return weight

    # ------------------------------------------------------------------ tally
    def tally(self, proposal_id: str) -> Tally:
        """Recount a proposal from its ballots and the token's checkpoints at the snapshot.

        Every ballot's weight is looked up again (one bisect per voter) and must equal the weight recorded
        when it was cast; the per-support sums must equal the incremental counters. O(voters x log
        checkpoints): 10,000 voters take a few milliseconds.
        """
        record = self._record(proposal_id)
        p, c = record.proposal, record.counts
        snapshot = p.vote_start
        ballots = c.ballots
        if snapshot >= self.clock.now():  # Pending: nobody can have voted, quorum not yet defined
            return Tally(proposal_id, snapshot, 0, 0, 0, 0, None, False, False)
        weights = self.token.get_past_votes_many(ballots.keys(), snapshot)
        sums = [0, 0, 0]
        for ballot, weight in zip(ballots.values(), weights):
            if weight != ballot.weight:
                raise TallyIntegrityError(
                    f"{ballot.voter!r} voted with {ballot.weight} but holds {weight} at snapshot {snapshot}")
            sums[ballot.support] += weight
        against, for_, abstain = sums
        if (against, for_, abstain) != (c.against, c.for_, c.abstain):
            raise TallyIntegrityError(f"recount {sums} != counters {[c.against, c.for_, c.abstain]}")
        quorum = self.quorum(snapshot)
        return Tally(proposal_id, snapshot, against, for_, abstain, len(ballots), quorum,
                     quorum <= for_ + abstain, for_ > against)

    # ------------------------------------------------------------------ queue / execute / cancel
    def _salt(self, proposal_id: str) -> str:
        return proposal_id

    def queue(self, proposal_id: str) -> int:
        """Schedule a Succeeded proposal on the timelock; returns its eta (now + min_delay)."""
        self._validate_state(proposal_id, {ProposalState.Succeeded}, "queue")
        record = self._record(proposal_id)
        p = record.proposal
        op = self.timelock.schedule(p.actions, caller=self, salt=self._salt(proposal_id), proposal_id=proposal_id)
        record.timelock_id = op.id
        p.eta = op.eta
        record.events.append(GovernorEvent("ProposalQueued", self.clock.now(), proposal_id, {"eta": op.eta}))
        return op.eta

    def execute(self, proposal_id: str) -> str:
        """Run a queued proposal's actions through the timelock, once, inside ``[eta, eta + grace)``.

        As in OZ, a Succeeded but unqueued proposal passes the state check and is refused by the timelock
        (``TimelockUnexpectedOperationState``: not scheduled). A failing action (e.g. a transfer beyond the
        treasury's balance) changes nothing and leaves the proposal Queued.
        """
        self._validate_state(proposal_id, {ProposalState.Succeeded, ProposalState.Queued}, "execute")
        record = self._record(proposal_id)
        p = record.proposal
        op_id = record.timelock_id or self.timelock.hash_operation(p.actions, "", self._salt(proposal_id))
        self.timelock.execute(op_id, caller=self)
        p.executed = True
        record.events.append(GovernorEvent("ProposalExecuted", self.clock.now(), proposal_id))
        return proposal_id

    def cancel(self, proposal_id: str, caller: str) -> str:
        """The proposer withdraws a proposal; only while Pending (OZ 5.x)."""
        self._validate_state(proposal_id, {ProposalState.Pending}, "cancel")
        if caller != self._get(proposal_id).proposer:
            raise GovernorOnlyProposer(caller)
        return self._cancel(proposal_id)

    def _cancel(self, proposal_id: str) -> str:
        self._validate_state(
            proposal_id,
            ALL_STATES - {ProposalState.Canceled, ProposalState.Expired, ProposalState.Executed},
            "cancel",
        )
        record = self._record(proposal_id)
        op_id = record.timelock_id
        if op_id is not None and self.timelock.is_operation_pending(op_id):
            self.timelock.cancel(op_id, caller=self)
        record.proposal.canceled = True
        record.events.append(GovernorEvent("ProposalCanceled", self.clock.now(), proposal_id))
        return proposal_id

    # ------------------------------------------------------------------ governance-only settings (onlyGovernance)
    def validate_action(self, action: Action) -> None:
        read_set_parameter(action, self._settings, GOVERNOR)

    def _prepare(self, actions: Sequence[Action], ctx: ExecutionContext, key: object) -> Commit:
        self._require_executor(key)
        changes = [read_set_parameter(a, self._settings, GOVERNOR) for a in actions]

        def commit() -> None:
            for name, value in changes:
                if name == "quorum_numerator":
                    self._quorum_numerators.push(ctx.timepoint, value)
                else:
                    setattr(self, "_" + name, value)

        return commit
