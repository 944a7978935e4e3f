"""The DAO rewards the day's best PnL over every tenant: leaderboard ranks are per tenant (several rank 1s)."""

from platformq_assets.governance.dao import top_trader


def test_the_reward_goes_to_the_best_pnl_of_all_tenants_not_the_first_rank_one():
    board = [  # sorted by pnl_rank, as the asset reads it: each tenant has its own rank 1
        {"pnl_rank": 1, "account_id": 7, "tenant_id": "t-acme", "pnl": 12.5},
        {"pnl_rank": 1, "account_id": 3, "tenant_id": "t-cygnus", "pnl": 40.0},
        {"pnl_rank": 2, "account_id": 9, "tenant_id": "t-acme", "pnl": -1.0},
    ]
    assert top_trader(board)["account_id"] == 3
    tied = [dict(board[0], pnl=40.0), board[1]]
    assert top_trader(tied)["account_id"] == 3 and top_trader(list(reversed(tied)))["account_id"] == 3


class _EmptyBoardLake:
    def read_partition(self, identifier, column, value):
        import pyarrow as pa

        assert identifier == "gold.trader_leaderboard"
        return pa.table({"pnl_rank": pa.array([], pa.int64()), "account_id": pa.array([], pa.int64()),
                         "pnl": pa.array([], pa.float64()), "traded_notional": pa.array([], pa.float64())})


class _Governance:
    """A governance service whose DAO exists (``dao``) or not, with no proposal; records every request."""

    def __init__(self, dao: bool):
        self.dao, self.requests = dao, []

    def request(self, method, path, json_body=None, params=None):
        from resources.services import ServiceError

        self.requests.append((method, path))
        if (method, path) == ("GET", "/v1/dao"):
            if not self.dao:
                raise ServiceError("governance", 404, {"status": 404}, "no DAO")
            return {"treasury": {"USD": 1_000_000}, "settings": {"voting_delay": 0, "voting_period": 5},
                    "holders": [{"account": "acct-1", "balance": 10}]}
        if (method, path) == ("GET", "/v1/dao/proposals"):
            return []
        raise AssertionError(f"unexpected request {method} {path}")


def test_a_day_without_leaderboard_rows_fails_naming_the_missing_day():
    """Materialising the DAO's day before its leaderboard (or on a day without trades) failed with `min() arg is an
    empty sequence` (or the service's 422 on a DAO of no holders), naming neither the table nor the day."""
    import pytest
    from dagster import Failure, build_asset_context

    from platformq_assets.governance.dao import dao_outcomes

    for dao in (True, False):
        governance = _Governance(dao)
        with pytest.raises(Failure, match="gold.trader_leaderboard has no rows for 2024-01-02"):
            list(dao_outcomes(build_asset_context(partition_key="2024-01-02"), lake=_EmptyBoardLake(),
                              governance=governance))
        assert not [r for r in governance.requests if r[0] == "POST"]  # nothing proposed, no DAO created
