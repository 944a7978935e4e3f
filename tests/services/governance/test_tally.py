"""Tally: an audited recount for large electorates (its speed is measured by `make bench`, not here:
a timed assertion fails on a busy machine without telling anything about the code)."""

from dataclasses import replace

import pytest

from services.governance import ManualClock, TallyIntegrityError, VoteType, build_dao, set_parameter

from .helpers import make_dao, to_active


def test_ten_thousand_voters_end_to_end():
    """Minting, delegating, 10,000 votes and the recount give exact per-side totals and quorum."""
    n = 10_000
    clock = ManualClock(0)
    dao = build_dao(clock, holdings={f"v{i}": 1 + i % 7 for i in range(n)}, voting_delay=1, voting_period=5)
    clock.advance(1)
    pid = dao.governor.propose("v0", [set_parameter("x", 1)], "big vote")
    clock.advance(2)
    for i in range(n):
        dao.governor.cast_vote(pid, f"v{i}", i % 3)
    tally = dao.governor.tally(pid)
    expected = [sum(1 + i % 7 for i in range(n) if i % 3 == s) for s in range(3)]
    assert [tally.against_votes, tally.for_votes, tally.abstain_votes] == expected
    assert tally.voters == n and tally.quorum == sum(1 + i % 7 for i in range(n)) * 4 // 100


def test_tally_is_empty_before_the_snapshot(dao):
    pid = dao.governor.propose("alice", [set_parameter("x", 1)], "x")
    t = dao.governor.tally(pid)
    assert (t.voters, t.total_votes, t.quorum, t.quorum_reached) == (0, 0, None, False)


def test_tally_detects_a_tampered_ballot():
    dao = make_dao()
    gov = dao.governor
    pid = gov.propose("alice", [set_parameter("x", 1)], "x")
    to_active(dao, pid)
    gov.cast_vote(pid, "bob", VoteType.For)
    assert gov.tally(pid).for_votes == 300
    counts = gov._records[pid].counts
    counts.ballots["bob"] = replace(counts.ballots["bob"], weight=301)  # white-box corruption
    with pytest.raises(TallyIntegrityError, match="'bob' voted with 301 but holds 300"):
        gov.tally(pid)
    counts.ballots["bob"] = replace(counts.ballots["bob"], weight=300)
    counts.for_ += 1
    with pytest.raises(TallyIntegrityError, match="recount"):
        gov.tally(pid)
