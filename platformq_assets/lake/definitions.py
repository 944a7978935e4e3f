"""The lake domain's definitions: venue bronze, landing zone, dbt silver and gold."""

from dagster import Definitions

from resources.dbt import ensure_manifest
from resources.settings import Settings


def lake_definitions(settings: Settings) -> Definitions:
    from platformq_assets.lake.landing import build_landing_assets
    from platformq_assets.lake.transform import build_dbt_assets
    from platformq_assets.lake.venue import venue_session

    manifest = ensure_manifest(settings.dbt_project_dir,
                               "local" if settings.effective_sql_engine == "duckdb" else "production")
    return Definitions(
        assets=[venue_session, build_dbt_assets(manifest), build_landing_assets(list(settings.landing_sources))],
    )
