"""The governance domain: the platform DAO's decisions as assets."""

from dagster import Definitions


def governance_definitions() -> Definitions:
    from platformq_assets.governance.dao import dao_outcomes

    return Definitions(assets=[dao_outcomes])
