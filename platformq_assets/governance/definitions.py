"""The governance domain: the platform DAO's decisions and the services' audit trail as assets."""

from dagster import Definitions


def governance_definitions() -> Definitions:
    from pipelines.jobs import governance_audit_job
    from platformq_assets.governance.audit import audit_log
    from platformq_assets.governance.dao import dao_outcomes
    from sensors.audit import build_audit_sensor

    return Definitions(assets=[dao_outcomes, audit_log], jobs=[governance_audit_job],
                       sensors=[build_audit_sensor(governance_audit_job)])
