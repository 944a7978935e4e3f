"""Snapshot expiry with file clean-up for the lake's Iceberg tables (no Dagster here).

pyiceberg's ``expire_snapshots`` removes snapshots from the table's metadata only: the data files, manifests
and manifest lists that only those snapshots reached stay in storage, and so does every row a later commit
deleted. ``expire_snapshots`` below also deletes the files that only the expired snapshots reach (what
Iceberg's own ExpireSnapshots action does), data files first, then manifests, then manifest lists, and only
then commits the expiry: a run interrupted at any point is finished by the next one, which still sees the
snapshots and reads whatever of their manifests is left. Files that no snapshot ever referenced (a failed
commit's data file, a writer's commit still in flight) are never touched, and the current snapshot is never
expired, so a writer racing with the clean-up cannot lose a file. Metadata JSON files are left to the table's
``write.metadata.delete-after-commit.enabled``: they hold the schema and snapshot summaries (counts), never
row values.
"""
from __future__ import annotations

import datetime as dt
import random
import time
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


def reachable_files(table: "Table", snapshot_ids: set[int] | None = None, missing_ok: bool = False) -> dict[str, set[str]]:
    """Files the given snapshots (default: all) reach, by kind: ``lists`` (manifest lists), ``manifests`` and
    ``data`` (live data and delete files). ``missing_ok`` skips a manifest list or manifest already deleted
    (the clean-up of an interrupted expiry)."""
    io = table.io
    out: dict[str, set[str]] = {"lists": set(), "manifests": set(), "data": set()}
    for snapshot in table.metadata.snapshots:
        if snapshot_ids is not None and snapshot.snapshot_id not in snapshot_ids:
            continue
        out["lists"].add(snapshot.manifest_list)
        try:
            manifests = snapshot.manifests(io)
        except FileNotFoundError:
            if not missing_ok:
                raise
            continue
        for manifest in manifests:
            if manifest.manifest_path in out["manifests"]:
                continue
            out["manifests"].add(manifest.manifest_path)
            try:
                entries = manifest.fetch_manifest_entry(io, discard_deleted=True)
            except FileNotFoundError:
                if not missing_ok:
                    raise
                continue
            out["data"].update(entry.data_file.file_path for entry in entries)
    return out


def snapshots_to_expire(table: "Table", older_than: dt.datetime, retain_last: int) -> list[int]:
    """Snapshots older than ``older_than``, except the newest ``retain_last`` and every branch or tag head."""
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    newest_first = sorted(table.metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0),
                          reverse=True)
    kept_recent = {s.snapshot_id for s in newest_first[:max(retain_last, 0)]}
    cutoff_ms = int(older_than.timestamp() * 1000)
    return [s.snapshot_id for s in newest_first
            if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected and s.snapshot_id not in kept_recent]


def expire_snapshots(lake: "LakeResource", identifier: str, older_than: dt.datetime,
                     retain_last: int = 1) -> ExpiryResult:
    """Expire the table's snapshots older than ``older_than`` (keeping the newest ``retain_last`` and the
    current one) and delete the files only they reach. Safe to re-run: a run interrupted after deleting some
    files is finished by the next; a run with nothing to expire changes nothing."""
    from pyiceberg.exceptions import CommitFailedException

    from resources.lake import COMMIT_ATTEMPTS

    result = ExpiryResult(table=identifier)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table = lake.load_table(identifier)
        expired = set(snapshots_to_expire(table, older_than, retain_last))
        if not expired:
            result.snapshots_kept = len(table.metadata.snapshots)
            return result
        kept = {s.snapshot_id for s in table.metadata.snapshots} - expired
        # what the kept snapshots reach must all be there: a missing file there is damage, not clean-up
        needed = reachable_files(table, kept)
        doomed = reachable_files(table, expired, missing_ok=True)
        for kind in ("data", "manifests", "lists"):  # the order that lets an interrupted run be finished
            for path in sorted(doomed[kind] - needed[kind]):
                _delete(table, path, result)
        if result.failed_deletes:  # keep the snapshots, so that the next run finds these files again
            raise OSError(f"{identifier}: could not delete {len(result.failed_deletes)} file(s), e.g. "
                          f"{result.failed_deletes[0]}; the snapshots stay until a run deletes them")
        try:
            table.maintenance.expire_snapshots().by_ids(sorted(expired)).commit()
            break
        except CommitFailedException:  # another writer committed first: look again (its files are kept)
            if attempt == COMMIT_ATTEMPTS:
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
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
