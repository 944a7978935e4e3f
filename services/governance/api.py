"""Governance API: a thin FastAPI layer over :func:`services.governance.build_dao`.

Each tenant owns at most one DAO (token, treasury, parameter store, timelock and governor); another
tenant's DAO, holders, proposals and treasury answer 404 (their existence is not revealed). Token holders,
voters and proposers are accounts *inside* the tenant's DAO, named in the request body; the API caller needs
``governance:write`` to change anything and ``governance:read`` to look. An account the caller acts as (the
``delegator``, ``proposer``, ``voter`` and cancelling ``caller``) must be the caller's own, the account named like
its subject, unless it holds ``governance:proxy`` (only admins do; the Dagster asset votes for every holder with an
admin key): otherwise 403 ``not-your-account``, naming the account it may act as. Queueing and executing a
Succeeded proposal stay open to every ``governance:write`` caller, as in the Governor (they act for no account).
Time comes from the injected clock (``SystemClock`` by default; tests pass a ``ManualClock`` and advance it).

Every :class:`~services.governance.errors.GovernanceError` becomes a problem document carrying the error's
message: state conflicts are 409, invalid input 422, and a nonexistent proposal 404 (see ``ERROR_STATUS``).

The DAOs are durable when a :class:`~services.common.state_store.StateStore` is given (``platformq serve``: SQLite
under home, or ``PLATFORMQ_GOVERNANCE_STORE_URL``): every change is saved before it is answered, and a change the
store does not take answers 503 ``state-store-unavailable`` and is undone. Each tenant's DAO is a part of its
own in the store, and so are each of its proposals' records (ballots, events), timelock operations, treasury
transfers and parameter changes: a request saves what it changed (a vote: its proposal's record), so its cost
does not grow with the DAO's history. Loaded DAOs run on the app's clock (not on the copy saved with them), so a
proposal's time-based state goes on from where the clock now is.
"""

from __future__ import annotations

import contextlib
import pickle
from typing import Annotated, Any, Literal, Union

from fastapi import Depends, FastAPI, Path, Query
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from services.common.app import ServiceContext, create_service_app
from services.common.auth import GOVERNANCE_PROXY, Principal
from services.common.problems import Problem
from services.common.state_store import KeyedDurableState, StateStore, StateStoreError
from services.common.text import unicode_text

from . import errors as E
from .actions import TREASURY, Action, set_parameter, transfer
from .clock import Clock, SystemClock
from .dao import DAO, PART_SEP, build_dao
from .governor import DAY, VoteType
from .timelock import MAX_TIME

MAX_AMOUNT = 10**30
MAX_HOLDERS = 1000
MAX_ASSETS = 50
MAX_PARAMETERS = 100
MAX_ACTIONS = 50
MAX_DESCRIPTION = 10_000
MAX_REASON = 1_000
MAX_TEXT_VALUE = 1_000
# The pickled DAO classes' layout: bump it when they change, so an old copy is refused at start (3: a part per
# tenant's DAO and one per proposal record, timelock operation, treasury transfer and parameter change; 2, one
# part per tenant's DAO holding all of them, and 1, every DAO in one row, are upgraded on start).
STATE_FORMAT = 3


def _as_parts(daos: dict[str, DAO]) -> dict:
    parts: dict = {}
    for tenant, dao in daos.items():  # unpickled from an older layout: each keeps its records unbound
        parts[tenant] = dao
        dao.bind_parts(parts, tenant + PART_SEP)
    return parts


def upgrade_state(format_version: int, data: bytes) -> dict:
    """Format 1 (every tenant's DAO in one row) as format 3's parts."""
    if format_version != 1:
        raise StateStoreError(f"the governance state store holds format {format_version}, which this code cannot "
                              f"read (it reads {STATE_FORMAT} and upgrades 1 and 2)")
    return _as_parts(dict(pickle.loads(data)))


def upgrade_parts(format_version: int, parts: dict[str, bytes]) -> dict:
    """Format 2 (one part per tenant's DAO, its proposals inside) as format 3's parts."""
    if format_version != 2:
        raise StateStoreError(f"the governance state store holds format {format_version}, which this code cannot "
                              f"read (it reads {STATE_FORMAT} and upgrades 1 and 2)")
    return _as_parts({tenant: pickle.loads(data) for tenant, data in parts.items()})


def _bounded_number(value: Any) -> Any:
    # an int out of range must not slip through the float branch of ParamValue as a lossy float
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_AMOUNT:
        raise ValueError(f"integers must lie within ±10**30, got {value}")
    return value


AccountId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                                 description="an account inside the tenant's DAO")]
AssetId = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
ParamName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")]
Amount = Annotated[int, Field(ge=1, le=MAX_AMOUNT, description="an integer amount, at most 10**30")]
Balance = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
Text = Annotated[str, AfterValidator(unicode_text)]
ParamValue = Annotated[
    Union[StrictBool, Annotated[int, Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT)],
          Annotated[float, Field(allow_inf_nan=False)], Annotated[Text, Field(max_length=MAX_TEXT_VALUE)]],
    BeforeValidator(_bounded_number)]
ProposalId = Annotated[str, Path(pattern=r"^0x[0-9a-f]{64}$", description="the proposal id (sha256 hex)")]
StateName = Literal["Pending", "Active", "Canceled", "Defeated", "Succeeded", "Queued", "Expired", "Executed"]
# what the description of a body's acting account adds (see act_as in create_governance_app)
ACTING = f" (the caller's own, the account named like its subject, unless it holds {GOVERNANCE_PROXY})"
SUPPORT = {"against": VoteType.Against, "for": VoteType.For, "abstain": VoteType.Abstain}

# Every GovernanceError subclass, by the status it answers with: the tests check this table is complete.
ERROR_STATUS: dict[type[E.GovernanceError], int] = {
    # the request itself is malformed or names something that cannot be
    E.ClockError: 422,
    E.ERC20InvalidAccount: 422,
    E.ERC20InvalidAmount: 422,
    E.InvalidAction: 422,
    E.TimelockInsufficientDelay: 422,
    E.GovernorInvalidVoteType: 422,
    E.GovernorInvalidProposalLength: 422,
    E.GovernorRestrictedProposer: 422,
    E.GovernorOnlyProposer: 422,
    E.GovernorInvalidVotingPeriod: 422,
    E.GovernorInvalidQuorumFraction: 422,
    # well-formed, but the current state (time, balances, votes, proposal state) does not allow it
    E.CheckpointUnorderedInsertion: 409,
    E.ERC5805FutureLookup: 409,
    E.ERC20InsufficientBalance: 409,
    E.ERC20ExceededSafeSupply: 409,
    E.TreasuryInsufficientBalance: 409,
    E.UnauthorizedExecutor: 409,
    E.TimelockUnexpectedOperationState: 409,
    E.TimelockUnauthorizedAccount: 409,
    E.TimelockAlreadyBound: 409,
    E.GovernorUnexpectedProposalState: 409,
    E.GovernorAlreadyCastVote: 409,
    E.GovernorInsufficientProposerVotes: 409,
    E.TallyIntegrityError: 409,
    E.GovernorNonexistentProposal: 404,
}
_TITLES = {404: "Not Found", 409: "Conflict", 422: "Unprocessable Content"}


def error_status(exc: E.GovernanceError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 422 if isinstance(exc, ValueError) else 409


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


# ----------------------------------------------------------------------------- models
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaoIn(Strict):
    name: Text = Field(default="platformQ DAO", min_length=1, max_length=128)
    holdings: dict[AccountId, Amount] = Field(min_length=1, max_length=MAX_HOLDERS,
                                              description="governance tokens minted to each account")
    self_delegate: bool = Field(default=True, description="each holder delegates to itself (needed to vote)")
    treasury: dict[AssetId, Balance] = Field(default_factory=dict, max_length=MAX_ASSETS,
                                             description="initial treasury balance per asset")
    native_asset: AssetId = "native"
    parameters: dict[ParamName, ParamValue] = Field(default_factory=dict, max_length=MAX_PARAMETERS,
                                                    description="initial values of the parameter store")
    voting_delay: int = Field(default=DAY, ge=0, le=MAX_TIME, description="seconds from proposal to snapshot")
    voting_period: int = Field(default=7 * DAY, ge=1, le=MAX_TIME, description="seconds of voting")
    proposal_threshold: int = Field(default=0, ge=0, le=MAX_AMOUNT, description="votes needed to propose")
    quorum_numerator: int = Field(default=4, ge=0, le=10**6)
    quorum_denominator: int = Field(default=100, ge=1, le=10**6)
    min_delay: int = Field(default=2 * DAY, ge=0, le=MAX_TIME, description="timelock delay, seconds")
    grace_period: int = Field(default=14 * DAY, ge=1, le=MAX_TIME, description="seconds a queued proposal "
                                                                                "stays executable")


class SettingsOut(BaseModel):
    voting_delay: int
    voting_period: int
    proposal_threshold: int
    quorum_numerator: int
    quorum_denominator: int
    min_delay: int
    grace_period: int


class HolderOut(BaseModel):
    account: str
    balance: int
    votes: int
    delegate: str | None


class DaoOut(BaseModel):
    tenant: str
    name: str
    now: int = Field(description="the DAO clock, seconds")
    settings: SettingsOut
    parameters: dict[str, Any] = Field(description="the parameter store")
    native_asset: str
    treasury: dict[str, int]
    total_supply: int
    holders: list[HolderOut]
    proposals: int


class DelegationIn(Strict):
    delegator: AccountId = Field(description="the account whose votes move" + ACTING)
    delegatee: AccountId


class DelegationOut(BaseModel):
    delegator: str
    delegatee: str
    balance: int = Field(description="the delegator's balance, now voting for the delegatee")
    delegatee_votes: int


class TransferAction(Strict):
    type: Literal["transfer"]
    to: AccountId
    amount: Amount
    asset: AssetId | None = Field(default=None, description="default: the treasury's native asset")


class SetParameterAction(Strict):
    type: Literal["set_parameter"]
    name: ParamName
    value: ParamValue
    target: Literal["parameters", "governor", "timelock"] = Field(
        default="parameters", description="the parameter store, or a governor / timelock setting")


ActionIn = Annotated[Union[TransferAction, SetParameterAction], Field(discriminator="type")]


class ProposalIn(Strict):
    proposer: AccountId = Field(description="the proposing account" + ACTING)
    actions: list[ActionIn] = Field(min_length=1, max_length=MAX_ACTIONS)
    description: Text = Field(min_length=1, max_length=MAX_DESCRIPTION)


class ProposalOut(BaseModel):
    id: str
    proposer: str
    description: str
    actions: list[ActionIn]
    state: StateName
    created_at: int
    snapshot: int
    deadline: int
    eta: int | None
    expires_at: int | None = Field(description="end of the timelock grace period, once queued")
    against_votes: int
    for_votes: int
    abstain_votes: int


class ProposalSummary(BaseModel):
    id: str
    proposer: str
    description: str
    state: StateName
    snapshot: int
    deadline: int
    eta: int | None


class VoteIn(Strict):
    voter: AccountId = Field(description="the voting account" + ACTING)
    support: Literal["for", "against", "abstain"]
    reason: Text = Field(default="", max_length=MAX_REASON)


class BallotOut(BaseModel):
    proposal_id: str
    voter: str
    support: Literal["for", "against", "abstain"]
    weight: int
    reason: str
    timepoint: int


class CancelIn(Strict):
    caller: AccountId = Field(description="must be the proposer" + ACTING)


class TallyOut(BaseModel):
    proposal_id: str
    state: StateName
    snapshot: int
    against_votes: int
    for_votes: int
    abstain_votes: int
    total_votes: int
    voters: int
    quorum: int | None = Field(description="null while the snapshot is not yet in the past")
    quorum_reached: bool
    vote_succeeded: bool


def action_out(action: Action) -> TransferAction | SetParameterAction:
    p = action.payload
    if action.target == TREASURY:
        return TransferAction(type="transfer", to=p["to"], amount=p["amount"], asset=p.get("asset"))
    return SetParameterAction(type="set_parameter", name=p["name"], value=p["value"], target=action.target)


def action_in(a: TransferAction | SetParameterAction) -> Action:
    if isinstance(a, TransferAction):
        return transfer(a.to, a.amount, a.asset)
    return set_parameter(a.name, a.value, a.target)


# ----------------------------------------------------------------------------- app
class AppClock:
    """The app's clock as its DAOs hold it: pickled without the clock (a loaded DAO is given the app's again), so a
    saved DAO does not differ from its last copy only because time passed (a SystemClock remembers the last
    second it told), and a change that did not touch the DAO does not write it."""

    __slots__ = ("clock",)

    def __init__(self, clock: Clock | None = None):
        self.clock = clock

    def now(self) -> int:
        if self.clock is None:
            raise StateStoreError("a DAO loaded from the store has no clock until the app attaches its own")
        return self.clock.now()

    def __reduce__(self):
        return (AppClock, ())


def attach_clock(dao: DAO, clock: Clock) -> None:
    """Make ``clock`` the time of every part of ``dao`` (a loaded DAO carries no clock, or an older version's)."""
    dao.clock = dao.token.clock = dao.timelock.clock = dao.governor.clock = clock


def create_governance_app(ctx: ServiceContext, clock: Clock | None = None, store: StateStore | None = None) -> FastAPI:
    app = create_service_app(ctx, "platformQ governance",
                             "One DAO per tenant: voting token, proposals, timelock and treasury.")
    clock = AppClock(clock if clock is not None else SystemClock())
    # one part per tenant's DAO (under the tenant id), one per proposal record, timelock operation, transfer and
    # parameter change (under tenant, kind and id joined by PART_SEP): a request saves what it changed
    durable = KeyedDurableState(store, STATE_FORMAT, upgrade=upgrade_state, upgrade_parts=upgrade_parts)
    daos: dict[str, Any] = durable.state
    lock = durable.lock  # the domain core is not thread-safe; sync endpoints run in a thread pool

    def attach_all() -> None:
        for key, dao in list(daos.items()):
            if isinstance(dao, DAO):
                attach_clock(dao, clock)
                dao.bind_parts(daos, key + PART_SEP, durable.touch)

    attach_all()
    durable.on_load = attach_all  # a reload (another process saved) or a restore brings DAOs with saved clocks
    app.state.daos = daos
    app.state.durable = durable
    app.state.clock = clock.clock
    reader = ctx.require("governance:read")
    writer = ctx.require("governance:write")

    @contextlib.contextmanager
    def changing(tenant: str):
        """A change to ``tenant``'s DAO: saved before it is answered, undone (and 503) when the store refuses it."""
        with lock:
            try:
                with durable.change(tenant):
                    yield
            except StateStoreError as exc:
                attach_all()  # the DAOs were restored from the last saved copy
                ctx.logger.error("governance state store: %s", exc)
                raise Problem(503, "Service Unavailable", str(exc), "state-store-unavailable") from None
            except BaseException:
                attach_all()
                raise

    def own_dao(principal: Principal) -> DAO:
        dao = daos.get(principal.tenant)
        if not isinstance(dao, DAO):  # none, or a tenant id naming another part
            raise Problem(404, "Not Found", "this tenant has no DAO (create one with POST /v1/daos)", "unknown-dao")
        return dao

    def act_as(principal: Principal, account: str, role: str) -> str:
        """``account``, which the caller acts as (``role``: the body's field): its own (its subject), or any with
        governance:proxy. Checked before the DAO is looked at, so a refusal tells nothing of the DAO."""
        if account != principal.subject and not principal.can(GOVERNANCE_PROXY):
            raise Problem(403, "Forbidden", f"this key acts only as the account {principal.subject!r}: the {role} "
                          f"{account!r} is another account (acting for any account of the tenant's DAO needs the "
                          f"'{GOVERNANCE_PROXY}' permission)", "not-your-account", may_act_as=principal.subject)
        return account

    def own_proposal(dao: DAO, proposal_id: str) -> str:
        run(dao.governor.proposal_snapshot, proposal_id)  # GovernorNonexistentProposal -> 404
        return proposal_id

    def run(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except E.GovernanceError as exc:
            status = error_status(exc)
            if isinstance(exc, E.TallyIntegrityError):
                ctx.logger.error("tally integrity violated: %s", exc)
            raise Problem(status, _TITLES[status], str(exc), _kebab(type(exc).__name__),
                          error=type(exc).__name__) from None

    def dao_out(tenant: str, dao: DAO) -> DaoOut:
        gov, token, tl = dao.governor, dao.token, dao.timelock
        holders = [HolderOut(account=a, balance=token.balance_of(a), votes=token.get_votes(a),
                             delegate=token.delegates(a)) for a in sorted(token.holders())]
        return DaoOut(
            tenant=tenant, name=gov.name, now=dao.clock.now(),
            settings=SettingsOut(voting_delay=gov.voting_delay, voting_period=gov.voting_period,
                                 proposal_threshold=gov.proposal_threshold, quorum_numerator=gov.quorum_numerator(),
                                 quorum_denominator=gov.quorum_denominator, min_delay=tl.min_delay,
                                 grace_period=tl.grace_period),
            parameters=dao.parameters.as_dict(), native_asset=dao.treasury.native_asset,
            treasury=dict(sorted(dao.treasury.balances().items())), total_supply=token.total_supply,
            holders=holders, proposals=gov.proposal_count())

    def proposal_out(dao: DAO, proposal_id: str) -> ProposalOut:
        gov = dao.governor
        p = gov.proposal(proposal_id)
        against, for_, abstain = gov.proposal_votes(proposal_id)
        op_id = gov.timelock_operation_id(proposal_id)
        op = dao.timelock.get_operation(op_id) if op_id else None
        return ProposalOut(id=p.id, proposer=p.proposer, description=p.description,
                           actions=[action_out(a) for a in p.actions], state=gov.state(proposal_id).name,
                           created_at=p.created_at, snapshot=p.snapshot, deadline=p.deadline, eta=p.eta,
                           expires_at=op.expires_at if op else None, against_votes=against, for_votes=for_,
                           abstain_votes=abstain)

    @app.post("/v1/daos", status_code=201, response_model=DaoOut, tags=["dao"])
    def create_dao(body: DaoIn, principal: Principal = Depends(writer)):
        """Create the caller tenant's DAO: mint the holdings, fund the treasury, set the governance settings.
        Minting every account's holdings is acting for every account: it needs governance:proxy (a trader's key
        creating the DAO first could hold all the votes)."""
        if not principal.can(GOVERNANCE_PROXY):
            raise Problem(403, "Forbidden", f"creating the tenant's DAO mints every holder's tokens: it needs the "
                          f"'{GOVERNANCE_PROXY}' permission", "not-your-account", may_act_as=principal.subject)
        if PART_SEP in principal.tenant:
            raise Problem(422, "Unprocessable Content", "this tenant's id cannot name a DAO (it holds a control "
                          "character)", "invalid-tenant")
        with changing(principal.tenant):
            if principal.tenant in daos:
                raise Problem(409, "Conflict", "this tenant already has a DAO", "dao-exists")
            try:
                dao = run(build_dao, clock, holdings=body.holdings, self_delegate=body.self_delegate,
                          treasury=body.treasury, native_asset=body.native_asset, parameters=body.parameters,
                          min_delay=body.min_delay, grace_period=body.grace_period,
                          voting_delay=body.voting_delay, voting_period=body.voting_period,
                          proposal_threshold=body.proposal_threshold, quorum_numerator=body.quorum_numerator,
                          quorum_denominator=body.quorum_denominator, name=body.name)
            except ValueError as exc:  # build_dao's own argument checks (the bounds above should pre-empt them)
                raise Problem(422, "Unprocessable Content", str(exc), "invalid-dao") from None
            daos[principal.tenant] = dao
            dao.bind_parts(daos, principal.tenant + PART_SEP, durable.touch)
            return dao_out(principal.tenant, dao)

    @app.get("/v1/dao", response_model=DaoOut, tags=["dao"])
    def get_dao(principal: Principal = Depends(reader)):
        with lock:
            return dao_out(principal.tenant, own_dao(principal))

    @app.post("/v1/dao/delegations", response_model=DelegationOut, tags=["dao"])
    def delegate(body: DelegationIn, principal: Principal = Depends(writer)):
        """Point the delegator's whole balance (now and later) at the delegatee's voting power. The delegator is the
        caller's own account (any account with governance:proxy)."""
        act_as(principal, body.delegator, "delegator")
        with changing(principal.tenant):
            dao = own_dao(principal)
            run(dao.token.delegate, body.delegator, body.delegatee)
            return DelegationOut(delegator=body.delegator, delegatee=body.delegatee,
                                 balance=dao.token.balance_of(body.delegator),
                                 delegatee_votes=dao.token.get_votes(body.delegatee))

    @app.post("/v1/dao/proposals", status_code=201, response_model=ProposalOut, tags=["proposals"])
    def propose(body: ProposalIn, principal: Principal = Depends(writer)):
        """Propose ``actions`` as ``proposer``: the caller's own account (any account with governance:proxy)."""
        act_as(principal, body.proposer, "proposer")
        with changing(principal.tenant):
            dao = own_dao(principal)
            actions = [run(action_in, a) for a in body.actions]
            proposal_id = run(dao.governor.propose, body.proposer, actions, body.description)
            return proposal_out(dao, proposal_id)

    @app.get("/v1/dao/proposals", response_model=list[ProposalSummary], tags=["proposals"])
    def list_proposals(state: StateName | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       description: Annotated[str | None, Query(max_length=MAX_DESCRIPTION)] = None,
                       description_prefix: Annotated[str | None, Query(min_length=1, max_length=MAX_DESCRIPTION)] = None,
                       principal: Principal = Depends(reader)):
        """The most recent proposals (oldest first), optionally only those in ``state``, with exactly this
        ``description``, or whose description starts with ``description_prefix`` (filtered before ``limit``: a
        client finds its proposal however many came after it)."""
        with lock:
            dao = own_dao(principal)
            gov = dao.governor
            rows = []
            for pid in gov.proposal_ids():
                p = gov.proposal(pid)
                if description is not None and p.description != description:
                    continue
                if description_prefix is not None and not p.description.startswith(description_prefix):
                    continue
                current = gov.state(pid).name
                if state is None or current == state:
                    rows.append(ProposalSummary(id=pid, proposer=p.proposer, description=p.description,
                                                state=current, snapshot=p.snapshot, deadline=p.deadline,
                                                eta=p.eta))
            return rows[-limit:]

    @app.get("/v1/dao/proposals/{proposal_id}", response_model=ProposalOut, tags=["proposals"])
    def get_proposal(proposal_id: ProposalId, principal: Principal = Depends(reader)):
        with lock:
            dao = own_dao(principal)
            return proposal_out(dao, own_proposal(dao, proposal_id))

    @app.post("/v1/dao/proposals/{proposal_id}/votes", status_code=201, response_model=BallotOut,
              tags=["proposals"])
    def vote(proposal_id: ProposalId, body: VoteIn, principal: Principal = Depends(writer)):
        """Cast ``voter``'s votes at the proposal's snapshot (while Active; once per voter). The voter is the caller's
        own account (any account with governance:proxy)."""
        act_as(principal, body.voter, "voter")
        with changing(principal.tenant):
            dao = own_dao(principal)
            own_proposal(dao, proposal_id)
            weight = run(dao.governor.cast_vote, proposal_id, body.voter, SUPPORT[body.support], body.reason)
            return BallotOut(proposal_id=proposal_id, voter=body.voter, support=body.support, weight=weight,
                             reason=body.reason, timepoint=dao.clock.now())

    @app.post("/v1/dao/proposals/{proposal_id}/queue", response_model=ProposalOut, tags=["proposals"])
    def queue(proposal_id: ProposalId, principal: Principal = Depends(writer)):
        """Schedule a Succeeded proposal on the timelock (eta = now + min_delay)."""
        with changing(principal.tenant):
            dao = own_dao(principal)
            run(dao.governor.queue, own_proposal(dao, proposal_id))
            return proposal_out(dao, proposal_id)

    @app.post("/v1/dao/proposals/{proposal_id}/execute", response_model=ProposalOut, tags=["proposals"])
    def execute(proposal_id: ProposalId, principal: Principal = Depends(writer)):
        """Run a queued proposal's actions atomically, inside [eta, eta + grace period)."""
        with changing(principal.tenant):
            dao = own_dao(principal)
            run(dao.governor.execute, own_proposal(dao, proposal_id))
            return proposal_out(dao, proposal_id)

    @app.post("/v1/dao/proposals/{proposal_id}/cancel", response_model=ProposalOut, tags=["proposals"])
    def cancel(proposal_id: ProposalId, body: CancelIn, principal: Principal = Depends(writer)):
        """The proposer withdraws a proposal, only while it is Pending. The caller is the API caller's own account (any
        account with governance:proxy)."""
        act_as(principal, body.caller, "caller")
        with changing(principal.tenant):
            dao = own_dao(principal)
            run(dao.governor.cancel, own_proposal(dao, proposal_id), body.caller)
            return proposal_out(dao, proposal_id)

    @app.get("/v1/dao/proposals/{proposal_id}/tally", response_model=TallyOut, tags=["proposals"])
    def tally(proposal_id: ProposalId, principal: Principal = Depends(reader)):
        """Recount the ballots from the token's checkpoints at the snapshot."""
        with lock:
            dao = own_dao(principal)
            t = run(dao.governor.tally, own_proposal(dao, proposal_id))
            return TallyOut(proposal_id=proposal_id, state=dao.governor.state(proposal_id).name,
                            snapshot=t.snapshot, against_votes=t.against_votes, for_votes=t.for_votes,
                            abstain_votes=t.abstain_votes, total_votes=t.total_votes, voters=t.voters,
                            quorum=t.quorum, quorum_reached=t.quorum_reached, vote_succeeded=t.vote_succeeded)

    return app


__all__ = ["ERROR_STATUS", "create_governance_app", "error_status"]
