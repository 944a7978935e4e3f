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
    scorer = ModelScorer(registry, feast.online_features, default_specs())
    app = create_models_app(ctx, scorer)
    return TestClient(app, raise_server_exceptions=False), {"X-API-Key": key}, scorer


CASES = [
    (123, 404),  # well-formed, not in the online store: unknown
    ("123", 404),  # the same id as a string
    ("abc", 422),  # not an integer: Feast would raise converting it
    (2**70, 422),  # does not fit the INT64 join key
    ("12.5", 422),
    ("--5", 422),
]


def test_account_ids_that_cannot_be_a_join_key_are_a_client_error(serving):
    client, headers, _ = serving
    for entity, status in CASES:
        response = client.post("/v1/models/account_anomaly/predict", json={"entities": [entity]}, headers=headers)
        assert response.status_code == status, (entity, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_the_specs_know_each_join_key_type():
    from features.repo import ENTITY_KEYS, JOIN_KEY_TYPES
    from services.models.scorer import default_specs

    for name, spec in default_specs().items():
        assert spec.join_key_type == JOIN_KEY_TYPES[ENTITY_KEYS[name]]


def test_a_registry_outage_is_not_mistaken_for_no_champion(serving, monkeypatch):
    """The tracking server down (a closed port): version_for raises instead of answering "no such alias";
    the scorer keeps serving the champion it last saw, and a scorer that never saw one answers 503."""
    from mlflow.exceptions import MlflowException

    from resources.mlflow import MlflowResource
    from services.models.api import create_models_app
    from services.common.app import ServiceContext
    from services.models.scorer import ModelScorer, default_specs

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = MlflowResource(tracking_uri="http://127.0.0.1:1")
    with pytest.raises(MlflowException):
        down.version_for("account_anomaly", "champion")

    client, headers, scorer = serving
    body = {"entities": [123]}
    assert client.post("/v1/models/account_anomaly/predict", json=body, headers=headers).status_code == 404
    # the same scorer, registry gone, alias cache expired: it keeps the champion it last saw (123 is unknown
    # to the online store: 404, not 409 "no champion" and not 503)
    scorer.registry, scorer.alias_ttl_s = down, 0
    assert client.post("/v1/models/account_anomaly/predict", json=body, headers=headers).status_code == 404

    ctx = ServiceContext("models")
    key = ctx.keys.create("alice", "t-acme", ["viewer"])
    cold = TestClient(create_models_app(ctx, ModelScorer(down, lambda *a: None, default_specs())),
                      raise_server_exceptions=False)
    response = cold.post("/v1/models/account_anomaly/predict", json=body, headers={"X-API-Key": key})
    assert response.status_code == 503 and response.json()["type"].endswith("registry-unavailable"), response.text
    listing = cold.get("/v1/models", headers={"X-API-Key": key})
    assert listing.status_code == 503, listing.text


def with_challenger(scorer, share: float) -> str:
    """A second version of account_anomaly under the challenger alias, ``share`` of the entities sent to it."""
    from mlflow import sklearn as mlflow_sklearn
    from sklearn.linear_model import LogisticRegression

    from features.repo import feature_columns

    registry = scorer.registry
    width = len(feature_columns("account_anomaly"))
    with registry.start_run("tests/serving"):
        info = mlflow_sklearn.log_model(LogisticRegression().fit(np.eye(width)[:2], [1, 0]), name="model")
    challenger = str(registry.register(info.model_uri, "account_anomaly").version)
    registry.client().set_registered_model_alias("account_anomaly", "challenger", challenger)
    scorer.challenger_share = {"account_anomaly": share}
    return challenger


def online_rows(scorer, ids):
    import pandas as pd

    from features.repo import ACCOUNT_VIEW, AS_OF, feature_columns

    now = pd.Timestamp.now(tz="UTC")
    rows = pd.DataFrame({"account_id": ids, **{f: 0.5 for f in feature_columns("account_anomaly")},
                         AS_OF: now.timestamp(), "tenant_id": "t-acme", "event_ts": now})
    scorer.online_features.__self__.store().write_to_online_store(ACCOUNT_VIEW, rows)


def test_an_account_gets_one_variant_however_its_id_is_spelled(serving):
    """The A/B split hashes the join key's value: "07" and 7 are one account in the online store, so one side."""
    client, headers, scorer = serving
    with_challenger(scorer, share=0.5)
    ids = list(range(1, 41))
    online_rows(scorer, ids)

    def variants(spellings):
        response = client.post("/v1/models/account_anomaly/predict", json={"entities": spellings}, headers=headers)
        assert response.status_code == 200, response.text
        return [p["variant"] for p in response.json()["predictions"]]

    plain = variants(ids)
    assert set(plain) == {"champion", "challenger"}  # the split does split these 40
    assert variants([f"0{i}" for i in ids]) == plain
    assert variants([str(i) for i in ids]) == plain


def test_a_registry_that_hangs_holds_up_no_other_request(serving, monkeypatch):
    """The tracking server accepts connections and never answers. The alias lookups wait out MLflow's timeout
    in the thread pool, not on the event loop: /health answers meanwhile, the predictions keep the champion
    they last saw, and the registry is asked again only after another TTL, not on every request."""
    import asyncio
    import socket
    import time

    import httpx

    from resources.mlflow import MlflowResource
    from tests.ports import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client, headers, scorer = serving
    clock = [0.0]
    scorer.clock, scorer.alias_ttl_s = (lambda: clock[0]), 30.0
    body = {"entities": [123]}
    assert client.post("/v1/models/account_anomaly/predict", json=body, headers=headers).status_code == 404
    with socket.socket() as hanging:
        port = free_port()
        hanging.bind(("127.0.0.1", port))
        hanging.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
        scorer.registry = MlflowResource(tracking_uri=f"http://127.0.0.1:{port}")
        clock[0] = 100.0  # the aliases are due for a lookup

        async def later(request):
            await asyncio.sleep(0.3)  # the predictions are waiting on the registry by now
            return await request

        async def concurrently():
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://models") as http:
                started = time.perf_counter()

                async def timed(request):
                    response = await request
                    return response.status_code, time.perf_counter() - started

                return await asyncio.gather(
                    timed(http.post("/v1/models/account_anomaly/predict", json=body, headers=headers)),
                    timed(http.post("/v1/models/account_anomaly/predict", json=body, headers=headers)),
                    timed(later(http.get("/health"))))

        (first, t1), (second, t2), (health, t_health) = asyncio.run(concurrently())
        assert (first, second, health) == (404, 404, 200)  # 404: 123 is unknown to the store, the champion kept
        assert t1 >= 2 and t2 >= 2  # they did wait for the registry
        assert t_health < 1.5, t_health  # and /health did not wait behind them
        started = time.perf_counter()
        assert client.post("/v1/models/account_anomaly/predict", json=body, headers=headers).status_code == 404
        assert time.perf_counter() - started < 1.5  # the failed lookup counts for a TTL: not asked again


def test_a_challenger_that_does_not_load_leaves_the_champion_answering(serving, monkeypatch, caplog):
    """Training registers a challenger the service cannot load (its artifact store down, a library it lacks):
    the champion answers every request (no 503 for a version that takes a share at most), the load is tried
    again after a back-off, not on every request, and then the challenger takes its share; a version no alias
    holds any more is dropped from memory."""
    import logging

    from mlflow import sklearn as mlflow_sklearn

    client, headers, scorer = serving
    champion = scorer.registry.version_for("account_anomaly", "champion").version
    challenger = with_challenger(scorer, share=0.5)
    ids = list(range(1, 41))
    online_rows(scorer, ids)
    clock, attempts, load = [0.0], [], mlflow_sklearn.load_model
    scorer.clock = lambda: clock[0]

    def broken(uri, *args, **kwargs):
        if uri.endswith(f"/{challenger}"):
            attempts.append(uri)
            raise OSError("artifact store unreachable")
        return load(uri, *args, **kwargs)

    monkeypatch.setattr(mlflow_sklearn, "load_model", broken)

    def answers():
        response = client.post("/v1/models/account_anomaly/predict", json={"entities": ids}, headers=headers)
        assert response.status_code == 200, response.text
        return {(p["variant"], p["model_version"]) for p in response.json()["predictions"]}

    with caplog.at_level(logging.WARNING, logger="platformq.models"):
        assert answers() == {("champion", str(champion))}
    assert f"challenger version {challenger} is passed over" in caplog.text
    clock[0] += 10  # aliases looked up again (TTL 2 s), the load not retried within its back-off
    assert answers() == {("champion", str(champion))} and len(attempts) == 1
    monkeypatch.setattr(mlflow_sklearn, "load_model", load)  # the store is back
    clock[0] += scorer.load_retry_s
    assert answers() == {("champion", str(champion)), ("challenger", challenger)}

    scorer.registry.client().delete_registered_model_alias("account_anomaly", "challenger")
    clock[0] += 10
    assert answers() == {("champion", str(champion))}
    assert set(scorer._models) == {("account_anomaly", str(champion))}


def test_an_online_store_outage_is_a_503_problem_not_an_unexpected_error(serving, monkeypatch):
    """Redis down (connection refused, a timeout): the request answered 500 "an unexpected error occurred" with a
    traceback logged as a bug; it is a dependency outage like the registry's, a 503 a client may retry."""
    import redis

    client, headers, scorer = serving

    def down(service, rows):
        raise redis.exceptions.ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(scorer, "online_features", down)
    response = client.post("/v1/models/account_anomaly/predict", json={"entities": [123]}, headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("feature-store-unavailable"), response.text
    assert "Connection refused" not in response.text  # the dependency's details stay in the log

    def broken(service, rows):  # not an outage: a bug answers 500, which clients do not resend
        raise KeyError("as_of_epoch")

    monkeypatch.setattr(scorer, "online_features", broken)
    response = client.post("/v1/models/account_anomaly/predict", json={"entities": [123]}, headers=headers)
    assert response.status_code == 500 and "feature-store" not in response.text


def test_a_challenger_share_for_a_model_that_is_not_served_is_refused_at_start():
    """PLATFORMQ_AB_CHALLENGER_SHARE='{"price-direction": 0.2}' (a dash for the underscore) sent no traffic to any
    challenger and said nothing."""
    from services.models.scorer import ModelScorer, ModelSpec

    specs = {"price_direction": ModelSpec("price_direction", "price_direction_v1", "instrument", ("a",),
                                          tenant_scoped=False)}
    with pytest.raises(ValueError, match=r"not served: \['price-direction'\].*\['price_direction'\]"):
        ModelScorer(None, lambda service, rows: {}, specs, challenger_share={"price-direction": 0.2})
    assert ModelScorer(None, lambda service, rows: {}, specs,
                       challenger_share={"price_direction": 0.2}).challenger_share == {"price_direction": 0.2}
