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
