"""Automation policies for derived (silver and gold) assets, defined once."""

from dagster import AutomationCondition


def derived_asset_condition() -> AutomationCondition:
    """Eager on upstream change, latched, and gated by upstream blocking checks.

    ``eager()`` fires once per upstream update of the latest partition (it is
    latched by ``since_last_handled``) and never while a run is in flight, so a
    failing asset does not relaunch on every tick: it waits for new upstream
    data. Each launch retries at most once (the assets' ``RetryPolicy``). An
    upstream blocking check that failed holds the asset back entirely.
    """
    return (
        AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("eager, latched, upstream checks passed")
