"""`platformq` refuses bad arguments with a usage error before doing any work (no traceback, no runs)."""

import datetime as dt
import subprocess

import pytest

from tests.conftest import ROOT, subprocess_env

PLATFORMQ = str(ROOT / ".venv" / "bin" / "platformq")


def run(home, *args):
    return subprocess.run([PLATFORMQ, *args], cwd=ROOT, env=subprocess_env(home), capture_output=True, text=True,
                          timeout=120)


def today_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


@pytest.mark.timeout(120)  # the old code materialised every valid day of the range before crashing
@pytest.mark.parametrize("args, message", [
    (["demo", "--days", "1", "--end", "2023-12-31"], "before the lake's first trading day"),
    (["demo", "--days", "3", "--end", "2024-01-02"], "before the lake's first trading day"),
    (["demo", "--days", "1", "--end", "TODAY"], "not a complete trading day yet"),
    (["demo", "--days", "0", "--end", "2024-01-04"], "--days"),
    (["demo", "--days", "1000000", "--end", "2024-01-04"], "before the lake's first trading day"),  # OverflowError
    (["demo", "--days", "1", "--scale", "-1", "--end", "2024-01-04"], "--scale"),  # used to seed, then fail a run
    (["demo", "--days", "1", "--scale", "nan", "--end", "2024-01-04"], "--scale"),
    (["serve", "--port", "65534"], "--port"),  # the six services take consecutive ports
    (["serve", "--port", "65531"], "--port"),  # models would get 65536
    (["serve", "--rate", "nan"], "--rate"),  # a token bucket refilling at NaN per second admits nothing
    (["backfill", "--start", "2099-01-01", "--end", "2099-01-02"], "not a complete trading day yet"),
    (["backfill", "--start", "2024-01-01", "--end", "2099-01-01"], "not a complete trading day yet"),
    (["backfill", "--start", "2023-12-30", "--end", "2024-01-01"], "before the lake's first trading day"),
])
def test_days_outside_the_partitions_are_a_clear_usage_error(tmp_path, args, message):
    home = tmp_path / "home"
    out = run(home, *[today_utc() if a == "TODAY" else a for a in args])
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr and message in out.stderr, out.stderr[-2000:]
    # refused before anything ran: no sample files seeded, no runs in an instance
    assert not (home / "landing").exists()
    assert not any(home.rglob("*.db")) if home.exists() else True


def test_query_limit_must_not_be_negative(tmp_path):
    """`--limit -1` used to print all rows but the last, then "first -1 shown"."""
    out = run(tmp_path / "home", "query", "--limit", "-1", "select 1 as a union all select 2")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--limit" in out.stderr, out.stdout + out.stderr
    ok = run(tmp_path / "home", "query", "--limit", "0", "select 1 as a union all select 2")
    assert ok.returncode == 0 and "2 row(s), first 0 shown" in ok.stdout, ok.stdout + ok.stderr


def test_invalid_settings_are_one_error_line_without_their_values(tmp_path):
    env = subprocess_env(tmp_path / "home", PLATFORMQ_PROFILE="production", PLATFORMQ_S3_SECRET_KEY="supersecret123")
    out = subprocess.run([PLATFORMQ, "tables"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "invalid platformQ settings" in out.stderr and "PLATFORMQ_CATALOG_URI" in out.stderr
    assert "supersecret123" not in out.stdout + out.stderr


def test_the_history_of_an_unknown_model_is_an_error_line(tmp_path):
    out = run(tmp_path / "home", "models", "history", "nosuchmodel")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "no registered model 'nosuchmodel'" in out.stderr
