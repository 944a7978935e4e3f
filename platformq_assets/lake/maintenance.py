"""Lake maintenance as assets: erasure requests and snapshot expiry (the ``lake_maintenance`` job, daily).

Both rewrite other assets' tables rather than derive from them, so they declare no upstream assets: the
tables they touch are listed in their descriptions and in each materialisation's metadata. Expiry runs after
the erasure (a dependency), so the two never clean up the same table at once.
"""

import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from pipelines.pools import group_pool
from resources.feast import FeastResource
from resources.lake import LakeResource

GROUP = "maintenance"
ERASURE_KEY = AssetKey(["governance", "erasure_log"])
EXPIRY_KEY = AssetKey(["maintenance", "snapshot_expiry"])
# One pool for both: they change other steps' tables through Iceberg's optimistic commits (re-read and redone
# when another writer commits first, as for the CLI and the services) and never run at the same time.
COMMON = {"group_name": GROUP, "owners": ["team:lake"], "pool": group_pool("lake.maintenance")}


@asset(key=ERASURE_KEY, kinds={"iceberg", "feast"}, **COMMON,
       check_specs=[AssetCheckSpec("erased_subjects_absent", asset=ERASURE_KEY, blocking=True,
                                   description="No table that can hold a subject still names an erased account.")],
       description="Carries out pending erasure requests (`platformq erasure request`): deletes the account's "
                   "rows from identity, feature, position, ranking, score and margin tables, nulls it in orders, "
                   "fills and trades, removes it from Feast's offline exports and online store, expires the "
                   "older snapshots of those tables and deletes the files only they reached. One log row per "
                   "request (completed or rejected, with counts).")
def erasure_log(context: AssetExecutionContext, lake: LakeResource, feast: FeastResource):
    from features.repo import ACCOUNT_VIEW
    from resources import erasure

    def online(accounts: set[int]) -> int:
        done = feast.erase_entities(ACCOUNT_VIEW, "account_id", accounts)
        context.log.info(f"feast: {done['offline_rows']} offline row(s), {done['online_entities']} online "
                         f"entit(ies) removed")
        return done["offline_rows"] + done["online_entities"]

    summary = erasure.process_requests(lake, online_eraser=online, log=context.log.info)
    erased = erasure.erased_accounts(lake)
    remaining = erasure.remaining_rows(lake, erased)
    return MaterializeResult(
        metadata={**summary, "erased_accounts_total": len(erased),
                  "tables": MetadataValue.md("\n".join(f"- `{rule.table}`: {rule.action} {', '.join(rule.columns)}"
                                                       for rule in erasure.RULES))},
        check_results=[AssetCheckResult(check_name="erased_subjects_absent", passed=not remaining,
                                        severity=AssetCheckSeverity.ERROR,
                                        metadata={"tables_still_naming_them": ", ".join(sorted(remaining)) or "none",
                                                  "rows": sum(remaining.values())})])


class ExpiryConfig(Config):
    retention_days: float = Field(default=7.0, ge=0, description="Snapshots older than this many days expire.")
    retain_last: int = Field(default=5, ge=1, description="Snapshots kept per table whatever their age.")


@asset(key=EXPIRY_KEY, kinds={"iceberg"}, deps=[ERASURE_KEY], **COMMON,
       description="Expires every lake table's snapshots older than the retention (default 7 days, keeping each "
                   "table's newest 5) and deletes the data files, manifests and manifest lists only they reached. "
                   "Time travel (the data API's `snapshot_id`) reaches back as far as the retention.")
def snapshot_expiry(context: AssetExecutionContext, config: ExpiryConfig, lake: LakeResource):
    from resources.lake_maintenance import expire_snapshots

    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=config.retention_days)
    results = [expire_snapshots(lake, table, older_than=cutoff, retain_last=config.retain_last)
               for table in lake.list_tables()]
    for r in results:
        if r.snapshots_expired:
            context.log.info(f"{r.table}: {r.snapshots_expired} snapshot(s) expired, {r.files_deleted} file(s) "
                             f"({r.bytes_deleted} bytes) deleted")
    return MaterializeResult(metadata={
        "cutoff": cutoff.isoformat(), "tables": len(results),
        "snapshots_expired": sum(r.snapshots_expired for r in results),
        "snapshots_kept": sum(r.snapshots_kept for r in results),
        "files_deleted": sum(r.files_deleted for r in results),
        "bytes_deleted": sum(r.bytes_deleted for r in results),
        "per_table": MetadataValue.md("\n".join(
            f"- `{r.table}`: {r.snapshots_expired} expired, {r.snapshots_kept} kept, {r.files_deleted} files deleted"
            for r in results if r.snapshots_expired) or "nothing older than the retention"),
    })
