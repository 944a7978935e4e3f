"""dao_outcomes against a long-lived governance service (the production shape): a re-run resumes the
day's proposal instead of proposing it again, so a crash after execution neither pays twice nor wedges."""

import datetime as dt

import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize

from platformq_assets.governance.dao import REWARD, TREASURY, dao_outcomes
from resources.lake import LakeResource
from resources.services import INTERNAL_TENANT, ServiceClientResource, build_local_app
from tests.services.serving import serve

pytestmark = pytest.mark.slow
DAY = "2024-01-02"


def test_a_crash_after_execution_is_resumed_and_the_reward_is_paid_once(settings, lake, monkeypatch):
    board = pa.Table.from_pylist([
        {"pnl_rank": 1, "account_id": 1, "traded_notional": 5000.0, "pnl": 100.0, "partition_date": dt.date(2024, 1, 2)},
        {"pnl_rank": 2, "account_id": 2, "traded_notional": 3000.0, "pnl": 50.0, "partition_date": dt.date(2024, 1, 2)},
    ])
    lake.replace_partition("gold.trader_leaderboard", board, "partition_date", DAY)
    app, ctx = build_local_app("governance", str(settings.home))
    key = ctx.keys.create("ops", INTERNAL_TENANT, ["admin"])

    real_replace = LakeResource.replace_partition
    crash = {"once": True}

    def crash_once(self, identifier, *args, **kwargs):
        if identifier == "governance.dao_outcomes" and crash.pop("once", False):
            raise OSError("simulated crash: the lake commit failed after the proposal was executed")
        return real_replace(self, identifier, *args, **kwargs)

    monkeypatch.setattr(LakeResource, "replace_partition", crash_once)
    with serve(app) as url:
        gov = ServiceClientResource(service="governance", base_url=url, api_key=key)
        results = [materialize([dao_outcomes], partition_key=DAY, resources={"lake": lake, "governance": gov},
                               instance=DagsterInstance.get(), raise_on_error=False) for _ in range(3)]
        treasury = gov.request("GET", "/v1/dao")["treasury"]["USD"]
        proposals = gov.request("GET", "/v1/dao/proposals")

    assert [r.success for r in results] == [False, True, True]  # crashed, resumed, re-run as a no-op
    for result in results[1:]:
        assert all(c.passed for c in result.get_asset_check_evaluations())
    [proposal] = proposals
    assert proposal["state"] == "Executed" and proposal["description"].startswith(DAY)
    assert treasury == TREASURY - REWARD  # paid exactly once
    [row] = lake.read("governance.dao_outcomes").to_pylist()
    assert row["state"] == "Executed" and row["reward_usd"] == REWARD and row["proposal_id"] == proposal["id"]
    assert row["voters"] == 2 and row["treasury_after_usd"] == treasury


def test_the_days_proposal_is_found_however_many_proposals_came_after_it(settings):
    """A long-lived service keeps every day's proposal: more than the 1000 a list returns. An old day's re-run
    must still find its proposal (not propose and pay again)."""
    from platformq_assets.governance.dao import _find_proposal

    app, ctx = build_local_app("governance", str(settings.home))
    key = ctx.keys.create("ops", INTERNAL_TENANT, ["admin"])
    with serve(app) as url:
        gov = ServiceClientResource(service="governance", base_url=url, api_key=key)
        gov.request("POST", "/v1/daos", json_body={"holdings": {"acct-1": 10}, "treasury": {"USD": TREASURY}})
        ids = [gov.request("POST", "/v1/dao/proposals", json_body={
            "proposer": "acct-1", "description": f"2021-01-01 day {i} #proposer=acct-1",
            "actions": [{"type": "transfer", "to": "acct-1", "amount": 1, "asset": "USD"}]})["id"] for i in range(1002)]
        assert _find_proposal(gov, "2021-01-01 day 0 #proposer=acct-1") == (ids[0], "2021-01-01 day 0 #proposer=acct-1")
        assert _find_proposal(gov, "2021-01-01 day 1001 #")[0] == ids[-1]
        assert _find_proposal(gov, "2021-01-01 day 1002 #proposer=acct-1") is None
        # the service filters by prefix before its limit too (1002 proposals start with the day)
        listed = gov.request("GET", "/v1/dao/proposals", params={"description_prefix": "2021-01-01 day 100",
                                                                  "limit": 1000})
        assert [p["id"] for p in listed] == [ids[100], *ids[1000:1002]]


def test_a_rerun_after_the_leaderboard_changed_pays_the_day_once(settings, lake):
    """The day's proposal was found by its whole description, which names the top trader and its PnL: after the
    leaderboard changed (an erasure removed the top trader, the gold day was rebuilt) a re-run proposed, passed
    and executed a second reward for the same day."""
    def board(*rows):
        return pa.Table.from_pylist([{"pnl_rank": rank, "account_id": account, "traded_notional": 1000.0 * account,
                                      "pnl": pnl, "partition_date": dt.date(2024, 1, 2)}
                                     for rank, (account, pnl) in enumerate(rows, 1)])

    lake.replace_partition("gold.trader_leaderboard", board((1, 100.0), (2, 50.0), (3, 20.0)), "partition_date", DAY)
    app, ctx = build_local_app("governance", str(settings.home))
    key = ctx.keys.create("ops", INTERNAL_TENANT, ["admin"])
    with serve(app) as url:
        gov = ServiceClientResource(service="governance", base_url=url, api_key=key)
        first = materialize([dao_outcomes], partition_key=DAY, resources={"lake": lake, "governance": gov},
                            instance=DagsterInstance.get())
        lake.replace_partition("gold.trader_leaderboard", board((2, 50.0), (3, 20.0)), "partition_date", DAY)
        again = materialize([dao_outcomes], partition_key=DAY, resources={"lake": lake, "governance": gov},
                            instance=DagsterInstance.get())
        treasury = gov.request("GET", "/v1/dao")["treasury"]["USD"]
        proposals = gov.request("GET", "/v1/dao/proposals")
    assert first.success and again.success
    [proposal] = proposals
    assert proposal["state"] == "Executed" and proposal["proposer"] == "acct-1"
    # the lake row and the event log name neither the account nor its PnL (no erasure rewrites them)
    assert "acct" not in proposal["description"] and "100" not in proposal["description"]
    assert treasury == TREASURY - REWARD  # paid once
    [row] = lake.read("governance.dao_outcomes").to_pylist()
    assert row["proposal_id"] == proposal["id"] and row["description"] == proposal["description"]
