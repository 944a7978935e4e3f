"""Dagster resources, each configured from the typed settings (never from globals)."""

from __future__ import annotations

from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.query import QueryEngineResource
from resources.settings import Settings, load_settings


def lake_resource(settings: Settings) -> LakeResource:
    return LakeResource(
        catalog_name=settings.catalog_name,
        catalog_type=settings.catalog_type,
        catalog_uri=settings.effective_catalog_uri,
        warehouse=settings.effective_warehouse,
        s3_endpoint=settings.s3_endpoint,
        s3_access_key=settings.s3_access_key,
        s3_secret_key=settings.s3_secret_key,
        s3_region=settings.s3_region,
    )


def object_store_resource(settings: Settings) -> ObjectStoreResource:
    if settings.is_local:
        return ObjectStoreResource(kind="local", root=str(settings.object_store_root))
    return ObjectStoreResource(kind="s3", bucket=settings.object_store_bucket, endpoint=settings.s3_endpoint,
                               access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                               region=settings.s3_region)


def query_resource(settings: Settings) -> QueryEngineResource:
    if settings.effective_sql_engine == "duckdb":
        return QueryEngineResource(engine="duckdb")
    return QueryEngineResource(engine="trino", trino_host=settings.trino_host, trino_port=settings.trino_port,
                               trino_user=settings.trino_user, trino_catalog=settings.trino_catalog,
                               trino_http_scheme=settings.trino_http_scheme)


def service_resource(settings: Settings, service: str):
    from resources.services import ServiceClientResource

    if settings.effective_services_in_process:
        lake = lake_resource(settings)
        lake_config = {k: getattr(lake, k) for k in ("catalog_name", "catalog_type", "catalog_uri", "warehouse",
                                                      "s3_endpoint", "s3_access_key", "s3_secret_key", "s3_region")}
        return ServiceClientResource(service=service, home=str(settings.home), lake=lake_config)
    url = settings.service_urls.get(service)
    if not url:
        raise ValueError(f"PLATFORMQ_SERVICE_URLS has no URL for the {service!r} service")
    return ServiceClientResource(service=service, base_url=url, api_key=settings.services_api_key)


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or load_settings()
    from resources.alerts import AlertsResource
    from resources.dbt import dbt_resource
    from resources.landing_zone import LandingZoneResource
    from resources.compute import ray_resource, spark_resource
    from resources.feast import feast_resource
    from resources.lineage import lineage_resource
    from resources.mlflow import mlflow_resource

    return {
        "lake": lake_resource(settings),
        "object_store": object_store_resource(settings),
        "query_engine": query_resource(settings),
        "dbt": dbt_resource(settings),
        "landing_zone": LandingZoneResource(root=str(settings.landing_dir), sources=list(settings.landing_sources)),
        "credentials": service_resource(settings, "credentials"),
        "derivatives": service_resource(settings, "derivatives"),
        "governance": service_resource(settings, "governance"),
        "trading": service_resource(settings, "trading"),
        "data_api": service_resource(settings, "data"),
        "alerts": AlertsResource(webhook_url=settings.alert_webhook_url),
        "mlflow": mlflow_resource(settings),
        "feast": feast_resource(settings),
        "ray": ray_resource(settings),
        "spark": spark_resource(settings),
        "openlineage": lineage_resource(settings),
    }


__all__ = ["LakeResource", "ObjectStoreResource", "QueryEngineResource", "Settings", "build_resources", "load_settings"]
