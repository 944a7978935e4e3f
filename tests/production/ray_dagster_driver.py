"""Runs inside a private network namespace (only loopback) next to a two-node Ray cluster: the ML
graph materialised by Dagster on the local profile with ``PLATFORMQ_RAY_ADDRESS`` naming the cluster,
so the ``ml/price_direction`` step's Tune search runs on the cluster (the production code path)."""

import json
import os
import sys
from pathlib import Path


def main(address: str, work: str) -> None:
    home = Path(work) / "home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update({"PLATFORMQ_HOME": str(home), "DAGSTER_HOME": str(home),
                       "PLATFORMQ_LANDING_DIR": str(home / "landing"), "PLATFORMQ_RAY_ADDRESS": address})
    os.environ.pop("PLATFORMQ_PROFILE", None)

    from dagster import AssetKey, DagsterInstance

    from resources.settings import load_settings
    from tests.integration.helpers import QUIET, definitions, run_day

    settings = load_settings()
    defs = definitions(settings)
    lake = [AssetKey(k.split("/")) for k in ("bronze/orders", "bronze/fills", "bronze/reference_prices",
                                             "bronze/accounts", "bronze/anomaly_labels", "silver/trades",
                                             "gold/ohlcv_bars")]
    features = [AssetKey(["features", "instrument_intervals"])]

    def materialise(keys, partition=None, run_config=None):
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(keys))
        result = job.execute_in_process(partition_key=partition, instance=DagsterInstance.get(), raise_on_error=False,
                                        run_config={**QUIET, **(run_config or {})})
        assert result.success, [str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure]
        return result

    for day in ("2024-02-05", "2024-02-06"):
        assert run_day(defs, day, selection=lake).success
    materialise([AssetKey(["features", "registry"])])
    for day in ("2024-02-05", "2024-02-06"):
        materialise(features, day)
    trained = materialise([AssetKey(["ml", "price_direction_training_set"]), AssetKey(["ml", "price_direction"])],
                          run_config={"ops": {"ml__price_direction": {"config": {"num_samples": 4}}}})
    [model] = [e for e in trained.get_asset_materialization_events() if e.asset_key == AssetKey(["ml", "price_direction"])]
    metadata = {k: v.value for k, v in model.materialization.metadata.items()
                if k in ("ray", "ray_nodes_used", "ray_cluster_cpus", "trials", "model_version", "alias")}
    print(json.dumps({"address": settings.ray_address, **metadata}))


if __name__ == "__main__":
    main(sys.argv[1], str(Path(sys.argv[2]).parent))
