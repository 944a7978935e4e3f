"""The venue's bronze checks on a real simulated day: the replay check compares the trades themselves."""

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.partitions import LAKE_START_DATE


@pytest.fixture(scope="module")
def day():
    from platformq_assets.lake.venue import BRONZE_FILLS, venue_tables
    from services.trading.simulation import SimulationConfig, accounts, simulate_day

    config = SimulationConfig(seed=7, scale=0.2, start_date=LAKE_START_DATE)
    result = simulate_day(dt.date(2024, 1, 3), config)
    tables = venue_tables(result, accounts(config), "b", dt.datetime(2024, 1, 4, tzinfo=dt.timezone.utc))
    assert tables[BRONZE_FILLS].num_rows > 10
    return tables, result.journal, config


def replay_check(tables, journal, config):
    from platformq_assets.lake.venue import _venue_checks

    [check] = [c for c in _venue_checks(tables, journal, config) if c.check_name == "fills_match_journal_replay"]
    return check


@pytest.mark.parametrize("column, change", [
    ("price_ticks", lambda v: v + 1),  # a trade at another price
    ("qty_lots", lambda v: v + 1),  # or of another size (both fills: still balanced)
    ("account_id", lambda v: v + 1000),  # or between other accounts
])
def test_fills_that_differ_from_the_replayed_trades_fail_the_replay_check(day, column, change):
    from platformq_assets.lake.venue import BRONZE_FILLS

    tables, journal, config = day
    assert replay_check(tables, journal, config).passed
    fills = tables[BRONZE_FILLS]
    first_trade = pc.equal(fills.column("trade_id"), fills.column("trade_id")[0])
    index = fills.schema.get_field_index(column)
    values = [change(v) if hit and (column != "account_id" or side == "BUY") else v
              for v, hit, side in zip(fills.column(column).to_pylist(), first_trade.to_pylist(),
                                      fills.column("side").to_pylist())]
    tampered = {**tables, BRONZE_FILLS: fills.set_column(index, column, pa.array(values, fills.schema.field(column).type))}
    check = replay_check(tampered, journal, config)
    assert not check.passed and check.metadata["mismatched_trades"].value == 1


def test_an_order_with_a_null_lot_count_fails_the_quantity_check(day):
    from platformq_assets.lake.venue import BRONZE_ORDERS, _venue_checks

    tables, journal, config = day
    orders = tables[BRONZE_ORDERS]
    index = orders.schema.get_field_index("filled_lots")
    values = orders.column("filled_lots").to_pylist()
    values[0] = None
    tampered = {**tables, BRONZE_ORDERS: orders.set_column(index, orders.schema.field(index).with_nullable(True),
                                                           pa.array(values, orders.schema.field(index).type))}
    [check] = [c for c in _venue_checks(tampered, journal, config) if c.check_name == "orders_quantity_conserved"]
    assert not check.passed and check.metadata["violations"].value == 1
