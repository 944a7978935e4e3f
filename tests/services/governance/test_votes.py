"""VotesToken: delegation, checkpoints and exact past lookups (ERC20Votes semantics)."""

import pytest

from services.governance import (
    Checkpoints,
    CheckpointUnorderedInsertion,
    ERC5805FutureLookup,
    ERC20ExceededSafeSupply,
    ERC20InsufficientBalance,
    ERC20InvalidAccount,
    ERC20InvalidAmount,
    ManualClock,
    VotesToken,
)


@pytest.fixture
def clock():
    return ManualClock(100)


@pytest.fixture
def token(clock):
    return VotesToken(clock)


def test_balance_without_delegation_has_no_votes(token, clock):
    token.mint("alice", 50)
    assert token.balance_of("alice") == 50
    assert token.get_votes("alice") == 0
    token.delegate("alice", "alice")
    assert token.get_votes("alice") == 50
    assert token.delegates("alice") == "alice"


def test_transfer_moves_votes_between_delegatees(token):
    token.mint("alice", 100)
    token.mint("bob", 10)
    token.delegate("alice", "carol")  # alice's power goes to carol
    token.delegate("bob", "bob")
    token.transfer("alice", "bob", 30)
    assert token.get_votes("carol") == 70
    assert token.get_votes("bob") == 40
    assert token.get_votes("alice") == 0
    token.transfer("bob", "dave", 40)  # dave has no delegatee: those votes vanish
    assert token.get_votes("bob") == 0
    assert token.delegated_supply() == 70 == token.get_votes("carol")


def test_redelegate_and_undelegate(token):
    token.mint("alice", 100)
    token.delegate("alice", "bob")
    token.delegate("alice", "carol")
    assert (token.get_votes("bob"), token.get_votes("carol")) == (0, 100)
    token.delegate("alice", None)
    assert token.get_votes("carol") == 0
    assert token.delegates("alice") is None
    assert token.delegated_supply() == 0


def test_mint_and_burn_follow_delegation_and_supply(token, clock):
    token.delegate("alice", "alice")
    token.mint("alice", 100)
    assert token.get_votes("alice") == 100
    token.burn("alice", 40)
    assert token.get_votes("alice") == 60
    assert token.total_supply == 60
    clock.advance(1)
    assert token.get_past_total_supply(100) == 60


def test_past_votes_are_exact_at_every_timepoint(token, clock):
    token.mint("alice", 10)
    token.delegate("alice", "alice")  # t=100: 10
    clock.set(105)
    token.mint("alice", 5)  # t=105: 15
    token.transfer("alice", "bob", 3)  # t=105: 12 (same timestamp, last value wins)
    clock.set(110)
    token.delegate("alice", "bob")  # t=110: 0
    clock.set(120)
    expected = {99: 0, 100: 10, 104: 10, 105: 12, 109: 12, 110: 0, 119: 0}
    assert {t: token.get_past_votes("alice", t) for t in expected} == expected
    assert token.num_checkpoints("alice") == 3  # two writes at t=105 share one checkpoint
    assert token.checkpoints("alice", 1) == (105, 12)
    assert [token.get_past_total_supply(t) for t in (99, 100, 105, 119)] == [0, 10, 15, 15]
    # bob never delegated: holds 3 tokens but has 12 delegated votes from alice since t=110
    assert token.get_past_votes("bob", 110) == 12
    assert token.get_past_votes_many(["alice", "bob", "zed"], 105) == [12, 0, 0]


def test_future_lookup_is_refused(token, clock):
    token.mint("alice", 1)
    with pytest.raises(ERC5805FutureLookup, match="not in the past"):
        token.get_past_votes("alice", clock.now())
    with pytest.raises(ERC5805FutureLookup):
        token.get_past_total_supply(clock.now() + 5)


def test_failed_operations_change_nothing(token):
    token.mint("alice", 10)
    token.delegate("alice", "alice")
    with pytest.raises(ERC20InsufficientBalance) as err:
        token.transfer("alice", "bob", 11)
    assert (err.value.balance, err.value.needed) == (10, 11)
    with pytest.raises(ERC20InsufficientBalance):
        token.burn("alice", 11)
    for bad in (-1, 1.5, True):
        with pytest.raises(ERC20InvalidAmount):
            token.mint("alice", bad)
    for bad in ("", None, 3):
        with pytest.raises(ERC20InvalidAccount):
            token.transfer("alice", bad, 1)
    assert (token.balance_of("alice"), token.get_votes("alice"), token.total_supply) == (10, 10, 10)


def test_supply_cap(clock):
    token = VotesToken(clock, max_supply=100)
    token.mint("a", 100)
    with pytest.raises(ERC20ExceededSafeSupply):
        token.mint("a", 1)
    assert token.total_supply == 100


def test_checkpoints_reject_unordered_keys():
    c = Checkpoints()
    c.push(5, 1)
    assert c.push(5, 2) == (1, 2)
    c.push(9, 3)
    with pytest.raises(CheckpointUnorderedInsertion):
        c.push(8, 4)
    assert [c.upper_lookup(t) for t in (4, 5, 8, 9, 100)] == [0, 2, 2, 3, 3]
    assert list(c) == [(5, 2), (9, 3)]


def test_manual_clock_never_goes_back():
    from services.governance import ClockError

    clock = ManualClock(10)
    assert clock.advance(5) == 15
    with pytest.raises(ClockError):
        clock.set(14)
    with pytest.raises(ClockError):
        clock.advance(-1)
    assert clock.now() == 15


def test_zero_amount_moves_from_fresh_accounts(token):
    """Regression (found by the state machine): burning or sending 0 from an account that never held tokens."""
    token.burn("ghost", 0)
    token.transfer("ghost", "alice", 0)
    assert token.balance_of("ghost") == 0 and token.total_supply == 0


def test_clocks_satisfy_the_protocol():
    import time

    from services.governance import CLOCK_MODE, Clock, SystemClock

    sys_clock = SystemClock()
    assert isinstance(sys_clock, Clock) and isinstance(ManualClock(), Clock)
    t = sys_clock.now()
    assert isinstance(t, int) and abs(t - time.time()) < 5
    assert VotesToken(sys_clock).clock_mode() == CLOCK_MODE == "mode=timestamp"


def test_actions_are_immutable_values():
    from services.governance import Action, transfer

    a, b = transfer("bob", 5, "USDC"), Action("treasury", 0, {"amount": 5, "asset": "USDC", "to": "bob",
                                                                "type": "transfer"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != transfer("bob", 6, "USDC")
    with pytest.raises(TypeError):
        a.payload["amount"] = 10**9  # read-only view
    payload = {"type": "transfer", "to": "bob", "amount": 5}
    c = Action("treasury", 0, payload)
    payload["amount"] = 10**9  # the action copied its payload
    assert c.payload["amount"] == 5
