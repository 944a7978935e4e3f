"""Audit-trail sensor: a run of ``governance_audit`` when a service's audit file has grown.

The cursor holds each file's size; the run key is the digest of the change (the sizes before and after), so
a lost cursor cannot start two runs for the same change, while files that come back to sizes seen before (a
file rotated or recreated under its name, lines of one fixed length) still start one: a key of the sizes alone
was taken already, and Dagster skips a run request whose key was used. The run itself only takes what its
checkpoints have not, so a repeated change costs one run that finds nothing.
"""

import hashlib
import json
from pathlib import Path

from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from resources.audit_trail import AuditTrailResource


def build_audit_sensor(job):
    @sensor(name="audit_trail_sensor", job=job, minimum_interval_seconds=60,
            description="Reads the services' new audit lines into governance.audit_log when a file has grown.")
    def audit_trail_sensor(context: SensorEvaluationContext, audit_trail: AuditTrailResource):
        seen = json.loads(context.cursor) if context.cursor else {}
        if not Path(audit_trail.directory).is_dir():  # a misnamed PLATFORMQ_AUDIT_DIR or a volume not mounted
            return SensorResult(skip_reason=SkipReason(
                f"the audit folder {audit_trail.directory} does not exist (PLATFORMQ_AUDIT_DIR; locally it appears "
                f"when a service first writes its audit file)"), cursor=context.cursor)
        current = audit_trail.sizes()
        cursor = json.dumps(current, sort_keys=True)
        grown = sorted(name for name, size in current.items() if size != seen.get(name))
        if not grown:
            return SensorResult(skip_reason=SkipReason("no new audit lines"), cursor=cursor)
        key = hashlib.sha256(json.dumps([seen, current], sort_keys=True).encode()).hexdigest()[:16]
        return SensorResult(run_requests=[RunRequest(run_key=f"audit@{key}",
                                                     tags={"platformq/audit_files": ",".join(grown)[:200]})],
                            cursor=cursor)

    return audit_trail_sensor
