"""The MLflow run link shown in a run's metadata (Dagster's event log and UI) carries no credentials."""

from types import SimpleNamespace

import pytest

from resources.mlflow import MlflowResource

RUN = SimpleNamespace(info=SimpleNamespace(experiment_id="7", run_id="abc123"))


@pytest.mark.parametrize(("uri", "shown"), [
    ("https://svc:T0ken@mlflow.example.com", "https://mlflow.example.com/#/experiments/7/runs/abc123"),
    ("https://mlflow.example.com:8443/?token=s3cret", "https://mlflow.example.com:8443/#/experiments/7/runs/abc123"),
    ("http://127.0.0.1:5055/", "http://127.0.0.1:5055/#/experiments/7/runs/abc123"),
    ("postgresql+psycopg2://mlflow:pw-1234@db:5432/mlflow?sslpassword=k3y",
     "postgresql+psycopg2://db:5432/mlflow experiment 7 run abc123"),
    ("sqlite:////srv/platformq/mlflow.db", "sqlite:////srv/platformq/mlflow.db experiment 7 run abc123"),
    ("/srv/platformq/mlruns", "/srv/platformq/mlruns experiment 7 run abc123"),
])
def test_the_run_link_names_the_server_without_its_credentials(uri, shown):
    assert MlflowResource(tracking_uri=uri).run_url(RUN) == shown
