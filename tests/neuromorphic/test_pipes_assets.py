"""The neuromorphic assets end to end: lake -> spike trains -> SLAYER network -> Lava scores -> gold table.

Runs the real side environment through Dagster Pipes (PipesSubprocessClient with .venv-lava): the
encoder, a few training epochs, the netx export, the Loihi 2 fixed-point simulation on Lava, MLflow
logging and registration, and the gold Iceberg table, all in a temporary DAGSTER_HOME.
"""

import json

import numpy as np
import pyarrow.compute as pc
import pytest
from dagster import AssetKey, DagsterInstance

from tests.integration.helpers import QUIET, definitions
from tests.neuromorphic.seed import seed_days

pytestmark = pytest.mark.slow
DAY1, DAY2 = "2024-01-02", "2024-01-03"
WINDOW = {"window_seconds": 120, "bins": 12}  # 975 windows a day: keeps the Lava run short


def materialise(defs, key, day, config):
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={AssetKey(key)})
    return job.execute_in_process(partition_key=day, instance=DagsterInstance.get(), raise_on_error=False,
                                  run_config={**QUIET, "ops": {"__".join(key): {"config": config}}})


def materialisation(result, key):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def checks(result):
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_spike_trains_model_and_scores_through_pipes(settings, lake):
    labelled = seed_days(lake, [DAY1, DAY2], instance=DagsterInstance.get())
    defs = definitions(settings)

    # spike trains for both days, encoded in the lava environment
    for day in (DAY1, DAY2):
        result = materialise(defs, ["neuromorphic", "spike_trains"], day, WINDOW)
        assert result.success, result.all_events
        meta = materialisation(result, ["neuromorphic", "spike_trains"])
        assert meta["windows"] == 5 * 195 and meta["time_steps"] == 12 and meta["channels"] == 17
        assert meta["anomalous_windows"] >= labelled[day] > 0
        assert checks(result)["labelled_anomalies_in_windows"].passed
        windows = np.load(settings.effective_lava_workdir / "spike_trains" / f"{day}.npz")
        assert windows["spikes"].shape == (975, 17, 12) and set(np.unique(windows["spikes"])) <= {0, 1}
        assert int(windows["spikes"].sum()) == meta["input_spikes"]

    # the model for DAY2 trains on the days before it (DAY1), is exported and registered
    result = materialise(defs, ["neuromorphic", "snn_model"], DAY2, {"epochs": 6})
    assert result.success, result.all_events
    meta = materialisation(result, ["neuromorphic", "snn_model"])
    assert meta["training_partitions"] == [DAY1] and meta["layers"] == [17, 16, 2] and meta["epochs"] == 6
    assert checks(result)["netx_loads_export"].passed
    model_dir = settings.effective_lava_workdir / "models" / DAY2
    assert (model_dir / "network.h5").stat().st_size == meta["network_bytes"]
    from resources.mlflow import mlflow_resource

    registry = mlflow_resource(settings)
    version = registry.version_for("snn_anomaly_detector", "challenger")
    assert version is not None and str(version.version) == meta["model_version"]
    assert version.run_id == meta["mlflow_run_id"]
    artifacts = {a.path for a in registry.client().list_artifacts(meta["mlflow_run_id"], "network")}
    assert {"network/network.h5", "network/MLmodel"} <= artifacts
    run = registry.client().get_run(meta["mlflow_run_id"])
    assert run.data.metrics["final_loss"] == pytest.approx(meta["final_loss"])

    # scores for DAY2 on Lava (fixed point), written to gold
    result = materialise(defs, ["neuromorphic", "anomaly_scores"], DAY2, {"agreement_threshold": 0.9})
    assert result.success, result.all_events
    meta = materialisation(result, ["neuromorphic", "anomaly_scores"])
    found = checks(result)
    assert found["float_fixed_point_agreement"].passed
    agreement = found["float_fixed_point_agreement"].metadata
    assert agreement["decision_agreement"].value >= 0.9
    scores = lake.read("gold.snn_anomaly_scores")
    assert scores.num_rows == meta["rows"] == meta["dagster/row_count"] == 975
    assert [c.name for c in meta["dagster/column_schema"].columns] == scores.column_names
    assert set(scores.column("model_version").to_pylist()) == {meta["model_version"]}
    # the score is the anomaly neuron's spike rate over the steps its count covers (window + pad): 0 to 1
    rate = np.array(scores.column("lava_anomaly_spikes").to_pylist()) / (12 + 2)
    assert np.allclose(scores.column("snn_score").to_pylist(), rate) and rate.max() <= 1
    # the decision agreement the check reports is the one in the table
    same = pc.equal(scores.column("snn_flag"), scores.column("slayer_flag"))
    assert pc.mean(same.cast("int8")).as_py() == pytest.approx(agreement["decision_agreement"].value, abs=1e-4)
    # precision/recall in the check metadata recompute from the table's labels and flags
    side_by_side = found["snn_vs_baseline"].metadata
    label, flag, base = (np.array(scores.column(c).to_pylist()) for c in ("label", "snn_flag", "baseline_flag"))
    tp = int((label & flag).sum())
    assert side_by_side["snn_lava_tp"].value == tp and side_by_side["snn_lava_positives"].value == int(label.sum())
    assert side_by_side["snn_lava_fp"].value == int((~label & flag).sum())
    assert side_by_side["mlp_tp"].value == int((label & base).sum())
    assert label.sum() == meta["anomalous_windows"] > 0
    # the energy proxy: synaptic ops per window from the table's spike counts (16 hidden, 2 outputs)
    energy = found["energy_proxy"].metadata
    synops = (np.array(scores.column("input_spikes").to_pylist()) * 16
              + np.array(scores.column("hidden_spikes").to_pylist()) * 2)
    assert energy["synops_per_inference"].value == pytest.approx(synops.mean(), abs=0.01)
    assert 0 < energy["synops_per_inference"].value < energy["dense_macs_per_inference"].value
    assert found["energy_proxy"].passed
    assert meta["lava_steps"] == 975 * (1 + 12 + 2) and meta["backend"] == "loihi2_sim"
    # spikes were scored by the model registered for this day
    assert json.loads((model_dir / "registry.json").read_text())["version"] == meta["model_version"]
