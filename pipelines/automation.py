"""Automation policies for derived (silver and gold) assets, defined once."""

from dagster import AutomationCondition


def derived_asset_condition() -> AutomationCondition:
    """Eager on upstream change, latched, and gated by upstream blocking checks.

    ``eager()`` fires once per upstream update of the latest partition (it is
    latched by ``since_last_handled``) and never while a run is in flight, so a
    failing asset does not relaunch on every tick: it waits for new upstream
    data. Each launch retries a failed step once (the assets' ``RetryPolicy``) and the
    instance relaunches a failed run once (``run_retries`` in dagster.yaml). An
    upstream blocking check that failed holds the asset back entirely.
    """
    return (
        AutomationCondition.eager() & AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("eager, latched, upstream checks passed")


def partial_history_condition() -> AutomationCondition:
    """:func:`derived_asset_condition` for an asset that reads a window of earlier partitions and uses whichever
    of them exist (``neuromorphic/snn_model`` trains on the previous days that have spike trains): it waits for
    at least one of them, not for all. With ``eager()``'s "no dependency missing", one missing day stopped the
    asset, and everything after it, for as many days as the window is long."""
    return (
        AutomationCondition.eager().without(~AutomationCondition.any_deps_missing())
        & AutomationCondition.any_deps_match(~AutomationCondition.missing())
        & AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("eager, latched, some upstream partitions present, upstream checks passed")
