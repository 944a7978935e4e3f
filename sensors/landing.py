"""Landing-zone sensor: one run per new file, exactly once across restarts.

The cursor remembers each file's size, mtime, ctime and inode, so unchanged files cost no
hashing on later ticks; the run key is the file's path and SHA-256, so Dagster
never launches two runs for the same content even if the cursor is lost; and
the ingestion step itself skips content its ledger already holds. A tick hashes new files up to
the landing zone's ``hash_budget_bytes`` (at least one file) and leaves the rest out of its cursor, so a
large drop is taken over several ticks instead of running a tick past the sensor timeout, where it would
record nothing and start over every time. A file the tick cannot read (its mode, a file removed meanwhile) is
logged and left out of the cursor, for the next tick: it does not stop the other files' runs.
"""


import json

from dagster import AssetKey, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from resources.landing_zone import LandingZoneResource


def landing_run_request(relpath: str, sha256: str, source_key: AssetKey, always: list[AssetKey]) -> RunRequest:
    return RunRequest(
        run_key=f"{relpath}@{sha256}",
        run_config={"ops": {"landing_ingest": {"config": {"files": [relpath]}}}},
        asset_selection=[source_key, *always],
        tags={"platformq/landing_file": relpath, "platformq/file_sha256": sha256[:16]},
    )


def build_landing_sensor(job, source_keys: dict[str, AssetKey], always: list[AssetKey]):
    @sensor(name="landing_zone_sensor", job=job, minimum_interval_seconds=30,
            description="Starts one ingestion run per new or changed file under data/landing/<source>/.")
    def landing_zone_sensor(context: SensorEvaluationContext, landing_zone: LandingZoneResource):
        seen = json.loads(context.cursor) if context.cursor else {}
        current, requests, hashed, deferred, misnamed, unreadable = {}, [], 0, 0, [], []
        for landing_file in landing_zone.list_files(misnamed):
            try:
                fingerprint = landing_file.fingerprint()
            except OSError:  # removed (or renamed away) since the listing
                continue
            if seen.get(landing_file.relpath) == fingerprint:
                current[landing_file.relpath] = fingerprint
                continue
            if requests and hashed >= landing_zone.hash_budget_bytes:
                deferred += 1  # not in the cursor: still new to the next tick
                continue
            try:
                sha256 = landing_file.sha256()
            except OSError as exc:  # not readable (yet): one such file must not stop every other file's run
                unreadable.append(f"{landing_file.relpath} ({type(exc).__name__}: {exc.strerror or exc})")
                continue  # not in the cursor: tried again next tick
            requests.append(landing_run_request(landing_file.relpath, sha256, source_keys[landing_file.source], always))
            hashed += int(fingerprint.split(":", 1)[0])
            current[landing_file.relpath] = fingerprint
        if misnamed:
            context.log.warning(f"landing files left in place, their names are not UTF-8 (rename them): {misnamed}")
        if unreadable:
            context.log.warning(f"landing files not readable, tried again next tick: {unreadable}")
        cursor = json.dumps(current, sort_keys=True)
        if deferred:
            context.log.info(f"{deferred} new landing file(s) left for the next tick (hashed {hashed} bytes)")
        if not requests:
            return SensorResult(skip_reason=SkipReason("no new landing files"), cursor=cursor)
        return SensorResult(run_requests=requests, cursor=cursor)

    return landing_zone_sensor
