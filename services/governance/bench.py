"""Benchmark helper for ``make bench``: how long a full recount of a large electorate takes."""

from __future__ import annotations

import random
import time

from .actions import set_parameter
from .clock import ManualClock
from .dao import build_dao


def bench_tally(n_voters: int = 10_000, *, repeat: int = 3, seed: int = 0) -> float:
    """Seconds (best of ``repeat``) for ``Governor.tally`` over ``n_voters`` ballots.

    Setup, not timed: ``n_voters`` self-delegated holders with random balances, a few transfers after the
    snapshot (so checkpoint histories have more than one entry), one proposal and one vote per holder.
    The timed part re-reads every voter's weight at the snapshot from the checkpoints and sums by support.
    """
    if n_voters < 1:
        raise ValueError("n_voters must be >= 1")
    rng = random.Random(seed)
    clock = ManualClock(1_000)
    voters = [f"voter{i:07d}" for i in range(n_voters)]
    dao = build_dao(clock, holdings={v: rng.randint(1, 1_000) for v in voters},
                    voting_delay=10, voting_period=100, min_delay=10)
    gov, token = dao.governor, dao.token
    clock.advance(1)
    pid = gov.propose(voters[0], [set_parameter("bench/n_voters", n_voters)], f"bench tally {n_voters}")
    clock.advance(gov.voting_delay + 1)
    for _ in range(min(n_voters, 1_000)):  # post-snapshot churn: must not affect weights
        a, b = rng.choice(voters), rng.choice(voters)
        token.transfer(a, b, token.balance_of(a) // 2)
    for v in voters:
        gov.cast_vote(pid, v, rng.choice((0, 1, 1, 2)))
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = gov.tally(pid)
        best = min(best, time.perf_counter() - t0)
    if (result.against_votes, result.for_votes, result.abstain_votes) != gov.proposal_votes(pid):
        raise AssertionError("tally disagrees with the incremental counters")
    if result.voters != n_voters:
        raise AssertionError(f"tally counted {result.voters} voters, expected {n_voters}")
    return best
