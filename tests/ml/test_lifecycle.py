"""The ML platform end to end on small data: features -> Ray Tune training with MLflow trials ->
registry -> promotion gate (passing and failing) -> batch and online predictions -> drift that
fires on a deliberately shifted partition -> alerts -> rollback."""

import json
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from dagster import AssetKey, AssetMaterialization, DagsterInstance, build_multi_asset_sensor_context
from fastapi.testclient import TestClient

from tests.ml.conftest import DAYS, TRAINING, lifecycle_keys, materialise

pytestmark = pytest.mark.slow
SHIFTED_DAY = "2024-02-07"


def checks(result):
    return {f"{c.asset_key.to_user_string()}:{c.check_name}": c.passed for c in result.get_asset_check_evaluations()}


def metadata(result, key):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey.from_user_string(key)]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def registry(ml_platform):
    from resources.mlflow import mlflow_resource

    return mlflow_resource(ml_platform["settings"])


def test_training_tracks_every_trial_and_registers_a_promoted_champion(ml_platform):
    trained = ml_platform["trained"]
    assert trained.success, [e.message for e in trained.all_events if e.is_failure]
    passed = checks(trained)
    for model in ("price_direction", "account_anomaly"):
        assert passed[f"ml/{model}_training_set:point_in_time_correct"]
        assert passed[f"ml/{model}_evaluation:promotion_gate"]
        meta = metadata(trained, f"ml/{model}")
        assert meta["trials"] == 3 and meta["family"] in ("linear", "gbm", "mlp")
        assert 0.0 <= meta["val_roc_auc"] <= 1.0
        # the search saw train + validation; the latest rows (after the training cutoff) are the gate's alone
        gate = metadata(trained, f"ml/{model}_evaluation")
        assert meta["test_rows"] > 0 and meta["train_rows"] > meta["validation_rows"] > 0
        assert gate["holdout_after"] == meta["training_cutoff"] and gate["holdout_rows"] == meta["test_rows"] >= 50

    mlflow = registry(ml_platform)
    client = mlflow.client()
    experiment = client.get_experiment_by_name("platformq/price_direction")
    runs = client.search_runs([experiment.experiment_id])
    parent = metadata(trained, "ml/price_direction")["mlflow_run_id"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(trials) == 3  # one MLflow run per Ray Tune trial, nested under the training run
    assert all("val_roc_auc" in r.data.metrics for r in trials)
    champion = mlflow.version_for("price_direction", "champion")
    assert champion is not None and champion.tags["platformq.stage"] == "production"
    assert champion.tags["feature_service"] == "price_direction_v1"
    assert champion.tags["training_set"].startswith("ml.price_direction_training_set@")
    assert champion.tags["training_cutoff"] == metadata(trained, "ml/price_direction")["training_cutoff"]
    assert mlflow.version_for("price_direction", "challenger") is None  # consumed by the promotion
    # signature and input example were logged with the model
    from mlflow.models import get_model_info

    info = get_model_info("models:/price_direction@champion")
    assert info.signature is not None and [c.name for c in info.signature.inputs][:2] == ["ret_1", "ret_3"]
    assert info.saved_input_example_info is not None
    history = [e["event"] for e in mlflow.history("price_direction")]
    assert history[:3] == ["registered", "stage:staging", "promoted"]


def test_training_set_is_point_in_time_correct(ml_platform):
    lake = ml_platform["lake"]
    frame = lake.read("ml.price_direction_training_set").to_pandas()
    event = frame["event_timestamp"].astype("int64") // 10**6 if str(frame["event_timestamp"].dtype).endswith("[us, UTC]") \
        else frame["event_timestamp"].map(lambda t: t.timestamp())
    assert len(frame) > 100
    assert (frame["as_of_epoch"] <= event.astype(float)).all()


def test_batch_scores_and_drift_fire_only_on_the_shifted_partition(ml_platform):
    defs, lake = ml_platform["defs"], ml_platform["lake"]
    normal = materialise(defs, ["gold/price_direction_predictions", "ml/price_direction_drift"], DAYS[1])
    assert normal.success
    scores = lake.read_partition("gold.price_direction_predictions", "partition_date", DAYS[1])
    features = lake.read_partition("features.instrument_intervals", "partition_date", DAYS[1])
    assert scores.num_rows == features.num_rows > 0
    assert pc.min(scores["score"]).as_py() >= 0 and pc.max(scores["score"]).as_py() <= 1
    champion = registry(ml_platform).version_for("price_direction", "champion")
    assert set(scores["model_version"].to_pylist()) == {str(champion.version)}
    normal_meta = metadata(normal, "ml/price_direction_drift")
    assert "volume_1" not in normal_meta["drifted_features"]
    assert normal_meta["performance/labelled_rows"] > 0  # labels of the day arrived: performance is measured

    # a partition whose volumes are 40x anything seen in training
    shifted = features.set_column(features.schema.get_field_index("volume_1"), "volume_1",
                                  pc.multiply(features["volume_1"], 40.0))
    shifted = shifted.set_column(shifted.schema.get_field_index("partition_date"), "partition_date",
                                 pa.array([SHIFTED_DAY] * shifted.num_rows))
    lake.replace_partition("features.instrument_intervals", shifted, "partition_date", SHIFTED_DAY)
    DagsterInstance.get().report_runless_asset_event(AssetMaterialization(  # built: the scores need it
        AssetKey(["features", "instrument_intervals"]), partition=SHIFTED_DAY))
    drifted = materialise(defs, ["gold/price_direction_predictions", "ml/price_direction_drift"], SHIFTED_DAY)
    assert drifted.success  # drift checks are not blocking: they report
    result = checks(drifted)
    assert result["ml/price_direction_drift:feature_drift_error"] is False
    assert result["ml/price_direction_drift:feature_drift_warn"] is False
    meta = metadata(drifted, "ml/price_direction_drift")
    assert "volume_1" in meta["drifted_features"] and meta["severity"] == "error"
    report = meta["report"]
    assert report["volume_1"]["psi"] >= 0.25 and report["volume_1"]["ks"] > 0.5
    stored = lake.read("ml.drift_reports").to_pylist()
    assert {r["partition_date"] for r in stored} >= {DAYS[1], SHIFTED_DAY}
    # re-running the day replaces its report rows instead of adding more
    before = len(stored)
    assert materialise(defs, ["ml/price_direction_drift"], SHIFTED_DAY).success
    assert lake.read("ml.drift_reports").num_rows == before


def test_drift_alert_sensor_records_and_posts(ml_platform):
    from resources.alerts import AlertsResource
    from sensors.ml_alerts import DRIFT_KEYS, ml_drift_alerts
    from tests.services.serving import capturing_app, serve

    hook, received = capturing_app("/hook")

    defs, lake = ml_platform["defs"], ml_platform["lake"]
    with serve(hook) as url, build_multi_asset_sensor_context(
            monitored_assets=DRIFT_KEYS, instance=DagsterInstance.get(), definitions=defs,
            resources={"lake": lake, "alerts": AlertsResource(webhook_url=f"{url}/hook")}) as context:
        ml_drift_alerts(context)
        alerts = lake.read("ops.ml_alerts").to_pylist()
        assert any(a["partition"] == SHIFTED_DAY and a["severity"] == "error" and "volume_1" in a["detail"]
                   for a in alerts)
        assert any(SHIFTED_DAY in json.dumps(body) for body in received)
        # the cursor moved: evaluating again raises nothing new
        count = len(alerts)
        ml_drift_alerts(context)
        assert lake.read("ops.ml_alerts").num_rows == count


def serving_client(ml_platform, share=None, ttl=0.0):
    from resources.feast import feast_resource
    from services.common.app import ServiceContext
    from services.models.api import create_models_app
    from services.models.scorer import ModelScorer, default_specs

    settings = ml_platform["settings"]
    scorer = ModelScorer(registry(ml_platform), feast_resource(settings).online_features, default_specs(),
                         challenger_share=share or {}, alias_ttl_s=ttl,
                         assignments_path=str(ml_platform["home"] / "assignments.jsonl"))
    ctx = ServiceContext("models")
    keys = {"acme": ctx.keys.create("alice", "t-acme", ["viewer"]),
            "borealis": ctx.keys.create("bob", "t-borealis", ["viewer"]),
            "nobody": ctx.keys.create("eve", "t-acme", ["auditor"])}
    return TestClient(create_models_app(ctx, scorer), raise_server_exceptions=False), keys, scorer


def test_the_models_api_conforms_to_its_schema(ml_platform):
    """Schemathesis against the models service's own OpenAPI schema, on the trained models: no 500s, statuses,
    content types and bodies as the schema says (every error an application/problem+json)."""
    from tests.services.conformance import check_every_operation

    client, keys, _ = serving_client(ml_platform)
    paths = check_every_operation(client.app, {"X-API-Key": keys["acme"]}, max_examples=40)
    assert paths >= {"/v1/models", "/v1/models/{name}/predict"}


def test_online_predictions_validate_input_and_isolate_tenants(ml_platform):
    client, keys, _ = serving_client(ml_platform)
    acme = {"X-API-Key": keys["acme"]}
    ok = client.post("/v1/models/price_direction/predict", json={"entities": ["AAPL", "MSFT"]}, headers=acme)
    assert ok.status_code == 200, ok.text
    [first, second] = ok.json()["predictions"]
    assert first["entity"] == "AAPL" and 0 <= first["score"] <= 1 and first["variant"] == "champion"
    assert first["features_as_of"].startswith(DAYS[1])  # the latest materialised partition

    # the same features through the batch path give the same score
    champion = registry(ml_platform).version_for("price_direction", "champion")
    assert first["model_version"] == str(champion.version)

    for body, status in (({"entities": []}, 422), ({"entities": ["AAPL; drop"]}, 422), ({"entity": "AAPL"}, 422),
                         ({"entities": ["ZZZZ"]}, 404)):
        response = client.post("/v1/models/price_direction/predict", json=body, headers=acme)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert client.post("/v1/models/nope/predict", json={"entities": ["AAPL"]}, headers=acme).status_code == 404
    assert client.post("/v1/models/price_direction/predict", json={"entities": ["AAPL"]}).status_code == 401
    assert client.post("/v1/models/price_direction/predict", json={"entities": ["AAPL"]},
                       headers={"X-API-Key": keys["nobody"]}).status_code == 403

    # account scores are tenant-scoped: another tenant's account looks unknown
    lake = ml_platform["lake"]
    accounts = {r["account_id"]: r["tenant_id"] for r in lake.read("bronze.accounts").to_pylist()}
    online = lake.read_partition("features.account_activity", "partition_date", DAYS[1]).to_pylist()
    active = sorted({r["account_id"] for r in online})
    mine = next(a for a in active if accounts[a] == "t-acme")
    theirs = next(a for a in active if accounts[a] == "t-borealis")
    assert client.post("/v1/models/account_anomaly/predict", json={"entities": [mine]}, headers=acme).status_code == 200
    assert client.post("/v1/models/account_anomaly/predict", json={"entities": [theirs]}, headers=acme).status_code == 404
    assert client.post("/v1/models/account_anomaly/predict", json={"entities": [theirs]},
                       headers={"X-API-Key": keys["borealis"]}).status_code == 200


def test_service_start_loads_the_champions_before_the_first_request(ml_platform):
    client, _, scorer = serving_client(ml_platform)
    mlflow = registry(ml_platform)
    champions = {m: str(mlflow.version_for(m, "champion").version) for m in ("price_direction", "account_anomaly")}
    assert scorer._models == {}
    with client:  # runs the app's start-up, which warms the scorer in a background thread
        deadline = time.monotonic() + 120
        while len(scorer._models) < len(champions) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert set(scorer._models) == set(champions.items())
    # the same work called directly: each model's champion, the online store read for both key types
    assert scorer.warm() == {m: [v] for m, v in champions.items()}


def test_failing_gate_blocks_promotion_and_ab_split_serves_the_challenger(ml_platform):
    defs = ml_platform["defs"]
    mlflow = registry(ml_platform)
    champion_before = mlflow.version_for("price_direction", "champion").version
    gate = {"ops": {**TRAINING["ops"], "ml__price_direction_evaluation": {"config": {"min_metric": 0.999}}}}
    result = materialise(defs, lifecycle_keys("price_direction"), run_config=gate)
    assert checks(result)["ml/price_direction_evaluation:promotion_gate"] is False
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "ml/price_direction_champion" not in materialised  # the blocking gate stopped it
    assert mlflow.version_for("price_direction", "champion").version == champion_before
    challenger = mlflow.version_for("price_direction", "challenger")
    assert challenger is not None and challenger.version != champion_before
    assert challenger.tags["platformq.stage"] == "dev"

    # A/B: every entity to the challenger, then half; assignments are recorded and stable
    client, keys, scorer = serving_client(ml_platform, share={"price_direction": 1.0})
    acme = {"X-API-Key": keys["acme"]}
    body = client.post("/v1/models/price_direction/predict", json={"entities": ["AAPL", "IBM"]}, headers=acme).json()
    assert {p["variant"] for p in body["predictions"]} == {"challenger"}
    assert {p["model_version"] for p in body["predictions"]} == {str(challenger.version)}
    from services.models.scorer import assign_variant

    entities = [f"E{i}" for i in range(2000)]
    share = sum(assign_variant("price_direction", e, 0.3) == "challenger" for e in entities) / len(entities)
    assert 0.26 < share < 0.34
    assert all(assign_variant("price_direction", e, 0.3) == assign_variant("price_direction", e, 0.3) for e in entities[:50])
    recorded = [json.loads(line) for line in (ml_platform["home"] / "assignments.jsonl").read_text().splitlines()]
    assert recorded[-1]["variant"] == "challenger" and recorded[-1]["model_version"] == str(challenger.version)


def test_moved_alias_is_served_without_restart_and_rollback_is_one_command(ml_platform):
    from platformq_assets.cli import main

    mlflow = registry(ml_platform)
    client, keys, _ = serving_client(ml_platform)
    acme = {"X-API-Key": keys["acme"]}
    old = mlflow.version_for("price_direction", "champion").version
    new = mlflow.version_for("price_direction", "challenger").version
    before = client.post("/v1/models/price_direction/predict", json={"entities": ["AAPL"]}, headers=acme).json()
    assert before["predictions"][0]["model_version"] == str(old)

    promoted = CliRunner().invoke(main, ["models", "promote", "price_direction", "--version", str(new),
                                         "--reason", "test override"])
    assert promoted.exit_code == 0, promoted.output
    after = client.post("/v1/models/price_direction/predict", json={"entities": ["AAPL"]}, headers=acme).json()
    assert after["predictions"][0]["model_version"] == str(new)  # same app instance, no restart

    rolled = CliRunner().invoke(main, ["models", "rollback", "price_direction"])
    assert rolled.exit_code == 0, rolled.output
    assert mlflow.version_for("price_direction", "champion").version == old
    assert mlflow.client().get_model_version("price_direction", str(new)).tags["platformq.stage"] == "archived"
    again = client.post("/v1/models/price_direction/predict", json={"entities": ["AAPL"]}, headers=acme).json()
    assert again["predictions"][0]["model_version"] == str(old)
    assert [e["event"] for e in mlflow.history("price_direction")][-1] == "rollback"
    # nothing left to roll back to: a clear error, not a traceback
    failed = CliRunner().invoke(main, ["models", "rollback", "price_direction"])
    assert failed.exit_code != 0 and "no previous champion" in failed.output
