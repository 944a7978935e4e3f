"""Governance: the platform DAO decides each day's trader reward, through the governance service.

Token holders are the venue's accounts, weighted by their traded notional on the day the DAO was
created (gold.trader_leaderboard; the 1,000 that traded most when more did; holdings are minted once, then
move only by transfers, so an account first seen on a later day holds no votes and is not balloted). A proposal
pays the day's top trader from the DAO treasury; every holder on the day's leaderboard votes by a published rule
(for when its own day was profitable, against when not, abstain at zero); the proposal is queued in the timelock
and executed if it passed (it stays executable for 14 days, so a failed run's re-run pays it). The outcome lands in
``governance.dao_outcomes``. Voting windows are seconds long here (the service
runs on wall-clock time: 5 s, a tenth of a second per holder for a DAO of more than 50), so the asset waits for
them to pass.
"""

import datetime as dt
import time

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    asset,
)

from pipelines.partitions import PARTITION_COLUMN, daily_partitions
from pipelines.pools import table_pool
from resources.lake import LakeResource
from resources.services import ServiceClientResource

DAO_OUTCOMES = AssetKey(["governance", "dao_outcomes"])
REWARD = 1_000  # USD paid to the day's top trader if the DAO agrees
TREASURY = 1_000_000
# Seconds of voting. The governor counts whole seconds as OpenZeppelin does, so a proposal is Active for
# exactly this many clock seconds; every holder's ballot must land inside it. One second was too tight
# for a loaded machine (a ballot arrived after the deadline in CI); five leave ample room and cost each
# partition a few seconds of waiting.
VOTING_PERIOD_S = 5
# A ballot is one request (~20 ms in process on a loaded machine, more across a network): the window the DAO is
# created with gives each holder a tenth of a second, so a DAO of many holders gets a longer one (1,000 holders:
# 100 s). Fixed at creation, as the holders are (minted once); only holders are balloted.
BALLOTS_PER_S = 10


# How long a passed, queued reward stays executable: a run that queued it and failed to execute it (the service
# unreachable for a moment) is re-run within this, and pays (Compound's 14 days; 10 minutes left the day Expired,
# its reward unpaid, whenever the re-run came later).
GRACE_PERIOD_S = 14 * 24 * 3600


def voting_period_s(holders: int) -> int:
    return max(VOTING_PERIOD_S, -(-holders // BALLOTS_PER_S))


def _wait_until(governance: ServiceClientResource, proposal_id: str, states: set[str],
                timeout_s: float = 30 + VOTING_PERIOD_S):
    deadline = time.monotonic() + timeout_s
    while True:
        proposal = governance.request("GET", f"/v1/dao/proposals/{proposal_id}")
        if proposal["state"] in states or time.monotonic() > deadline:
            return proposal
        time.sleep(0.2)


def dao_holdings(board: list[dict]) -> dict[str, int]:
    """The tokens minted when the DAO is created: each account's traded notional (at least 1), for the accounts
    that traded most, as many as the service mints to (``MAX_HOLDERS``; equal notional goes to the lower id)."""
    from services.governance.api import MAX_HOLDERS

    ranked = sorted(board, key=lambda r: (-(r["traded_notional"] or 0), r["account_id"]))[:MAX_HOLDERS]
    return {f"acct-{r['account_id']}": max(1, int(r["traded_notional"] or 0)) for r in ranked}


def top_trader(board: list[dict]) -> dict:
    """The day's best PnL across every tenant (``pnl_rank`` ranks within a tenant, so several rows hold rank 1);
    equal PnL goes to the lower account id."""
    return min(board, key=lambda r: (-r["pnl"], r["account_id"]))


@asset(
    key=DAO_OUTCOMES,
    pool=table_pool(".".join(DAO_OUTCOMES.path)),
    deps=[AssetKey(["gold", "trader_leaderboard"])],
    partitions_def=daily_partitions,
    group_name="governance",
    kinds={"python", "iceberg"},
    owners=["team:governance"],
    check_specs=[
        AssetCheckSpec("tally_matches_ballots", asset=DAO_OUTCOMES, blocking=True,
                       description="The tally equals the ballots cast, each weighted at the snapshot."),
        AssetCheckSpec("treasury_moves_only_by_executed_proposals", asset=DAO_OUTCOMES, blocking=True,
                       description="Treasury outflow equals the transfers of executed proposals."),
    ],
    description="The DAO's daily vote on rewarding the top trader: proposal, votes, timelock, execution.",
)
def dao_outcomes(context: AssetExecutionContext, lake: LakeResource, governance: ServiceClientResource):
    import pyarrow as pa

    day = context.partition_key
    board = lake.read_partition("gold.trader_leaderboard", PARTITION_COLUMN, day).to_pylist()
    board.sort(key=lambda r: r["pnl_rank"])
    holders = dao_holdings(board)
    existing = governance.request("GET", "/v1/dao") if _has_dao(governance) else None
    if existing is None:
        if not holders:
            raise _no_leaderboard(day, "no account to mint the DAO's tokens to")
        governance.request("POST", "/v1/daos", json_body={
            "name": "platformQ DAO", "holdings": holders, "treasury": {"USD": TREASURY}, "native_asset": "USD",
            "voting_delay": 0, "voting_period": voting_period_s(len(holders)), "min_delay": 0,
            "grace_period": GRACE_PERIOD_S, "quorum_numerator": 4, "quorum_denominator": 100})
    # Resumable: a proposal is identified by its content, so a re-run (after a crash between the executed
    # proposal and the lake write, or a plain re-materialisation) finds the day's proposal and carries on
    # from its state instead of proposing it again. The treasury is observed for this run only.
    dao = governance.request("GET", "/v1/dao")
    treasury_before = dao["treasury"]["USD"]
    # the DAO's own settings: its voting period (set when it was created, or since by a proposal) is waited for
    wait_s = 30 + dao["settings"]["voting_delay"] + dao["settings"]["voting_period"]
    # the accounts that hold tokens: an account first seen after the DAO was created weighs nothing, and its
    # ballot would only take time from the holders' inside the window
    token_holders = {h["account"] for h in dao["holders"] if h["balance"] > 0}
    # The day's proposal is found by the day (the description's first part), not by whom it rewards: a
    # leaderboard changed since (an erasure removed the top trader, a rebuilt gold day) must not make a second
    # proposal that pays the day again.
    found = _find_proposal(governance, day_proposal_prefix(day))
    if found is not None:
        pid, description = found
    else:
        if not board:
            raise _no_leaderboard(day, "no top trader to reward")
        top = top_trader(board)
        # the description names neither the account nor its PnL: it is stored in governance.dao_outcomes and
        # the event log, which an erasure does not rewrite (the proposal's transfer names the account)
        description = day_proposal_prefix(day)
        pid = governance.request("POST", "/v1/dao/proposals", json_body={
            "proposer": f"acct-{top['account_id']}",
            "actions": [{"type": "transfer", "to": f"acct-{top['account_id']}", "amount": REWARD, "asset": "USD"}],
            "description": description})["id"]
    ballots = None  # ballots cast or found cast by this run; None when voting had closed before it started
    if _wait_until(governance, pid, {"Active", "Succeeded", "Defeated", "Queued", "Executed", "Expired",
                                     "Canceled"}, wait_s)["state"] == "Active":
        ballots = 0
        for row in board:
            voter = f"acct-{row['account_id']}"
            if voter not in token_holders:
                continue
            pnl = row["pnl"] or 0.0
            support = "for" if pnl > 0 else ("against" if pnl < 0 else "abstain")
            _vote_once(governance, pid, voter, support)
            ballots += 1
    final = _wait_until(governance, pid, {"Succeeded", "Defeated", "Queued", "Executed", "Expired", "Canceled"},
                        wait_s)
    tally = governance.request("GET", f"/v1/dao/proposals/{pid}/tally")
    executed_here = False
    if final["state"] == "Succeeded":
        final = governance.request("POST", f"/v1/dao/proposals/{pid}/queue")
    if final["state"] == "Queued":
        final = governance.request("POST", f"/v1/dao/proposals/{pid}/execute")
        executed_here = True
    executed = final["state"] == "Executed"
    treasury_after = governance.request("GET", "/v1/dao")["treasury"]["USD"]
    outcome = {
        "proposal_id": pid, "description": description, "state": final["state"],
        "for_votes": tally["for_votes"], "against_votes": tally["against_votes"],
        "abstain_votes": tally["abstain_votes"], "voters": tally["voters"], "quorum": tally["quorum"],
        "quorum_reached": tally["quorum_reached"], "reward_usd": REWARD if executed else 0,
        "treasury_before_usd": treasury_before, "treasury_after_usd": treasury_after,
        PARTITION_COLUMN: dt.date.fromisoformat(day),
    }
    written = lake.replace_partition(".".join(DAO_OUTCOMES.path), pa.Table.from_pylist([outcome]),
                                     PARTITION_COLUMN, day)
    yield MaterializeResult(metadata={k: v for k, v in outcome.items() if k != PARTITION_COLUMN} | {
        "snapshot_id": str(written["snapshot_id"])})
    yield AssetCheckResult(check_name="tally_matches_ballots",
                           passed=(ballots is None or tally["voters"] == ballots) and tally["total_votes"]
                           == tally["for_votes"] + tally["against_votes"] + tally["abstain_votes"],
                           metadata={"ballots": -1 if ballots is None else ballots, "voters": tally["voters"],
                                     "total_votes": tally["total_votes"], "voted_this_run": ballots is not None})
    yield AssetCheckResult(check_name="treasury_moves_only_by_executed_proposals",
                           passed=treasury_before - treasury_after == (REWARD if executed_here else 0),
                           metadata={"before": treasury_before, "after": treasury_after, "executed": executed,
                                     "executed_this_run": executed_here})


def _no_leaderboard(day: str, why: str) -> Failure:
    """A day without leaderboard rows (not materialised yet, or a day without trades) has nothing to vote on."""
    return Failure(description=f"gold.trader_leaderboard has no rows for {day} ({why}): materialise "
                               f"gold/trader_leaderboard for the day first; a day without trades has no top "
                               f"trader to reward")


def day_proposal_prefix(day: str) -> str:
    return f"{day}: reward the day's top trader"


def _find_proposal(governance: ServiceClientResource, prefix: str) -> tuple[str, str] | None:
    """(id, description) of the DAO's first proposal whose description starts with ``prefix`` (the day's), if
    an earlier run made it."""
    # filtered by the service before its limit: the newest 1000 alone would miss an old day's (and pay it twice)
    matches = [(p["id"], p["description"]) for p in governance.request(
        "GET", "/v1/dao/proposals", params={"description_prefix": prefix, "limit": 1000})
        if p["description"].startswith(prefix)]
    return matches[0] if matches else None


def _vote_once(governance: ServiceClientResource, pid: str, voter: str, support: str) -> None:
    """Cast a ballot; one an earlier attempt already cast (its reply lost to a crash) counts as cast."""
    from resources.services import ServiceError

    try:
        governance.request("POST", f"/v1/dao/proposals/{pid}/votes", json_body={"voter": voter, "support": support})
    except ServiceError as exc:
        if exc.status != 409 or "AlreadyCastVote" not in str(exc) + str(exc.problem):
            raise


def _has_dao(governance: ServiceClientResource) -> bool:
    from resources.services import ServiceError

    try:
        governance.request("GET", "/v1/dao")
        return True
    except ServiceError as exc:
        if exc.status == 404:
            return False
        raise
