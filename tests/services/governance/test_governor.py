"""Governor lifecycle, state transitions and vote counting (OZ Governor 5.x semantics)."""

import pytest

from services.governance import (
    Action,
    GovernorAlreadyCastVote,
    GovernorInsufficientProposerVotes,
    GovernorInvalidProposalLength,
    GovernorInvalidVoteType,
    GovernorNonexistentProposal,
    GovernorOnlyProposer,
    GovernorRestrictedProposer,
    GovernorUnexpectedProposalState,
    InvalidAction,
    ProposalState as S,
    TimelockUnexpectedOperationState,
    VoteType,
    hash_proposal,
    set_parameter,
    transfer,
)

from .helpers import GRACE, MIN_DELAY, VOTING_DELAY, VOTING_PERIOD, make_dao, to_active, to_after_deadline

PAY_BOB = [transfer("bob", 250, "USDC"), set_parameter("ml/price_direction_model.champion", "v7")]


def test_full_lifecycle_happy_path(dao):
    gov, clock, treasury = dao.governor, dao.clock, dao.treasury
    created = clock.now()
    pid = gov.propose("alice", PAY_BOB, "Pay bob, promote v7")
    assert pid == hash_proposal(PAY_BOB, "Pay bob, promote v7")
    assert gov.proposal_snapshot(pid) == created + VOTING_DELAY
    assert gov.proposal_deadline(pid) == created + VOTING_DELAY + VOTING_PERIOD
    assert gov.state(pid) is S.Pending
    clock.set(gov.proposal_snapshot(pid))
    assert gov.state(pid) is S.Pending  # snapshot >= now is still Pending
    clock.advance(1)
    assert gov.state(pid) is S.Active

    assert gov.cast_vote(pid, "alice", VoteType.For) == 600
    assert gov.cast_vote(pid, "bob", VoteType.Against, reason="too much") == 300
    assert gov.cast_vote(pid, "carol", 2) == 100
    assert gov.proposal_votes(pid) == (300, 600, 100)
    t = gov.tally(pid)
    assert (t.against_votes, t.for_votes, t.abstain_votes, t.voters) == (300, 600, 100, 3)
    assert t.quorum == 1_000 * 4 // 100 and t.quorum_reached and t.vote_succeeded

    clock.set(gov.proposal_deadline(pid))
    assert gov.state(pid) is S.Active  # deadline itself is still Active
    clock.advance(1)
    assert gov.state(pid) is S.Succeeded

    eta = gov.queue(pid)
    assert eta == clock.now() + MIN_DELAY == gov.proposal_eta(pid)
    assert gov.state(pid) is S.Queued
    clock.set(eta)
    assert gov.execute(pid) == pid
    assert gov.state(pid) is S.Executed
    assert treasury.balance_of("USDC") == 750
    assert [(r.asset, r.to, r.amount, r.proposal_id) for r in treasury.audit_log] == [("USDC", "bob", 250, pid)]
    assert dao.parameters["ml/price_direction_model.champion"] == "v7"
    assert [e.name for e in gov.events] == ["ProposalCreated", "VoteCast", "VoteCast", "VoteCast",
                                            "ProposalQueued", "ProposalExecuted"]


# ---------------------------------------------------------------------------- every state x every operation
def _in_state(state):
    """A fresh DAO and a proposal by alice in ``state``; Queued is at its eta (ready to execute)."""
    dao = make_dao()
    gov, clock = dao.governor, dao.clock
    pid = gov.propose("alice", PAY_BOB, f"proposal in state {state.name}")
    if state is S.Pending:
        return dao, pid
    if state is S.Canceled:
        gov.cancel(pid, "alice")
        return dao, pid
    to_active(dao, pid)
    if state is S.Active:
        return dao, pid
    gov.cast_vote(pid, "alice", VoteType.Against if state is S.Defeated else VoteType.For)
    to_after_deadline(dao, pid)
    if state in (S.Defeated, S.Succeeded):
        return dao, pid
    eta = gov.queue(pid)
    clock.set(eta)
    if state is S.Queued:
        return dao, pid
    if state is S.Expired:
        clock.set(eta + GRACE)
        return dao, pid
    gov.execute(pid)
    return dao, pid


OPERATIONS = {
    "cast_vote": lambda gov, pid: gov.cast_vote(pid, "bob", VoteType.For),
    "queue": lambda gov, pid: gov.queue(pid),
    "execute": lambda gov, pid: gov.execute(pid),
    "cancel": lambda gov, pid: gov.cancel(pid, "alice"),
}
ALLOWED = {  # operation -> (states where it succeeds, state it leads to (None: unchanged))
    "cast_vote": ({S.Active}, None),
    "queue": ({S.Succeeded}, S.Queued),
    "execute": ({S.Queued}, S.Executed),
    "cancel": ({S.Pending}, S.Canceled),
}


@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
def test_helper_reaches_state(state):
    dao, pid = _in_state(state)
    assert dao.governor.state(pid) is state


@pytest.mark.parametrize("op", sorted(OPERATIONS))
@pytest.mark.parametrize("state", list(S), ids=lambda s: s.name)
def test_each_operation_in_each_state(state, op):
    dao, pid = _in_state(state)
    gov = dao.governor
    allowed, after = ALLOWED[op]
    balances, log = dao.treasury.balances(), dao.treasury.audit_log
    if state in allowed:
        OPERATIONS[op](gov, pid)
        assert gov.state(pid) is (after or state)
        return
    if op == "execute" and state is S.Succeeded:
        # OZ: the state check admits Succeeded, the timelock refuses an unscheduled operation
        with pytest.raises(TimelockUnexpectedOperationState, match="UNSET.*queue it first"):
            OPERATIONS[op](gov, pid)
    else:
        with pytest.raises(GovernorUnexpectedProposalState) as err:
            OPERATIONS[op](gov, pid)
        assert err.value.current is state
        assert err.value.expected == frozenset(ALLOWED[op][0]) | ({S.Succeeded} if op == "execute" else set())
        assert state.name in str(err.value) and op in str(err.value)
    assert gov.state(pid) is state
    assert dao.treasury.balances() == balances and dao.treasury.audit_log == log


def test_unknown_proposal_raises(dao):
    with pytest.raises(GovernorNonexistentProposal, match="no proposal 0xdead"):
        dao.governor.state("0xdead")
    with pytest.raises(GovernorNonexistentProposal):
        dao.governor.cast_vote("0xdead", "alice", 1)


def test_cancel_only_by_proposer(dao):
    pid = dao.governor.propose("alice", PAY_BOB, "x")
    with pytest.raises(GovernorOnlyProposer):
        dao.governor.cancel(pid, "bob")
    assert dao.governor.state(pid) is S.Pending
    dao.governor.cancel(pid, "alice")
    assert dao.governor.state(pid) is S.Canceled


# ---------------------------------------------------------------------------- propose
def test_proposal_id_is_deterministic_and_unique(dao):
    other = make_dao()
    desc = "same"
    assert dao.governor.propose("alice", PAY_BOB, desc) == other.governor.propose("bob", PAY_BOB, desc)
    assert hash_proposal(PAY_BOB, desc) != hash_proposal(PAY_BOB, desc + " ")
    assert hash_proposal(PAY_BOB, desc) != hash_proposal(PAY_BOB[::-1], desc)
    # triples and mappings hash like Actions
    a = PAY_BOB[0]
    assert hash_proposal([(a.target, a.value, dict(a.payload))], desc) == hash_proposal([a], desc)
    with pytest.raises(GovernorUnexpectedProposalState) as err:
        dao.governor.propose("carol", PAY_BOB, desc)
    assert err.value.current is S.Pending and err.value.expected == frozenset()


def test_empty_and_invalid_actions_are_refused(dao):
    gov = dao.governor
    with pytest.raises(GovernorInvalidProposalLength):
        gov.propose("alice", [], "nothing")
    bad = [
        Action("nowhere", 0, {"type": "call"}),  # unknown target with a payload
        Action("treasury", 0, {"type": "transfer", "to": "bob", "amount": 0}),
        Action("treasury", 0, {"type": "transfer", "to": "", "amount": 5}),
        Action("treasury", 0, {"type": "mint", "to": "bob", "amount": 5}),
        Action("treasury", 3, {"type": "transfer", "to": "bob", "amount": 5}),
        Action("bob", 0, {}),  # native payment of nothing
        set_parameter("voting_period", 0, target="governor"),
        set_parameter("quorum_numerator", 101, target="governor"),
        set_parameter("no_such_setting", 1, target="governor"),
        set_parameter("grace_period", 0, target="timelock"),
    ]
    for i, action in enumerate(bad):
        with pytest.raises(InvalidAction):
            gov.propose("alice", [action], f"bad {i}")
    with pytest.raises(InvalidAction):
        Action("treasury", 0, {"type": "transfer", "amount": float("nan")})
    assert gov.proposal_ids() == []


def test_proposal_threshold_uses_votes_at_previous_second():
    dao = make_dao(proposal_threshold=500)
    gov, token, clock = dao.governor, dao.token, dao.clock
    with pytest.raises(GovernorInsufficientProposerVotes) as err:
        gov.propose("bob", PAY_BOB, "bob's")
    assert (err.value.votes, err.value.threshold) == (300, 500)
    token.transfer("alice", "bob", 200)  # bob now has 500, but only from this second on
    with pytest.raises(GovernorInsufficientProposerVotes):
        gov.propose("bob", PAY_BOB, "bob's")
    clock.advance(1)
    assert gov.state(gov.propose("bob", PAY_BOB, "bob's")) is S.Pending


def test_restricted_proposer_suffix(dao):
    desc = "Only alice may submit this #proposer=alice"
    with pytest.raises(GovernorRestrictedProposer):
        dao.governor.propose("bob", PAY_BOB, desc)
    assert dao.governor.state(dao.governor.propose("alice", PAY_BOB, desc)) is S.Pending


# ---------------------------------------------------------------------------- voting
def test_no_double_vote(dao):
    gov = dao.governor
    pid = gov.propose("alice", PAY_BOB, "x")
    to_active(dao, pid)
    gov.cast_vote(pid, "bob", VoteType.For)
    for support in (VoteType.For, VoteType.Against, 7):
        with pytest.raises(GovernorAlreadyCastVote, match="'bob' has already voted"):
            gov.cast_vote(pid, "bob", support)
    assert gov.proposal_votes(pid) == (0, 300, 0)
    assert gov.has_voted(pid, "bob") and not gov.has_voted(pid, "alice")
    assert len(gov.ballots(pid)) == 1


def test_invalid_vote_type(dao):
    gov = dao.governor
    pid = gov.propose("alice", PAY_BOB, "x")
    to_active(dao, pid)
    for bad in (3, -1, "1", True, None):
        with pytest.raises(GovernorInvalidVoteType):
            gov.cast_vote(pid, "alice", bad)
    assert not gov.has_voted(pid, "alice")
    assert gov.cast_vote(pid, "alice", 1) == 600


def test_zero_weight_vote_is_recorded_once(dao):
    gov = dao.governor
    pid = gov.propose("alice", PAY_BOB, "x")
    to_active(dao, pid)
    assert gov.cast_vote(pid, "mallory", VoteType.For) == 0
    with pytest.raises(GovernorAlreadyCastVote):
        gov.cast_vote(pid, "mallory", VoteType.For)
    assert gov.proposal_votes(pid) == (0, 0, 0)


def test_delegation_after_snapshot_does_not_change_weight(dao):
    gov, token = dao.governor, dao.token
    pid = gov.propose("alice", PAY_BOB, "x")
    to_active(dao, pid)
    token.delegate("alice", "bob")  # alice's 600 go to bob, but only from now on
    token.delegate("carol", "bob")
    assert token.get_votes("bob") == 1_000
    assert gov.cast_vote(pid, "bob", VoteType.Against) == 300
    assert gov.cast_vote(pid, "alice", VoteType.For) == 600  # still votes with her snapshot power
    assert gov.cast_vote(pid, "carol", VoteType.For) == 100
    assert gov.proposal_votes(pid) == (300, 700, 0)
    assert gov.tally(pid).for_votes == 700


def test_transfers_and_mints_after_snapshot_do_not_change_weight_or_quorum(dao):
    gov, token = dao.governor, dao.token
    pid = gov.propose("alice", PAY_BOB, "x")
    to_active(dao, pid)
    token.transfer("alice", "bob", 600)
    token.mint("carol", 1_000_000)
    token.burn("bob", 900)
    assert gov.cast_vote(pid, "alice", VoteType.For) == 600
    assert gov.cast_vote(pid, "carol", VoteType.Against) == 100
    assert gov.cast_vote(pid, "bob", VoteType.Against) == 300
    t = gov.tally(pid)
    assert t.quorum == 40 and (t.against_votes, t.for_votes) == (400, 600)


def test_changes_at_the_snapshot_second_count():
    """The snapshot is the *end* of the snapshot second: a transfer while it is still Pending counts."""
    dao = make_dao()
    gov, token, clock = dao.governor, dao.token, dao.clock
    pid = gov.propose("alice", PAY_BOB, "x")
    clock.set(gov.proposal_snapshot(pid))
    token.transfer("alice", "carol", 100)
    clock.advance(1)
    assert gov.cast_vote(pid, "carol", VoteType.For) == 200
    assert gov.cast_vote(pid, "alice", VoteType.For) == 500


# ---------------------------------------------------------------------------- quorum and counting
@pytest.mark.parametrize("for_votes, abstain, expected", [
    (400, 0, S.Succeeded),   # exactly the quorum
    (399, 0, S.Defeated),    # one short
    (200, 200, S.Succeeded),  # abstain counts towards the quorum
    (1, 399, S.Succeeded),
    (0, 400, S.Defeated),    # quorum but For does not beat Against (0 > 0 is false)
])
def test_quorum_boundary(for_votes, abstain, expected):
    holdings = {"yes": for_votes, "meh": abstain, "rest": 10_000 - for_votes - abstain}
    dao = make_dao(holdings=holdings)  # supply 10,000 x 4% => quorum 400
    gov = dao.governor
    pid = gov.propose("yes", PAY_BOB, "boundary")
    to_active(dao, pid)
    if for_votes:
        gov.cast_vote(pid, "yes", VoteType.For)
    if abstain:
        gov.cast_vote(pid, "meh", VoteType.Abstain)
    to_after_deadline(dao, pid)
    assert gov.quorum(gov.proposal_snapshot(pid)) == 400
    assert gov.state(pid) is expected
    assert gov.tally(pid).quorum_reached is (for_votes + abstain >= 400)


def test_against_does_not_count_towards_quorum_and_ties_fail():
    dao = make_dao(holdings={"a": 400, "b": 400, "c": 9_200})
    gov = dao.governor
    pid = gov.propose("a", PAY_BOB, "tie")
    to_active(dao, pid)
    gov.cast_vote(pid, "a", VoteType.For)
    gov.cast_vote(pid, "b", VoteType.Against)
    to_after_deadline(dao, pid)
    t = gov.tally(pid)
    assert t.quorum_reached and not t.vote_succeeded
    assert gov.state(pid) is S.Defeated


def test_quorum_uses_total_supply_at_snapshot_including_undelegated():
    dao = make_dao(holdings={"a": 100})
    dao.token.mint("whale", 9_900)  # never delegates, still counts in the quorum base
    dao.clock.advance(1)
    pid = dao.governor.propose("a", PAY_BOB, "x")
    to_active(dao, pid)
    dao.governor.cast_vote(pid, "a", VoteType.For)
    to_after_deadline(dao, pid)
    assert dao.governor.tally(pid).quorum == 400
    assert dao.governor.state(pid) is S.Defeated


# ---------------------------------------------------------------------------- governance of the governor
def _pass(dao, actions, desc, voter="alice"):
    gov = dao.governor
    pid = gov.propose(voter, actions, desc)
    to_active(dao, pid)
    gov.cast_vote(pid, voter, VoteType.For)
    to_after_deadline(dao, pid)
    dao.clock.set(gov.queue(pid))
    gov.execute(pid)
    return pid


def test_settings_change_only_through_proposals(dao):
    gov, tl = dao.governor, dao.timelock
    _pass(dao, [set_parameter("voting_period", 500, "governor"), set_parameter("voting_delay", 3, "governor"),
                set_parameter("proposal_threshold", 7, "governor"), set_parameter("min_delay", 9, "timelock")],
          "retune")
    assert (gov.voting_period, gov.voting_delay, gov.proposal_threshold, tl.min_delay) == (500, 3, 7, 9)
    pid = gov.propose("alice", PAY_BOB, "next")
    assert gov.proposal_deadline(pid) - gov.proposal_snapshot(pid) == 500
    assert gov.proposal_snapshot(pid) == dao.clock.now() + 3


def test_quorum_numerator_change_does_not_touch_snapshotted_proposals(dao):
    gov = dao.governor
    old = gov.propose("alice", PAY_BOB, "old")  # snapshot before the change: quorum 4% of 1000 = 40
    _pass(dao, [set_parameter("quorum_numerator", 50, "governor")], "raise quorum")
    assert gov.quorum_numerator() == 50
    assert gov.quorum(gov.proposal_snapshot(old)) == 40
    new = gov.propose("alice", PAY_BOB, "new")
    to_active(dao, new)
    assert gov.tally(new).quorum == 500


def test_a_queued_proposal_does_not_reopen_its_vote_when_the_clock_is_behind_after_a_restart():
    """SystemClock holds time from going back within one process only: a service restarted on a wall clock that
    had stepped back before the deadline answered a queued proposal as Active and took new votes on it (against
    votes could then turn it Defeated while its timelock operation stays scheduled)."""
    from services.governance.api import attach_clock
    from services.governance.clock import ManualClock

    dao, pid = _in_state(S.Queued)
    gov = dao.governor
    attach_clock(dao, ManualClock(gov.proposal_deadline(pid) - 2))  # the restarted service's clock
    assert gov.state(pid) is S.Queued
    with pytest.raises(GovernorUnexpectedProposalState):
        gov.cast_vote(pid, "bob", VoteType.Against)
    assert gov.proposal_votes(pid) == (0, 600, 0)
