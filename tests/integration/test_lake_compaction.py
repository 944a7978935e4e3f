"""Compaction of small files, data retention and orphan-file removal on real Iceberg tables (local catalog
and files).

Compaction must change how the rows are stored and nothing else: the same rows before and after, rows another
writer adds meanwhile kept, rows another writer replaced meanwhile never brought back. Retention deletes by
age and nothing else, and never touches the tables that keep the platform idempotent. The orphan sweep deletes
only files nothing references, and none a writer may be about to commit.
"""

import datetime as dt
import os
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pytest

DAY1, DAY2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
TABLE = "ops.events"


def _batch(start: int, day: dt.date, rows: int = 3, note: str | None = None) -> pa.Table:
    columns = {"event_id": pa.array(range(start, start + rows), pa.int64()),
               "partition_date": pa.array([day] * rows, pa.date32())}
    if note is not None:
        columns["note"] = pa.array([note] * rows)
    return pa.table(columns)


def _live_files(lake, identifier=TABLE) -> dict[str, int]:
    """Live data files of the current snapshot by partition path."""
    out: dict[str, int] = {}
    for task in lake.load_table(identifier).scan().plan_files():
        folder = task.file.file_path.rsplit("/", 2)[-2]
        out[folder] = out.get(folder, 0) + 1
    return out


def _rows(lake, identifier=TABLE) -> list[tuple]:
    table = lake.read(identifier)
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names)), key=repr)


@pytest.fixture
def appended_lake(lake):
    """Six small appends to DAY1 (a column added after the third) and two to DAY2: the shape of a log or
    ledger table after a week of small writes."""
    for i in range(6):
        lake.append(TABLE, _batch(10 * i, DAY1, note="late" if i >= 3 else None), partition_by="partition_date")
    for i in range(2):
        lake.append(TABLE, _batch(100 + 10 * i, DAY2), partition_by="partition_date")
    return lake


def test_compaction_rewrites_a_partitions_small_files_as_one_and_keeps_every_row(appended_lake):
    from resources.lake_maintenance import compact_table, expire_snapshots

    lake = appended_lake
    before_rows, before_snapshots = _rows(lake), len(lake.load_table(TABLE).snapshots())
    assert _live_files(lake) == {"partition_date=2024-01-02": 6, "partition_date=2024-01-03": 2}

    result = compact_table(lake, TABLE)

    assert (result.partitions_compacted, result.files_rewritten, result.files_written, result.rows_rewritten) == \
        (1, 6, 1, 18)
    # DAY2's two files are below the five worth a rewrite
    assert _live_files(lake) == {"partition_date=2024-01-02": 1, "partition_date=2024-01-03": 2}
    # the same rows, including the column the first three files never had (null there, as before)
    assert _rows(lake) == before_rows
    notes = dict(zip(*(lake.read(TABLE).column(c).to_pylist() for c in ("event_id", "note"))))
    assert notes[0] is None and notes[30] == "late"
    table = lake.load_table(TABLE)
    assert len(table.snapshots()) == before_snapshots + 1
    assert table.current_snapshot().summary["platformq.operation"] == "compaction"
    # the new file is an ordinary partition file: a partition read prunes to it
    assert lake.read_partition(TABLE, "partition_date", DAY1).num_rows == 18

    # nothing left to do: a second run commits nothing
    again = compact_table(lake, TABLE)
    assert again.files_rewritten == 0 and len(lake.load_table(TABLE).snapshots()) == before_snapshots + 1

    # the small files stay for time travel until expiry; then they leave the disk
    folder = Path(urlparse(table.location()).path) / "data" / "partition_date=2024-01-02"
    assert len(list(folder.glob("*.parquet"))) == 7
    expire_snapshots(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1),
                     retain_last=1)
    assert len(list(folder.glob("*.parquet"))) == 1
    assert _rows(lake) == before_rows


def test_the_storage_report_shows_what_compaction_and_expiry_would_do(appended_lake):
    from resources.lake_maintenance import compact_table, expire_snapshots, storage_report

    lake = appended_lake
    before = storage_report(lake, TABLE)
    assert (before["data_files"], before["small_files"], before["partitions_to_compact"], before["snapshots"]) == \
        (8, 8, 1, 8)
    assert before["data_bytes"] > 0 and before["oldest_snapshot"] <= dt.datetime.now(dt.timezone.utc)
    compact_table(lake, TABLE)
    expire_snapshots(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1),
                     retain_last=1)
    after = storage_report(lake, TABLE)
    assert (after["data_files"], after["partitions_to_compact"], after["snapshots"]) == (3, 0, 1)


def test_compaction_honours_its_thresholds(appended_lake):
    from resources.lake_maintenance import compact_table

    lake = appended_lake
    assert compact_table(lake, TABLE, min_input_files=7).files_rewritten == 0
    # files over 75 % of the target are not small: nothing to do
    assert compact_table(lake, TABLE, target_bytes=1).files_rewritten == 0
    # a target that holds three of these files: DAY1's six become two, DAY2's two (now enough) one
    size = max(t.file.file_size_in_bytes for t in lake.load_table(TABLE).scan().plan_files())
    result = compact_table(lake, TABLE, min_input_files=2, target_bytes=size * 3 + 1)
    assert (result.partitions_compacted, result.files_rewritten, result.files_written) == (2, 8, 3)
    assert _live_files(lake) == {"partition_date=2024-01-02": 2, "partition_date=2024-01-03": 1}


def test_rows_appended_while_compaction_runs_are_kept(appended_lake, monkeypatch):
    """Another writer appends to the partition being compacted after the rewrite read its files and before it
    commits: the file swap fails validation (pyiceberg checks overwrites serializably); the files read are all
    still there, so the swap of the file already written is committed on the new snapshot, beside the appended
    file: the appended rows are kept, once, and nothing is read twice."""
    from pyiceberg.io.pyarrow import ArrowScan

    from resources.lake_maintenance import compact_table

    lake = appended_lake
    before = _rows(lake)
    read = ArrowScan.to_table
    raced = []

    def read_then_race(self, tasks):
        out = read(self, tasks)
        if not raced:
            raced.append(True)
            lake.append(TABLE, _batch(500, DAY1), partition_by="partition_date")
        return out

    monkeypatch.setattr(ArrowScan, "to_table", read_then_race)
    result = compact_table(lake, TABLE)
    monkeypatch.setattr(ArrowScan, "to_table", read)

    assert raced
    assert _rows(lake) == sorted(before + [(500 + i, DAY1, None) for i in range(3)], key=repr)
    assert (result.files_rewritten, result.rows_rewritten) == (6, 18)
    assert _live_files(lake)["partition_date=2024-01-02"] == 2


def test_compaction_commits_while_another_writer_keeps_appending_to_the_table(appended_lake, monkeypatch):
    """A busy table: another writer appends (to another day) after every read of the rewrite. Each append made
    the swap fail validation and the rewrite start over, read everything again and lose the same race, until
    it gave up with CommitFailedException and failed the maintenance job (expiry and the orphan sweep after it
    never ran). The files read are untouched by an append, so the written file is swapped in on the new
    snapshot."""
    from pyiceberg.io.pyarrow import ArrowScan

    from resources.lake_maintenance import compact_table

    lake = appended_lake
    before = _rows(lake)
    read = ArrowScan.to_table
    reads = []

    def read_then_append(self, tasks):
        out = read(self, tasks)
        reads.append(len(tasks))
        lake.append(TABLE, _batch(1000 + 10 * len(reads), DAY2 + dt.timedelta(days=1)), partition_by="partition_date")
        return out

    monkeypatch.setattr(ArrowScan, "to_table", read_then_append)
    result = compact_table(lake, TABLE)
    monkeypatch.setattr(ArrowScan, "to_table", read)

    assert reads == [6] and (result.files_rewritten, result.rows_rewritten) == (6, 18)
    assert _rows(lake) == sorted(before + [(1010 + i, DAY2 + dt.timedelta(days=1), None) for i in range(3)], key=repr)
    assert _live_files(lake)["partition_date=2024-01-02"] == 1


def test_a_partition_replaced_while_compaction_runs_is_not_brought_back(appended_lake, monkeypatch):
    """Another writer replaces the partition after the rewrite read it: the rewrite's files are gone, so its
    commit fails validation and it starts over from the new snapshot; the old rows never return."""
    from pyiceberg.io.pyarrow import ArrowScan

    from resources.lake_maintenance import compact_table

    lake = appended_lake
    read = ArrowScan.to_table
    raced = []

    def read_then_replace(self, tasks):
        out = read(self, tasks)
        if not raced:
            raced.append(True)
            lake.replace_partition(TABLE, _batch(900, DAY1, rows=2), "partition_date", DAY1)
        return out

    monkeypatch.setattr(ArrowScan, "to_table", read_then_replace)
    result = compact_table(lake, TABLE)
    monkeypatch.setattr(ArrowScan, "to_table", read)

    assert raced
    day1 = sorted(lake.read_partition(TABLE, "partition_date", DAY1).column("event_id").to_pylist())
    assert day1 == [900, 901]
    # on its second look the partition had one file: nothing to compact, no file left behind
    assert result.files_rewritten == 0
    folder = Path(urlparse(lake.load_table(TABLE).location()).path) / "data" / "partition_date=2024-01-02"
    referenced = {Path(urlparse(p).path).name for s in lake.load_table(TABLE).snapshots()
                  for p in _files_of(lake, s.snapshot_id)}
    assert {p.name for p in folder.glob("*.parquet")} <= referenced


def _files_of(lake, snapshot_id) -> list[str]:
    return [t.file.file_path for t in lake.load_table(TABLE).scan(snapshot_id=snapshot_id).plan_files()]


def _quarantine(ages_days: list[float | None], now: dt.datetime) -> pa.Table:
    stamps = [None if a is None else now - dt.timedelta(days=a) for a in ages_days]
    return pa.table({"raw_record": [f"r{i}" for i in range(len(stamps))],
                     "quarantined_at": pa.array(stamps, pa.timestamp("us", tz="UTC"))})


def test_retention_deletes_rows_older_than_the_policy_and_nothing_else(lake):
    from resources.lake_maintenance import apply_retention

    now = dt.datetime.now(dt.timezone.utc)
    lake.append("quarantine.landing", _quarantine([200, 120, 91, 89, 1], now))
    lake.append("quarantine.landing", _quarantine([95, None], now))  # undated: age unknown, kept

    result = apply_retention(lake, "quarantine.landing", "quarantined_at", 90, now=now)

    assert result.rows_deleted == 4
    kept = lake.read("quarantine.landing")
    assert sorted(kept.column("raw_record").to_pylist()) == ["r1", "r3", "r4"]  # 89 d, 1 d, undated
    assert lake.load_table("quarantine.landing").current_snapshot().summary["platformq.operation"] == "retention"
    # idempotent: nothing older is left, nothing is committed
    snapshots = len(lake.load_table("quarantine.landing").snapshots())
    assert apply_retention(lake, "quarantine.landing", "quarantined_at", 90, now=now).rows_deleted == 0
    assert len(lake.load_table("quarantine.landing").snapshots()) == snapshots


def test_retention_by_a_date_partition_drops_whole_partitions(lake):
    from resources.lake_maintenance import apply_retention

    for day in (DAY1, DAY2):
        lake.replace_partition(TABLE, _batch(0 if day == DAY1 else 10, day), "partition_date", day)
    # a day is older than one day once the day after it has passed: at noon on DAY2 neither day is
    at_noon = dt.time(12, tzinfo=dt.timezone.utc)
    assert apply_retention(lake, TABLE, "partition_date", 1, now=dt.datetime.combine(DAY2, at_noon)).rows_deleted == 0
    result = apply_retention(lake, TABLE, "partition_date", 1,
                             now=dt.datetime.combine(DAY2 + dt.timedelta(days=1), at_noon))
    assert result.rows_deleted == 3 and result.cutoff == DAY2.isoformat()
    assert _live_files(lake) == {"partition_date=2024-01-03": 1}


def test_retention_refuses_protected_tables_and_columns_that_do_not_date_a_row(lake):
    from resources.lake_maintenance import apply_retention

    lake.append("ops.landing_files", pa.table({"file": ["a.csv"], "ingested_at": pa.array(
        [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC"))}))
    with pytest.raises(ValueError, match="never subject to retention.*ingested twice"):
        apply_retention(lake, "ops.landing_files", "ingested_at", 1)
    assert lake.read("ops.landing_files").num_rows == 1
    lake.append(TABLE, _batch(0, DAY1), partition_by="partition_date")
    with pytest.raises(ValueError, match="not a date or timestamp"):
        apply_retention(lake, TABLE, "event_id", 1)
    with pytest.raises(ValueError, match="no column 'created'"):
        apply_retention(lake, TABLE, "created", 1)


def test_the_maintenance_job_runs_retention_and_compaction_before_expiry(settings, appended_lake):
    """Through Dagster, as the nightly schedule runs it: erasure, retention, compaction, expiry, in order;
    after it the compacted partition is one file on disk and the old quarantined records are gone."""
    from dagster import AssetKey, DagsterInstance

    from platformq_assets.definitions import build_definitions

    lake = appended_lake
    now = dt.datetime.now(dt.timezone.utc)
    lake.append("quarantine.landing", _quarantine([120, 10], now))
    rows = _rows(lake)
    result = build_definitions(settings).resolve_job_def("lake_maintenance").execute_in_process(
        instance=DagsterInstance.get(), run_config={"ops": {"maintenance__snapshot_expiry": {
            "config": {"retention_days": 0, "retain_last": 1}}}})
    assert result.success
    order = [e.asset_key.path[-1] for e in result.get_asset_materialization_events()]
    assert order == ["erasure_log", "data_retention", "compaction", "snapshot_expiry", "orphan_files"]
    meta = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta[AssetKey(["maintenance", "data_retention"])]["rows_deleted"].value == 1
    assert meta[AssetKey(["maintenance", "compaction"])]["files_rewritten"].value == 6
    assert lake.read("quarantine.landing").column("raw_record").to_pylist() == ["r1"]
    assert _rows(lake) == rows
    folder = Path(urlparse(lake.load_table(TABLE).location()).path) / "data" / "partition_date=2024-01-02"
    assert len(list(folder.glob("*.parquet"))) == 1


@pytest.mark.slow  # two servers
def test_compaction_and_retention_on_the_production_twins_postgres_catalog_and_s3(production):
    """The same rewrite with the catalog on Postgres and the files in an S3 bucket (moto_server): the new file
    is written to the bucket, expiry then deletes the small files from it, and the orphan sweep lists the
    bucket and deletes an object nothing references."""
    import pyarrow.fs as pafs

    from resources import lake_resource
    from resources.lake_maintenance import apply_retention, compact_table, expire_snapshots, remove_orphan_files

    settings, endpoint, _db = production
    lake = lake_resource(settings)
    for i in range(5):
        lake.append(TABLE, _batch(10 * i, DAY1), partition_by="partition_date")
    assert lake.load_table(TABLE).location().startswith("s3://lake/")
    s3 = pafs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test", scheme="http",
                           region="us-east-1")

    def data_objects() -> set[str]:
        return {i.path for i in s3.get_file_info(pafs.FileSelector("lake/warehouse", recursive=True))
                if i.type == pafs.FileType.File and "/ops/events/data/" in i.path}

    small = data_objects()
    rows = _rows(lake)
    assert len(small) == 5
    assert compact_table(lake, TABLE).files_rewritten == 5
    assert _rows(lake) == rows and _live_files(lake) == {"partition_date=2024-01-02": 1}
    expire_snapshots(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1),
                     retain_last=1)
    remaining = data_objects()
    assert len(remaining) == 1 and not remaining & small

    lake.append("quarantine.landing", _quarantine([120, 10], dt.datetime.now(dt.timezone.utc)))
    assert apply_retention(lake, "quarantine.landing", "quarantined_at", 90).rows_deleted == 1
    assert lake.read("quarantine.landing").column("raw_record").to_pylist() == ["r1"]

    # an object left in the bucket by a writer that never committed (moto cannot backdate it: the limit
    # is set past it instead)
    stray = "lake/warehouse/ops/events/data/partition_date=2024-01-02/stray.parquet"
    # and an object of another prefix that starts the same: not this table's, never touched
    neighbour = "lake/warehouse/ops/events_archive/data/kept.parquet"
    for key in (stray, neighbour):
        with s3.open_output_stream(key) as out:
            out.write(b"PAR1 never committed")
    swept = remove_orphan_files(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5))
    assert swept.orphans_deleted == 1 and stray not in data_objects()
    assert data_objects() == remaining and _rows(lake) == rows
    assert s3.get_file_info(neighbour).type == pafs.FileType.File


def _age(path: Path, days: float) -> None:
    stamp = (dt.datetime.now() - dt.timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))


def test_the_orphan_sweep_deletes_old_unreferenced_files_and_nothing_else(appended_lake, monkeypatch):
    """A write that died between its file and its commit leaves a file no snapshot references (here the
    commit is made to fail); so does expiry done with pyiceberg alone (metadata only). The sweep deletes those
    older than the limit, keeps a young one (a commit may be in flight) and every referenced file."""
    from pyiceberg.table import Transaction

    from resources.lake_maintenance import remove_orphan_files

    lake = appended_lake
    table = lake.load_table(TABLE)
    root = Path(urlparse(table.location()).path)
    rows = _rows(lake)

    def crash(self, *args, **kwargs):
        raise RuntimeError("writer killed before its commit")

    monkeypatch.setattr(Transaction, "add_files", crash)
    for start in (700, 800):
        with pytest.raises(RuntimeError, match="killed"):
            lake.append(TABLE, _batch(start, DAY2), partition_by="partition_date")
    monkeypatch.undo()
    on_disk = {p for p in root.rglob("*") if p.is_file()}
    referenced = {Path(urlparse(p).path) for p in _referenced(lake)}
    stray = sorted((p for p in on_disk - referenced if p.suffix == ".parquet"), key=lambda p: p.stat().st_mtime)
    assert len(stray) == 2  # the two dead writes' files
    old_stray, young_stray = stray
    _age(old_stray, 4)
    # snapshots expired by pyiceberg alone: their files stay behind, unreferenced
    oldest = min(lake.load_table(TABLE).snapshots(), key=lambda s: s.timestamp_ms)
    gone_with_it = {Path(urlparse(p).path) for p in _referenced(lake, oldest.snapshot_id)}
    lake.load_table(TABLE).maintenance.expire_snapshots().by_id(oldest.snapshot_id).commit()
    left_behind = gone_with_it - {Path(urlparse(p).path) for p in _referenced(lake)}
    assert left_behind  # at least its manifest list
    for path in left_behind:
        _age(path, 4)
    metadata_json = sorted(root.glob("metadata/*.metadata.json"))
    for path in metadata_json:
        _age(path, 4)

    result = remove_orphan_files(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))

    assert result.orphans_deleted == 1 + len(left_behind) and result.orphans_too_young == 1
    assert not old_stray.exists() and young_stray.exists()
    assert not any(p.exists() for p in left_behind)
    assert all(Path(urlparse(p).path).exists() for p in _referenced(lake))
    assert all(p.exists() for p in metadata_json)  # metadata files are left to the table's own clean-up
    assert _rows(lake) == rows
    # a second sweep finds nothing more to delete
    assert remove_orphan_files(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
                               ).orphans_deleted == 0


def test_the_orphan_sweep_never_reaches_into_a_sibling_table(appended_lake):
    """ops.events_archive lives beside ops.events, its folder name starting with the other's: sweeping
    ops.events with no age limit leaves every file of the archive, referenced or not."""
    from resources.lake_maintenance import remove_orphan_files

    lake = appended_lake
    lake.append("ops.events_archive", _batch(0, DAY1), partition_by="partition_date")
    sibling = Path(urlparse(lake.load_table("ops.events_archive").location()).path)
    assert sibling.name.startswith(Path(urlparse(lake.load_table(TABLE).location()).path).name)
    stray = sibling / "data" / "stray.parquet"
    stray.write_bytes(b"not referenced by ops.events_archive either")
    before = {p for p in sibling.rglob("*") if p.is_file()}
    swept = remove_orphan_files(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
    assert swept.orphans_deleted == 0
    assert {p for p in sibling.rglob("*") if p.is_file()} == before


def _referenced(lake, snapshot_id=None) -> set[str]:
    from resources.lake_maintenance import reachable_files, referenced_files

    table = lake.load_table(TABLE)
    if snapshot_id is None:
        return referenced_files(table)
    reached = reachable_files(table, {snapshot_id})
    return reached["lists"] | reached["manifests"] | reached["data"]


def test_compacted_files_carry_field_ids_so_tables_pyiceberg_wrote_stay_readable(lake):
    """A batch spanning several partitions goes through pyiceberg's own append: its files carry Iceberg field
    ids and the table gets no name mapping. Compaction wrote its files without field ids, and every read of
    the table failed afterwards ("Parquet file does not have field-ids and the Iceberg table does not have
    'schema.name-mapping.default' defined")."""
    from resources.lake_maintenance import compact_table

    for i in range(3):
        lake.append(TABLE, pa.concat_tables([_batch(10 * i, DAY1), _batch(100 + 10 * i, DAY2)]),
                    partition_by="partition_date")
    before = _rows(lake)
    result = compact_table(lake, TABLE, min_input_files=2)
    assert result.files_rewritten == 6 and result.files_written == 2
    assert _rows(lake) == before and len(before) == 18
    lake.append(TABLE, _batch(200, DAY1, note="after"), partition_by="partition_date")  # and it evolves as before
    assert len(_rows(lake)) == 21


def _replaced_five_times(lake) -> list[tuple]:
    """Five replacements of DAY1: a snapshot history whose older snapshots reach files the current one does not."""
    for i in range(5):
        lake.replace_partition(TABLE, _batch(10 * i, DAY1), "partition_date", DAY1)
    return _rows(lake)


def test_an_expiry_interrupted_while_deleting_manifest_lists_is_finished_by_a_run_that_keeps_more(lake, monkeypatch):
    """An erasure's expiry (every snapshot but the current one) killed after it deleted the data files and
    manifests and while deleting the manifest lists leaves snapshots nothing can read. The nightly expiry (a
    week, the newest five) kept them, so the orphan sweep after it failed on their missing manifests
    (FileNotFoundError) every night, and so did the expiry itself once any older snapshot was due. They are
    expired with the others instead: nothing can read them."""
    from resources import lake_maintenance
    from resources.lake_maintenance import expire_snapshots, remove_orphan_files

    rows = _replaced_five_times(lake)
    before = len(lake.load_table(TABLE).snapshots())
    delete = lake_maintenance._delete

    def killed_at_the_first_list(table, path, result):
        if "/snap-" in path:
            raise KeyboardInterrupt("step killed")
        delete(table, path, result)

    monkeypatch.setattr(lake_maintenance, "_delete", killed_at_the_first_list)
    with pytest.raises(KeyboardInterrupt):
        expire_snapshots(lake, TABLE, older_than=dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc), retain_last=0)
    monkeypatch.setattr(lake_maintenance, "_delete", delete)
    assert len(lake.load_table(TABLE).snapshots()) == before  # the commit never came

    result = expire_snapshots(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7),
                              retain_last=5)
    table = lake.load_table(TABLE)
    assert result.snapshots_expired == before - 1 and [s.snapshot_id for s in table.snapshots()] == \
        [table.current_snapshot().snapshot_id]
    assert _rows(lake) == rows
    swept = remove_orphan_files(lake, TABLE, older_than=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5))
    assert _rows(lake) == rows and swept.files_listed > 0


def test_an_expiry_whose_data_file_delete_failed_finds_that_file_again_on_the_next_run(lake, monkeypatch):
    """A data file the store refused to delete: the run raises and keeps the snapshots "so that the next run
    finds these files again", but it went on to delete their manifests and manifest lists, so the next run
    could no longer name the file and committed the expiry with the file still in storage."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    from resources.lake_maintenance import expire_snapshots

    rows = _replaced_five_times(lake)
    table = lake.load_table(TABLE)
    current = {t.file.file_path for t in table.scan().plan_files()}
    old = sorted({t.file.file_path for s in table.snapshots() for t in table.scan(snapshot_id=s.snapshot_id).plan_files()}
                 - current)
    refused = old[0]
    io_delete = PyArrowFileIO.delete

    def refusing(self, location):
        if str(location) == refused:
            raise PermissionError(f"AccessDenied: {location}")
        return io_delete(self, location)

    monkeypatch.setattr(PyArrowFileIO, "delete", refusing)
    end = dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(OSError, match="could not delete 1 file"):
        expire_snapshots(lake, TABLE, older_than=end, retain_last=0)
    monkeypatch.setattr(PyArrowFileIO, "delete", io_delete)

    result = expire_snapshots(lake, TABLE, older_than=end, retain_last=0)
    assert result.snapshots_expired > 0 and result.files_deleted >= 1
    assert not Path(urlparse(refused).path).exists()
    assert _rows(lake) == rows


def test_rows_retention_deleted_leave_storage_within_the_expiry_retention_on_a_quiet_table(lake):
    """Retention's deleted rows "leave storage when snapshot expiry removes the snapshots that still reach them,
    so at most retention_days later". On a table written a few times a month (the quarantine, its default
    policy), the snapshots before the retention commit were among the newest five that expiry keeps whatever
    their age, so the raw records stayed in storage (and in time travel) until five more writes came."""
    from resources.lake_maintenance import apply_retention, expire_snapshots

    now = dt.datetime.now(dt.timezone.utc)
    for ages in ([200, 1], [120], [95]):
        lake.append("quarantine.landing", _quarantine(ages, now))
    table = lake.load_table("quarantine.landing")
    old_files = {t.file.file_path for t in table.scan().plan_files()}
    assert apply_retention(lake, "quarantine.landing", "quarantined_at", 90, now=now).rows_deleted == 3
    kept = lake.read("quarantine.landing").column("raw_record").to_pylist()

    # a week later (the expiry's cutoff is past every snapshot), with its default of keeping the newest five
    result = expire_snapshots(lake, "quarantine.landing", older_than=dt.datetime.now(dt.timezone.utc)
                              + dt.timedelta(seconds=1), retain_last=5)

    # the three appends, and the retention's own first commit (its whole-file deletes, before the rewrite of
    # the file that also held a young row), which still reached the 200-day-old record
    assert result.snapshots_expired == 4
    assert not any(Path(urlparse(p).path).exists() for p in old_files)
    table = lake.load_table("quarantine.landing")
    assert [s.snapshot_id for s in table.snapshots()] == [table.current_snapshot().snapshot_id]
    assert lake.read("quarantine.landing").column("raw_record").to_pylist() == kept


def test_snapshots_before_a_retention_commit_younger_than_the_cutoff_are_kept(lake):
    """Until the retention commit is itself older than the expiry's cutoff, time travel to before it stays."""
    from resources.lake_maintenance import apply_retention, expire_snapshots

    now = dt.datetime.now(dt.timezone.utc)
    for ages in ([200, 1], [120]):
        lake.append("quarantine.landing", _quarantine(ages, now))
    apply_retention(lake, "quarantine.landing", "quarantined_at", 90, now=now)
    result = expire_snapshots(lake, "quarantine.landing", older_than=now - dt.timedelta(days=7), retain_last=5)
    assert result.snapshots_expired == 0 and result.snapshots_kept == 4


def test_one_broken_table_does_not_stop_maintenance_of_the_others(lake):
    """A table whose metadata file is gone (or that pyiceberg cannot plan) failed compaction at that table every
    night: the tables listed after it were not compacted, and expiry and the orphan sweep, which follow
    compaction, never ran for any table. Now every step does every other table, and the job's last step fails
    the run naming what could not be done."""
    from dagster import DagsterInstance, materialize

    from platformq_assets.lake.maintenance import compaction, orphan_files, snapshot_expiry

    for name in ("aaa_broken", "zzz_fine"):
        for i in range(3):
            lake.append(f"scratch.{name}", pa.table({"x": [i]}))
    broken = lake.load_table("scratch.aaa_broken")
    Path(urlparse(broken.metadata_location).path).unlink()  # its current metadata file, lost
    result = materialize([compaction, snapshot_expiry, orphan_files], resources={"lake": lake},
                         instance=DagsterInstance.ephemeral(), raise_on_error=False,
                         run_config={"ops": {"maintenance__snapshot_expiry": {"config": {
                             "retention_days": 0, "retain_last": 1}}}})
    assert not result.success
    meta = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["compaction"]["tables_failed"].value == 1 and meta["snapshot_expiry"]["tables_failed"].value == 1
    assert "scratch.aaa_broken" in meta["snapshot_expiry"]["failed_tables"].value
    assert len(lake.load_table("scratch.zzz_fine").snapshots()) == 1  # expired, although a table failed before
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "maintenance__orphan_files"
    message = str(failure.event_specific_data.error)
    assert "compaction: scratch.aaa_broken" in message and "snapshot expiry: scratch.aaa_broken" in message
