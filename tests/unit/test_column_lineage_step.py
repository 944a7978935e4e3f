"""Column lineage inside the dbt step: derived from compiled SQL and the lake's schemas, each looked up once."""

import datetime as dt
import logging

import pyarrow as pa
from dagster import AssetKey

from platformq_assets.lake.transform import _column_lineage
from resources.lake import LakeResource

DAY = dt.date(2024, 1, 1)


def test_models_reading_one_table_look_its_schema_up_once(lake, monkeypatch):
    lake.replace_partition("silver.t", pa.table({"partition_date": pa.array([DAY], pa.date32()), "id": [1],
                                                  "v": [2.0]}), "partition_date", DAY)
    loads = []
    real_load = LakeResource.load_table
    monkeypatch.setattr(LakeResource, "load_table", lambda self, name: loads.append(name) or real_load(self, name))

    schemas = {}
    log = logging.getLogger("test")
    doubled = _column_lineage({"compiled_code": "select id, v * 2 as w from silver.t"}, "gold.doubled",
                              ["id", "w"], lake, "duckdb", log, schemas)
    summed = _column_lineage({"compiled_code": "select id, sum(v) as s from silver.t group by id"}, "gold.summed",
                             ["id", "s"], lake, "duckdb", log, schemas)

    assert loads == ["silver.t"]  # the second model used the step's cached schema
    t = AssetKey(["silver", "t"])
    assert [(d.asset_key, d.column_name) for d in doubled.deps_by_column["w"]] == [(t, "v")]
    assert [(d.asset_key, d.column_name) for d in summed.deps_by_column["s"]] == [(t, "v")]
    # a table the lake does not have is remembered as unknown, not looked up again
    for _ in range(2):
        _column_lineage({"compiled_code": "select x from silver.missing"}, "gold.m", ["x"], lake, "duckdb", log,
                        schemas)
    assert schemas["silver.missing"] is None and loads == ["silver.t"]
