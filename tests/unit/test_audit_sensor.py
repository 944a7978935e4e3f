"""The audit-trail sensor's run keys: one per change of the files, so Dagster's run-key dedup never swallows a
change (it skips any request whose key was used before, for good)."""

from dagster import DagsterInstance, build_sensor_context

from resources.audit_trail import AuditTrailResource


def tick(sensor, resources, cursor):
    with build_sensor_context(instance=DagsterInstance.ephemeral(), resources=resources, cursor=cursor) as context:
        result = sensor(context)
    return [r.run_key for r in result.run_requests], result.cursor


def test_files_back_at_sizes_seen_before_still_start_a_run(tmp_path):
    from dagster import define_asset_job

    from sensors.audit import build_audit_sensor

    sensor = build_audit_sensor(define_asset_job("governance_audit", selection="governance/audit_log"))
    resources = {"audit_trail": AuditTrailResource(directory=str(tmp_path))}
    path = tmp_path / "trading-audit.jsonl"
    path.write_text('{"n": 1}\n')
    first, cursor = tick(sensor, resources, None)
    assert len(first) == 1
    assert tick(sensor, resources, cursor)[0] == []  # nothing new
    assert tick(sensor, resources, None)[0] == first  # a lost cursor: the same change, the same key

    path.write_text('{"n": 1}\n{"n": 2}\n')
    grown, cursor = tick(sensor, resources, cursor)
    path.write_text('{"n": 3}\n')  # rotated: a new file of the first one's size
    rotated, cursor = tick(sensor, resources, cursor)
    assert len(grown) == len(rotated) == 1
    assert len(set(first + grown + rotated)) == 3  # the sizes alone repeat the first key: Dagster would skip it


def test_a_missing_audit_folder_is_named_in_the_skip_reason(tmp_path):
    """A misnamed PLATFORMQ_AUDIT_DIR or an unmounted volume said "no new audit lines" for ever."""
    from dagster import define_asset_job

    from sensors.audit import build_audit_sensor

    sensor = build_audit_sensor(define_asset_job("governance_audit", selection="governance/audit_log"))
    missing = tmp_path / "not-mounted"
    with build_sensor_context(instance=DagsterInstance.ephemeral(), cursor='{"trading-audit.jsonl": 10}',
                              resources={"audit_trail": AuditTrailResource(directory=str(missing))}) as context:
        result = sensor(context)
    assert not result.run_requests and str(missing) in result.skip_reason.skip_message
    assert result.cursor == '{"trading-audit.jsonl": 10}'  # the sizes seen are kept for when it is back
