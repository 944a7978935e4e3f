"""Timelock window, execute-once, expiry, and a treasury that only governance can move."""

import pytest

from services.governance import (
    Action,
    ExecutionContext,
    GovernorUnexpectedProposalState,
    OperationState,
    ParameterStore,
    ProposalState as S,
    TimelockAlreadyBound,
    TimelockUnauthorizedAccount,
    TimelockUnexpectedOperationState,
    Treasury,
    TreasuryInsufficientBalance,
    UnauthorizedExecutor,
    VoteType,
    set_parameter,
    transfer,
)

from .helpers import GRACE, MIN_DELAY, make_dao, to_active, to_after_deadline


def _succeeded(dao, actions, desc="p"):
    gov = dao.governor
    pid = gov.propose("alice", actions, desc)
    to_active(dao, pid)
    gov.cast_vote(pid, "alice", VoteType.For)
    to_after_deadline(dao, pid)
    assert gov.state(pid) is S.Succeeded
    return pid


@pytest.mark.parametrize("offset, ok", [(-1, False), (0, True), (GRACE - 1, True), (GRACE, False)])
def test_execute_only_inside_eta_window(offset, ok):
    dao = make_dao()
    gov = dao.governor
    pid = _succeeded(dao, [transfer("bob", 10, "USDC")])
    eta = gov.queue(pid)
    dao.clock.set(eta + offset)
    if ok:
        gov.execute(pid)
        assert gov.state(pid) is S.Executed
        assert dao.treasury.balance_of("USDC") == 990
    else:
        expected = TimelockUnexpectedOperationState if offset < 0 else GovernorUnexpectedProposalState
        with pytest.raises(expected):
            gov.execute(pid)
        assert gov.state(pid) is (S.Queued if offset < 0 else S.Expired)
        assert dao.treasury.balance_of("USDC") == 1_000 and dao.treasury.audit_log == ()


def test_execute_exactly_once():
    dao = make_dao()
    gov = dao.governor
    pid = _succeeded(dao, [transfer("bob", 10, "USDC")])
    dao.clock.set(gov.queue(pid))
    gov.execute(pid)
    for _ in range(2):
        with pytest.raises(GovernorUnexpectedProposalState, match="is Executed"):
            gov.execute(pid)
        dao.clock.advance(GRACE)  # still Executed, never Expired
        assert gov.state(pid) is S.Executed
    assert dao.treasury.balance_of("USDC") == 990 and len(dao.treasury.audit_log) == 1
    op = dao.timelock.get_operation(gov.timelock_operation_id(pid))
    assert op.done and dao.timelock.get_operation_state(op.id) is OperationState.DONE


def test_expired_after_grace_period():
    dao = make_dao()
    gov, tl = dao.governor, dao.timelock
    pid = _succeeded(dao, [transfer("bob", 10, "USDC")])
    eta = gov.queue(pid)
    op_id = gov.timelock_operation_id(pid)
    assert tl.get_operation_state(op_id) is OperationState.WAITING
    dao.clock.set(eta)
    assert tl.get_operation_state(op_id) is OperationState.READY
    dao.clock.set(eta + GRACE)
    assert gov.state(pid) is S.Expired
    assert tl.get_operation_state(op_id) is OperationState.EXPIRED
    for op in (gov.execute, gov.queue):
        with pytest.raises(GovernorUnexpectedProposalState, match="is Expired"):
            op(pid)
    with pytest.raises(GovernorUnexpectedProposalState):
        gov._cancel(pid)  # even the internal cancel refuses Expired (OZ: Canceled|Expired|Executed are final)
    assert dao.treasury.balance_of("USDC") == 1_000


def test_queue_sets_eta_from_min_delay():
    dao = make_dao()
    pid = _succeeded(dao, [transfer("bob", 1, "USDC")])
    now = dao.clock.now()
    assert dao.governor.queue(pid) == now + MIN_DELAY
    op = dao.timelock.get_operation(dao.governor.timelock_operation_id(pid))
    assert (op.eta, op.expires_at, op.proposal_id) == (now + MIN_DELAY, now + MIN_DELAY + GRACE, pid)


def test_internal_cancel_of_queued_proposal_cancels_timelock_operation():
    dao = make_dao()
    gov = dao.governor
    pid = _succeeded(dao, [transfer("bob", 1, "USDC")])
    gov.queue(pid)
    op_id = gov.timelock_operation_id(pid)
    gov._cancel(pid)
    assert gov.state(pid) is S.Canceled
    assert dao.timelock.get_operation_state(op_id) is OperationState.UNSET


def test_failed_batch_is_atomic_and_can_be_retried():
    dao = make_dao(treasury={"USDC": 100})
    gov, treasury = dao.governor, dao.treasury
    actions = [set_parameter("fee", 5), transfer("bob", 60, "USDC"), transfer("carol", 60, "USDC")]
    pid = _succeeded(dao, actions)
    dao.clock.set(gov.queue(pid))
    with pytest.raises(TreasuryInsufficientBalance) as err:
        gov.execute(pid)
    assert (err.value.needed, err.value.balance) == (120, 100)
    assert gov.state(pid) is S.Queued
    assert treasury.balances() == {"USDC": 100} and treasury.audit_log == ()
    assert "fee" not in dao.parameters  # the parameter change in the same batch did not happen either


def test_native_value_payment_to_an_account():
    dao = make_dao()
    pid = _succeeded(dao, [Action("dave", 20, {})])
    dao.clock.set(dao.governor.queue(pid))
    dao.governor.execute(pid)
    assert dao.treasury.balance_of("native") == 30
    assert [(r.asset, r.to, r.amount) for r in dao.treasury.audit_log] == [("native", "dave", 20)]


def test_treasury_outflows_equal_sum_of_executed_transfers():
    dao = make_dao(treasury={"USDC": 1_000, "ETH": 10, "native": 0})
    gov, clock, treasury = dao.governor, dao.clock, dao.treasury
    plans = {  # description -> (actions, fate)
        "p1": ([transfer("bob", 100, "USDC"), transfer("carol", 3, "ETH")], "execute"),
        "p2": ([transfer("bob", 200, "USDC")], "defeat"),
        "p3": ([transfer("dave", 300, "USDC")], "expire"),
        "p4": ([transfer("erin", 50, "USDC"), transfer("erin", 25, "USDC")], "execute"),
        "p5": ([transfer("bob", 400, "USDC")], "cancel"),
        "p6": ([transfer("bob", 7, "ETH")], "execute"),
    }
    pids = {d: gov.propose("alice", acts, d) for d, (acts, _) in plans.items()}
    gov.cancel(pids["p5"], "alice")
    to_active(dao, pids["p1"])
    for d, pid in pids.items():
        if plans[d][1] != "cancel":
            gov.cast_vote(pid, "alice", VoteType.Against if plans[d][1] == "defeat" else VoteType.For)
    to_after_deadline(dao, pids["p1"])
    etas = {d: gov.queue(pid) for d, pid in pids.items() if plans[d][1] in ("execute", "expire")}
    clock.set(max(etas.values()))
    for d, pid in pids.items():
        if plans[d][1] == "execute":
            gov.execute(pid)
    clock.advance(GRACE)

    executed = [d for d, pid in pids.items() if gov.state(pid) is S.Executed]
    assert sorted(executed) == ["p1", "p4", "p6"]
    expected = {}
    for d in executed:
        for a in plans[d][0]:
            expected[a.payload["asset"]] = expected.get(a.payload["asset"], 0) + a.payload["amount"]
    assert expected == {"USDC": 175, "ETH": 10}
    assert treasury.total_outflows() == expected
    for asset, initial in treasury.initial_balances.items():
        assert initial - treasury.balance_of(asset) == expected.get(asset, 0)
    assert {r.proposal_id for r in treasury.audit_log} == {pids[d] for d in executed}
    assert [r.seq for r in treasury.audit_log] == list(range(5))


# ---------------------------------------------------------------------------- nothing but governance moves funds
def test_treasury_has_no_public_mutator():
    public = {n for n in dir(Treasury) if not n.startswith("_")}
    assert public == {"balance_of", "balances", "initial_balances", "audit_log", "total_outflows", "transfer_of",
                      "validate_action"}
    t = Treasury({"USDC": 5})
    snapshot = t.balances()
    t.balances()["USDC"] = 0  # views are copies
    assert t.balances() == snapshot


def test_targets_refuse_anyone_but_their_timelock():
    dao = make_dao()
    ctx = ExecutionContext("op", None, dao.clock.now())
    with pytest.raises(UnauthorizedExecutor):
        dao.treasury._prepare([transfer("mallory", 1, "USDC")], ctx, object())
    with pytest.raises(UnauthorizedExecutor):
        dao.parameters._prepare([set_parameter("x", 1)], ctx, object())
    with pytest.raises(UnauthorizedExecutor):
        Treasury({"USDC": 5})._prepare([transfer("mallory", 1, "USDC")], ctx, None)  # unbound treasury
    with pytest.raises(TimelockAlreadyBound):
        dao.treasury._bind_executor(object())  # cannot be re-bound to another executor
    assert dao.treasury.balance_of("USDC") == 1_000


def test_timelock_only_obeys_its_governor():
    dao = make_dao()
    tl = dao.timelock
    with pytest.raises(TimelockUnauthorizedAccount, match="PROPOSER_ROLE"):
        tl.schedule([transfer("mallory", 1, "USDC")], caller="mallory")
    pid = _succeeded(dao, [transfer("bob", 1, "USDC")])
    dao.clock.set(dao.governor.queue(pid))
    op_id = dao.governor.timelock_operation_id(pid)
    with pytest.raises(TimelockUnauthorizedAccount, match="EXECUTOR_ROLE"):
        tl.execute(op_id, caller="mallory")
    with pytest.raises(TimelockUnauthorizedAccount, match="CANCELLER_ROLE"):
        tl.cancel(op_id, caller=None)
    with pytest.raises(TimelockAlreadyBound):
        tl.attach_governor(object())
    with pytest.raises(TimelockAlreadyBound):
        tl.register_target("vault2", Treasury({"USDC": 1}))
    assert dao.governor.state(pid) is S.Queued


def test_parameter_store_history():
    dao = make_dao()
    store: ParameterStore = dao.parameters
    pid = _succeeded(dao, [set_parameter("ml/champion", "v1"), set_parameter("ml/champion", "v2")])
    dao.clock.set(dao.governor.queue(pid))
    dao.governor.execute(pid)
    assert store["ml/champion"] == "v2"
    assert [(c.name, c.old, c.new, c.proposal_id) for c in store.history] == [
        ("ml/champion", None, "v1", pid), ("ml/champion", "v1", "v2", pid)]
