"""The model service answers a malformed entity id with a problem (4xx), never a 500: real Feast (SQLite
registry and online store) and real MLflow (SQLite) behind the FastAPI app."""

import numpy as np
import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def serving(settings):
    from mlflow import sklearn as mlflow_sklearn
    from sklearn.linear_model import LogisticRegression

    from features.repo import feature_columns
    from resources.feast import feast_resource
    from resources.mlflow import mlflow_resource
    from services.common.app import ServiceContext
    from services.models.api import create_models_app
    from services.models.scorer import ModelScorer, default_specs

    feast = feast_resource(settings)
    feast.apply()
    registry = mlflow_resource(settings)
    width = len(feature_columns("account_anomaly"))
    with registry.start_run("tests/serving"):
        info = mlflow_sklearn.log_model(LogisticRegression().fit(np.eye(width)[:2], [0, 1]), name="model")
    registry.promote("account_anomaly", registry.register(info.model_uri, "account_anomaly").version, "test")
    ctx = ServiceContext("models")
    key = ctx.keys.create("alice", "t-acme", ["viewer"])
    app = create_models_app(ctx, ModelScorer(registry, feast.online_features, default_specs()))
    return TestClient(app, raise_server_exceptions=False), {"X-API-Key": key}


CASES = [
    (123, 404),  # well-formed, not in the online store: unknown
    ("123", 404),  # the same id as a string
    ("abc", 422),  # not an integer: Feast would raise converting it
    (2**70, 422),  # does not fit the INT64 join key
    ("12.5", 422),
    ("--5", 422),
]


def test_account_ids_that_cannot_be_a_join_key_are_a_client_error(serving):
    client, headers = serving
    for entity, status in CASES:
        response = client.post("/v1/models/account_anomaly/predict", json={"entities": [entity]}, headers=headers)
        assert response.status_code == status, (entity, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_the_specs_know_each_join_key_type():
    from features.repo import ENTITY_KEYS, JOIN_KEY_TYPES
    from services.models.scorer import default_specs

    for name, spec in default_specs().items():
        assert spec.join_key_type == JOIN_KEY_TYPES[ENTITY_KEYS[name]]
