"""An erasure reaches Feast: the account's rows leave the offline exports and its entity leaves the online
store (Feast has no per-entity delete). Real Feast; SQLite locally, a private redis-server for production's."""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ml.test_online_store import NEW, OLD, ROOT, online_backend

TS = pa.timestamp("us", tz="UTC")


def _activity(day: str, accounts: list[int]) -> pa.Table:
    from features.compute import account_features
    from platformq_assets.ml.features import _with_as_of

    placed = dt.datetime.fromisoformat(day).replace(hour=15, tzinfo=dt.timezone.utc)
    n = len(accounts)
    orders = pa.table({"account_id": pa.array(accounts, pa.int64()), "partition_date": [day] * n,
                       "ts": pa.array([placed] * n, TS), "cancelled_lots": [0] * n,
                       "cancelled_ts": pa.array([None] * n, TS), "status": ["NEW"] * n,
                       "anomaly_type": pa.array([None] * n, pa.string())})
    fills = pa.table({"account_id": pa.array([], pa.int64()), "partition_date": pa.array([], pa.string()),
                      "ts": pa.array([], TS), "qty_lots": pa.array([], pa.int64()),
                      "price_ticks": pa.array([], pa.int64()), "counterparty_account_id": pa.array([], pa.int64()),
                      "anomaly_type": pa.array([], pa.string())})
    tenants = pa.table({"account_id": pa.array(accounts, pa.int64()), "tenant_id": ["t-a"] * n})
    return _with_as_of(account_features(orders, fills, tenants))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.slow)])  # slow: a server
def test_erasing_an_account_removes_it_from_offline_exports_and_the_online_store(tmp_path, kind):
    from platformq_assets.ml.features import _day_bounds
    from resources.feast import FeastResource

    with online_backend(kind) as backend:
        feast = FeastResource(registry_uri=f"sqlite:///{tmp_path / 'registry.db'}",
                              online_path=str(tmp_path / "online.db"), offline_root=str(tmp_path / "offline"),
                              repo_path=str(ROOT / "features"), **backend)
        for day in (OLD, NEW):
            feast.export_partition("account_activity", day, _activity(day, [1, 2, 3]))
        feast.apply()
        feast.materialize(*_day_bounds(NEW), views=["account_activity"])

        def online() -> dict:
            out = feast.online_features("account_anomaly_v1", [{"account_id": a} for a in (1, 2, 3)])
            return dict(zip(out["account_id"], out["orders"]))

        assert online() == {1: 1.0, 2: 1.0, 3: 1.0}
        done = feast.erase_entities("account_activity", "account_id", {2})
        assert done == {"offline_rows": 2, "online_entities": 1}
        assert online() == {1: 1.0, 2: None, 3: 1.0}
        for day in (OLD, NEW):
            exported = pq.read_table(tmp_path / "offline" / "account_activity" / f"partition_date={day}.parquet")
            assert sorted(exported.column("account_id").to_pylist()) == [1, 3]
        # a second erasure finds nothing; the offline store no longer serves the account's history either
        assert feast.erase_entities("account_activity", "account_id", {2}) == {"offline_rows": 0, "online_entities": 0}
