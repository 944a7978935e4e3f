from dagster import DagsterInstance

SMALL_VENUE = {"ops": {"venue_session": {"config": {"scale": 0.3}}}}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def definitions(settings):
    from platformq_assets.definitions import build_definitions

    return build_definitions(settings)


def run_day(defs, day, job="lake_daily", selection=None, run_config=None):
    job_def = defs.resolve_job_def(job)
    if selection is not None:
        job_def = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(selection))
    return job_def.execute_in_process(partition_key=day, instance=DagsterInstance.get(),
                                      run_config={**QUIET, **(run_config if run_config is not None else SMALL_VENUE)},
                                      raise_on_error=False)


def failed_checks(result):
    return [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in result.get_asset_check_evaluations() if not c.passed]


def drop(settings, relpath, data: bytes):
    """A file delivered into the landing zone (``relpath`` under the landing folder, e.g. source/name.csv)."""
    path = settings.landing_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
