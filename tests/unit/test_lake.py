"""Iceberg writes: partition replacement, schema evolution, atomicity under a crash."""

import datetime as dt
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from tests.conftest import ROOT, subprocess_env

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def rows(day, n, start=0):
    return pa.table({"partition_date": pa.array([day] * n, pa.date32()), "id": list(range(start, start + n)),
                     "v": [float(i) for i in range(n)]})


def test_replacing_a_partition_never_duplicates(lake):
    lake.replace_partition("bronze.t", rows(D1, 10), "partition_date", D1)
    lake.replace_partition("bronze.t", rows(D2, 5), "partition_date", D2)
    lake.replace_partition("bronze.t", rows(D1, 7, start=100), "partition_date", D1)
    data = lake.read("bronze.t")
    assert data.num_rows == 12
    d1 = lake.read_partition("bronze.t", "partition_date", D1)
    assert sorted(d1.column("id").to_pylist()) == list(range(100, 107))
    assert lake.describe("bronze.t")["rows"] == 12


def test_schema_evolves_by_adding_columns(lake):
    lake.replace_partition("bronze.e", rows(D1, 3), "partition_date", D1)
    wider = rows(D2, 2).append_column("note", pa.array(["a", "b"]))
    lake.replace_partition("bronze.e", wider, "partition_date", D2)
    data = lake.read("bronze.e").sort_by("partition_date")
    assert data.column_names == ["partition_date", "id", "v", "note"]
    assert data.column("note").to_pylist() == [None, None, None, "a", "b"]


def test_time_travel_keeps_previous_snapshot(lake):
    first = lake.replace_partition("bronze.tt", rows(D1, 3), "partition_date", D1)
    lake.replace_partition("bronze.tt", rows(D1, 8), "partition_date", D1)
    assert lake.read("bronze.tt", snapshot_id=first["snapshot_id"]).num_rows == 3
    assert lake.read("bronze.tt").num_rows == 8


def test_crash_before_commit_leaves_table_at_previous_snapshot(lake, platform_home):
    """A writer killed (SIGKILL) after writing its data file but before the catalog commit."""
    before = lake.replace_partition("bronze.c", rows(D1, 10), "partition_date", D1)
    script = textwrap.dedent("""
        import datetime as dt, os, signal
        import pyarrow as pa
        from pyiceberg.catalog.sql import SqlCatalog
        from resources import lake_resource
        from resources.settings import load_settings

        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        SqlCatalog.commit_table = die
        day = dt.date(2024, 1, 1)
        lake = lake_resource(load_settings())
        data = pa.table({"partition_date": pa.array([day] * 50, pa.date32()), "id": list(range(50)),
                         "v": [0.0] * 50})
        lake.replace_partition("bronze.c", data, "partition_date", day)
        print("not reached")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=subprocess_env(platform_home),
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    data_files = list((platform_home / "warehouse").rglob("*.parquet"))
    assert len(data_files) >= 2, "the killed writer did write a data file"
    after = lake.describe("bronze.c")
    assert after["snapshot_id"] == before["snapshot_id"] and after["rows"] == 10
    assert lake.read("bronze.c").num_rows == 10
    rerun = lake.replace_partition("bronze.c", rows(D1, 50), "partition_date", D1)
    assert rerun["total_rows"] == 50 and lake.read("bronze.c").num_rows == 50


@pytest.mark.parametrize("n", [0])
def test_empty_partition_write_clears_partition(lake, n):
    lake.replace_partition("bronze.z", rows(D1, 4), "partition_date", D1)
    lake.replace_partition("bronze.z", rows(D1, n), "partition_date", D1)
    assert lake.read("bronze.z").num_rows == 0
