"""dao_outcomes' windows: every holder's ballot lands inside the proposal's voting window, however many holders the
DAO has, and a passed reward stays executable long enough for a failed run's re-run to pay it.

The voting window was a fixed 5 s: a ballot is one request (~20 ms in process on a loaded machine, more over a
network), so a DAO of a few hundred holders (the service takes 1,000) had its later ballots refused after the
deadline, the run failed, and its re-run recorded the day decided by whichever holders had voted in time."""

import datetime as dt
import time

import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize

from platformq_assets.governance.dao import dao_outcomes
from resources.services import INTERNAL_TENANT, ServiceClientResource, build_local_app
from tests.services.serving import serve

VOTE_LATENCY_S = 0.05  # a ballot's round trip to a service across a network


def _board(day: str, accounts: range) -> pa.Table:
    return pa.Table.from_pylist([
        {"pnl_rank": rank, "account_id": account, "traded_notional": 1000.0 + account,
         "pnl": 100.0 if account % 3 else -10.0, "partition_date": dt.date.fromisoformat(day)}
        for rank, account in enumerate(accounts, 1)])


@pytest.mark.slow
def test_every_holders_ballot_lands_inside_the_voting_window(settings, lake, monkeypatch):
    real_request = ServiceClientResource.request

    def slow_votes(self, method, path, **kwargs):
        if method == "POST" and path.endswith("/votes"):
            time.sleep(VOTE_LATENCY_S)
        return real_request(self, method, path, **kwargs)

    monkeypatch.setattr(ServiceClientResource, "request", slow_votes)
    app, ctx = build_local_app("governance", str(settings.home))
    key = ctx.keys.create("ops", INTERNAL_TENANT, ["admin"])
    holders = range(1, 121)  # 120 ballots x 50 ms: 6 s of voting, more than the 5 s window
    lake.replace_partition("gold.trader_leaderboard", _board("2024-01-02", holders), "partition_date", "2024-01-02")
    # the next day, 100 accounts first seen after the DAO's creation trade too: they hold no tokens (weight 0)
    lake.replace_partition("gold.trader_leaderboard", _board("2024-01-03", range(1, 221)), "partition_date",
                           "2024-01-03")
    with serve(app) as url:
        gov = ServiceClientResource(service="governance", base_url=url, api_key=key)
        runs = [materialize([dao_outcomes], partition_key=day, resources={"lake": lake, "governance": gov},
                            instance=DagsterInstance.get(), raise_on_error=False)
                for day in ("2024-01-02", "2024-01-03")]
        proposals = gov.request("GET", "/v1/dao/proposals")
        tallies = [gov.request("GET", f"/v1/dao/proposals/{p['id']}/tally") for p in proposals]
    assert [r.success for r in runs] == [True, True]
    for run in runs:
        assert all(c.passed for c in run.get_asset_check_evaluations())
    # every holder voted on both days; the accounts without tokens were not balloted (they weigh nothing)
    assert [t["voters"] for t in tallies] == [120, 120]
    rows = sorted(lake.read("governance.dao_outcomes").to_pylist(), key=lambda r: r["partition_date"])
    assert [r["voters"] for r in rows] == [120, 120]
    assert [r["state"] for r in rows] == ["Executed", "Executed"]


def test_a_leaderboard_of_more_accounts_than_a_dao_takes_still_makes_the_dao(settings):
    """The service mints to at most 1,000 holders: a first day with more traders answered 422 to the DAO's creation,
    every day, for good. The DAO goes to the 1,000 accounts that traded most."""
    from platformq_assets.governance.dao import dao_holdings
    from services.governance.api import MAX_HOLDERS

    board = _board("2024-01-02", range(1, MAX_HOLDERS + 6)).to_pylist()
    holdings = dao_holdings(board)
    assert len(holdings) == MAX_HOLDERS
    assert "acct-1" not in holdings and f"acct-{MAX_HOLDERS + 5}" in holdings  # the least traded are left out
    gov = ServiceClientResource(service="governance", home=str(settings.home))
    created = gov.request("POST", "/v1/daos", json_body={"holdings": holdings, "treasury": {"USD": 1}})
    assert len(created["holders"]) == MAX_HOLDERS


@pytest.mark.slow
def test_a_passed_reward_whose_execution_failed_is_paid_by_a_rerun_an_hour_later(settings, lake, monkeypatch):
    """The DAO was created with a 10-minute grace period: a run that queued the day's passed proposal and failed to
    execute it (the service unreachable for a moment) left it to expire unless re-run within 10 minutes; a re-run
    later recorded the day as Expired, and the top trader was never paid."""
    import services.governance.api as governance_api
    from platformq_assets.governance.dao import REWARD, TREASURY
    from resources.services import ServiceError

    shift = {"s": 0}

    class ShiftedClock(governance_api.SystemClock):  # wall-clock time, moved on by the test
        def now(self) -> int:
            return super().now() + shift["s"]

    monkeypatch.setattr(governance_api, "SystemClock", ShiftedClock)
    real_request = ServiceClientResource.request
    failures = {"execute": 1}

    def execute_fails_once(self, method, path, **kwargs):
        if method == "POST" and path.endswith("/execute") and failures.pop("execute", 0):
            raise ServiceError("governance", 0, None, f"governance: POST {path} failed: connection refused")
        return real_request(self, method, path, **kwargs)

    monkeypatch.setattr(ServiceClientResource, "request", execute_fails_once)
    day = "2024-01-02"
    lake.replace_partition("gold.trader_leaderboard", _board(day, range(1, 3)), "partition_date", day)
    app, ctx = build_local_app("governance", str(settings.home))
    key = ctx.keys.create("ops", INTERNAL_TENANT, ["admin"])
    with serve(app) as url:
        gov = ServiceClientResource(service="governance", base_url=url, api_key=key)
        first = materialize([dao_outcomes], partition_key=day, resources={"lake": lake, "governance": gov},
                            instance=DagsterInstance.get(), raise_on_error=False)
        [queued] = gov.request("GET", "/v1/dao/proposals")
        shift["s"] += 3600  # the re-run an hour later
        again = materialize([dao_outcomes], partition_key=day, resources={"lake": lake, "governance": gov},
                            instance=DagsterInstance.get(), raise_on_error=False)
        treasury = gov.request("GET", "/v1/dao")["treasury"]["USD"]
    assert not first.success and queued["state"] == "Queued"
    assert again.success
    [row] = lake.read("governance.dao_outcomes").to_pylist()
    assert row["state"] == "Executed" and row["reward_usd"] == REWARD
    assert treasury == TREASURY - REWARD
