"""Feature computation (DuckDB and Spark give the same table), Feast point-in-time joins, drift maths."""

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from features.compute import account_features, instrument_features
from features.repo import feature_objects


def bars(days=("2024-03-01", "2024-03-04"), instruments=("AAPL", "MSFT"), minutes=95, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for day in days:
        start = dt.datetime.fromisoformat(day).replace(hour=14, minute=30)
        for instrument in instruments:
            price = 100.0
            for m in range(minutes):
                if rng.random() < 0.15:  # minutes without trades: gaps in the bar series
                    continue
                price *= math.exp(rng.normal(0, 0.002))
                high, low = price * (1 + abs(rng.normal(0, 0.001))), price * (1 - abs(rng.normal(0, 0.001)))
                rows.append({"instrument": instrument, "bar_start": start + dt.timedelta(minutes=m),
                             "partition_date": day, "high": high, "low": low, "close": price,
                             "volume": int(rng.integers(1, 50)), "trade_count": int(rng.integers(1, 6))})
    return pa.Table.from_pylist(rows)


def test_instrument_windows_are_computed_within_the_day():
    minute_bars = bars()
    table = instrument_features(minute_bars).to_pandas()
    # the intervals, aggregated here from the minute bars with pandas: one row per five minutes (UTC) holding a
    # bar, its close the last bar's, its high/low/volume/trade count those of all its bars, known at its end
    b = minute_bars.to_pandas().sort_values("bar_start")
    b["interval"] = b.bar_start.dt.floor("5min")
    oracle = b.groupby(["instrument", "partition_date", "interval"]).agg(
        close=("close", "last"), high=("high", "max"), low=("low", "min"), volume=("volume", "sum"),
        trades=("trade_count", "sum")).reset_index().sort_values(["instrument", "partition_date", "interval"])
    got = table.sort_values(["instrument", "partition_date", "bucket"]).reset_index(drop=True)
    oracle = oracle.reset_index(drop=True)
    assert list(zip(got.instrument, got.partition_date)) == list(zip(oracle.instrument, oracle.partition_date))
    assert list(got.event_ts.dt.tz_localize(None)) == list(oracle.interval + dt.timedelta(minutes=5))
    assert np.allclose(got.close, oracle.close, rtol=1e-12) and list(got.volume_1) == list(oracle.volume)
    assert np.allclose(got.range_1, (oracle.high - oracle.low) / oracle.close, rtol=1e-12)
    assert list(got.trade_count_1) == list(oracle.trades)
    aapl = table[(table.instrument == "AAPL") & (table.partition_date == "2024-03-01")].reset_index(drop=True)
    # 95 minutes of bars from 14:30: 19 five-minute intervals, each holding some bar (a minute in 7 has none)
    assert len(aapl) == 19
    assert math.isnan(aapl.ret_1[0]) and math.isnan(aapl.ret_6[5])  # no look-back across the day start
    assert aapl.ret_1[1] == pytest.approx(math.log(aapl.close[1] / aapl.close[0]))
    assert aapl.ret_6[6] == pytest.approx(math.log(aapl.close[6] / aapl.close[0]))
    assert aapl.vol_6[6] == pytest.approx(np.std(aapl.ret_1[1:7], ddof=1))
    assert aapl.volume_6[6] == pytest.approx(aapl.volume_1[1:7].sum())
    # the label is the next interval's direction; the day's last interval has none
    assert aapl.label_up[0] == int(aapl.close[1] > aapl.close[0])
    assert math.isnan(aapl.label_up.iloc[-1])
    # event_ts is the interval's end: features are known only once it closed
    assert (aapl.event_ts - aapl.event_ts.dt.floor("5min")).max() == dt.timedelta(0)
    first_bar = dt.datetime(2024, 3, 1, 14, 30, tzinfo=dt.timezone.utc)
    assert aapl.event_ts[0].to_pydatetime() == first_bar + dt.timedelta(minutes=5)


def test_account_windows_count_activity_and_labels():
    t0 = dt.datetime(2024, 3, 1, 15, 0)
    orders = pa.Table.from_pylist([
        {"account_id": 1, "partition_date": "2024-03-01", "ts": t0, "cancelled_lots": 0, "anomaly_type": None,
         "status": "FILLED", "cancelled_ts": None},
        {"account_id": 1, "partition_date": "2024-03-01", "ts": t0 + dt.timedelta(minutes=1), "cancelled_lots": 5,
         "anomaly_type": None, "status": "CANCELLED", "cancelled_ts": t0 + dt.timedelta(minutes=2)},
        {"account_id": 2, "partition_date": "2024-03-01", "ts": t0 + dt.timedelta(minutes=20), "cancelled_lots": 9,
         "anomaly_type": "spoofing", "status": "CANCELLED", "cancelled_ts": t0 + dt.timedelta(minutes=21)},
        # an ordinary order placed while the instrument's price jumped: labelled flash_move, not the account's doing
        {"account_id": 3, "partition_date": "2024-03-01", "ts": t0 + dt.timedelta(minutes=31), "cancelled_lots": 0,
         "anomaly_type": "flash_move", "status": "FILLED", "cancelled_ts": None},
    ])
    fills = pa.Table.from_pylist([
        {"account_id": 1, "partition_date": "2024-03-01", "ts": t0 + dt.timedelta(minutes=2), "qty_lots": 3,
         "price_ticks": 1000, "counterparty_account_id": 2, "anomaly_type": None},
        {"account_id": 1, "partition_date": "2024-03-01", "ts": t0 + dt.timedelta(minutes=3), "qty_lots": 1,
         "price_ticks": 1000, "counterparty_account_id": 2, "anomaly_type": None},
    ])
    accounts = pa.Table.from_pylist([{"account_id": 1, "tenant_id": "t-a"}, {"account_id": 2, "tenant_id": "t-b"},
                                     {"account_id": 1, "tenant_id": "t-a"}, {"account_id": 3, "tenant_id": "t-a"}])
    table = account_features(orders, fills, accounts).to_pylist()
    one = next(r for r in table if r["account_id"] == 1)
    two = next(r for r in table if r["account_id"] == 2)
    three = next(r for r in table if r["account_id"] == 3)
    assert three["label_anomalous"] == 0 and three["orders"] == 1
    assert (one["orders"], one["cancel_ratio"], one["fills"], one["traded_notional"]) == (2, 0.5, 2, 40.0)
    assert one["fills_per_counterparty"] == 2 and one["label_anomalous"] == 0 and one["tenant_id"] == "t-a"
    assert two["label_anomalous"] == 1 and two["cancel_ratio"] == 1.0 and two["fills"] == 0
    assert len(table) == 3  # one row per account and window, nothing duplicated by the outer join


def test_a_cancel_counts_only_in_a_window_that_ends_after_it():
    """cancel_ratio is known at the window's end (event_ts): an order placed in the window but cancelled after
    it closed was still live then. Cancels have their time in ``cancelled_ts``; IOC/market remainders that
    expire and FOK orders that are rejected have none, because that happens when the order arrives."""
    t0 = dt.datetime(2024, 3, 1, 15, 0, tzinfo=dt.timezone.utc)
    minute = dt.timedelta(minutes=1)

    def order(placed, cancelled_lots=0, cancelled=None, status="NEW"):
        return {"account_id": 1, "partition_date": "2024-03-01", "ts": t0 + placed * minute,
                "cancelled_lots": cancelled_lots, "anomaly_type": None, "status": status,
                "cancelled_ts": None if cancelled is None else t0 + cancelled * minute}

    orders = pa.Table.from_pylist([
        order(1, 5, cancelled=4, status="CANCELLED"),  # cancelled inside the window: counts
        order(2, 5, cancelled=40, status="CANCELLED"),  # cancelled 25 minutes after the window closed
        order(3, 5, cancelled=15, status="CANCELLED"),  # cancelled at the window's end: not before it
        order(4, 3, status="EXPIRED"),  # IOC remainder, expired on arrival: counts
        order(5, 2, status="REJECTED"),  # FOK that could not fill: counts
        order(6, 4, status="CANCELLED"),  # cancelled at an unknown time: not known to have happened
        order(7),
        order(20, 5, cancelled=22, status="CANCELLED"),  # next window, cancelled inside it
    ], schema=pa.schema([("account_id", pa.int64()), ("partition_date", pa.string()),
                         ("ts", pa.timestamp("us", tz="UTC")), ("cancelled_lots", pa.int64()),
                         ("anomaly_type", pa.string()), ("status", pa.string()),
                         ("cancelled_ts", pa.timestamp("us", tz="UTC"))]))
    fills = pa.Table.from_pylist([], schema=pa.schema([
        ("account_id", pa.int64()), ("partition_date", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
        ("qty_lots", pa.int64()), ("price_ticks", pa.int64()), ("counterparty_account_id", pa.int64()),
        ("anomaly_type", pa.string())]))
    accounts = pa.Table.from_pylist([{"account_id": 1, "tenant_id": "t-a"}])
    rows = {r["event_ts"]: r for r in account_features(orders, fills, accounts).to_pylist()}
    assert sorted(rows) == [t0 + 15 * minute, t0 + 30 * minute]
    first, second = rows[t0 + 15 * minute], rows[t0 + 30 * minute]
    assert first["orders"] == 7 and first["cancel_ratio"] == pytest.approx(3 / 7)
    assert second["orders"] == 1 and second["cancel_ratio"] == 1.0


def test_account_features_use_nothing_from_after_event_ts_on_a_simulated_day():
    """A simulated venue day (bronze tables as the venue asset writes them): every window's cancel_ratio
    is the share of its orders whose cancel had happened before the window ended."""
    import pandas as pd

    from platformq_assets.lake.venue import BRONZE_ACCOUNTS, BRONZE_FILLS, BRONZE_ORDERS, venue_tables
    from services.trading.simulation import SimulationConfig, accounts, simulate_day

    config = SimulationConfig(scale=0.2, start_date=dt.date(2024, 1, 1))
    result = simulate_day(dt.date(2024, 2, 5), config)
    tables = venue_tables(result, accounts(config), "b", dt.datetime(2024, 2, 6, tzinfo=dt.timezone.utc))
    orders = tables[BRONZE_ORDERS]
    features = account_features(orders, tables[BRONZE_FILLS], tables[BRONZE_ACCOUNTS]).to_pandas()
    o = orders.to_pandas()
    o["event_ts"] = o["ts"].dt.floor("15min") + pd.Timedelta(minutes=15)
    cancelled = o.cancelled_lots > 0
    # a cancel with a time is an explicit or end-of-session cancel; one without is a remainder that expired
    # (or an order rejected) on arrival
    assert o[cancelled & o.cancelled_ts.isna()].status.isin(["EXPIRED", "REJECTED"]).all()
    late = cancelled & (o.cancelled_ts >= o.event_ts)
    assert late.sum() > 50  # the day has cancels that come after their order's window
    o["known"] = (cancelled & ~late).astype(int)
    expected = o.groupby(["account_id", "event_ts"]).agg(orders=("known", "size"), known=("known", "sum"))
    expected = (expected.known / expected.orders).rename("expected").reset_index()
    joined = features.merge(expected, on=["account_id", "event_ts"], how="inner")
    assert len(joined) == len(expected) > 100
    assert np.allclose(joined.cancel_ratio, joined.expected)


def test_account_labels_are_the_abuse_the_venue_attributes_to_the_account():
    """A window is anomalous when the account placed or filled an order of an anomaly that the venue's labels
    (bronze.anomaly_labels) attribute to that account: spoofing and wash trades. A flash move names no account;
    the ordinary orders placed while it lasted do not make their accounts' windows anomalous."""
    import pandas as pd

    from platformq_assets.lake.venue import (BRONZE_ACCOUNTS, BRONZE_ANOMALY_LABELS, BRONZE_FILLS, BRONZE_ORDERS,
                                             venue_tables)
    from services.trading.simulation import SimulationConfig, accounts, simulate_day

    config = SimulationConfig(scale=0.2, start_date=dt.date(2024, 1, 1))
    tables = venue_tables(simulate_day(dt.date(2024, 2, 5), config), accounts(config), "b",
                          dt.datetime(2024, 2, 6, tzinfo=dt.timezone.utc))
    labels = tables[BRONZE_ANOMALY_LABELS].to_pandas()
    named = {(a, int(acct)) for a, accts in zip(labels.anomaly_id, labels.account_ids)
             for acct in (accts or "").split(",") if acct}
    events = pd.concat([tables[t].to_pandas()[["account_id", "ts", "anomaly_id", "anomaly_type"]]
                        for t in (BRONZE_ORDERS, BRONZE_FILLS)])
    assert (events.anomaly_type == "flash_move").sum() > 0  # the day has a flash move with orders in it
    events["event_ts"] = events["ts"].dt.floor("15min") + pd.Timedelta(minutes=15)
    attributed = events[[(a, acct) in named for a, acct in zip(events.anomaly_id, events.account_id)]]
    expected = set(zip(attributed.account_id, attributed.event_ts))
    features = account_features(tables[BRONZE_ORDERS], tables[BRONZE_FILLS], tables[BRONZE_ACCOUNTS]).to_pandas()
    positive = set(zip(features[features.label_anomalous == 1].account_id,
                       features[features.label_anomalous == 1].event_ts))
    assert positive == expected and len(expected) >= 2
    flash_windows = set(zip(events[events.anomaly_type == "flash_move"].account_id,
                            events[events.anomaly_type == "flash_move"].event_ts))
    assert flash_windows - expected and not (flash_windows - expected) & positive


@pytest.mark.slow
def test_spark_recomputation_equals_the_duckdb_path(settings):
    """The full-history Spark job and the daily DuckDB partitions produce the same table."""
    from resources.compute import spark_resource

    data = bars(days=("2024-03-01", "2024-03-04", "2024-03-05"), instruments=("AAPL", "MSFT", "IBM"))
    spark = spark_resource(settings)
    session = spark.session()
    try:
        assert session.sparkContext.master == "local[2]"
        on_spark = instrument_features(data, spark=session)
    finally:
        spark.stop()
    per_day = pa.concat_tables([
        instrument_features(data.filter(pa.compute.equal(data["partition_date"], day)))
        for day in ("2024-03-01", "2024-03-04", "2024-03-05")])
    left = on_spark.to_pandas().sort_values(["instrument", "bucket"]).reset_index(drop=True)
    right = per_day.to_pandas().sort_values(["instrument", "bucket"]).reset_index(drop=True)
    assert list(left.columns) == list(right.columns) and len(left) == len(right) > 100
    import pandas as pd

    pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-9, atol=1e-12)


def test_feast_historical_join_never_uses_a_value_from_after_the_event(settings):
    """Real Feast (SQLite registry, file offline store): entity times between intervals get the
    latest interval that had closed by then, never a later one."""
    import pandas as pd

    from platformq_assets.ml.features import _with_as_of
    from resources.feast import feast_resource

    feast = feast_resource(settings)
    table = _with_as_of(instrument_features(bars()))
    for day in ("2024-03-01", "2024-03-04"):
        feast.export_partition("instrument_intervals", day, table.filter(pa.compute.equal(table["partition_date"], day)))
    feast.apply()
    frame = table.to_pandas()
    aapl = frame[frame.instrument == "AAPL"].sort_values("event_ts")
    # one second before, at, and 2.5 minutes after each interval end
    probes = pd.concat([aapl.event_ts - pd.Timedelta(seconds=1), aapl.event_ts,
                        aapl.event_ts + pd.Timedelta(seconds=150)]).sort_values()
    entity = pd.DataFrame({"instrument": "AAPL", "event_timestamp": probes.values})
    entity["event_timestamp"] = pd.to_datetime(entity["event_timestamp"], utc=True)
    joined = feast.historical_features("price_direction_v1", entity)
    known = aapl.event_ts.map(lambda t: t.timestamp()).to_numpy()
    checked = 0
    for _, row in joined.iterrows():
        at = row["event_timestamp"].timestamp()
        latest = known[known <= at]
        if len(latest) == 0 or at - latest.max() > 30 * 60:  # before the first interval / beyond the TTL
            assert pd.isna(row["as_of_epoch"])
            continue
        assert row["as_of_epoch"] <= at  # nothing from the future
        assert row["as_of_epoch"] == latest.max()  # and the freshest value that was known
        expected = aapl[aapl.event_ts.map(lambda t: t.timestamp()) == latest.max()].iloc[0]
        assert row["volume_1"] == expected.volume_1
        checked += 1
    assert checked > 50


def test_psi_and_ks_separate_shifted_from_resampled_data():
    import pandas as pd

    from models.monitoring import drift_report, psi

    rng = np.random.default_rng(1)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 4000), "y": rng.exponential(1, 4000)})
    same = pd.DataFrame({"x": rng.normal(0, 1, 800), "y": rng.exponential(1, 800)})
    shifted = pd.DataFrame({"x": rng.normal(1.0, 1, 800), "y": rng.exponential(1, 800) * 5})
    calm = drift_report(reference, same, ["x", "y"])
    assert all(v["severity"] == "ok" and v["psi"] < 0.1 for v in calm.values())
    loud = drift_report(reference, shifted, ["x", "y"])
    assert all(v["severity"] == "error" and v["ks"] > 0.3 and v["ks_pvalue"] < 1e-6 for v in loud.values())
    assert psi(np.ones(100), np.ones(50)) == pytest.approx(0.0, abs=1e-6)
    assert psi(np.ones(100), np.full(50, 2.0)) > 0.25  # a constant feature that moved is drift
    import warnings

    from models.monitoring import ks

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty sample is undefined, said quietly: no SciPy warning per feature
        assert all(np.isnan(v) for v in ks(np.ones(10), np.array([np.nan])) + ks(np.array([]), np.ones(3)))


@pytest.mark.slow
def test_spark_offline_store_gives_the_same_point_in_time_join(settings, tmp_path):
    """PLATFORMQ_FEAST_OFFLINE_STORE=spark: Feast's Spark offline store (local[2] here, the cluster in
    production) joins the same exports to the same training rows as the file store."""
    import pandas as pd

    from platformq_assets.ml.features import _with_as_of
    from resources.compute import spark_resource
    from resources.feast import FeastResource, feast_resource

    table = _with_as_of(instrument_features(bars()))
    frame = table.to_pandas().dropna(subset=["label_up"])
    entity = pd.DataFrame({"instrument": frame.instrument.values,
                           "event_timestamp": (frame.event_ts + pd.Timedelta(seconds=90)).values})
    entity["event_timestamp"] = pd.to_datetime(entity["event_timestamp"], utc=True)
    results = {}
    for kind in ("file", "spark"):
        base = feast_resource(settings)
        feast = FeastResource(registry_uri=f"sqlite:///{tmp_path / kind}-registry.db",
                              online_path=str(tmp_path / f"{kind}-online.db"), offline_root=base.offline_root,
                              repo_path=base.repo_path, offline_store=kind,
                              spark_conf=spark_resource(settings).spark_config if kind == "spark" else {})
        for day in ("2024-03-01", "2024-03-04"):
            feast.export_partition("instrument_intervals", day,
                                   table.filter(pa.compute.equal(table["partition_date"], day)))
        feast.apply()
        joined = feast.historical_features("price_direction_v1", entity.copy())
        columns = ["instrument", "event_timestamp", "as_of_epoch", "ret_1", "volume_6", "risk_adjusted_return"]
        results[kind] = (joined[columns].assign(event_timestamp=lambda f: pd.to_datetime(f.event_timestamp, utc=True))
                         .sort_values(["instrument", "event_timestamp"]).reset_index(drop=True))
    spark_store = results["spark"]
    assert len(spark_store) == len(results["file"]) > 50
    assert (spark_store["as_of_epoch"] <= spark_store["event_timestamp"].map(lambda t: t.timestamp())).all()
    pd.testing.assert_frame_equal(spark_store, results["file"], check_dtype=False, check_exact=False, rtol=1e-9)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.stop()


def test_the_model_service_specs_agree_with_the_feast_definitions(tmp_path):
    """The model service reads join-key types and tenant scoping without importing Feast: each spec must say
    what the Feast repo defines (a model whose service returns tenant_id is tenant-scoped; the warm-up entity
    has the join key's type)."""
    from feast import Entity, FeatureService, ValueType

    from services.models.scorer import default_specs

    objects = feature_objects(str(tmp_path))
    entity_type = {entity.join_key: entity.value_type for entity in objects if isinstance(entity, Entity)}
    services = {service.name: service for service in objects if isinstance(service, FeatureService)}
    specs = default_specs()
    assert set(specs) == {"price_direction", "account_anomaly"}
    for spec in specs.values():
        returned = {field.name for projection in services[spec.service].feature_view_projections
                    for field in projection.features}
        assert set(spec.features) <= returned
        assert spec.tenant_scoped == ("tenant_id" in returned), spec.name
        expected = int if entity_type[spec.entity_key] == ValueType.INT64 else str
        assert type(spec.warm_up_entity) is expected, spec.name
    assert specs["account_anomaly"].tenant_scoped and not specs["price_direction"].tenant_scoped


def test_a_day_whose_inputs_were_never_built_fails_and_writes_nothing(settings, lake):
    """ml_daily at 02:00 before the venue's day landed (venue_daily late or failed): the gold partition reads as
    empty, and the day's features, Feast export, scores and drift were replaced by nothing. The feature step fails
    saying what to build; the day's earlier features and export stay. Built once its inputs are, it succeeds."""
    import os

    from dagster import AssetKey, AssetMaterialization, DagsterInstance, materialize

    from platformq_assets.ml.features import instrument_intervals
    from resources.feast import feast_resource

    day = "2024-03-04"
    feast = feast_resource(settings)
    instance = DagsterInstance.get()
    minute_bars = bars(days=(day,))
    minute_bars = minute_bars.append_column("bar_interval", pa.array(["1m"] * len(minute_bars)))
    lake.replace_partition("gold.ohlcv_bars", minute_bars, "partition_date", day)
    lake.replace_partition("features.instrument_intervals", instrument_features(bars(days=(day,))),
                           "partition_date", day)  # a run before the inputs were re-built: what it wrote stays
    export = feast.export_partition("instrument_intervals", day, lake.read("features.instrument_intervals"))
    before = lake.read("features.instrument_intervals").num_rows

    def build():
        return materialize([instrument_intervals], partition_key=day, instance=instance, raise_on_error=False,
                           resources={"lake": lake, "feast": feast})

    failed = build()
    assert not failed.success
    [error] = [e.event_specific_data.error.to_string() for e in failed.all_events if e.is_step_failure]
    assert f"gold/ohlcv_bars for {day} not materialised yet" in error, error
    assert lake.read("features.instrument_intervals").num_rows == before and before > 0
    assert os.path.exists(export)

    instance.report_runless_asset_event(AssetMaterialization(AssetKey(["gold", "ohlcv_bars"]), partition=day))
    built = build()  # the venue's day is built: so are its features
    assert built.success, [e.event_specific_data.error.to_string() for e in built.all_events if e.is_step_failure]
    assert lake.read_partition("features.instrument_intervals", "partition_date", day).num_rows == before


def test_each_export_writes_under_a_temporary_name_of_its_own_and_leaves_none_behind(settings, monkeypatch):
    """Two writers of one day's export (the features step and an erasure) shared one temporary file name: each
    truncated the other's file, and a mix of both (or nothing) was moved into place."""
    import os

    import pyarrow.parquet as pq

    from resources.feast import feast_resource

    feast = feast_resource(settings)
    day = "2024-03-04"
    table = instrument_features(bars(days=(day,)))
    written, real_write = [], pq.write_table

    def record(data, where, **kwargs):
        written.append(where)
        return real_write(data, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", record)
    final = feast.export_partition("instrument_intervals", day, table)
    feast.export_partition("instrument_intervals", day, table)
    assert len(written) == 2 and written[0] != written[1]

    def fail(data, where, **kwargs):
        real_write(data.slice(0, 1), where, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", fail)
    with pytest.raises(OSError, match="disk full"):
        feast.export_partition("instrument_intervals", day, table)
    folder = os.path.dirname(final)
    assert sorted(os.listdir(folder)) == [os.path.basename(final)]  # no temporary file left, the export intact
    assert pq.read_table(final).num_rows == len(table)


def test_windows_of_an_account_erased_while_they_were_computed_are_not_written(settings, lake, monkeypatch):
    """The erasure runs in another pool than the feature step: accepted after the step read its inputs, it removed
    the account from the feature table and the exports, and the step then wrote the account's windows back."""
    import datetime as dt

    from dagster import AssetMaterialization, DagsterInstance, materialize

    import features.compute
    from pipelines.partitions import PARTITION_COLUMN
    from platformq_assets.lake.venue import BRONZE_ACCOUNTS, BRONZE_FILLS, BRONZE_ORDERS, venue_tables
    from platformq_assets.ml.features import ACCOUNT_INPUT_KEYS, account_activity
    from resources import erasure
    from resources.feast import feast_resource
    from services.trading.simulation import SimulationConfig, accounts, simulate_day

    day = dt.date(2024, 3, 4)
    config = SimulationConfig(seed=7, scale=0.3, start_date=day)
    tables = venue_tables(simulate_day(day, config), accounts(config), "seed", dt.datetime.now(dt.timezone.utc))
    for key in (BRONZE_ORDERS, BRONZE_FILLS, BRONZE_ACCOUNTS):
        lake.replace_partition(".".join(key.path), tables[key], PARTITION_COLUMN, day)
    instance = DagsterInstance.get()
    for key in ACCOUNT_INPUT_KEYS:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=day.isoformat()))
    real, erased = features.compute.account_features, []

    def compute_then_erasure_accepted(*args):
        table = real(*args)
        erased.append(table["account_id"][0].as_py())
        erasure._write_log(lake, erasure._log_row({"request_id": "r-1", "tenant_id": "t", "account_id": erased[0]},
                                                 erasure.COMPLETED, "done", {}))
        return table

    monkeypatch.setattr(features.compute, "account_features", compute_then_erasure_accepted)
    result = materialize([account_activity], partition_key=day.isoformat(), instance=instance,
                         resources={"lake": lake, "feast": feast_resource(settings)})
    assert result.success
    written = lake.read("features.account_activity")
    assert written.num_rows > 0 and erased[0] not in set(written.column("account_id").to_pylist())
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["erased_rows_withheld"].value > 0


def test_the_registry_fingerprint_changes_with_the_definitions_only():
    """features/registry's data version is this fingerprint. It hashed the creation time Feast stamps on every data
    source (nested in each view reading it): each build of the same definitions had a new one, so every apply
    showed the registry as changed and everything downstream as stale."""
    import time

    from features.repo import definitions_fingerprint

    first = definitions_fingerprint(feature_objects("/feast/offline"))
    time.sleep(1.1)  # a later second: the creation time Feast records differs
    assert definitions_fingerprint(feature_objects("/feast/offline")) == first
    assert definitions_fingerprint(feature_objects("/elsewhere/offline")) != first
