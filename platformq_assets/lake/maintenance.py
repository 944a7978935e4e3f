"""Lake maintenance as assets (the ``lake_maintenance`` job, daily): erasure requests, data retention,
compaction of small files, snapshot expiry and removal of orphan files, in that order.

They rewrite other assets' tables rather than derive from them, so they declare no upstream assets: the
tables they touch are listed in their descriptions and in each materialisation's metadata. Each depends on
the one before, so no two clean up the same table at once; expiry then deletes the files that the erasure, the
retention and the compaction left to older snapshots only, and the orphan sweep the files no snapshot ever
referenced.
"""

import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from pipelines.pods import TRAINING_POD
from pipelines.pools import group_pool
from resources.feast import FeastResource
from resources.lake import LakeResource

GROUP = "maintenance"
ERASURE_KEY = AssetKey(["governance", "erasure_log"])
RETENTION_KEY = AssetKey(["maintenance", "data_retention"])
COMPACTION_KEY = AssetKey(["maintenance", "compaction"])
EXPIRY_KEY = AssetKey(["maintenance", "snapshot_expiry"])
ORPHANS_KEY = AssetKey(["maintenance", "orphan_files"])
# One pool for both: they change other steps' tables through Iceberg's optimistic commits (re-read and redone
# when another writer commits first, as for the CLI and the services) and never run at the same time.
COMMON = {"group_name": GROUP, "owners": ["team:lake"], "pool": group_pool("lake.maintenance")}


def each_table(context, tables, work) -> tuple[list, dict[str, str]]:
    """``work(table)`` for every table, past the ones that raise: one broken table (an unreadable metadata file,
    equality deletes pyiceberg cannot plan) stopped the tables after it every night. Returns the results and
    the failures (table -> error)."""
    results, failed = [], {}
    for table in tables:
        try:
            results.append(work(table))
        except Exception as exc:  # recorded; the orphan sweep, the job's last step, fails the run for it
            failed[table] = f"{type(exc).__name__}: {exc}"[:500]
            context.log.error(f"{table}: {failed[table]}")
    return results, failed


def failure_metadata(failed: dict[str, str]) -> dict:
    """What a step records of the tables it could not do (read back by ``fail_for``)."""
    if not failed:
        return {"tables_failed": 0}
    return {"tables_failed": len(failed), "failed_tables": MetadataValue.json(dict(sorted(failed.items())))}


def fail_for(context, failed: dict[str, str], done: dict) -> None:
    """The orphan sweep ends the job: after every table was done, it fails naming the tables that compaction,
    expiry (recorded in this run's materialisations) or the sweep itself could not do, and the erasure's
    feature-store failure. Erasure, compaction and expiry do not fail for these themselves: a failed step skips the steps after it, so one broken table stopped expiry and the
    sweep for every table, every night."""
    failures = {}
    # the erasure step goes on past a feature-store outage (its requests stay in progress, the lake's part done):
    # failed here so that it is alerted, not only recorded in metadata
    event = context.instance.get_latest_materialization_event(ERASURE_KEY)
    if event is not None and event.run_id == context.run.run_id:
        for name, what in (("online_error", "erasure: feature store"),
                           ("residue_feature_error", "erasure residue sweep: feature store")):
            recorded = event.asset_materialization.metadata.get(name)
            if recorded is not None and recorded.value not in (None, "none"):
                failures[what] = recorded.value
    for key, what in ((COMPACTION_KEY, "compaction"), (EXPIRY_KEY, "snapshot expiry")):
        event = context.instance.get_latest_materialization_event(key)
        if event is not None and event.run_id == context.run.run_id:
            recorded = event.asset_materialization.metadata.get("failed_tables")
            for table, error in (recorded.value if recorded is not None else {}).items():
                failures[f"{what}: {table}"] = error
    failures.update({f"orphan sweep: {table}": error for table, error in failed.items()})
    if failures:
        raise Failure(description=f"lake maintenance could not do {len(failures)} table step(s): "
                      f"{', '.join(sorted(failures))}; every other table was done",
                      metadata={**done, "failed_tables": MetadataValue.md(
                          "\n".join(f"- {what}: {error}" for what, error in sorted(failures.items())))})


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


class RetentionPolicy(Config):
    table: str = Field(description="Lake table, `namespace.name`.")
    column: str = Field(description="Date or timestamp column that dates a row.")
    days: float = Field(gt=0, description="Rows dated older than this many days are deleted.")


class RetentionConfig(Config):
    policies: list[RetentionPolicy] = Field(
        default_factory=lambda: [RetentionPolicy(table="quarantine.landing", column="quarantined_at", days=90)],
        description="Per-table retention. By default only quarantined landing records (raw, possibly personal, "
                    "values) go after 90 days; the landing ledger keeps their counts. The landing ledger, the "
                    "audit checkpoints and the erasure tables are refused.")


@asset(key=RETENTION_KEY, kinds={"iceberg"}, deps=[ERASURE_KEY], **COMMON,
       description="Deletes rows older than each table's retention policy (default: quarantined landing records "
                   "after 90 days), one commit per table. The rows leave storage when snapshot expiry removes "
                   "the snapshots that still reach them.")
def data_retention(context: AssetExecutionContext, config: RetentionConfig, lake: LakeResource):
    from resources.lake_maintenance import apply_retention

    results = []
    for policy in config.policies:
        if not lake.table_exists(policy.table):
            context.log.info(f"{policy.table}: no such table yet, nothing to retain")
            continue
        results.append(apply_retention(lake, policy.table, policy.column, policy.days))
    for r in results:
        context.log.info(f"{r.table}: {r.rows_deleted} row(s) with {r.column} before {r.cutoff} deleted")
    return MaterializeResult(metadata={
        "rows_deleted": sum(r.rows_deleted for r in results),
        "policies": MetadataValue.md("\n".join(
            f"- `{p.table}`: rows with `{p.column}` older than {p.days:g} days" for p in config.policies) or "none"),
        "per_table": MetadataValue.md("\n".join(
            f"- `{r.table}`: {r.rows_deleted} row(s) before {r.cutoff}" for r in results) or "no table yet"),
    })


class CompactionConfig(Config):
    min_input_files: int = Field(default=5, ge=2, description="A partition's small files are rewritten once it "
                                                              "has at least this many (Iceberg's default, 5).")
    target_file_bytes: int | None = Field(default=None, gt=0, description="Size of the files written; default "
                                          "the table's write.target-file-size-bytes (512 MiB).")


@asset(key=COMPACTION_KEY, kinds={"iceberg"}, deps=[RETENTION_KEY], **COMMON, op_tags=TRAINING_POD,
       description="Rewrites each partition's small data files (below 75 % of the target size, at least 5 of "
                   "them) into one file per target size, in one commit per table that swaps exactly the files "
                   "read: a writer appending meanwhile keeps its rows, one replacing them makes the rewrite start "
                   "over. Append-heavy tables (the landing ledger and quarantine, logs, registries) stay few "
                   "files to open per read.")
def compaction(context: AssetExecutionContext, config: CompactionConfig, lake: LakeResource):
    from resources.lake_maintenance import compact_table

    results, failed = each_table(context, lake.list_tables(), lambda table: compact_table(
        lake, table, min_input_files=config.min_input_files, target_bytes=config.target_file_bytes))
    for r in results:
        if r.files_rewritten:
            context.log.info(f"{r.table}: {r.files_rewritten} file(s) in {r.partitions_compacted} partition(s) "
                             f"rewritten as {r.files_written} ({r.rows_rewritten} rows)")
        for reason in r.skipped:
            context.log.info(f"{r.table}: left {reason}")
    return MaterializeResult(metadata={
        **failure_metadata(failed),
        "tables_compacted": sum(1 for r in results if r.files_rewritten),
        "files_rewritten": sum(r.files_rewritten for r in results),
        "files_written": sum(r.files_written for r in results),
        "rows_rewritten": sum(r.rows_rewritten for r in results),
        "per_table": MetadataValue.md("\n".join(
            f"- `{r.table}`: {r.files_rewritten} → {r.files_written} file(s), {r.partitions_compacted} partition(s)"
            for r in results if r.files_rewritten) or "no partition with enough small files"),
    })


class ExpiryConfig(Config):
    retention_days: float = Field(default=7.0, ge=0, description="Snapshots older than this many days expire.")
    retain_last: int = Field(default=5, ge=1, description="Snapshots kept per table whatever their age.")


@asset(key=EXPIRY_KEY, kinds={"iceberg"}, deps=[COMPACTION_KEY], **COMMON,
       description="Expires every lake table's snapshots older than the retention (default 7 days, keeping each "
                   "table's newest 5) and deletes the data files, manifests and manifest lists only they reached. "
                   "Time travel (the data API's `snapshot_id`) reaches back as far as the retention.")
def snapshot_expiry(context: AssetExecutionContext, config: ExpiryConfig, lake: LakeResource):
    from resources.lake_maintenance import expire_snapshots

    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=config.retention_days)
    results, failed = each_table(context, lake.list_tables(), lambda table: expire_snapshots(
        lake, table, older_than=cutoff, retain_last=config.retain_last))
    for r in results:
        if r.snapshots_expired:
            context.log.info(f"{r.table}: {r.snapshots_expired} snapshot(s) expired, {r.files_deleted} file(s) "
                             f"({r.bytes_deleted} bytes) deleted")
    return MaterializeResult(metadata={
        **failure_metadata(failed),
        "cutoff": cutoff.isoformat(), "tables": len(results),
        "snapshots_expired": sum(r.snapshots_expired for r in results),
        "snapshots_kept": sum(r.snapshots_kept for r in results),
        "files_deleted": sum(r.files_deleted for r in results),
        "bytes_deleted": sum(r.bytes_deleted for r in results),
        "per_table": MetadataValue.md("\n".join(
            f"- `{r.table}`: {r.snapshots_expired} expired, {r.snapshots_kept} kept, {r.files_deleted} files deleted"
            for r in results if r.snapshots_expired) or "nothing older than the retention"),
    })


class OrphanConfig(Config):
    older_than_days: float = Field(default=3.0, gt=0, description="Unreferenced files last written more recently "
                                   "than this are kept: a writer may be about to commit them (Iceberg's "
                                   "default, 3 days).")


@asset(key=ORPHANS_KEY, kinds={"iceberg"}, deps=[EXPIRY_KEY], **COMMON,
       description="Deletes files under each lake table's location that no snapshot or metadata file references "
                   "and that are older than 3 days: what a writer left when it died between writing a file and "
                   "committing it. Such files hold rows no reader ever saw, and no erasure reached.")
def orphan_files(context: AssetExecutionContext, config: OrphanConfig, lake: LakeResource):
    from resources.lake_maintenance import remove_orphan_files

    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=config.older_than_days)
    results, failed = each_table(context, lake.list_tables(),
                                 lambda table: remove_orphan_files(lake, table, older_than=cutoff))
    fail_for(context, failed, {"orphans_deleted": sum(r.orphans_deleted for r in results)})
    for r in results:
        if r.orphans_deleted:
            context.log.info(f"{r.table}: {r.orphans_deleted} orphan file(s) ({r.bytes_deleted} bytes) deleted")
    return MaterializeResult(metadata={
        "cutoff": cutoff.isoformat(), "tables": len(results),
        "files_listed": sum(r.files_listed for r in results),
        "orphans_deleted": sum(r.orphans_deleted for r in results),
        "bytes_deleted": sum(r.bytes_deleted for r in results),
        "orphans_too_young": sum(r.orphans_too_young for r in results),
        "per_table": MetadataValue.md("\n".join(
            f"- `{r.table}`: {r.orphans_deleted} deleted" for r in results if r.orphans_deleted)
            or "no orphan older than the limit"),
    })
