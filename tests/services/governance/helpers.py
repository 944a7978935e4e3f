"""Shared builders for the governance tests: a small DAO on a ManualClock."""

from services.governance import ManualClock, build_dao

START = 1_000
VOTING_DELAY = 10
VOTING_PERIOD = 100
MIN_DELAY = 50
GRACE = 200


def make_dao(holdings=None, treasury=None, **kw):
    clock = ManualClock(START)
    params = dict(voting_delay=VOTING_DELAY, voting_period=VOTING_PERIOD, min_delay=MIN_DELAY, grace_period=GRACE,
                  quorum_numerator=4)
    params.update(kw)
    dao = build_dao(clock,
                    holdings={"alice": 600, "bob": 300, "carol": 100} if holdings is None else holdings,
                    treasury={"USDC": 1_000, "native": 50} if treasury is None else treasury,
                    **params)
    clock.advance(1)  # holdings minted at START are now in the past
    return dao


def to_active(dao, pid):
    """Advance the clock to the first second of the voting period."""
    dao.clock.set(dao.governor.proposal_snapshot(pid) + 1)


def to_after_deadline(dao, pid):
    dao.clock.set(dao.governor.proposal_deadline(pid) + 1)
