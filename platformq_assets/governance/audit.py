"""The services' audit trail as a lake table: ``governance.audit_log`` (resources/audit_trail.py).

A sensor starts the ``governance_audit`` job when an audit file has grown; each run takes the lines added
since the last one. Checks: the run's lines reconcile with what the lake now holds (blocking), and no line
had to be quarantined (a warning: a service wrote something that is not an audit record).
"""

import uuid

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from pipelines.pools import group_pool
from resources.audit_trail import AuditTrailResource
from resources.lake import LakeResource

AUDIT_KEY = AssetKey(["governance", "audit_log"])


# its own group: the daily jobs select whole groups (lake_daily takes "governance"), and the audit trail is
# read when the services write to it, not once per trading day
@asset(key=AUDIT_KEY, kinds={"iceberg"}, group_name="audit", owners=["team:governance"],
       pool=group_pool("governance.audit"),  # the log, its quarantine and its checkpoints
       check_specs=[
           AssetCheckSpec("audit_lines_reconcile", asset=AUDIT_KEY, blocking=True,
                          description="For every file of the run: lines read = records accepted + lines "
                                      "quarantined, and the lake holds exactly the accepted records."),
           AssetCheckSpec("audit_lines_well_formed", asset=AUDIT_KEY,
                          description="No line of the run had to be quarantined (a warning)."),
       ],
       description="Every state-changing request the services answered (time, service, tenant, subject, "
                   "method, path, status, correlation id), from their `<service>-audit.jsonl` files: the lines "
                   "added since the last run. Malformed lines go to `quarantine.audit_log` with the reason.")
def audit_log(context: AssetExecutionContext, lake: LakeResource, audit_trail: AuditTrailResource):
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    from resources.audit_trail import AUDIT_TABLE, ingest_audit_files

    reports = ingest_audit_files(lake, audit_trail.directory, batch_id=context.run.run_id or uuid.uuid4().hex)
    unreadable = {r.file: r.error for r in reports if r.error}
    for name, error in unreadable.items():
        context.log.error(f"{name}: could not be read ({error}); the other files were taken")
    reports = [r for r in reports if r.lines_read]
    mismatches = []
    for r in reports:
        stored = lake.read(AUDIT_TABLE, row_filter=And(And(EqualTo("_file_id", r.file_id),
                                                           GreaterThanOrEqual("_offset", r.start_offset)),
                                                       LessThan("_offset", r.end_offset)),
                           columns=("_offset",)).num_rows
        if not r.reconciles or stored != r.accepted:
            mismatches.append(f"{r.file}: read {r.lines_read}, accepted {r.accepted}, quarantined "
                              f"{r.quarantined}, lake holds {stored}")
        context.log.info(f"{r.file}: {r.lines_read} line(s) from byte {r.start_offset}: {r.accepted} record(s), "
                         f"{r.quarantined} quarantined")
    totals = {k: sum(getattr(r, k) for r in reports) for k in ("lines_read", "accepted", "quarantined")}
    reasons: dict[str, int] = {}
    for r in reports:
        for reason, n in r.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    total_rows = lake.describe(AUDIT_TABLE)["rows"] if lake.table_exists(AUDIT_TABLE) else 0
    yield MaterializeResult(
        metadata={"files": len(reports), **totals, "dagster/row_count": total_rows,
                  "unreadable_files": MetadataValue.json(unreadable),
                  "per_file": MetadataValue.md("\n".join(
                      f"- `{r.file}`: {r.accepted} record(s), {r.quarantined} quarantined" for r in reports)
                      or "nothing new")},
        check_results=[
            AssetCheckResult(check_name="audit_lines_reconcile", passed=not mismatches,
                             severity=AssetCheckSeverity.ERROR,
                             metadata={**totals, "mismatches": "\n".join(mismatches) or "none"}),
            AssetCheckResult(check_name="audit_lines_well_formed", passed=not totals["quarantined"],
                             severity=AssetCheckSeverity.WARN,
                             metadata={"quarantined": totals["quarantined"],
                                       "reasons": "\n".join(f"{n}: {k}" for k, n in sorted(reasons.items()))
                                       or "none"}),
        ])
    if unreadable:  # after the others are in: the run fails (run_failure_alerts), naming what was not read
        raise Failure(description=f"audit file(s) that could not be read: {', '.join(sorted(unreadable))}; the "
                                  f"others were taken",
                      metadata={"unreadable_files": MetadataValue.json(unreadable)})
