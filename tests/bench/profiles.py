"""The lakehouse graph (medallion_daily: venue -> bronze -> dbt silver/gold -> checks) for one day on
the production profile vs the local profile, end to end, in the same run.

Production here: Dagster instance storage and the Iceberg catalog on Postgres (the Debian server
`make services` starts), warehouse and object store on S3 (moto_server on loopback), DuckDB as the
SQL engine. Local: SQLite + files. Each profile builds the day once to warm up (imports, table
creation) and is then measured on re-runs of the same day; the per-step split says where time goes.
"""

import os
import statistics
import tempfile
import time
from pathlib import Path

DAY = "2024-01-02"


def _run(env: dict, reps: int) -> tuple[float, dict]:
    from dagster import DagsterInstance

    from platformq_assets.cli import QUIET
    from platformq_assets.definitions import build_definitions
    from resources.settings import load_settings

    for key in [k for k in os.environ if k.startswith("PLATFORMQ_")]:
        del os.environ[key]
    os.environ.update(env)
    load_settings.cache_clear()
    defs = build_definitions(load_settings())
    job = defs.resolve_job_def("medallion_daily")
    instance = DagsterInstance.get()
    config = {**QUIET, "ops": {"venue_session": {"config": {"scale": 0.5}}}}

    def once():
        t = time.perf_counter()
        result = job.execute_in_process(partition_key=DAY, instance=instance, run_config=config, raise_on_error=False)
        if not result.success:
            raise RuntimeError(f"the {env.get('PLATFORMQ_PROFILE', 'local')} run failed")
        return time.perf_counter() - t, result.run_id

    once()
    timings, steps = [], {}
    for _ in range(reps):
        seconds, run_id = once()
        timings.append(seconds)
        for stat in instance.get_run_step_stats(run_id):
            steps.setdefault(stat.step_key, []).append(stat.end_time - stat.start_time)
    instance.dispose()
    return statistics.median(timings), {k: statistics.median(v) for k, v in steps.items()}


def bench_profiles(report, reps: int = 3):
    from tests.integration.servers import PG_DSN, create_bucket, moto_s3, postgres_database

    with tempfile.TemporaryDirectory(prefix="pq-local-") as local_home:
        (Path(local_home) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = local_home
        local, local_steps = _run({"PLATFORMQ_HOME": local_home, "PLATFORMQ_LANDING_DIR": f"{local_home}/landing"},
                                  reps)
    with tempfile.TemporaryDirectory(prefix="pq-prod-") as prod_home, moto_s3() as s3, \
            postgres_database() as catalog, postgres_database() as storage:
        for bucket in ("lake", "objects"):
            create_bucket(s3, bucket)
        (Path(prod_home) / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\nstorage:\n  postgres:\n    postgres_url: "
            f"{PG_DSN.format(db=storage).replace('+psycopg2', '')}\n")
        os.environ["DAGSTER_HOME"] = prod_home
        from tests.conftest import ML_PRODUCTION_ENV

        production, prod_steps = _run({
            "PLATFORMQ_PROFILE": "production", "PLATFORMQ_HOME": prod_home,
            "PLATFORMQ_LANDING_DIR": f"{prod_home}/landing", "PLATFORMQ_CATALOG_URI": PG_DSN.format(db=catalog),
            "PLATFORMQ_WAREHOUSE": "s3://lake/warehouse", "PLATFORMQ_S3_ENDPOINT": s3,
            "PLATFORMQ_S3_ACCESS_KEY": "test", "PLATFORMQ_S3_SECRET_KEY": "test", "PLATFORMQ_PII_SALT": "bench-salt",
            "PLATFORMQ_OBJECT_STORE_BUCKET": "objects", "PLATFORMQ_SQL_ENGINE": "duckdb",
            "PLATFORMQ_SERVICES_IN_PROCESS": "true", "PLATFORMQ_EXECUTOR": "in_process", **ML_PRODUCTION_ENV}, reps)
    for key in [k for k in os.environ if k.startswith("PLATFORMQ_")]:
        del os.environ[key]
    ratio = production / local
    slower = sorted(((prod_steps.get(k, 0) - v, k) for k, v in local_steps.items()), reverse=True)[:4]
    print("  where production spends more (median step seconds, production - local): "
          + ", ".join(f"{k} +{d:.2f}s" for d, k in slower), flush=True)
    report("lakehouse prod vs local", f"{production:.1f}", "s", f"{local:.1f}", "s local", ratio, "reported", True)
