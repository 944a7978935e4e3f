"""The online store keeps each entity's newest features, whatever order the days are materialised in.

Feast's Redis store (production) compares event timestamps and skips a row that is not newer than the one
stored; the local SQLite store must do the same: re-materialising an older day (a backfill, a retry, a
re-run from the UI) after a newer one must not roll online scoring back to that day's features.
Real Feast, a real SQLite online store, and a private redis-server for the comparison.
"""

import contextlib
import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.ml.test_features import bars

OLD, NEW = "2024-03-01", "2024-03-04"
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def online_backend(kind: str):
    if kind == "redis":
        from tests.integration.servers import redis_server

        with redis_server() as url:
            yield {"online_store": "redis", "redis_url": url}
    else:
        yield {"online_store": "sqlite"}


def _feast(tmp_path, backend: dict):
    from features.compute import instrument_features
    from platformq_assets.ml.features import _with_as_of
    from resources.feast import FeastResource

    feast = FeastResource(registry_uri=f"sqlite:///{tmp_path / 'registry.db'}", online_path=str(tmp_path / "online.db"),
                          offline_root=str(tmp_path / "offline"), repo_path=str(ROOT / "features"), **backend)
    # IBM trades only on the older day: no newer value of it exists anywhere
    table = _with_as_of(instrument_features(pa.concat_tables([
        bars(days=(OLD,), instruments=("AAPL", "MSFT", "IBM")), bars(days=(NEW,), instruments=("AAPL", "MSFT"))])))
    for day in (OLD, NEW):
        feast.export_partition("instrument_intervals", day, table.filter(pc.equal(table["partition_date"], day)))
    feast.apply()
    latest = {}
    for row in table.select(["instrument", "partition_date", "as_of_epoch"]).to_pylist():
        key = (row["instrument"], row["partition_date"])
        latest[key] = max(latest.get(key, 0.0), row["as_of_epoch"])
    return feast, latest


def _online_as_of(feast) -> dict:
    out = feast.online_features("price_direction_v1", [{"instrument": i} for i in ("AAPL", "MSFT", "IBM")])
    return dict(zip(out["instrument"], out["as_of_epoch"]))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.slow)])  # slow: a server
def test_an_older_day_materialised_after_a_newer_one_does_not_roll_the_online_store_back(tmp_path, kind):
    from platformq_assets.ml.features import _day_bounds

    with online_backend(kind) as backend:
        feast, latest = _feast(tmp_path, backend)
        feast.materialize(*_day_bounds(NEW), views=["instrument_intervals"])
        newest = {"AAPL": latest["AAPL", NEW], "MSFT": latest["MSFT", NEW], "IBM": None}
        assert _online_as_of(feast) == newest
        feast.materialize(*_day_bounds(OLD), views=["instrument_intervals"])  # the backfill
        # the newer day's values stay; IBM, which the newer day lacks, takes the older day's (as Redis does)
        assert _online_as_of(feast) == {**newest, "IBM": latest["IBM", OLD]}
        feast.materialize(*_day_bounds(NEW), views=["instrument_intervals"])  # and a re-run changes nothing
        assert _online_as_of(feast) == {**newest, "IBM": latest["IBM", OLD]}
        assert dt.datetime.fromtimestamp(_online_as_of(feast)["AAPL"], dt.timezone.utc).date().isoformat() == NEW


def _export_accounts(feast, days):
    """One order a day for account 1, exported as the account view's partitions."""
    from features.compute import account_features
    from platformq_assets.ml.features import _with_as_of

    ts = pa.timestamp("us", tz="UTC")
    for day in days:
        placed = dt.datetime.fromisoformat(day).replace(hour=15, tzinfo=dt.timezone.utc)
        orders = pa.table({"account_id": [1], "partition_date": [day], "ts": pa.array([placed], ts),
                           "cancelled_lots": [0], "cancelled_ts": pa.array([None], ts), "status": ["NEW"],
                           "anomaly_type": pa.array([None], pa.string())})
        fills = pa.table({"account_id": pa.array([], pa.int64()), "partition_date": pa.array([], pa.string()),
                          "ts": pa.array([], ts), "qty_lots": pa.array([], pa.int64()),
                          "price_ticks": pa.array([], pa.int64()), "counterparty_account_id": pa.array([], pa.int64()),
                          "anomaly_type": pa.array([], pa.string())})
        accounts = pa.table({"account_id": [1], "tenant_id": ["t-a"]})
        feast.export_partition("account_activity", day, _with_as_of(account_features(orders, fills, accounts)))


def test_the_online_store_asset_notes_when_it_materialises_an_older_day(tmp_path):
    """The asset says when its day is older than one already materialised, and what happened to it."""
    from dagster import AssetMaterialization, DagsterInstance, build_asset_context

    from platformq_assets.ml.features import (ACCOUNT_FEATURES_KEY, INSTRUMENT_FEATURES_KEY, ONLINE_KEY,
                                              ONLINE_WRITE_RULE, online_store)

    feast, latest = _feast(tmp_path, {"online_store": "sqlite"})
    _export_accounts(feast, (OLD, NEW))  # the asset materialises the account view too: one order a day
    with DagsterInstance.ephemeral() as instance:
        for key in (INSTRUMENT_FEATURES_KEY, ACCOUNT_FEATURES_KEY):  # the feature steps built both days
            for day in (OLD, NEW):
                instance.report_runless_asset_event(AssetMaterialization(asset_key=key, partition=day))
        result = online_store(build_asset_context(partition_key=NEW, instance=instance), feast=feast)
        assert result.metadata["online_write_rule"] == ONLINE_WRITE_RULE and "older_day_note" not in result.metadata
        instance.report_runless_asset_event(AssetMaterialization(asset_key=ONLINE_KEY, partition=NEW))
        result = online_store(build_asset_context(partition_key=OLD, instance=instance), feast=feast)
    assert result.metadata["newest_day_online"] == NEW
    assert result.metadata["older_day_note"].startswith(f"{OLD} is older than {NEW}")
    assert _online_as_of(feast)["AAPL"] == latest["AAPL", NEW]


def test_the_online_store_step_for_a_day_without_feature_partitions_fails_naming_them(tmp_path):
    """Run alone (the UI, a partial backfill) for a day whose feature partitions were never built, the step wrote
    nothing online and still showed the day as materialised. It fails naming the missing feature partitions, and
    succeeds once they are built."""
    from dagster import AssetMaterialization, DagsterInstance, materialize

    from platformq_assets.ml.features import ACCOUNT_FEATURES_KEY, INSTRUMENT_FEATURES_KEY, ONLINE_KEY, online_store

    feast, latest = _feast(tmp_path, {"online_store": "sqlite"})
    _export_accounts(feast, (OLD,))
    day = NEW  # its instrument export is there, its account export never written
    with DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=INSTRUMENT_FEATURES_KEY, partition=day))
        failed = materialize([online_store], partition_key=day, instance=instance, raise_on_error=False,
                             resources={"feast": feast})
        assert not failed.success
        [error] = [e.event_specific_data.error.to_string() for e in failed.all_events if e.is_step_failure]
        assert f"features/account_activity for {day} not materialised yet" in error, error
        assert "features/instrument_intervals" not in error.split("not materialised")[0], error
        assert "feature partitions" in error and "venue_daily" not in error, error
        assert day not in instance.get_materialized_partitions(ONLINE_KEY)

        _export_accounts(feast, (day,))  # the account step builds the day
        instance.report_runless_asset_event(AssetMaterialization(asset_key=ACCOUNT_FEATURES_KEY, partition=day))
        built = materialize([online_store], partition_key=day, instance=instance, raise_on_error=False,
                            resources={"feast": feast})
        assert built.success
        assert day in instance.get_materialized_partitions(ONLINE_KEY)
    assert _online_as_of(feast)["AAPL"] == latest["AAPL", NEW]
