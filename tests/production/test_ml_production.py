"""The ML graph on the production profile, against real servers on loopback:

* Dagster's run, event-log and schedule storage in Postgres (the production dagster.yaml), pools included;
* Iceberg catalog, Feast SQL registry and MLflow's backend store in Postgres (three databases);
* the Iceberg warehouse, the object store, Feast's offline Parquet and MLflow's artifacts in S3 (moto_server);
* Redis as Feast's online store; an MLflow tracking server (`mlflow server --serve-artifacts`);
* a Spark standalone master + worker for the full-history feature rebuild.

Ray runs in the step process here (`PLATFORMQ_RAY_ADDRESS=local`, an explicit production choice): a
multi-node Ray needs its own network namespace, which tests/production/test_ray_cluster.py covers.
"""

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from tests.conftest import ROOT

from tests.integration.helpers import SMALL_VENUE, run_day
from tests.integration.servers import (
    PG_DSN,
    create_bucket,
    mlflow_server,
    moto_s3,
    postgres_database,
    redis_server,
    spark_standalone,
)

pytestmark = pytest.mark.slow
PRODUCTION_INSTANCE = ROOT / "infra" / "dagster.production.yaml"
DAYS = ("2024-04-01", "2024-04-02")
LAKE = ["bronze/orders", "bronze/fills", "bronze/reference_prices", "bronze/accounts", "bronze/anomaly_labels",
        "silver/trades", "silver/accounts", "gold/ohlcv_bars", "gold/positions_pnl", "gold/trader_leaderboard"]


@pytest.fixture
def production(platform_home, monkeypatch, tmp_path):
    from resources.settings import load_settings

    (tmp_path / "spark").mkdir()
    (tmp_path / "mlflow").mkdir()
    with moto_s3() as s3, postgres_database() as catalog, postgres_database() as registry, \
            postgres_database() as tracking, postgres_database() as dagster_db, redis_server() as redis:
        # the production instance's storage and concurrency sections (the K8s run launcher needs a cluster)
        instance_config = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
        (platform_home / "dagster.yaml").write_text(yaml.safe_dump(
            {k: instance_config[k] for k in ("telemetry", "storage", "run_coordinator", "concurrency", "run_retries")}))
        monkeypatch.setenv("PLATFORMQ_DAGSTER_PG_URL", "postgresql+psycopg2://platformq:platformq@127.0.0.1:5432/"
                           + dagster_db)
        for bucket in ("lake", "platformq-objects", "mlflow"):
            create_bucket(s3, bucket)
        with mlflow_server(PG_DSN.format(db=tracking), "s3://mlflow/artifacts", s3, tmp_path / "mlflow") as mlflow, \
                spark_standalone(tmp_path / "spark") as spark:
            env = {
                "PLATFORMQ_PROFILE": "production",
                "PLATFORMQ_CATALOG_URI": PG_DSN.format(db=catalog),
                "PLATFORMQ_WAREHOUSE": "s3://lake/warehouse",
                "PLATFORMQ_S3_ENDPOINT": s3, "PLATFORMQ_S3_ACCESS_KEY": "test", "PLATFORMQ_S3_SECRET_KEY": "test", "PLATFORMQ_PII_SALT": "test-salt",
                "PLATFORMQ_OBJECT_STORE_BUCKET": "platformq-objects",
                "PLATFORMQ_SQL_ENGINE": "duckdb", "PLATFORMQ_SERVICES_IN_PROCESS": "true",
                "PLATFORMQ_MLFLOW_TRACKING_URI": mlflow,
                "PLATFORMQ_FEAST_REGISTRY_URI": PG_DSN.format(db=registry),
                "PLATFORMQ_FEAST_REDIS_URL": redis,
                "PLATFORMQ_RAY_ADDRESS": "local",
                "PLATFORMQ_SPARK_MASTER": spark.master,
                "PLATFORMQ_EXECUTOR": "in_process",
            }
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            load_settings.cache_clear()
            yield {"settings": load_settings(), "s3": s3, "registry_db": registry, "redis": redis,
                   "spark": spark.master, "dagster_db": dagster_db}
            load_settings.cache_clear()


def test_ml_graph_runs_on_the_production_twins(production):
    import redis as redis_client
    import sqlalchemy

    from platformq_assets.definitions import build_definitions
    from platformq_assets.ml.runs import build_ml
    from resources.feast import feast_resource
    from resources.mlflow import mlflow_resource
    from services.models.scorer import ModelScorer, default_specs

    settings = production["settings"]
    assert settings.profile == "production"
    defs = build_definitions(settings)
    for day in DAYS:
        assert run_day(defs, day, selection=[AssetKey.from_user_string(k) for k in LAKE], run_config=SMALL_VENUE).success
    instance = DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    reports = build_ml(list(DAYS), defs, instance, trials=2)
    for r in reports:
        print("REPORT", r["step"], r["partition"], r["success"], r["errors"])
    assert all(r["success"] for r in reports), [(r["step"], r["partition"], r["errors"]) for r in reports if not r["success"]]

    # Dagster: every run and its events in Postgres; the writing steps took their table's pool slot there
    engine = sqlalchemy.create_engine(PG_DSN.format(db=production["dagster_db"]))
    with engine.connect() as con:
        runs = con.execute(sqlalchemy.text("select count(*) from runs")).scalar()
        pools = {r[0] for r in con.execute(sqlalchemy.text("select concurrency_key from concurrency_limits"))}
    assert runs == len(DAYS) + len(reports)
    assert {"iceberg/bronze.venue", "iceberg/dbt", "iceberg/features.instrument_intervals"} <= pools

    # Feast: registry rows in Postgres, offline Parquet in S3, online values in Redis
    engine = sqlalchemy.create_engine(PG_DSN.format(db=production["registry_db"]))
    with engine.connect() as con:
        views = {r[0] for r in con.execute(sqlalchemy.text("select feature_view_name from feature_views"))}
    assert {"instrument_intervals", "account_activity"} <= views
    from minio import Minio

    s3 = Minio(production["s3"].split("//")[1], access_key="test", secret_key="test", secure=False)
    offline = [o.object_name for o in s3.list_objects("platformq-objects", prefix="feast/offline/", recursive=True)]
    assert any(name.endswith(f"partition_date={DAYS[1]}.parquet") for name in offline)
    assert redis_client.Redis.from_url(production["redis"]).dbsize() > 0
    online = feast_resource(settings).online_features("price_direction_v1", [{"instrument": "AAPL"}])
    assert online["ret_1"][0] is not None and online["as_of_epoch"][0] is not None

    # MLflow: the tracking server holds the champion; its artifacts went to S3 through the server
    mlflow = mlflow_resource(settings)
    champion = mlflow.version_for("price_direction", "champion")
    assert champion is not None and champion.tags["feature_service"] == "price_direction_v1"
    artifacts = list(s3.list_objects("mlflow", prefix="artifacts/", recursive=True))
    assert any(o.object_name.endswith("MLmodel") for o in artifacts)

    # Spark: the history rebuild ran on the standalone master and matches the daily tables
    spark_meta = next(r for r in reports if "features/instrument_intervals_history" in r["assets"])
    assert spark_meta["success"]
    from resources import lake_resource

    lake = lake_resource(settings)
    history = lake.read("features.instrument_intervals_history").to_pandas()
    daily = lake.read("features.instrument_intervals").to_pandas()
    assert len(history) == len(daily) > 0
    assert sorted(history["ret_1"].fillna(0).round(12)) == sorted(daily["ret_1"].fillna(0).round(12))
    from dagster import DagsterInstance as Instance

    event = Instance.get().get_latest_materialization_event(AssetKey(["features", "instrument_intervals_history"]))
    assert event.asset_materialization.metadata["spark_master"].value == production["spark"]

    # real-time scoring with the production resources: Redis features + the server's champion
    scorer = ModelScorer(mlflow, feast_resource(settings).online_features, default_specs(), alias_ttl_s=0)
    [scored] = scorer.predict("price_direction", ["AAPL"], tenant="t-acme")
    assert scored["model_version"] == str(champion.version) and 0 <= scored["score"] <= 1
