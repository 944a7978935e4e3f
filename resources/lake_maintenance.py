"""Maintenance of the lake's Iceberg tables (no Dagster here): snapshot expiry with file clean-up, compaction
of small files, retention by age, removal of orphan files, and a storage report. Each is what Iceberg's own
action of that name does, where pyiceberg has none or only its metadata half.

Expiry: pyiceberg's ``expire_snapshots`` removes snapshots from the table's metadata only: the data files, manifests
and manifest lists that only those snapshots reached stay in storage, and so does every row a later commit
deleted. ``expire_snapshots`` below also deletes the files that only the expired snapshots reach (what
Iceberg's own ExpireSnapshots action does), data files first, then manifests, then manifest lists, and only
then commits the expiry: a run interrupted at any point is finished by the next one, which still sees the
snapshots and reads whatever of their manifests is left. Files that no snapshot ever referenced (a failed
commit's data file, a writer's commit still in flight) are never touched by expiry (the orphan sweep deletes
them once they are old enough), and the current snapshot is never
expired, so a writer racing with the clean-up cannot lose a file. Metadata JSON files are left to the table's
``write.metadata.delete-after-commit.enabled``: they hold the schema and snapshot summaries (counts), never
row values.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from resources.lake import LakeResource


@dataclass
class ExpiryResult:
    table: str
    snapshots_expired: int = 0
    snapshots_kept: int = 0
    files_deleted: int = 0
    bytes_deleted: int = 0
    files_missing: int = 0  # already gone (a clean-up interrupted after its commit, then re-run)
    failed_deletes: list[str] = field(default_factory=list)


def reachable_files(table: "Table", snapshot_ids: set[int] | None = None, missing_ok: bool = False,
                    unreadable: set[int] | None = None) -> dict[str, set[str]]:
    """Files the given snapshots (default: all) reach, by kind: ``lists`` (manifest lists), ``manifests`` and
    ``data`` (live data and delete files). ``missing_ok`` skips a manifest list or manifest already deleted
    (the clean-up of an interrupted expiry); so does ``unreadable``, which collects the ids of the snapshots
    that miss one."""
    io = table.io
    out: dict[str, set[str]] = {"lists": set(), "manifests": set(), "data": set()}
    gone: set[str] = set()  # manifests found missing (another snapshot may share one)

    def missing(snapshot_id: int, exc: FileNotFoundError) -> None:
        if unreadable is not None:
            unreadable.add(snapshot_id)
        elif not missing_ok:
            raise exc

    for snapshot in table.metadata.snapshots:
        if snapshot_ids is not None and snapshot.snapshot_id not in snapshot_ids:
            continue
        out["lists"].add(snapshot.manifest_list)
        try:
            manifests = snapshot.manifests(io)
        except FileNotFoundError as exc:
            missing(snapshot.snapshot_id, exc)
            continue
        for manifest in manifests:
            if manifest.manifest_path in gone:
                if unreadable is not None:
                    unreadable.add(snapshot.snapshot_id)
                continue
            if manifest.manifest_path in out["manifests"]:
                continue
            out["manifests"].add(manifest.manifest_path)
            try:
                entries = manifest.fetch_manifest_entry(io, discard_deleted=True)
            except FileNotFoundError as exc:
                gone.add(manifest.manifest_path)
                missing(snapshot.snapshot_id, exc)
                continue
            out["data"].update(entry.data_file.file_path for entry in entries)
    return out


def snapshots_to_expire(table: "Table", older_than: dt.datetime, retain_last: int) -> list[int]:
    """Snapshots older than ``older_than``, except the newest ``retain_last`` and every branch or tag head.

    Rows a retention commit deleted leave storage within the retention: once that commit is older than
    ``older_than``, the snapshots before it (which still reach those rows) are no longer kept as the newest."""
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    newest_first = sorted(table.metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0),
                          reverse=True)
    cutoff_ms = int(older_than.timestamp() * 1000)
    retained = [s.sequence_number or 0 for s in table.metadata.snapshots if s.timestamp_ms < cutoff_ms
                and s.summary is not None and s.summary.get("platformq.operation") == "retention"]
    since = max(retained, default=0)
    kept_recent = {s.snapshot_id for s in newest_first[:max(retain_last, 0)] if (s.sequence_number or 0) >= since}
    return [s.snapshot_id for s in newest_first
            if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected and s.snapshot_id not in kept_recent]


def expire_snapshots(lake: "LakeResource", identifier: str, older_than: dt.datetime,
                     retain_last: int = 1) -> ExpiryResult:
    """Expire the table's snapshots older than ``older_than`` (keeping the newest ``retain_last`` and the
    current one) and delete the files only they reach. Safe to re-run: a run interrupted after deleting some
    files is finished by the next, whatever its own limits (a snapshot missing a manifest list or manifest is
    expired with the others: nothing can read it); a run with nothing to expire changes nothing."""
    from pyiceberg.exceptions import CommitFailedException

    from resources.lake import COMMIT_ATTEMPTS, commit_backoff

    result = ExpiryResult(table=identifier)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table = lake.load_table(identifier)
        expired = set(snapshots_to_expire(table, older_than, retain_last))
        kept = {s.snapshot_id for s in table.metadata.snapshots} - expired
        unreadable: set[int] = set()
        needed = reachable_files(table, kept, unreadable=unreadable)
        if unreadable:
            heads = unreadable & {ref.snapshot_id for ref in table.metadata.refs.values()}
            if heads:  # what a branch or tag reaches must all be there: a missing file there is damage
                raise FileNotFoundError(f"{identifier}: snapshot(s) {sorted(heads)} of a branch or tag miss "
                                        f"manifest files; nothing is deleted")
            # a clean-up interrupted after deleting some of their files (one that expired more, e.g. an
            # erasure's): nothing can read them any more, so they are expired now, whatever their age
            expired |= unreadable
            kept -= unreadable
            needed = reachable_files(table, kept)
        if not expired:
            result.snapshots_kept = len(table.metadata.snapshots)
            return result
        doomed = reachable_files(table, expired, missing_ok=True)
        for kind in ("data", "manifests", "lists"):  # the order that lets an interrupted run be finished
            for path in sorted(doomed[kind] - needed[kind]):
                _delete(table, path, result)
            if result.failed_deletes:  # the manifests naming these files stay, for the next run to find them
                break
        if result.failed_deletes:  # keep the snapshots, so that the next run finds these files again
            raise OSError(f"{identifier}: could not delete {len(result.failed_deletes)} file(s), e.g. "
                          f"{result.failed_deletes[0]}; the snapshots stay until a run deletes them")
        try:
            table.maintenance.expire_snapshots().by_ids(sorted(expired)).commit()
            break
        except CommitFailedException:  # another writer committed first: look again (its files are kept)
            if attempt == COMMIT_ATTEMPTS:
                raise
            commit_backoff(attempt)
    result.snapshots_expired = len(expired)
    result.snapshots_kept = len(lake.load_table(identifier).metadata.snapshots)
    return result


def _delete(table: "Table", path: str, result: ExpiryResult) -> None:
    io = table.io
    try:
        size = len(io.new_input(path))
    except FileNotFoundError:
        result.files_missing += 1
        return
    except Exception:  # noqa: BLE001 - size is for reporting only
        size = 0
    try:
        io.delete(path)
    except FileNotFoundError:
        result.files_missing += 1
        return
    except Exception:  # noqa: BLE001 - reported; the snapshot is expired either way, a re-run cannot find it
        result.failed_deletes.append(path)
        return
    result.files_deleted += 1
    result.bytes_deleted += size


# -- compaction -----------------------------------------------------------------------------------------------

@dataclass
class CompactionResult:
    table: str
    partitions_compacted: int = 0
    files_rewritten: int = 0
    files_written: int = 0
    rows_rewritten: int = 0
    skipped: list[str] = field(default_factory=list)  # partitions left alone, with the reason
    snapshot_id: int | None = None


def small_file_limit(target_bytes: int) -> int:
    """Files below this many bytes are small: Iceberg's min-file-size-bytes default, 75 % of the target."""
    return int(target_bytes * 0.75)


def _small_file_groups(table: "Table", tasks, min_input_files: int, target_bytes: int):
    """The current snapshot's small data files, by partition, bin-packed into groups of at most
    ``target_bytes``; only groups of ``min_input_files`` or more files are worth a rewrite. A file with delete
    files attached (a merge-on-read writer such as Spark or Trino) is left to that engine's compaction: its
    delete files name it by path."""
    small_below = small_file_limit(target_bytes)
    by_partition: dict[tuple, list] = {}
    skipped: list[str] = []
    spec = table.metadata.spec()
    for task in tasks:
        data_file = task.file
        if data_file.spec_id != spec.spec_id or data_file.file_size_in_bytes >= small_below:
            continue
        key = tuple(data_file.partition) if data_file.partition is not None else ()
        if task.delete_files:
            skipped.append(f"{_partition_name(spec, key)}: has delete files")
            by_partition.setdefault(key, []).append(None)  # poisons the partition
            continue
        by_partition.setdefault(key, []).append(task)
    groups = []
    for key, partition_tasks in sorted(by_partition.items(), key=lambda kv: str(kv[0])):
        if any(t is None for t in partition_tasks):
            continue
        bins, current, size = [], [], 0
        for task in partition_tasks:
            if current and size + task.file.file_size_in_bytes > target_bytes:
                bins.append(current)
                current, size = [], 0
            current.append(task)
            size += task.file.file_size_in_bytes
        bins.append(current)
        groups.extend((key, b) for b in bins if len(b) >= min_input_files)
    return groups, sorted(set(skipped))


def _partition_name(spec, key: tuple) -> str:
    if not key:
        return "(unpartitioned)"
    return "/".join(f"{f.name}={v}" for f, v in zip(spec.fields, key))


def compact_table(lake: "LakeResource", identifier: str, min_input_files: int = 5,
                  target_bytes: int | None = None) -> CompactionResult:
    """Rewrite each partition's small data files into as few files as the target size allows, one commit per
    table that removes exactly the files read and adds the new ones (Iceberg's rewrite-data-files; pyiceberg
    has none).

    The commit is an explicit file swap, never a predicate, validated by pyiceberg: if another writer
    committed meanwhile, the swap of the files already written is tried again on its snapshot when every file
    read is still there with no delete file against it (the writer appended, or changed other files), and
    otherwise the run starts over from the new snapshot, so a row appended meanwhile is kept and a row deleted
    or replaced meanwhile is never brought back (a busy table's appends made every attempt start over, read
    everything again and fail the same way, until the run failed). Rows are read through the table's schema, so files
    written before a column was added come out with it (null). The replaced files stay reachable from the
    older snapshots until snapshot expiry deletes them. An interrupted run leaves only an unreferenced file.
    """
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, parquet_file_to_data_file
    from pyiceberg.table import TableProperties

    from resources.lake import COMMIT_ATTEMPTS, commit_backoff

    result = CompactionResult(table=identifier)
    attempt = 0
    while True:
        table = lake.load_table(identifier)
        snapshot = table.current_snapshot()
        if snapshot is None:
            return result
        target = target_bytes or int(table.metadata.properties.get(
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT))
        tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
        groups, result.skipped = _small_file_groups(table, tasks, min_input_files, target)
        if not groups:
            return result
        spec, schema = table.metadata.spec(), table.schema()
        scan = ArrowScan(table.metadata, table.io, projected_schema=schema, row_filter=AlwaysTrue())
        written: list[str] = []
        rows = 0
        try:
            for key, group in groups:
                data = lake.conform(table, scan.to_table(group))
                expected = sum(t.file.record_count for t in group)
                if data.num_rows != expected:  # never swap files for a different set of rows
                    raise ValueError(f"{identifier} {_partition_name(spec, key)}: read {data.num_rows} "
                                     f"rows from files that record {expected}")
                folder = f"{table.location().rstrip('/')}/data"
                if key:
                    folder = f"{folder}/{spec.partition_to_path(group[0].file.partition, schema)}"
                path = f"{folder}/{uuid.uuid4()}.parquet"
                # with the schema's field ids (in the Parquet schema): a table written by pyiceberg's own
                # append has files with ids and no name mapping, and a file without them is unreadable there
                with table.io.new_output(path).create(overwrite=False) as stream:
                    pq.write_table(pa.Table.from_batches(data.to_batches(), schema=data.schema)
                                   .cast(schema.as_arrow()), stream, compression="snappy")
                written.append(path)
                rows += data.num_rows
        except Exception:
            for path in written:  # never committed: nothing references them
                _delete_quietly(table, path)
            raise
        rewritten = {t.file.file_path for _, group in groups for t in group}
        committed = False
        while not committed:
            try:
                with table.transaction() as tx:
                    with tx.update_snapshot(snapshot_properties={"platformq.operation": "compaction"}).overwrite() as swap:
                        for path, (_, group) in zip(written, groups):
                            swap.append_data_file(parquet_file_to_data_file(table.io, tx.table_metadata, path))
                            for task in group:
                                swap.delete_data_file(task.file)
                committed = True
            except (CommitFailedException, ValidationException):
                attempt += 1
                if attempt >= COMMIT_ATTEMPTS:
                    for path in written:
                        _delete_quietly(table, path)
                    raise
                commit_backoff(attempt)
                table = lake.load_table(identifier)
                # another writer committed first. If it left every file read as it was (it appended, or changed
                # other files), the files written hold the same rows and the swap is tried again on its snapshot
                # (pyiceberg validates it again); otherwise the rewrite starts over from there
                if not _still_as_read(table, spec.spec_id, schema.schema_id, rewritten):
                    for path in written:  # never committed: nothing references them
                        _delete_quietly(table, path)
                    break
        if not committed:
            continue
        result.partitions_compacted = len({key for key, _ in groups})
        result.files_rewritten, result.files_written, result.rows_rewritten = len(rewritten), len(written), rows
        result.snapshot_id = lake.load_table(identifier).current_snapshot().snapshot_id
        return result


def _still_as_read(table: "Table", spec_id: int, schema_id: int, paths: set[str]) -> bool:
    """Whether the current snapshot still has every one of these data files, with no delete file against any,
    under the same partition spec and schema (what lets a compaction commit files it has already written)."""
    snapshot = table.current_snapshot()
    if snapshot is None or table.metadata.default_spec_id != spec_id or table.metadata.current_schema_id != schema_id:
        return False
    found = set()
    for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files():
        if task.file.file_path in paths:
            if task.delete_files:
                return False
            found.add(task.file.file_path)
    return found == paths


def _delete_quietly(table: "Table", path: str) -> None:
    try:
        table.io.delete(path)
    except Exception:  # noqa: BLE001 - an orphan at worst
        pass


# -- retention ------------------------------------------------------------------------------------------------

# Tables whose rows must outlive any retention policy: the landing ledger and the audit checkpoints are what
# keep a file from being ingested twice, and the erasure requests and log are the tombstones that keep an
# erased account out.
RETENTION_PROTECTED = frozenset({"ops.landing_files", "ops.audit_files", "governance.erasure_requests",
                                 "governance.erasure_log"})


@dataclass
class RetentionResult:
    table: str
    column: str
    cutoff: str
    rows_deleted: int = 0
    snapshot_id: int | None = None


def apply_retention(lake: "LakeResource", identifier: str, column: str, days: float,
                    now: dt.datetime | None = None) -> RetentionResult:
    """Delete the table's rows whose ``column`` (a date or timestamp) is older than ``days``, in one commit.
    Rows with no value in the column are kept (their age is unknown). Deleted rows stay reachable from older
    snapshots until snapshot expiry removes them."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.expressions import LessThan
    from pyiceberg.types import DateType, TimestampType, TimestamptzType

    from resources.lake import COMMIT_ATTEMPTS, commit_backoff

    if identifier in RETENTION_PROTECTED:
        raise ValueError(f"{identifier} is never subject to retention: {_PROTECTED_WHY}")
    now = now or dt.datetime.now(dt.timezone.utc)
    cutoff = now - dt.timedelta(days=days)
    table = lake.load_table(identifier)
    try:
        field_type = table.schema().find_field(column).field_type
    except ValueError:
        raise ValueError(f"{identifier} has no column {column!r} to apply retention by") from None
    if isinstance(field_type, DateType):
        literal = cutoff.date().isoformat()
    elif isinstance(field_type, TimestamptzType):
        literal = cutoff.astimezone(dt.timezone.utc).isoformat()
    elif isinstance(field_type, TimestampType):
        literal = cutoff.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat()
    else:
        raise ValueError(f"{identifier}.{column} is a {field_type}, not a date or timestamp: retention needs one")
    result = RetentionResult(table=identifier, column=column, cutoff=literal)
    predicate = LessThan(column, literal)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table = lake.load_table(identifier)
        # pyiceberg plans the delete on this snapshot and keeps that plan if it has to re-base the commit onto
        # another writer's, so these are the rows it deletes
        doomed = table.scan(row_filter=predicate, selected_fields=(column,)).to_arrow().num_rows
        if not doomed:
            return result
        try:
            table.delete(predicate, snapshot_properties={"platformq.operation": "retention"})
        except (CommitFailedException, ValidationException):
            if attempt == COMMIT_ATTEMPTS:
                raise
            commit_backoff(attempt)
            continue
        result.rows_deleted = doomed
        result.snapshot_id = lake.load_table(identifier).current_snapshot().snapshot_id
        return result
    return result


_PROTECTED_WHY = ("the landing ledger and the audit checkpoints keep files from being ingested twice and the "
                  "erasure requests and log keep erased accounts out")


# -- orphan files ---------------------------------------------------------------------------------------------

@dataclass
class OrphanResult:
    table: str
    files_listed: int = 0
    orphans_deleted: int = 0
    bytes_deleted: int = 0
    orphans_too_young: int = 0  # unreferenced but younger than the age limit: maybe a commit in flight


def referenced_files(table: "Table") -> set[str]:
    """Every file the table's metadata still points at: data and delete files, manifests and manifest lists of
    every snapshot, statistics files, and the current and logged metadata files."""
    reached = reachable_files(table)
    out = reached["lists"] | reached["manifests"] | reached["data"]
    out.add(table.metadata_location)
    out.update(entry.metadata_file for entry in table.metadata.metadata_log)
    out.update(s.statistics_path for s in table.metadata.statistics)
    out.update(s.statistics_path for s in table.metadata.partition_statistics)
    return out


def remove_orphan_files(lake: "LakeResource", identifier: str, older_than: dt.datetime) -> OrphanResult:
    """Delete files under the table's location that no snapshot or metadata file references and that were last
    written before ``older_than`` (Iceberg's delete-orphan-files): what a writer left when it died between
    writing a file and committing it, or a commit that failed for good. Such a file can hold rows that were
    never visible, and so were never reached by an erasure either. Metadata JSON files are never touched.

    The age limit protects writers in flight (a file is written seconds before its commit); the table's
    snapshots are read after the listing, so a file committed while the listing runs is referenced by then.
    """
    from pyiceberg.io.pyarrow import PyArrowFileIO
    import pyarrow.fs as pafs

    result = OrphanResult(table=identifier)
    table = lake.load_table(identifier)
    io = table.io
    if not isinstance(io, PyArrowFileIO):
        raise TypeError(f"{identifier}: listing files needs pyiceberg's PyArrowFileIO, not {type(io).__name__}")
    scheme, netloc, root = io.parse_location(table.location())
    fs = io.fs_by_scheme(scheme, netloc)
    root = root.rstrip("/")
    # only what lies under the table's own folder: a sibling whose name starts the same (ops.events_archive
    # beside ops.events) is another table's, whatever a store's prefix listing returns
    listed = [info for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
              if info.type == pafs.FileType.File and info.path.startswith(root + "/")]
    result.files_listed = len(listed)
    table.refresh()  # after the listing: a file committed meanwhile is referenced now
    referenced = {io.parse_location(path)[2] for path in referenced_files(table)}
    cutoff = older_than.timestamp()
    for info in listed:
        if info.path in referenced or info.path.endswith(".metadata.json") or info.base_name == "version-hint.text":
            continue
        if info.mtime is None or info.mtime.timestamp() >= cutoff:
            result.orphans_too_young += 1
            continue
        try:
            fs.delete_file(info.path)
        except FileNotFoundError:
            continue
        result.orphans_deleted += 1
        result.bytes_deleted += info.size or 0
    return result


# -- storage report -------------------------------------------------------------------------------------------

def storage_report(lake: "LakeResource", identifier: str, min_input_files: int = 5) -> dict:
    """How a table is stored now, for deciding on maintenance: live data files and bytes, small files and the
    partitions the next compaction would rewrite, snapshots and the age of the oldest (what expiry trims)."""
    from pyiceberg.table import TableProperties

    table = lake.load_table(identifier)
    snapshot = table.current_snapshot()
    tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files()) if snapshot else []
    target = int(table.metadata.properties.get(TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                                               TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT))
    groups, _ = _small_file_groups(table, tasks, min_input_files, target)
    oldest = min((s.timestamp_ms for s in table.metadata.snapshots), default=None)
    return {
        "table": identifier,
        "data_files": len(tasks),
        "data_bytes": sum(t.file.file_size_in_bytes for t in tasks),
        "small_files": sum(1 for t in tasks if t.file.file_size_in_bytes < small_file_limit(target)),
        "partitions_to_compact": len({key for key, _ in groups}),
        "snapshots": len(table.metadata.snapshots),
        "oldest_snapshot": (dt.datetime.fromtimestamp(oldest / 1000, tz=dt.timezone.utc)
                            if oldest is not None else None),
    }
