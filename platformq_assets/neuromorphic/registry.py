"""The trained network in MLflow: one run (params, metrics, the netx HDF5 and its companions), one version.

The artifact folder carries an ``MLmodel`` file with a custom ``lava_dl`` flavor and no pyfunc flavor:
loading the network needs the lava environment (``netx.hdf5.Network``), which the MLflow client in
the main environment must not pretend to offer. Registration goes through ``MlflowResource.register``
(alias ``challenger``, stage ``dev``), like every other model of the platform.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ARTIFACTS = ("network.h5", "model.json", "slayer_state.pt", "baselines.pkl")
NUMERIC = ("final_loss", "train_seconds", "training_windows", "training_positives", "snn_train_precision",
           "snn_train_recall", "mlp_train_precision", "mlp_train_recall", "network_bytes")


def _value(entry):
    return getattr(entry, "value", entry)


def log_and_register(mlflow_resource, model_dir: Path, day: str, training_days: list[str], params: dict,
                     metadata: dict) -> dict:
    import mlflow
    from mlflow.models import Model

    from platformq_assets.neuromorphic.assets import EXPERIMENT, MODEL_NAME

    tags = {"platformq.asset": "neuromorphic/snn_model", "platformq.partition": day, "platformq.framework": "lava-dl"}
    with mlflow_resource.start_run(EXPERIMENT, run_name=f"snn-{day}", tags=tags) as run:
        mlflow.log_params({**params, "training_days": ",".join(training_days), "neuron": "CUBA-LIF",
                           "layers": str(_value(metadata.get("layers", "")))})
        mlflow.log_metrics({k: float(_value(metadata[k])) for k in NUMERIC if k in metadata})
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / "network"
            staged.mkdir()
            for name in ARTIFACTS:
                shutil.copy2(model_dir / name, staged / name)
            model = Model(artifact_path="network", run_id=run.info.run_id)
            model.add_flavor("lava_dl", network="network.h5", format="netx-hdf5", lava_dl_version="0.6.0",
                             loader="lava.lib.dl.netx.hdf5.Network(net_config='network.h5')",
                             run_config="Loihi2SimCfg(select_tag='fixed_pt')")
            model.save(str(staged / "MLmodel"))
            mlflow.log_artifacts(str(staged), artifact_path="network")
        run_id = run.info.run_id
        run_url = mlflow_resource.run_url(run)
    model_uri = f"runs:/{run_id}/network"
    version = mlflow_resource.register(model_uri, MODEL_NAME, tags={"platformq.partition": day},
                                       description=f"Spiking anomaly detector trained on {', '.join(training_days)}")
    return {"run_id": run_id, "run_url": run_url, "version": str(version.version), "model_uri": model_uri,
            "alias": ",".join(version.aliases) if version.aliases else ""}
