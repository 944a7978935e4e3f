"""Dagster resources, each configured from the typed settings (never from globals)."""

from __future__ import annotations

import os

from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.query import QueryEngineResource
from resources.settings import Settings, load_settings

# Settings that hold credentials (a key, a password, a token, a URL with a password or a capability in it).
SECRET_SETTINGS = frozenset({
    "catalog_uri", "s3_access_key", "s3_secret_key", "services_api_key", "airflow_password", "airflow_token",
    "openlineage_api_key", "alert_webhook_url", "mlflow_tracking_uri", "feast_registry_uri", "feast_redis_url",
})


def setting(settings: Settings, name: str, env_refs: bool = False, value=None):
    """A setting as a resource field gets it. With ``env_refs`` (the resources of the Dagster definitions), a
    secret that came from its environment variable goes in as ``EnvVar``: Dagster shows configured resource
    values on the UI's Resources page, and an ``EnvVar`` shows as the variable's name, resolved only in the
    run's own process (whose pod gets the same secrets). Without (the CLI, a script): the value itself."""
    value = getattr(settings, name) if value is None else value
    env = f"PLATFORMQ_{name.upper()}"
    if env_refs and name in SECRET_SETTINGS and value is not None and os.environ.get(env) == str(value):
        from dagster import EnvVar

        return EnvVar(env)
    return value


def lake_resource(settings: Settings, env_refs: bool = False) -> LakeResource:
    return LakeResource(
        catalog_name=settings.catalog_name,
        catalog_type=settings.catalog_type,
        catalog_uri=setting(settings, "catalog_uri", env_refs, settings.effective_catalog_uri),
        warehouse=settings.effective_warehouse,
        s3_endpoint=settings.s3_endpoint,
        s3_access_key=setting(settings, "s3_access_key", env_refs),
        s3_secret_key=setting(settings, "s3_secret_key", env_refs),
        s3_region=settings.s3_region,
    )


def object_store_resource(settings: Settings, env_refs: bool = False) -> ObjectStoreResource:
    if settings.is_local:
        return ObjectStoreResource(kind="local", root=str(settings.object_store_root))
    return ObjectStoreResource(kind="s3", bucket=settings.object_store_bucket, endpoint=settings.s3_endpoint,
                               access_key=setting(settings, "s3_access_key", env_refs),
                               secret_key=setting(settings, "s3_secret_key", env_refs), region=settings.s3_region)


def query_resource(settings: Settings) -> QueryEngineResource:
    if settings.effective_sql_engine == "duckdb":
        return QueryEngineResource(engine="duckdb")
    return QueryEngineResource(engine="trino", trino_host=settings.trino_host, trino_port=settings.trino_port,
                               trino_user=settings.trino_user, trino_catalog=settings.trino_catalog,
                               trino_http_scheme=settings.trino_http_scheme)


# the setting naming each service's state store (a URL that can carry a password: an env reference in Dagster)
IN_PROCESS_STORES = {"trading": "trading_journal_url", "credentials": "credentials_store_url",
                     "governance": "governance_store_url", "derivatives": "derivatives_store_url"}


def service_resource(settings: Settings, service: str, env_refs: bool = False):
    from resources.services import ServiceClientResource, env_ref

    if settings.effective_services_in_process:
        lake = lake_resource(settings, env_refs)
        # a plain dict field: Dagster resolves no EnvVar inside it, so secrets travel as {"env": NAME} references
        # that the resource resolves in the run's process
        lake_config = {k: env_ref(getattr(lake, k)) for k in ("catalog_name", "catalog_type", "catalog_uri",
                                                              "warehouse", "s3_endpoint", "s3_access_key",
                                                              "s3_secret_key", "s3_region")}
        # the service's own state store where one is configured (Postgres in production), as `platformq serve`
        # uses it: without it an in-process service kept its state in SQLite under home, which a pod loses
        field = IN_PROCESS_STORES.get(service)
        store = None
        if field and getattr(settings, field):
            store = {"url": {"env": f"PLATFORMQ_{field.upper()}"} if env_refs else getattr(settings, field)}
        return ServiceClientResource(service=service, home=str(settings.home), lake=lake_config, store=store)
    url = settings.service_urls.get(service)
    if not url:
        raise ValueError(f"PLATFORMQ_SERVICE_URLS has no URL for the {service!r} service")
    return ServiceClientResource(service=service, base_url=url,
                                 api_key=setting(settings, "services_api_key", env_refs))


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or load_settings()
    from resources.alerts import AlertsResource
    from resources.audit_trail import AuditTrailResource
    from resources.dbt import dbt_resource
    from resources.landing_zone import LandingZoneResource
    from resources.compute import ray_resource, spark_resource
    from resources.feast import feast_resource
    from resources.lineage import lineage_resource
    from resources.mlflow import mlflow_resource

    return {
        "lake": lake_resource(settings, env_refs=True),
        "object_store": object_store_resource(settings, env_refs=True),
        "query_engine": query_resource(settings),
        "dbt": dbt_resource(settings),
        "landing_zone": LandingZoneResource(root=str(settings.landing_dir), sources=list(settings.landing_sources)),
        "credentials": service_resource(settings, "credentials", env_refs=True),
        "derivatives": service_resource(settings, "derivatives", env_refs=True),
        "governance": service_resource(settings, "governance", env_refs=True),
        "trading": service_resource(settings, "trading", env_refs=True),
        "data_api": service_resource(settings, "data", env_refs=True),
        "audit_trail": AuditTrailResource(directory=str(settings.effective_audit_dir)),
        "alerts": AlertsResource(webhook_url=setting(settings, "alert_webhook_url", env_refs=True)),
        "mlflow": mlflow_resource(settings, env_refs=True),
        "feast": feast_resource(settings, env_refs=True),
        "ray": ray_resource(settings),
        "spark": spark_resource(settings),
        "openlineage": lineage_resource(settings, env_refs=True),
    }


__all__ = ["SECRET_SETTINGS", "LakeResource", "ObjectStoreResource", "QueryEngineResource", "Settings", "build_resources",
           "load_settings", "setting"]
