"""MLflow artifacts in an s3:// location go to the configured object store (MinIO, moto), not AWS."""

import os

from resources.mlflow import MlflowResource, mlflow_resource
from resources.settings import Settings
from tests.integration.servers import create_bucket, moto_s3

S3_VARIABLES = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def test_an_s3_artifact_location_uploads_to_the_configured_endpoint(tmp_path, monkeypatch):
    for name in S3_VARIABLES:  # set, then removed: monkeypatch restores (removes) what the resource sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))  # no profile of the machine's
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with moto_s3() as endpoint:
        create_bucket(endpoint, "mlflow")
        mlflow = MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                artifact_location="s3://mlflow/artifacts", s3_endpoint=endpoint,
                                s3_access_key="test", s3_secret_key="test")
        note = tmp_path / "note.txt"
        note.write_text("kept in the object store")
        with mlflow.start_run("s3-artifacts") as run:
            import mlflow as mlflow_module

            mlflow_module.log_artifact(str(note))
        # the MinIO client reads the bucket directly: the artifact is there, under the experiment's root
        from urllib.parse import urlparse

        from minio import Minio

        client = Minio(urlparse(endpoint).netloc, access_key="test", secret_key="test", secure=False)
        keys = [o.object_name for o in client.list_objects("mlflow", prefix="artifacts/", recursive=True)]
        assert f"artifacts/s3-artifacts/{run.info.run_id}/artifacts/note.txt" in keys
        # and the client reads it back through the same settings
        back = mlflow.client().download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "back"))
        assert open(back).read() == "kept in the object store"
        assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == endpoint


def test_production_settings_give_the_mlflow_resource_the_object_store():
    settings = Settings(profile="local", s3_endpoint="http://minio:9000", s3_access_key="key",
                        s3_secret_key="secret", s3_region="eu-west-1",
                        mlflow_artifact_location="s3://platformq/mlflow")
    resource = mlflow_resource(settings)
    assert (resource.s3_endpoint, resource.s3_access_key, resource.s3_secret_key, resource.s3_region) == (
        "http://minio:9000", "key", "secret", "eu-west-1")


def test_artifacts_the_tracking_server_proxies_give_the_process_no_aws_variables(monkeypatch):
    for name in S3_VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    MlflowResource(tracking_uri="http://mlflow:5000", s3_endpoint="http://minio:9000", s3_access_key="k",
                   s3_secret_key="s")._s3_environment()
    assert not {name for name in S3_VARIABLES if name in os.environ}
