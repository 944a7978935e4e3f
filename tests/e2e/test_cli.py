"""The `platformq` command, run as a user would, in a fresh home."""

import subprocess

import pytest

from tests.conftest import ROOT, subprocess_env

pytestmark = pytest.mark.slow
PLATFORMQ = str(ROOT / ".venv" / "bin" / "platformq")


def run(home, *args, check=True):
    out = subprocess.run([PLATFORMQ, *args], cwd=ROOT, env=subprocess_env(home), capture_output=True, text=True,
                         timeout=600)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def table_rows(home):
    out = run(home, "tables").stdout
    rows = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) == 5 and "." in parts[0] and parts[1].isdigit():
            rows[parts[0]] = int(parts[1])
    return rows


def audit_lines(home) -> int:
    return sum(len(p.read_text().splitlines()) for p in (home / "services").glob("*-audit.jsonl"))


def test_demo_twice_builds_everything_without_duplicates(tmp_path):
    home = tmp_path / "home"
    empty = run(home, "tables").stdout
    assert "The lake is empty" in empty

    # two Ray Tune trials per model instead of the demo's six: what is tested here is the graph, not the search
    first = run(home, "demo", "--days", "1", "--scale", "0.3", "--end", "2024-01-04", "--trials", "2")
    [lake_line] = [line for line in first.stdout.splitlines() if line.strip().startswith("2024-01-04:")]
    assert ": ok" in lake_line and "failed checks" not in lake_line
    # the ML and neuromorphic parts ran too (one day: spike trains only, the SNN trains on earlier days)
    assert "features/registry [-]: ok" in first.stdout
    assert "neuromorphic/spike_trains [2024-01-04]: ok" in first.stdout
    assert "federated/order_anomaly_model [-]: ok" in first.stdout
    assert "FAILED" not in first.stdout
    assert "make ui" in first.stdout
    # a DAGSTER_HOME without a dagster.yaml gets the project's (run queue, table pools), not Dagster's defaults
    assert (home / "dagster.yaml").read_text() == (ROOT / "dagster.yaml").read_text()
    assert "No dagster instance configuration file" not in first.stderr
    # the terminal shows the demo's own lines; the libraries' banners, progress and INFO lines go to its log
    [log_line] = [line for line in first.stdout.splitlines() if line.startswith("the libraries' own output")]
    log = (home / "logs").glob("demo-*.log")
    [log_file] = list(log)
    assert log_line.endswith(str(log_file))
    logged = log_file.read_text(errors="replace")
    for noise in ("Materializing", "mlflow", "Configuration for experiment", "Starting PlatformStrategy"):
        assert noise not in first.stdout + first.stderr, noise
        assert noise in logged, noise
    assert "features/registry [-]: ok" in logged  # the demo's own lines are in the log too, for context
    after_first = table_rows(home)
    for table in ("bronze.orders", "bronze.fills", "silver.trades", "gold.ohlcv_bars", "gold.trader_leaderboard",
                  "bronze.partner_quotes", "bronze.kyc_events", "quarantine.landing", "ops.landing_files"):
        assert after_first.get(table, 0) > 0, table

    assert "governance_audit [-]: ok" in first.stdout
    # after the demo's maintenance run no partition is left with enough small files for a compaction
    storage = run(home, "tables", "--storage").stdout
    assert "partitions_to_compact" in storage
    rows = [[p.strip() for p in line.strip("|").split("|")] for line in storage.splitlines()]
    stored = {r[0]: r for r in rows if len(r) == 7 and "." in r[0] and r[1].isdigit()}
    assert set(stored) == set(after_first) and all(r[4] == "0" for r in stored.values())
    assert after_first["governance.audit_log"] == audit_lines(home)

    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:  # --trials reached the training runs
        for model in ("price_direction", "account_anomaly"):
            event = instance.get_latest_materialization_event(AssetKey(["ml", model]))
            # the trials that finished (a failed one is not counted): at most the 2 asked for, not the default 6
            assert 1 <= event.asset_materialization.metadata["trials"].value <= 2, model

    second = run(home, "demo", "--days", "1", "--scale", "0.3", "--end", "2024-01-04", "--trials", "2")
    assert "landing: nothing new" in second.stdout
    after_second = table_rows(home)
    # the audit log is the one table that grows: the second demo's requests to the services are new events,
    # each taken once (every line of the services' audit files is one row, none twice)
    assert after_second.pop("governance.audit_log") == audit_lines(home) > after_first.pop("governance.audit_log")
    assert after_second == after_first  # idempotent: no duplicate rows anywhere else

    q = run(home, "query", "select count(*) as n, count(distinct trade_id) as d from silver.trades")
    n, d = [int(x) for x in q.stdout.splitlines()[3].strip("| ").split("|")]
    assert n == d == after_first["silver.trades"]


def test_query_errors_are_clear(tmp_path):
    out = run(tmp_path / "home", "query", "select * from nowhere.nothing", check=False)
    assert out.returncode != 0 and "query failed" in out.stderr and "Traceback" not in out.stderr
