"""One small ML platform per test module: two simulated trading days, features, a trained champion.

Real Feast (SQLite registry + online store), real MLflow (SQLite + local artifacts), real Ray
(started in process on loopback), real Iceberg; nothing is mocked. Tests in a module share it
and run in file order (later ones move aliases, so they come last).
"""

import pytest
from dagster import AssetKey, DagsterInstance

from tests.integration.helpers import QUIET, SMALL_VENUE

DAYS = ("2024-02-05", "2024-02-06")
FEATURE_KEYS = ["features/instrument_intervals", "features/account_activity", "features/online_store"]


def materialise(defs, keys, partition=None, run_config=None):
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={AssetKey.from_user_string(k) for k in keys})
    return job.execute_in_process(partition_key=partition, instance=DagsterInstance.get(), raise_on_error=False,
                                  run_config={**QUIET, **(run_config or {})})


def lifecycle_keys(model):
    return [f"ml/{model}_training_set", f"ml/{model}", f"ml/{model}_evaluation", f"ml/{model}_champion"]


TRAINING = {"ops": {"ml__price_direction": {"config": {"num_samples": 3}},
                    "ml__account_anomaly": {"config": {"num_samples": 3}}}}


@pytest.fixture(scope="module")
def ml_platform(tmp_path_factory):
    from resources import lake_resource
    from resources.settings import load_settings
    from tests.integration.helpers import definitions, run_day

    home = tmp_path_factory.mktemp("ml") / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    patch = pytest.MonkeyPatch()
    patch.setenv("PLATFORMQ_HOME", str(home))
    patch.setenv("DAGSTER_HOME", str(home))
    patch.setenv("PLATFORMQ_LANDING_DIR", str(home / "landing"))
    patch.delenv("PLATFORMQ_PROFILE", raising=False)
    load_settings.cache_clear()
    settings = load_settings()
    defs = definitions(settings)
    for day in DAYS:
        result = run_day(defs, day, selection=[AssetKey(k.split("/")) for k in (
            "bronze/orders", "bronze/fills", "bronze/reference_prices", "bronze/accounts", "bronze/anomaly_labels",
            "silver/trades", "silver/accounts", "gold/ohlcv_bars", "gold/positions_pnl", "gold/trader_leaderboard")],
            run_config=SMALL_VENUE)
        assert result.success
    assert materialise(defs, ["features/registry"]).success
    for day in DAYS:
        assert materialise(defs, FEATURE_KEYS, day).success
    trained = materialise(defs, lifecycle_keys("price_direction") + lifecycle_keys("account_anomaly"),
                          run_config=TRAINING)
    yield {"defs": defs, "settings": settings, "lake": lake_resource(settings), "home": home, "trained": trained}
    patch.undo()
    load_settings.cache_clear()
