"""`platformq query` on DuckDB reads instants in UTC whatever the machine's zone (the lake's, dbt's)."""

import os
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

SCRIPT = textwrap.dedent('''
    import datetime as dt, sys
    import pyarrow as pa
    from resources.lake import LakeResource
    from resources.query import QueryEngineResource
    home = sys.argv[1]
    lake = LakeResource(catalog_uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    at = dt.datetime(2024, 1, 2, 20, 0, tzinfo=dt.timezone.utc)
    lake.append("silver.moments", pa.table({"ts": pa.array([at], pa.timestamp("us", tz="UTC"))}))
    out = QueryEngineResource().query(
        "select cast(date_trunc('day', ts) as date) as day, hour(ts) as h, ts from silver.moments", lake)
    row = out.to_pylist()[0]
    print(row["day"].isoformat(), row["h"], row["ts"].utcoffset())
''')


def test_a_query_cuts_days_at_utc_midnight_on_a_machine_in_another_zone(tmp_path):
    env = {**os.environ, "TZ": "Asia/Tokyo", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # 20:00 UTC on 2 January is 05:00 on 3 January in Tokyo: the lake's day is still the 2nd
    assert done.stdout.split() == ["2024-01-02", "20", "0:00:00"]


def test_the_query_table_says_an_instants_zone_and_not_a_wall_times():
    import datetime as dt

    from platformq_assets.cli import format_table

    at = dt.datetime(2024, 1, 2, 20, 0)
    text = format_table(["ts", "wall"], [(at.replace(tzinfo=dt.timezone.utc), at)])
    assert "| 2024-01-02 20:00:00 UTC | 2024-01-02 20:00:00 |" in text
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert "2024-01-03 05:00:00 +0900" in format_table(["ts"], [(at.replace(tzinfo=dt.timezone.utc).astimezone(tokyo),)])
