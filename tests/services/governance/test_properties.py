"""Property and stateful tests: random sequences of token moves, votes, time and governance operations.

The state machine keeps an independent reference model (balances, delegations, the full per-second history
of voting power and supply, ballots, proposal bookkeeping) and checks after every step:

* current and past voting power equal the model's (checkpoint exactness), and the sum of voting power
  equals the delegated supply;
* every value ever read from the past never changes later (snapshot stability);
* every proposal's state equals the state the model derives from OZ's rules;
* the tally recount equals the model's ballots, with one ballot per voter (no double vote);
* treasury conservation: initial == balance + outflows per asset, and outflows == the transfers of
  exactly the executed proposals.
"""

from hypothesis import HealthCheck, event, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from services.governance import (
    ERC20InsufficientBalance,
    GovernorAlreadyCastVote,
    GovernorOnlyProposer,
    GovernorUnexpectedProposalState,
    ManualClock,
    ProposalState as S,
    TimelockUnexpectedOperationState,
    TreasuryInsufficientBalance,
    VoteType,
    build_dao,
    hash_proposal,
    transfer,
)

ACCOUNTS = ["a", "b", "c", "d"]
ASSETS = ["USDC", "ETH"]
DELAY, PERIOD, MIN_DELAY, GRACE, QUORUM_PCT = 2, 10, 3, 20, 10
INITIAL_TREASURY = {"USDC": 500, "ETH": 150}
INITIAL_HOLDINGS = {"a": 100, "b": 60, "c": 30, "d": 10}  # minted and self-delegated at setup

accounts = st.sampled_from(ACCOUNTS)
amounts = st.integers(0, 120)


class GovernanceMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.clock = ManualClock(100)
        self.dao = build_dao(self.clock, holdings=INITIAL_HOLDINGS, treasury=INITIAL_TREASURY, voting_delay=DELAY,
                             voting_period=PERIOD, min_delay=MIN_DELAY, grace_period=GRACE,
                             quorum_numerator=QUORUM_PCT)
        self.token, self.gov = self.dao.token, self.dao.governor
        self.bal = dict(INITIAL_HOLDINGS)
        self.dlg: dict[str, str] = {a: a for a in INITIAL_HOLDINGS}
        self.history: dict[int, tuple[dict, int]] = {}
        self.proposals: list[dict] = []
        self.outflows: dict[str, int] = {}
        self.seen_past: dict[tuple, int] = {}
        self._record()

    # ------------------------------------------------------------------ reference model
    def _model_votes(self):
        v = dict.fromkeys(ACCOUNTS, 0)
        for delegator, delegatee in self.dlg.items():
            v[delegatee] += self.bal[delegator]
        return v

    def _record(self):
        self.history[self.clock.now()] = (self._model_votes(), sum(self.bal.values()))

    def _model_past(self, t):
        keys = [k for k in self.history if k <= t]
        return self.history[max(keys)] if keys else (dict.fromkeys(ACCOUNTS, 0), 0)

    def _expected_state(self, p):
        if p["executed"]:
            return S.Executed
        if p["canceled"]:
            return S.Canceled
        now = self.clock.now()
        if p["snapshot"] >= now:
            return S.Pending
        if p["snapshot"] + PERIOD >= now:
            return S.Active
        sums = [0, 0, 0]
        for support, weight in p["ballots"].values():
            sums[support] += weight
        quorum = self._model_past(p["snapshot"])[1] * QUORUM_PCT // 100
        if not (sums[1] + sums[2] >= quorum and sums[1] > sums[0]):
            return S.Defeated
        if p["eta"] is None:
            return S.Succeeded
        return S.Expired if now >= p["eta"] + GRACE else S.Queued

    def _pick(self, i, prefer=None):
        """Proposal number ``i`` (mod count); with ``prefer``, only among proposals in that model state when
        there are any (odd ``i`` ignores the preference so the refusal paths stay exercised)."""
        pool = self.proposals
        if prefer is not None and i % 2 == 0:
            wanted = ({S.Pending, S.Active, S.Succeeded, S.Queued} if prefer == "live" else {prefer})
            pool = [p for p in pool if self._expected_state(p) in wanted] or pool
        return pool[(i // 2) % len(pool)] if pool else None

    def _expect_raises(self, exc, fn, *args):
        try:
            fn(*args)
        except exc:
            return
        raise AssertionError(f"{fn.__name__}{args} should have raised {exc.__name__}")

    # ------------------------------------------------------------------ token rules
    @rule(to=accounts, amount=amounts)
    def mint(self, to, amount):
        self.token.mint(to, amount)
        self.bal[to] += amount
        self._record()

    @rule(account=accounts, amount=amounts)
    def burn(self, account, amount):
        if amount > self.bal[account]:
            self._expect_raises(ERC20InsufficientBalance, self.token.burn, account, amount)
        else:
            self.token.burn(account, amount)
            self.bal[account] -= amount
        self._record()

    @rule(src=accounts, dst=accounts, amount=amounts)
    def transfer_tokens(self, src, dst, amount):
        if amount > self.bal[src]:
            self._expect_raises(ERC20InsufficientBalance, self.token.transfer, src, dst, amount)
        else:
            self.token.transfer(src, dst, amount)
            self.bal[src] -= amount
            self.bal[dst] += amount
        self._record()

    @rule(delegator=accounts, delegatee=st.one_of(st.none(), accounts))
    def delegate(self, delegator, delegatee):
        self.token.delegate(delegator, delegatee)
        if delegatee is None:
            self.dlg.pop(delegator, None)
        else:
            self.dlg[delegator] = delegatee
        self._record()

    @rule(seconds=st.integers(0, 4))
    def advance(self, seconds):
        self.clock.advance(seconds)
        self._record()

    @rule(i=st.integers(0, 50), boundary=st.sampled_from(
        ["next", "next", "snapshot", "active", "deadline", "decided", "eta", "last_ready", "expired"]))
    def jump_to_boundary(self, i, boundary):
        """Move the clock exactly onto a phase boundary of one proposal (when that is not in the past);
        "next" is its first boundary after now."""
        p = self._pick(i, "live")
        if p is None:
            return
        deadline = p["snapshot"] + PERIOD
        targets = {"snapshot": p["snapshot"], "active": p["snapshot"] + 1, "deadline": deadline,
                   "decided": deadline + 1}
        if p["eta"] is not None:
            targets.update(eta=p["eta"], last_ready=p["eta"] + GRACE - 1, expired=p["eta"] + GRACE)
        now = self.clock.now()
        if boundary == "next":
            t = min((t for t in targets.values() if t > now), default=None)
        else:
            t = targets.get(boundary)
        if t is not None and t > now:
            self.clock.set(t)
            self._record()

    # ------------------------------------------------------------------ governance rules
    @rule(proposer=accounts,
          payments=st.lists(st.tuples(accounts, st.sampled_from(ASSETS), st.integers(1, 120)), min_size=1, max_size=3))
    def propose(self, proposer, payments):
        actions = [transfer(to, amount, asset) for to, asset, amount in payments]
        desc = f"proposal {len(self.proposals)}"
        pid = self.gov.propose(proposer, actions, desc)
        assert pid == hash_proposal(actions, desc)
        self.proposals.append(dict(pid=pid, proposer=proposer, payments=payments, snapshot=self.clock.now() + DELAY,
                                   ballots={}, eta=None, executed=False, canceled=False))

    @rule(i=st.integers(0, 50), voter=accounts, support=st.sampled_from(list(VoteType)))
    def vote(self, i, voter, support):
        p = self._pick(i, S.Active)
        if p is not None:
            self._vote_on(p, voter, support)

    @rule(i=st.integers(0, 50), supports=st.lists(st.sampled_from([VoteType.For, VoteType.For, VoteType.Against,
                                                                   VoteType.Abstain]), min_size=4, max_size=4))
    def vote_everyone(self, i, supports):
        """Every account votes on one proposal (speeds the machine towards decided proposals)."""
        p = self._pick(i, S.Active)
        if p is not None:
            for voter, support in zip(ACCOUNTS, supports):
                self._vote_on(p, voter, support)

    def _vote_on(self, p, voter, support):
        state = self._expected_state(p)
        if state is not S.Active:
            self._expect_raises(GovernorUnexpectedProposalState, self.gov.cast_vote, p["pid"], voter, support)
        elif voter in p["ballots"]:
            self._expect_raises(GovernorAlreadyCastVote, self.gov.cast_vote, p["pid"], voter, support)
        else:
            weight = self.gov.cast_vote(p["pid"], voter, support)
            event("vote: counted" + (" (weight > 0)" if weight else ""))
            assert weight == self._model_past(p["snapshot"])[0][voter]
            p["ballots"][voter] = (int(support), weight)

    @rule(proposer=accounts,
          payments=st.lists(st.tuples(accounts, st.sampled_from(ASSETS), st.integers(1, 120)), min_size=1, max_size=3),
          supports=st.lists(st.sampled_from([VoteType.For, VoteType.For, VoteType.Against, VoteType.Abstain]),
                            min_size=4, max_size=4),
          wait=st.integers(-1, GRACE))
    def full_cycle(self, proposer, payments, supports, wait):
        """Drive one new proposal through its whole life, with the model checked at each step; ``wait`` is
        how long after its eta the execution is attempted (-1: too early, GRACE: too late)."""
        self.propose(proposer, payments)
        p = self.proposals[-1]
        self.clock.set(p["snapshot"] + 1)
        self._record()
        for voter, support in zip(ACCOUNTS, supports):
            self._vote_on(p, voter, support)
        self.clock.set(p["snapshot"] + PERIOD + 1)
        self._record()
        self._queue(p)
        if p["eta"] is not None:
            self.clock.set(max(self.clock.now(), p["eta"] + wait))
            self._record()
        self._execute(p)

    @rule(i=st.integers(0, 50))
    def queue(self, i):
        p = self._pick(i, S.Succeeded)
        if p is not None:
            self._queue(p)

    def _queue(self, p):
        if self._expected_state(p) is S.Succeeded:
            assert self.gov.queue(p["pid"]) == self.clock.now() + MIN_DELAY
            event("queue: queued")
            p["eta"] = self.clock.now() + MIN_DELAY
        else:
            self._expect_raises(GovernorUnexpectedProposalState, self.gov.queue, p["pid"])

    @rule(i=st.integers(0, 50))
    def execute(self, i):
        p = self._pick(i, S.Queued)
        if p is not None:
            self._execute(p)

    def _execute(self, p):
        state = self._expected_state(p)
        treasury = self.dao.treasury
        if state is S.Succeeded or (state is S.Queued and self.clock.now() < p["eta"]):
            self._expect_raises(TimelockUnexpectedOperationState, self.gov.execute, p["pid"])
        elif state is S.Queued:
            need = {}
            for _, asset, amount in p["payments"]:
                need[asset] = need.get(asset, 0) + amount
            if all(treasury.balance_of(asset) >= amount for asset, amount in need.items()):
                self.gov.execute(p["pid"])
                event("execute: executed")
                p["executed"] = True
                for asset, amount in need.items():
                    self.outflows[asset] = self.outflows.get(asset, 0) + amount
            else:
                self._expect_raises(TreasuryInsufficientBalance, self.gov.execute, p["pid"])
                event("execute: treasury short")
        else:
            self._expect_raises(GovernorUnexpectedProposalState, self.gov.execute, p["pid"])

    @rule(i=st.integers(0, 50), caller=accounts)
    def cancel(self, i, caller):
        p = self._pick(i, S.Pending)
        if p is None:
            return
        if self._expected_state(p) is not S.Pending:
            self._expect_raises(GovernorUnexpectedProposalState, self.gov.cancel, p["pid"], caller)
        elif caller != p["proposer"]:
            self._expect_raises(GovernorOnlyProposer, self.gov.cancel, p["pid"], caller)
        else:
            self.gov.cancel(p["pid"], caller)
            event("cancel: canceled")
            p["canceled"] = True

    # ------------------------------------------------------------------ invariants
    def teardown(self):
        for p in self.proposals:
            event(f"final state: {self.gov.state(p['pid']).name}")

    @invariant()
    def voting_power_matches_model_and_delegated_supply(self):
        votes = self._model_votes()
        assert {a: self.token.get_votes(a) for a in ACCOUNTS} == votes
        delegated = sum(self.bal[a] for a in self.dlg)
        assert sum(votes.values()) == self.token.delegated_supply() == delegated
        assert self.token.total_supply == sum(self.bal.values()) == sum(self.token.balance_of(a) for a in ACCOUNTS)

    @invariant()
    def past_lookups_are_exact_and_stable(self):
        now = self.clock.now()
        for t in {k for k in self.history if k < now} | {k - 1 for k in self.history}:
            votes, supply = self._model_past(t)
            assert self.token.get_past_total_supply(t) == supply
            for a in ACCOUNTS:
                got = self.token.get_past_votes(a, t)
                assert got == votes[a]
                assert self.seen_past.setdefault((a, t), got) == got

    @invariant()
    def proposals_follow_the_model(self):
        for p in self.proposals:
            state = self.gov.state(p["pid"])
            assert state is self._expected_state(p), (state, self._expected_state(p))
            sums = [0, 0, 0]
            for support, weight in p["ballots"].values():
                sums[support] += weight
            assert self.gov.proposal_votes(p["pid"]) == tuple(sums)
            if p["snapshot"] < self.clock.now():
                t = self.gov.tally(p["pid"])  # recount from checkpoints: raises if a weight drifted
                assert (t.against_votes, t.for_votes, t.abstain_votes, t.voters) == (*sums, len(p["ballots"]))

    @invariant()
    def treasury_is_conserved(self):
        treasury = self.dao.treasury
        outflows = treasury.total_outflows()
        assert {k: v for k, v in outflows.items() if v} == {k: v for k, v in self.outflows.items() if v}
        for asset, initial in INITIAL_TREASURY.items():
            assert treasury.balance_of(asset) == initial - outflows.get(asset, 0) >= 0
        executed = {p["pid"] for p in self.proposals if p["executed"]}
        assert {r.proposal_id for r in treasury.audit_log} == executed


GovernanceMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=80, deadline=None,
                                               suppress_health_check=[HealthCheck.too_slow])
TestGovernanceMachine = GovernanceMachine.TestCase


# ---------------------------------------------------------------------------- plain properties
@settings(max_examples=60, deadline=None)
@given(supply=st.integers(1, 10**9), numerator=st.integers(1, 100), abstain_share=st.integers(0, 100))
def test_quorum_boundary_property(supply, numerator, abstain_share):
    quorum = supply * numerator // 100
    if quorum == 0:
        return
    for short in (0, 1):
        total = quorum - short
        abstain = total * abstain_share // 100 if total > 1 else 0
        abstain = max(0, min(abstain, total - 1))  # keep For >= 1 (when total >= 1) so For > Against(0)
        holdings = {"yes": total - abstain, "meh": abstain, "rest": supply - total}
        clock = ManualClock(10)
        dao = build_dao(clock, holdings=holdings, voting_delay=1, voting_period=2, quorum_numerator=numerator)
        clock.advance(1)
        pid = dao.governor.propose("yes", [transfer("x", 1)], "q")
        clock.advance(2)
        dao.governor.cast_vote(pid, "yes", VoteType.For)
        if abstain:
            dao.governor.cast_vote(pid, "meh", VoteType.Abstain)
        clock.advance(2)
        assert dao.governor.quorum(dao.governor.proposal_snapshot(pid)) == quorum
        assert dao.governor.state(pid) is (S.Defeated if short else S.Succeeded)


@settings(max_examples=50, deadline=None)
@given(payments=st.lists(st.tuples(st.text(min_size=1, max_size=5), st.integers(1, 10**6)), min_size=1, max_size=4),
       desc=st.text(max_size=20))
def test_proposal_id_is_a_function_of_actions_and_description(payments, desc):
    actions = [transfer(to, amount) for to, amount in payments]
    again = [transfer(to, amount) for to, amount in payments]
    assert hash_proposal(actions, desc) == hash_proposal(again, desc)
    assert hash_proposal(actions, desc) != hash_proposal(actions, desc + "!")
    assert hash_proposal(actions, desc) != hash_proposal(actions + [transfer("z", 1)], desc)
