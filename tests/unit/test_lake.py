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


def test_a_new_partitioned_table_is_created_partitioned_in_one_commit(lake):
    # The spec used to be added in a second commit: a crash in between left an unpartitioned table, whose
    # partition replacements then rewrite every file. Now the first metadata file already has the spec.
    table = lake.ensure_table("bronze.fresh", rows(D1, 1).schema, partition_by="partition_date")
    assert table.metadata.metadata_log == []  # no earlier metadata: created as it is
    [field] = table.spec().fields
    assert table.schema().find_field(field.source_id).name == "partition_date"
    assert str(field.transform) == "identity"


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


def race(lake, settings, then):
    """Make ``then(other_writer)`` commit between our read of the table and our commit."""
    from resources import lake_resource

    other = lake_resource(settings)  # a second writer with its own catalog connection
    catalog = lake.catalog()
    original = catalog.commit_table
    raced = []

    def commit_after_the_other_writer(table, requirements, updates):
        if not raced:
            raced.append(True)
            then(other)
        return original(table, requirements, updates)

    catalog.commit_table = commit_after_the_other_writer
    return raced


def test_a_commit_racing_a_writer_of_other_rows_lands_both(lake, settings):
    lake.replace_partition("bronze.race", rows(D1, 3), "partition_date", D1)
    raced = race(lake, settings, lambda other: other.replace_partition(
        "bronze.race", rows(D2, 5, start=50), "partition_date", D2))
    written = lake.replace_partition("bronze.race", rows(D1, 4, start=10), "partition_date", D1)
    assert raced and written["total_rows"] == 9
    assert sorted(lake.read("bronze.race").column("id").to_pylist()) == [10, 11, 12, 13, 50, 51, 52, 53, 54]


def test_a_replacement_racing_a_writer_of_the_same_partition_is_redone_and_wins(lake, settings):
    """pyiceberg refuses the stale delete (ValidationException); the lake redoes the replacement on the new snapshot."""
    lake.replace_partition("bronze.race2", rows(D1, 3), "partition_date", D1)
    lake.replace_partition("bronze.race2", rows(D2, 2, start=90), "partition_date", D2)
    raced = race(lake, settings, lambda other: other.replace_partition(
        "bronze.race2", rows(D1, 5, start=50), "partition_date", D1))
    written = lake.replace_partition("bronze.race2", rows(D1, 4, start=10), "partition_date", D1)
    assert raced and lake.commit_retries == 1
    assert written["total_rows"] == 6  # the last writer's 4 rows of D1, never both writers' rows, + D2's 2
    assert sorted(lake.read("bronze.race2").column("id").to_pylist()) == [10, 11, 12, 13, 90, 91]


def test_concurrent_writers_of_one_table_lose_nothing(lake, platform_home):
    """Two processes replace interleaved partitions of one table at once, each partition twice."""
    lake.replace_partition("bronze.shared", rows(D1, 1, start=10_000), "partition_date", D1)
    script = textwrap.dedent("""
        import datetime as dt, sys
        import pyarrow as pa
        from resources import lake_resource
        from resources.settings import load_settings

        lake = lake_resource(load_settings())
        worker = int(sys.argv[1])
        for attempt in range(2):
            for i in range(worker, 16, 2):
                day = dt.date(2024, 2, 1) + dt.timedelta(days=i)
                data = pa.table({"partition_date": pa.array([day] * (i + 1), pa.date32()),
                                 "id": [i * 100 + k for k in range(i + 1)], "v": [float(attempt)] * (i + 1)})
                lake.replace_partition("bronze.shared", data, "partition_date", day)
        print("retries", lake.commit_retries)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], cwd=ROOT, env=subprocess_env(platform_home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    data = lake.read("bronze.shared")
    expected = 1 + sum(i + 1 for i in range(16))
    assert data.num_rows == expected == len(set(data.column("id").to_pylist()))
    by_day = {}
    for day, v in zip(data.column("partition_date").to_pylist(), data.column("v").to_pylist()):
        by_day.setdefault(day, set()).add(v)
    assert all(values == {1.0} for day, values in by_day.items() if day != D1)  # the second pass won everywhere


def test_a_new_column_declared_required_or_all_null_is_taken(lake):
    """A column a table gains is optional (its earlier rows have no value), whatever the data declares; a column
    of Arrow's null type (no value, so no type) is left out until data gives it a type."""
    lake.replace_partition("bronze.grow", rows(D1, 2), "partition_date", D1)
    required = rows(D2, 2).append_column(pa.field("note", pa.string(), nullable=False), pa.array(["a", "b"]))
    lake.replace_partition("bronze.grow", required, "partition_date", D2)
    assert not lake.load_table("bronze.grow").schema().find_field("note").required
    lake.replace_partition("bronze.grow", rows(D2, 2).append_column("later", pa.nulls(2)), "partition_date", D2)
    lake.replace_partition("bronze.fresh_nulls", rows(D1, 2).append_column("x", pa.nulls(2)), "partition_date", D1)
    assert lake.read("bronze.grow").num_rows == 4 and lake.read("bronze.fresh_nulls").num_rows == 2
    assert "later" not in lake.read("bronze.grow").column_names
    typed = rows(D1, 2).append_column("x", pa.array([1.5, None]))  # the first values give the column its type
    lake.replace_partition("bronze.fresh_nulls", typed, "partition_date", D1)
    assert lake.read("bronze.fresh_nulls").column("x").to_pylist() == [1.5, None]


def test_a_widened_column_type_is_promoted_not_cast_down(lake):
    """A day whose data widens a column (int -> long, float -> double) promotes the column the way Iceberg
    allows, instead of casting the data down into the old type (an overflow error, or silently lost precision)."""
    first = pa.table({"partition_date": pa.array([D1], pa.date32()), "n": pa.array([1], pa.int32()),
                      "f": pa.array([0.5], pa.float32())})
    lake.replace_partition("bronze.widen", first, "partition_date", D1)
    wider = pa.table({"partition_date": pa.array([D2], pa.date32()), "n": pa.array([3_000_000_000], pa.int64()),
                      "f": pa.array([0.1], pa.float64())})
    lake.replace_partition("bronze.widen", wider, "partition_date", D2)
    data = lake.read("bronze.widen").sort_by("partition_date")
    assert data.column("n").to_pylist() == [1, 3_000_000_000]
    assert data.column("f").to_pylist() == [0.5, 0.1]
    assert str(lake.load_table("bronze.widen").schema().find_field("f").field_type) == "double"
    # narrower data later is cast up into the wider column; the schema is left alone
    lake.replace_partition("bronze.widen", first, "partition_date", D1)
    table = lake.load_table("bronze.widen")
    assert len(table.metadata.schemas) == 2 and lake.read_partition("bronze.widen", "partition_date", D1)["n"].to_pylist() == [1]


def test_an_incompatible_type_change_fails_clearly_and_writes_nothing(lake):
    from pyiceberg.exceptions import ValidationError

    lake.replace_partition("bronze.incompat", rows(D1, 2), "partition_date", D1)
    before = lake.describe("bronze.incompat")
    bad = rows(D1, 2).set_column(1, "id", pa.array(["a", "b"]))
    with pytest.raises(ValidationError, match="id"):
        lake.replace_partition("bronze.incompat", bad, "partition_date", D1)
    assert lake.describe("bronze.incompat")["snapshot_id"] == before["snapshot_id"]


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Etc/UTC"])
def test_timestamps_zoned_outside_utc_are_written_as_the_same_instant(lake, tz):
    """DuckDB hands TIMESTAMPTZ columns out in the session's (the machine's) zone: a dbt model read back on a
    machine outside UTC must still create and write its table, keeping the instant to the microsecond."""
    instant = dt.datetime(2024, 1, 1, 23, 30, 15, 123456, tzinfo=dt.timezone.utc)
    zoned = pa.array([instant], pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz=tz))
    data = pa.table({"partition_date": pa.array([D1], pa.date32()), "ts": zoned,
                     "wall": pa.array([instant.replace(tzinfo=None)], pa.timestamp("ns"))})
    lake.replace_partition("silver.zoned", data, "partition_date", D1)  # creates the table
    lake.replace_partition("silver.zoned", data, "partition_date", D1)  # writes into the existing table
    out = lake.read("silver.zoned")
    assert out.num_rows == 1
    assert out.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert out.column("ts").to_pylist() == [instant]
    assert out.column("wall").to_pylist() == [instant.replace(tzinfo=None)]


@pytest.mark.parametrize("value", [D1, "2024-01-01"])
def test_replacing_a_partition_refuses_rows_of_other_days(lake, value):
    """Rows outside the replaced partition would pile up in their own partition on every re-run."""
    lake.replace_partition("bronze.stray", rows(D2, 2), "partition_date", D2)
    before = lake.describe("bronze.stray")
    stray = pa.concat_tables([rows(D1, 1, start=10), rows(D2, 1, start=20)])
    for data in (stray, rows(D2, 1, start=20), rows(D1, 1).set_column(0, "partition_date", pa.nulls(1, pa.date32()))):
        with pytest.raises(ValueError, match="outside the partition"):
            lake.replace_partition("bronze.stray", data, "partition_date", value)
    assert lake.describe("bronze.stray")["snapshot_id"] == before["snapshot_id"]
    assert sorted(lake.read_partition("bronze.stray", "partition_date", D2)["id"].to_pylist()) == [0, 1]
    lake.replace_partition("bronze.stray", rows(D1, 3), "partition_date", value)  # its own day is written
    assert lake.read_partition("bronze.stray", "partition_date", D1).num_rows == 3


@pytest.mark.parametrize("value", ["not-a-date", "2024-13-01", "2024-01-01T10:00:00Z"])
def test_replacing_a_partition_refuses_a_value_that_is_not_of_the_column_type(lake, value):
    """A partition value Arrow cannot read as the column's type names the column, the value and the type
    instead of skipping the check (the delete would then clear nothing, or fail far from the cause)."""
    lake.replace_partition("bronze.badvalue", rows(D1, 2), "partition_date", D1)
    before = lake.describe("bronze.badvalue")
    for data in (rows(D1, 1, start=10), rows(D1, 0)):  # an empty write (clearing the partition) too
        with pytest.raises(ValueError) as raised:
            lake.replace_partition("bronze.badvalue", data, "partition_date", value)
        assert str(raised.value) == (f"cannot replace partition partition_date={value!r}: "
                                     f"the value is not a date32[day]")
    assert lake.describe("bronze.badvalue")["snapshot_id"] == before["snapshot_id"]
    assert sorted(lake.read("bronze.badvalue")["id"].to_pylist()) == [0, 1]
