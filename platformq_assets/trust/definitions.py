"""The trust domain: dataset-release credentials and their on-chain anchors."""

from dagster import Definitions


def trust_definitions() -> Definitions:
    from platformq_assets.trust.credentials import credential_anchors, dataset_credentials

    return Definitions(assets=[dataset_credentials, credential_anchors])
