"""trust/dataset_credentials against the credentials service: what a credential claims about a table holds at
the snapshot it names."""

import datetime as dt

import pyarrow as pa
import pytest
from dagster import DagsterInstance, materialize
from pyiceberg.expressions import EqualTo

from pipelines.partitions import PARTITION_COLUMN
from platformq_assets.trust.credentials import dataset_credentials
from resources.lake import LakeResource
from resources.services import INTERNAL_TENANT, ServiceClientResource, build_local_app
from tests.services.serving import serve

pytestmark = pytest.mark.slow
DAY = dt.date(2024, 1, 2)


def rows(n: int) -> pa.Table:
    return pa.table({"account_id": list(range(n)), "tenant_id": ["t-acme"] * n,
                     PARTITION_COLUMN: pa.array([DAY] * n, pa.date32())})


def test_the_row_count_is_read_at_the_snapshot_the_credential_names(settings, lake, monkeypatch):
    """The rows were counted from one load of the table and the snapshot taken from another: a commit between
    the two (an erasure, a rebuilt day) made a signed, anchored credential claim a count its snapshot does not
    hold."""
    for identifier, n in (("gold.ohlcv_bars", 2), ("gold.positions_pnl", 3), ("gold.trader_leaderboard", 3)):
        lake.replace_partition(identifier, rows(n), PARTITION_COLUMN, DAY)
    real_describe = LakeResource.describe
    committed = []

    def commit_then_describe(self, identifier):
        if identifier == "gold.positions_pnl" and not committed:  # another writer commits meanwhile
            committed.append(self.replace_partition(identifier, rows(1), PARTITION_COLUMN, DAY))
        return real_describe(self, identifier)

    monkeypatch.setattr(LakeResource, "describe", commit_then_describe)
    app, ctx = build_local_app("credentials", str(settings.home))
    key = ctx.keys.create("ops", INTERNAL_TENANT, ["admin"])
    with serve(app) as url:
        client = ServiceClientResource(service="credentials", base_url=url, api_key=key)
        result = materialize([dataset_credentials], partition_key=DAY.isoformat(), instance=DagsterInstance.get(),
                             resources={"lake": lake, "credentials": client})
    assert result.success and committed
    issued = {r["asset_key"]: r for r in lake.read("trust.dataset_credentials").to_pylist()}
    for asset_key, row in issued.items():
        identifier = asset_key.replace("/", ".")
        at_snapshot = lake.read(identifier, row_filter=EqualTo(PARTITION_COLUMN, DAY.isoformat()),
                                snapshot_id=int(row["snapshot_id"])).num_rows
        assert row["row_count"] == at_snapshot, (asset_key, row["row_count"], at_snapshot)
        assert row["verified"]
    assert issued["gold/positions_pnl"]["row_count"] == 1  # the snapshot it names: after the other commit
