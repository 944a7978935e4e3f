"""Quality checks and profiles on edge cases: NaN, nulls GX skips, and PII in materialisation metadata."""

import datetime as dt

import pandas as pd
import pyarrow as pa

from platformq_assets.quality import table_checks
from platformq_assets.quality.profiling import column_profile, profile_metadata


def test_all_positive_rejects_nan_and_null():
    ok = pa.table({"reference_price": [101.5, 99.0]})
    assert table_checks.all_positive(ok, "reference_price")[0]
    nan = pa.table({"reference_price": [101.5, float("nan"), 99.0]})
    passed, meta = table_checks.all_positive(nan, "reference_price")
    assert not passed and meta["non_positive_rows"] == 1
    null = pa.table({"reference_price": pa.array([101.5, None], pa.float64())})
    assert table_checks.all_positive(null, "reference_price") == (False, {"column": "reference_price",
                                                                          "non_positive_rows": 1})
    ints = pa.table({"qty": [3, 0]})
    assert table_checks.all_positive(ints, "qty") == (False, {"column": "qty", "non_positive_rows": 1})


def test_profile_of_bronze_accounts_quotes_no_name_or_email():
    from services.trading.simulation import SimulationConfig, accounts

    table = pa.Table.from_pylist([a.__dict__ for a in accounts(SimulationConfig())])
    rendered = profile_metadata(table)["profile"].value
    secrets = set(table.column("email").to_pylist()) | set(table.column("full_name").to_pylist())
    assert not [value for value in secrets if value in rendered]
    by_column = {p["column"]: p for p in column_profile(table)}
    assert by_column["email"]["distinct"] == table.num_rows and by_column["email"]["min"] is None
    # numeric columns keep their range
    balances = table.column("initial_balance_minor").to_pylist()
    assert (by_column["initial_balance_minor"]["min"], by_column["initial_balance_minor"]["max"]) == (
        min(balances), max(balances))


def test_profile_edges_empty_table_and_all_null_column():
    empty = pa.table({"x": pa.array([], pa.float64()), "s": pa.array([], pa.string())})
    assert [(p["null_fraction"], p["distinct"], p["min"], p["max"]) for p in column_profile(empty)] == [
        (0.0, 0, None, None)] * 2
    nulls = pa.table({"x": pa.array([None, None], pa.float64()), "t": pa.array(
        [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc), None], pa.timestamp("us", tz="UTC"))})
    x, t = column_profile(nulls)
    assert (x["null_fraction"], x["distinct"], x["min"], x["max"]) == (1.0, 0, None, None)
    assert t["min"] == t["max"] == dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc) and t["null_fraction"] == 0.5


def test_profile_counts_nan_as_missing_not_as_a_value():
    x, = column_profile(pa.table({"x": pa.array([float("nan"), float("nan"), 2.0, None], pa.float64())}))
    assert (x["null_fraction"], x["distinct"], x["min"], x["max"]) == (0.75, 1, 2.0, 2.0)
    x, = column_profile(pa.table({"x": pa.array([float("nan")] * 3, pa.float64())}))
    assert (x["null_fraction"], x["distinct"], x["min"], x["max"]) == (1.0, 0, None, None)


def _trades(**overrides):
    ts = pd.Timestamp("2024-01-02 14:31", tz="UTC")
    rows = {"trade_id": [1, 2], "ts": [ts, ts], "instrument": ["AAPL", "AAPL"], "price": [100.0, 101.0],
            "quantity": [5, 3], "buy_account_id": [1, 1], "sell_account_id": [2, 2],
            "aggressor_side": ["BUY", "SELL"], "notional": [500.0, 303.0]}
    for column, value in overrides.items():
        rows[column] = [rows[column][0], value]
    return pd.DataFrame(rows)


def test_trades_suite_fails_on_null_key_price_quantity_or_side():
    from platformq_assets.quality.expectations import run_suite, silver_trades_suite

    passed, meta = run_suite(_trades(), silver_trades_suite)
    assert passed, meta
    for column in ("trade_id", "price", "quantity", "aggressor_side"):
        passed, meta = run_suite(_trades(**{column: None}), silver_trades_suite)
        assert not passed, (column, meta)
        assert "expect_column_values_to_not_be_null" in meta["failed_expectations"]


def test_trades_suite_fails_on_a_partition_without_trades():
    """Every column expectation passes vacuously on no rows: a day with no trades means the feed broke."""
    from platformq_assets.quality.expectations import run_suite, silver_trades_suite

    passed, meta = run_suite(_trades().iloc[0:0], silver_trades_suite)
    assert not passed and "expect_table_row_count_to_be_between" in meta["failed_expectations"], meta


def test_profile_of_nested_dictionary_and_duration_columns_does_not_fail_the_materialisation():
    """Arrow has no count_distinct for lists, structs or dictionary columns and no min_max for durations: a table
    with one (a dbt model's array_agg, a pandas categorical, a time span) failed its asset after the write."""
    table = pa.table({
        "instruments": pa.array([["AAPL", "MSFT"], ["AAPL"], None], pa.list_(pa.string())),
        "quote": pa.array([{"bid": 1.0}, {"bid": 2.0}, None]),
        "side": pa.array(["BUY", "SELL", "BUY"]).dictionary_encode(),
        "held_for": pa.array([dt.timedelta(seconds=5), dt.timedelta(seconds=1), None], pa.duration("us")),
    })
    meta = profile_metadata(table)
    by_column = {p["column"]: p for p in column_profile(table)}
    assert meta["dagster/row_count"] == 3
    assert by_column["side"]["distinct"] == 2 and by_column["side"]["min"] is None  # text: no value quoted
    assert by_column["instruments"]["null_fraction"] == by_column["quote"]["null_fraction"] == 1 / 3
    assert (by_column["held_for"]["min"], by_column["held_for"]["max"]) == (dt.timedelta(seconds=1),
                                                                            dt.timedelta(seconds=5))


def test_profile_gives_the_range_of_decimal_columns():
    """DuckDB sums integers into DECIMAL(38,0) (gold bars' volume, the leaderboard's fill_count): a number like any
    other, whose min and max the profile left blank."""
    import decimal

    import duckdb

    table = duckdb.connect().sql("select sum(q) as volume from (values (3::bigint, 1), (4, 1), (9, 2)) v(q, g) "
                                 "group by g").to_arrow_table()
    assert pa.types.is_decimal(table.schema.field("volume").type)
    volume, = column_profile(table)
    assert (volume["min"], volume["max"]) == (decimal.Decimal(7), decimal.Decimal(9))
    assert "| 7 | 9 |" in profile_metadata(table)["profile"].value
    # landing tables still quote none
    volume, = column_profile(table, extremes=False)
    assert volume["min"] is volume["max"] is None


def test_accepted_values_of_a_dictionary_encoded_column():
    """A pandas categorical arrives as an Arrow dictionary column: the check raised ArrowTypeError instead of
    judging its values."""
    side = pa.table({"side": pa.array(["BUY", "SELL", "HOLD", None]).dictionary_encode()})
    assert table_checks.accepted_values(side, "side", ["BUY", "SELL"]) == (
        False, {"column": "side", "unexpected_rows": 2, "unexpected_values": "HOLD, None"})
    assert table_checks.accepted_values(side, "side", ["BUY", "SELL", "HOLD"], allow_null=True)[0]


class _DayLake:
    def __init__(self, fills, trades):
        self.tables = {"bronze.fills": fills, "silver.trades": trades}

    def read_partition(self, identifier, column, value):
        assert (column, value) == ("partition_date", "2024-01-02")
        return self.tables[identifier]


def test_reconciliation_compares_trade_by_trade_not_only_totals():
    """Counts and lots alone passed a silver day that dropped one trade and doubled another of the same size, or
    held other trades of the same count and size (built from fills replaced since)."""
    from dagster import build_asset_context

    from platformq_assets.quality.reconciliation import trades_reconcile_with_bronze_fills

    def check(trade_ids, quantities):
        fills = pa.table({"trade_id": [1, 1, 2, 2, 3, 3], "qty_lots": [5, 5, 3, 3, 5, 5]})
        trades = pa.table({"trade_id": trade_ids, "quantity": quantities})
        return trades_reconcile_with_bronze_fills(build_asset_context(partition_key="2024-01-02"),
                                                  lake=_DayLake(fills, trades))

    assert check([1, 2, 3], [5, 3, 5]).passed
    doubled = check([1, 2, 1], [5, 3, 5])  # trade 3 dropped, trade 1 twice: same count, same lots
    assert not doubled.passed and doubled.metadata["unreconciled_trade_ids"].value == "1, 3"
    other_day = check([7, 8, 9], [5, 3, 5])
    assert not other_day.passed and other_day.metadata["unreconciled_trades"].value == 6
    swapped = check([1, 2, 3], [3, 5, 5])  # each trade's lots wrong, the day's total right
    assert not swapped.passed and swapped.metadata["unreconciled_trade_ids"].value == "1, 2"
    many = check([1, 2, 3, *range(4, 16)], [5, 3, 5, *[1] * 12])  # the first ten by id, not as text (10 < 4)
    assert many.metadata["unreconciled_trade_ids"].value == "4, 5, 6, 7, 8, 9, 10, 11, 12, 13"
