"""The federated-learning domain: Flower rounds over the tenants as an asset."""

from dagster import Definitions


def federated_definitions() -> Definitions:
    from platformq_assets.federated.assets import order_anomaly_model

    return Definitions(assets=[order_anomaly_model])
