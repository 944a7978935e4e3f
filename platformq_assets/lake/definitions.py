"""The lake domain's definitions: venue bronze, landing zone, dbt silver and gold, and lake maintenance."""

from dagster import Definitions

from resources.dbt import ensure_manifest
from resources.settings import Settings


def lake_definitions(settings: Settings) -> Definitions:
    from pipelines.jobs import lake_maintenance_job
    from pipelines.schedules import maintenance_schedules
    from platformq_assets.lake.landing import build_landing_assets
    from platformq_assets.lake.maintenance import (
        compaction,
        data_retention,
        erasure_log,
        orphan_files,
        snapshot_expiry,
    )
    from platformq_assets.lake.transform import build_dbt_assets
    from platformq_assets.lake.venue import venue_session

    manifest = ensure_manifest(settings.dbt_project_dir,
                               "local" if settings.effective_sql_engine == "duckdb" else "production")
    return Definitions(
        assets=[venue_session, build_dbt_assets(manifest), build_landing_assets(list(settings.landing_sources)),
                erasure_log, data_retention, compaction, snapshot_expiry, orphan_files],
        jobs=[lake_maintenance_job],
        schedules=maintenance_schedules(),
    )
