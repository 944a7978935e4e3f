"""Killing the Spark worker while the history rebuild runs on a standalone cluster: the step fails
cleanly within its deadline (a standalone master would otherwise wait for executors forever), the
Iceberg table keeps its previous snapshot, and once a worker is back the re-run succeeds."""

import pytest
from dagster import AssetKey

from tests.integration.helpers import SMALL_VENUE, run_day
from tests.integration.servers import spark_standalone
from tests.ml.conftest import materialise

pytestmark = pytest.mark.slow
LAKE = ["bronze/orders", "bronze/fills", "bronze/reference_prices", "bronze/accounts", "bronze/anomaly_labels",
        "silver/trades", "silver/accounts", "gold/ohlcv_bars"]
HISTORY = "features/instrument_intervals_history"


def test_lost_spark_worker_fails_the_step_cleanly_and_a_rerun_succeeds(platform_home, monkeypatch, tmp_path):
    import threading

    from platformq_assets.definitions import build_definitions
    from resources import lake_resource
    from resources.settings import load_settings

    (tmp_path / "spark").mkdir()
    with spark_standalone(tmp_path / "spark") as cluster:
        monkeypatch.setenv("PLATFORMQ_SPARK_MASTER", cluster.master)
        monkeypatch.setenv("PLATFORMQ_SPARK_JOB_TIMEOUT_S", "45")
        load_settings.cache_clear()
        settings = load_settings()
        defs = build_definitions(settings)
        lake = lake_resource(settings)
        assert run_day(defs, "2024-06-03", selection=[AssetKey.from_user_string(k) for k in LAKE],
                       run_config=SMALL_VENUE).success
        first = materialise(defs, [HISTORY])
        assert first.success
        before = lake.describe("features.instrument_intervals_history")

        # lose the worker a few seconds into the next rebuild
        threading.Timer(4.0, cluster.kill_worker).start()
        failed = materialise(defs, [HISTORY])
        assert not failed.success
        errors = [e.event_specific_data.error for e in failed.all_events if e.is_step_failure]
        text = str(errors[0].cause or errors[0]) if errors else ""
        assert "did not finish in 45 s" in text or "cancelled" in text.lower(), text[:2000]
        after = lake.describe("features.instrument_intervals_history")
        assert after["snapshot_id"] == before["snapshot_id"] and after["rows"] == before["rows"]  # nothing half-written

        cluster.start_worker()
        again = materialise(defs, [HISTORY])
        assert again.success
        assert lake.describe("features.instrument_intervals_history")["rows"] == before["rows"]
    load_settings.cache_clear()
