"""The platformQ code location: the lazy root that merges every domain.

Dagster calls ``defs()`` when it loads the location (and again in every step
process), so this module and everything it imports at the top stay light:
domain modules import their heavy libraries inside the functions that run.
"""

import warnings

from dagster import Definitions, PreviewWarning, definitions, in_process_executor, multiprocess_executor

from resources.settings import Settings, load_settings


def build_definitions(settings: Settings) -> Definitions:
    from pipelines.jobs import lake_daily_job, landing_ingest_job, medallion_daily_job, venue_daily_job
    from pipelines.schedules import venue_daily_schedule
    from platformq_assets.lake.definitions import lake_definitions
    from platformq_assets.lake.landing import LEDGER_KEY, QUARANTINE_KEY, landing_key
    from platformq_assets.federated.definitions import federated_definitions
    from platformq_assets.governance.definitions import governance_definitions
    from platformq_assets.markets.definitions import markets_definitions
    from platformq_assets.neuromorphic.definitions import neuromorphic_definitions
    from platformq_assets.ml.definitions import ml_definitions
    from platformq_assets.quality.definitions import quality_definitions
    from platformq_assets.trust.definitions import trust_definitions
    from resources import build_resources
    from sensors.landing import build_landing_sensor
    from sensors.lineage import openlineage_events
    from sensors.run_failures import run_failure_alerts

    landing_sensor = build_landing_sensor(
        landing_ingest_job,
        {source: landing_key(source) for source in settings.landing_sources},
        [QUARANTINE_KEY, LEDGER_KEY],
    )
    merged = Definitions.merge(
        lake_definitions(settings),
        quality_definitions(),
        trust_definitions(),
        markets_definitions(),
        governance_definitions(),
        federated_definitions(),
        ml_definitions(),
        neuromorphic_definitions(),
        Definitions(
            jobs=[venue_daily_job, lake_daily_job, medallion_daily_job, landing_ingest_job],
            schedules=[venue_daily_schedule],
            sensors=[landing_sensor, run_failure_alerts, openlineage_events],
            resources=build_resources(settings),
            # Locally every step runs in one process (steps re-import the location
            # otherwise: ~3x slower on 2 cores); production runs a pod per step.
            executor=select_executor(settings.effective_executor),
        ),
    )
    if settings.airflow_url and settings.airflow_dags:
        merged = Definitions.merge(merged, airflow_definitions(settings))
    # Global policy, applied once: every asset carries the profile it was built under.
    # (map_resolved_asset_specs is a preview API; its warning is silenced here only.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return merged.map_resolved_asset_specs(
            func=lambda spec: spec.merge_attributes(tags={"platformq/profile": settings.profile}),
        )


def airflow_definitions(settings: Settings) -> Definitions:
    from resources.airflow import airflow_resource
    from sensors.airflow import airflow_dag_specs, build_airflow_sensor

    dags = list(settings.airflow_dags)
    return Definitions(assets=airflow_dag_specs(dags), sensors=[build_airflow_sensor(dags)],
                       resources={"airflow": airflow_resource(settings, env_refs=True)})


def select_executor(name: str):
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    from dagster_k8s import k8s_job_executor  # only production pays for the kubernetes client import

    return k8s_job_executor


@definitions
def defs() -> Definitions:
    return build_definitions(load_settings())
