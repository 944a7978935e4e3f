"""The trained network is published for a day only once it is registered, and scores carry its real version.

``snn_model`` trains into a temporary sibling of ``models/<day>/``, registers the network in MLflow,
writes ``registry.json`` (version + sha256 of ``network.h5``) and only then swaps the folder in. A
failed registration leaves the day's published network and its registry untouched; ``anomaly_scores``
refuses a folder whose ``registry.json`` is missing or names another network. The lava side is faked
(the Pipes scripts are covered by test_pipes_assets.py); the asset functions and MLflow are real.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetCheckResult, DagsterInstance, MaterializeResult, materialize

from resources.mlflow import MlflowResource, mlflow_resource

DAY, PREV = "2024-01-10", "2024-01-09"
ARTIFACTS = ("network.h5", "model.json", "slayer_state.pt", "baselines.pkl")


class Invocation:
    def __init__(self, results):
        self.results = results

    def get_results(self):
        return self.results


class MlflowDown(MlflowResource):
    def start_run(self, *args, **kwargs):
        raise ConnectionError("MLflow tracking server unreachable")


@pytest.fixture
def lava(settings, monkeypatch):
    """A fake lava side: training writes the network named in ``trained``; scoring records what it loaded."""
    import platformq_assets.neuromorphic.assets as assets
    import platformq_assets.neuromorphic.runner as runner

    state = {"trained": None, "scored_with": None, "train_out_dirs": []}

    def run(context, settings_, module, extras, timeout_s=None):
        if module.endswith("pipes_train"):
            out = Path(extras["out_dir"])
            state["train_out_dirs"].append(out)
            out.mkdir(parents=True, exist_ok=True)  # as pipes_train does
            for name in ARTIFACTS:
                (out / name).write_text(f"{name} of {state['trained']}")
            return Invocation([MaterializeResult(metadata={"final_loss": 0.1}),
                               AssetCheckResult(check_name="netx_loads_export", passed=True)])
        if module.endswith("pipes_score"):
            state["scored_with"] = (Path(extras["model_dir"]) / "network.h5").read_text()
            n = 2
            np.savez(extras["out"], label=np.zeros(n, np.uint8),
                     window_start_us=np.arange(n) * 60_000_000 + 1704844800000000,
                     window_us=np.int64(60_000_000), counted_steps=np.int64(14), instrument=np.array(["A", "A"]),
                     anomaly_type=np.array(["", ""]), anomaly_id=np.array(["", ""]),
                     lava_counts=np.zeros((n, 2), np.int64), slayer_counts=np.zeros((n, 2), np.int64),
                     lava_flag=np.zeros(n), slayer_flag=np.zeros(n), mlp_score=np.zeros(n), forest_flag=np.zeros(n),
                     input_spikes=np.zeros(n), lava_hidden=np.zeros(n))
            return Invocation([MaterializeResult(metadata={})] + [
                AssetCheckResult(check_name=c, passed=True)
                for c in ("float_fixed_point_agreement", "snn_vs_baseline", "energy_proxy")])
        raise AssertionError(module)

    monkeypatch.setattr(runner, "run_lava_script", run)
    monkeypatch.setattr(assets, "_preflight", lambda settings_: None)
    work = settings.effective_lava_workdir
    (work / "spike_trains").mkdir(parents=True)
    for day in (DAY, PREV):
        (work / "spike_trains" / f"{day}.npz").write_bytes(b"x")
    return state


def _train(instance, mlflow):
    from platformq_assets.neuromorphic.assets import snn_model

    return materialize([snn_model], partition_key=DAY, instance=instance, raise_on_error=False,
                       resources={"mlflow": mlflow})


def _score(instance, lake):
    from platformq_assets.neuromorphic.assets import anomaly_scores

    return materialize([anomaly_scores], partition_key=DAY, instance=instance, raise_on_error=False,
                       resources={"lake": lake})


def _failure_text(result) -> str:
    return " ".join(str(e.event_specific_data) for e in result.all_events if e.is_step_failure)


def _model_version(result) -> str:
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata["model_version"].value


def test_failed_registration_keeps_the_published_network_and_scores_carry_its_version(settings, lake, lava):
    from platformq_assets.neuromorphic.assets import SCORES_TABLE

    work = settings.effective_lava_workdir
    model_dir = work / "models" / DAY
    registry = mlflow_resource(settings)
    down = MlflowDown(tracking_uri="http://127.0.0.1:9")
    with DagsterInstance.ephemeral() as instance:
        # run A: trained, registered, published
        lava["trained"] = "run A"
        stale = work / "models" / f"{DAY}.tmp-crashed"  # a crashed earlier run's leftovers
        stale.mkdir(parents=True)
        (stale / "network.h5").write_text("half-written")
        result = _train(instance, registry)
        assert result.success, _failure_text(result)
        version_a = _model_version(result)
        assert lava["train_out_dirs"][-1] != model_dir  # trained aside, not into the published folder
        assert (model_dir / "network.h5").read_text() == "network.h5 of run A"
        recorded = json.loads((model_dir / "registry.json").read_text())
        assert recorded["version"] == version_a
        assert recorded["network_sha256"] == hashlib.sha256((model_dir / "network.h5").read_bytes()).hexdigest()
        assert sorted(p.name for p in (work / "models").iterdir()) == [DAY]  # leftovers cleaned up

        # run B: trained, but MLflow is down -> the day's folder still holds run A and its registry
        lava["trained"] = "run B"
        result = _train(instance, down)
        assert not result.success
        assert (model_dir / "network.h5").read_text() == "network.h5 of run A"
        assert json.loads((model_dir / "registry.json").read_text()) == recorded
        assert all((model_dir / n).read_text() == f"{n} of run A" for n in ARTIFACTS)

        # scoring uses run A's network and stamps run A's version
        result = _score(instance, lake)
        assert result.success, _failure_text(result)
        assert lava["scored_with"] == "network.h5 of run A"
        assert _model_version(result) == version_a
        assert {r["model_version"] for r in lake.read(SCORES_TABLE).to_pylist()} == {version_a}

        # run C: registered -> replaces run A; the next scores carry run C's version
        lava["trained"] = "run C"
        result = _train(instance, registry)
        assert result.success, _failure_text(result)
        version_c = _model_version(result)
        assert version_c != version_a
        assert sorted(p.name for p in (work / "models").iterdir()) == [DAY]
        result = _score(instance, lake)
        assert result.success, _failure_text(result)
        assert lava["scored_with"] == "network.h5 of run C"
        assert {r["model_version"] for r in lake.read(SCORES_TABLE).to_pylist()} == {version_c}

        # a network that is not the one registry.json names -> scoring refuses
        lava["scored_with"] = None
        (model_dir / "network.h5").write_text("swapped in by hand")
        result = _score(instance, lake)
        assert not result.success and lava["scored_with"] is None
        assert "does not match" in _failure_text(result)

        # no registry.json -> scoring refuses instead of stamping model_version ""
        (model_dir / "registry.json").unlink()
        result = _score(instance, lake)
        assert not result.success and lava["scored_with"] is None
        assert "registry.json" in _failure_text(result)
        assert {r["model_version"] for r in lake.read(SCORES_TABLE).to_pylist()} == {version_c}
