"""The ML domain: feature assets, one life cycle per model, and the ML alert sensor."""

from dagster import Definitions


def ml_definitions() -> Definitions:
    from platformq_assets.ml.features import (
        ACCOUNT_FEATURES_KEY,
        INSTRUMENT_FEATURES_KEY,
        account_activity,
        feature_registry,
        instrument_intervals,
        instrument_intervals_history,
        online_store,
    )
    from pipelines.jobs import ml_daily_job, ml_training_job
    from pipelines.schedules import ml_schedules
    from platformq_assets.ml.lifecycle import model_assets
    from sensors.ml_alerts import ml_drift_alerts
    from sensors.ml_catch_up import build_ml_catch_up_sensor

    return Definitions(
        assets=[instrument_intervals, account_activity, feature_registry, online_store, instrument_intervals_history,
                *model_assets("price_direction", INSTRUMENT_FEATURES_KEY),
                *model_assets("account_anomaly", ACCOUNT_FEATURES_KEY)],
        jobs=[ml_daily_job, ml_training_job],
        schedules=ml_schedules(),
        sensors=[ml_drift_alerts, build_ml_catch_up_sensor(ml_daily_job)],
    )
