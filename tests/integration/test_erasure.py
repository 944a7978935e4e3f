"""Erasure requests and snapshot expiry on real Iceberg tables (local catalog and files).

An erasure must leave no row naming the subject in the current tables, none reachable by time travel and
none in a file still on disk; what others did with the subject (trades, orders in the book) stays, without it.
"""

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DAY1, DAY2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
ACME, BOREALIS = "t-acme", "t-borealis"
# account -> tenant; 2 is the subject (Acme), 3 belongs to Borealis
TENANT_OF = {1: ACME, 2: ACME, 3: BOREALIS}
# the subject's email sorts first: it is the lower bound in the column statistics Iceberg keeps in manifests
EMAIL_OF = {1: "person1@example.org", 2: "a.subject@example.org", 3: "person3@example.org"}


def _accounts(day):
    ids = sorted(TENANT_OF)
    return pa.table({"account_id": pa.array(ids, pa.int64()), "tenant_id": [TENANT_OF[i] for i in ids],
                     "full_name": [f"Person {i}" for i in ids], "email": [EMAIL_OF[i] for i in ids],
                     "partition_date": pa.array([day] * len(ids), pa.date32())})


def _orders(day):
    return pa.table({"order_id": pa.array([f"{day}-o{i}" for i in range(4)]),
                     "account_id": pa.array([1, 2, 2, 3], pa.int64()), "qty_lots": pa.array([1, 2, 3, 4], pa.int64()),
                     "partition_date": pa.array([day] * 4, pa.date32())})


def _fills(day):
    # trade 1: 2 buys from 1; trade 2: 3 buys from 1
    return pa.table({"fill_id": [f"{day}-f{i}" for i in range(4)], "trade_id": pa.array([1, 1, 2, 2], pa.int64()),
                     "account_id": pa.array([2, 1, 3, 1], pa.int64()),
                     "counterparty_account_id": pa.array([1, 2, 1, 3], pa.int64()),
                     "side": ["BUY", "SELL", "BUY", "SELL"], "partition_date": pa.array([day] * 4, pa.date32())})


def _positions(day):
    return pa.table({"account_id": pa.array([1, 2, 3], pa.int64()), "tenant_id": [ACME, ACME, BOREALIS],
                     "pnl": [1.0, -2.0, 3.0], "partition_date": pa.array([day] * 3, pa.date32())})


def _labels(day):
    return pa.table({"anomaly_id": [f"{day}-a1", f"{day}-a2", f"{day}-a3"], "account_ids": ["2,3", "", "1"],
                     "partition_date": pa.array([day] * 3, pa.date32())})


BUILDERS = {"bronze.accounts": _accounts, "bronze.orders": _orders, "bronze.fills": _fills,
            "gold.positions_pnl": _positions, "bronze.anomaly_labels": _labels}


@pytest.fixture
def small_lake(lake):
    for day in (DAY1, DAY2):  # two days, each its own snapshot: history to expire
        for identifier, build in BUILDERS.items():
            lake.replace_partition(identifier, build(day), "partition_date", day)
    lake.replace_partition("bronze.accounts", _accounts(DAY2), "partition_date", DAY2)  # a re-run: a third
    lake.append("quarantine.landing", _quarantined())
    return lake


QUARANTINED = ['{"account_id": 2, "risk_score": "high"}', '{"account_id": "2", "event": "kyc"}',
               '{"account_id": 3, "risk_score": "low"}', '2,kyc_reviewed,not-a-date', '{"account_id": 2, "event": ',
               '[2]', '{"account_id": true}']


def _quarantined():
    n = len(QUARANTINED)
    at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)  # within the 90-day retention
    return pa.table({"source": ["kyc_events"] * n, "file": ["kyc_events/old.jsonl"] * n, "line": list(range(1, n + 1)),
                     "raw_record": QUARANTINED, "reason": ["bad value"] * n,
                     "quarantined_at": pa.array([at] * n, pa.timestamp("us", tz="UTC"))})


def _warehouse_files(settings) -> list[Path]:
    root = Path(settings.home) / "warehouse"
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, f"no lake files under {root}"
    return files


def _rows_in_files(settings, table_dir: str) -> pa.Table:
    """Every row of every Parquet file still on disk for a table (current or not)."""
    parts = [pq.read_table(p) for p in _warehouse_files(settings)
             if p.suffix == ".parquet" and f"/{table_dir}/" in str(p)]
    return pa.concat_tables(parts, promote_options="permissive")


def _process(lake, **kwargs):
    from resources import erasure

    return erasure.process_requests(lake, **kwargs)


def test_an_erasure_removes_the_subject_everywhere_and_keeps_what_others_did(settings, small_lake):
    from resources import erasure

    lake = small_lake
    old_snapshots = {t: [s.snapshot_id for s in lake.load_table(t).snapshots()] for t in BUILDERS}
    assert all(len(ids) >= 2 for ids in old_snapshots.values())
    assert 2 in set(_rows_in_files(settings, "accounts").column("account_id").to_pylist())

    subject = erasure.request_erasure(lake, ACME, 2, "DSR-17", "dpo")
    foreign = erasure.request_erasure(lake, ACME, 3, "not ours", "dpo")  # Borealis's account
    unknown = erasure.request_erasure(lake, ACME, 99, "typo", "dpo")
    assert [r["status"] for r in erasure.list_requests(lake)] == ["pending"] * 3
    summary = _process(lake)
    assert (summary["completed"], summary["rejected"]) == (1, 2)

    # identity and per-account rows: gone; the others' untouched
    assert sorted(lake.read("bronze.accounts").column("account_id").to_pylist()) == [1, 1, 3, 3]
    assert sorted(lake.read("gold.positions_pnl").column("account_id").to_pylist()) == [1, 1, 3, 3]
    # shared events: kept (counts reconcile), the subject's id nulled, the counterparty's kept
    orders = lake.read("bronze.orders")
    assert orders.num_rows == 8 and sorted(orders.column("qty_lots").to_pylist()) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert sorted(orders.column("account_id").to_pylist(), key=str) == sorted([1, 1, 3, 3, None, None, None, None],
                                                                            key=str)
    fills = lake.read("bronze.fills").sort_by([("partition_date", "ascending"), ("fill_id", "ascending")]).to_pylist()
    assert [(f["account_id"], f["counterparty_account_id"]) for f in fills] == [(None, 1), (1, None), (3, 1), (1, 3)] * 2
    labels = {r["anomaly_id"][-2:]: r["account_ids"] for r in lake.read("bronze.anomaly_labels").to_pylist()}
    assert labels == {"a1": "3", "a2": "", "a3": "1"}
    # quarantined raw records: a JSON object naming the account goes; a CSV line or broken JSON cannot be matched
    assert sorted(lake.read("quarantine.landing").column("raw_record").to_pylist()) == sorted(
        QUARANTINED[2:])

    # history: every older snapshot expired, time travel to one fails, and no file on disk holds the subject
    for identifier, ids in old_snapshots.items():
        table = lake.load_table(identifier)
        assert len(table.snapshots()) == 1 and table.snapshots()[0].snapshot_id not in ids
        with pytest.raises(ValueError):
            table.scan(snapshot_id=ids[0]).to_arrow()
    on_disk = _rows_in_files(settings, "accounts")
    assert 2 not in set(on_disk.column("account_id").to_pylist())
    assert not any(b"a.subject@" in p.read_bytes() for p in _warehouse_files(settings) if p.suffix != ".avro")
    # manifests (deflated Avro) keep each file's column bounds, also for the files a snapshot deleted
    for identifier in BUILDERS:
        table = lake.load_table(identifier)
        for entry in table.inspect.entries().to_pylist():
            bounds = [v for pairs in (entry["data_file"]["lower_bounds"], entry["data_file"]["upper_bounds"])
                      for _, v in (pairs or [])]
            assert not any(b"a.subject@" in v for v in bounds), (identifier, entry["status"])
        from resources.lake_maintenance import reachable_files

        live = set().union(*reachable_files(table).values())
        on_disk = {p.as_uri() for p in _warehouse_files(settings) if p.suffix == ".avro"
                   and f"/{identifier.split('.')[1]}/" in str(p) and f"/{identifier.split('.')[0]}" in str(p)}
        assert on_disk <= {u.replace("file:///", "file:/") for u in live} | live, identifier
    assert set(_rows_in_files(settings, "orders").column("account_id").to_pylist()) == {1, 3, None}

    log = {r["request_id"]: r for r in lake.read(erasure.LOG_TABLE).to_pylist()}
    done = log[subject["request_id"]]
    assert (done["status"], done["rows_deleted"], done["rows_pseudonymised"]) == ("completed", 6, 10)
    assert done["snapshots_expired"] > 0 and done["files_deleted"] > 0
    for rejected in (foreign, unknown):  # one reason, whether or not the account exists in another tenant
        row = log[rejected["request_id"]]
        assert row["status"] == "rejected"
        assert row["detail"] == f"account {rejected['account_id']} is not an account of tenant {ACME}"
    assert erasure.erased_accounts(lake) == {2}
    assert erasure.remaining_rows(lake, {2}) == {}
    assert erasure.remaining_rows(lake, {3}) == {"bronze.accounts": 2, "bronze.orders": 2, "bronze.fills": 4,
                                                 "gold.positions_pnl": 2, "bronze.anomaly_labels": 2,
                                                 "quarantine.landing": 1}

    # idempotent: nothing pending, nothing changes; asking again completes with nothing left to erase
    before = {t: lake.load_table(t).current_snapshot().snapshot_id for t in BUILDERS}
    assert _process(lake)["requests"] == 0
    assert {t: lake.load_table(t).current_snapshot().snapshot_id for t in BUILDERS} == before
    again = erasure.request_erasure(lake, ACME, 2, "DSR-17 follow-up", "dpo")
    _process(lake)
    row = next(r for r in erasure.list_requests(lake) if r["request_id"] == again["request_id"])
    assert (row["status"], row["detail"]) == ("completed", "nothing left to erase")


def test_a_run_interrupted_after_the_deletes_is_finished_by_the_next(settings, small_lake, monkeypatch):
    """A crash between the table rewrites and the log: the request stays pending, the next run repeats the
    deletes (nothing left) and the expiry, and logs it."""
    from pyiceberg.table.update.snapshot import ExpireSnapshots

    from resources import erasure

    lake = small_lake
    request = erasure.request_erasure(lake, ACME, 2, "DSR-18", "dpo")
    real_commit = ExpireSnapshots.commit
    calls = []

    def crash_on_third(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")  # what a killed step looks like to the code after it
        return real_commit(self)

    monkeypatch.setattr(ExpireSnapshots, "commit", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _process(lake)
    assert [r["status"] for r in erasure.list_requests(lake)] == ["in_progress"]
    assert 2 not in lake.read("bronze.accounts").column("account_id").to_pylist()
    assert erasure.erased_accounts(lake) == {2}  # accepted: kept out of new writes already
    monkeypatch.setattr(ExpireSnapshots, "commit", real_commit)
    _process(lake)
    row = erasure.list_requests(lake)[0]
    assert (row["request_id"], row["status"]) == (request["request_id"], "completed")
    assert row["detail"] == "finished after an interrupted run (the counts are this run's)"
    for identifier in BUILDERS:  # every table readable, and only its current snapshot left
        table = lake.load_table(identifier)
        assert len(table.snapshots()) == 1
        table.scan().to_arrow()
    assert 2 not in set(_rows_in_files(settings, "accounts").column("account_id").to_pylist())


def _data_files(lake, identifier: str) -> set[str]:
    return {task.file.file_path for task in lake.load_table(identifier).scan().plan_files()}


def test_an_erasure_rewrites_only_the_rows_near_the_subject_in_quarantine_and_labels(settings, small_lake):
    """Quarantined raw records and label lists hold the id inside a string, so no filter can pick the subject's
    rows: the erasure reads every candidate, and rewrites only the landing files' records (the labels) that name
    the subject; the rest keep their data files (every candidate row was rewritten before, on every erasure)."""
    from resources import erasure

    lake = small_lake
    day3 = dt.date(2024, 1, 4)
    others = pa.table({"anomaly_id": [f"{day3}-a1", f"{day3}-a2"], "account_ids": ["1,3", "3"],
                       "partition_date": pa.array([day3] * 2, pa.date32())})
    lake.replace_partition("bronze.anomaly_labels", others, "partition_date", day3)
    other_file = _quarantined().slice(2, 1)  # another landing file, naming account 3 only
    other_file = other_file.set_column(1, "file", pa.array(["kyc_events/new.jsonl"]))
    lake.append("quarantine.landing", other_file)

    def files_of(identifier, column, values):
        table = lake.load_table(identifier)
        return {task.file.file_path for task in table.scan().plan_files()
                if set(pq.read_table(task.file.file_path.removeprefix("file://"), columns=[column])
                       .column(column).to_pylist()) <= values}

    untouched = {"quarantine.landing": files_of("quarantine.landing", "file", {"kyc_events/new.jsonl"}),
                 "bronze.anomaly_labels": files_of("bronze.anomaly_labels", "anomaly_id",
                                                   {f"{day3}-a1", f"{day3}-a2"})}
    assert all(len(files) == 1 for files in untouched.values())
    erasure.request_erasure(lake, ACME, 2, "DSR-19", "dpo")
    assert _process(lake)["completed"] == 1
    for identifier, files in untouched.items():
        assert files <= _data_files(lake, identifier), identifier
    assert sorted(lake.read("quarantine.landing").column("raw_record").to_pylist()) == sorted(
        QUARANTINED[2:] + [QUARANTINED[2]])
    labels = sorted((r["anomaly_id"][-2:], r["account_ids"]) for r in lake.read("bronze.anomaly_labels").to_pylist())
    assert labels == sorted([("a1", "3"), ("a2", ""), ("a3", "1")] * 2 + [("a1", "1,3"), ("a2", "3")])
    assert erasure.remaining_rows(lake, {2}) == {}


def test_expiry_keeps_recent_snapshots_and_deletes_only_files_no_kept_snapshot_reaches(settings, lake):
    from resources.lake_maintenance import expire_snapshots

    day = DAY1
    for n in range(4):  # four versions of one partition, each its own file (a replacement is two snapshots)
        lake.replace_partition("bronze.orders", _orders(day).set_column(2, "qty_lots", pa.array([n] * 4, pa.int64())),
                               "partition_date", day)
    lake.replace_partition("bronze.orders", _orders(DAY2), "partition_date", DAY2)  # DAY2's file stays live
    table = lake.load_table("bronze.orders")
    snapshots = [s.snapshot_id for s in sorted(table.snapshots(), key=lambda s: s.timestamp_ms)]
    second_last = table.scan(snapshot_id=snapshots[-2]).to_arrow()

    now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    # nothing older than a week: nothing changes
    assert expire_snapshots(lake, "bronze.orders", older_than=now - dt.timedelta(days=7)).snapshots_expired == 0
    result = expire_snapshots(lake, "bronze.orders", older_than=now, retain_last=2)
    assert (result.snapshots_expired, result.snapshots_kept) == (len(snapshots) - 2, 2)
    table = lake.load_table("bronze.orders")
    assert {s.snapshot_id for s in table.snapshots()} == set(snapshots[-2:])
    # the kept snapshots still read in full (their files are all there), the current one too
    assert table.scan(snapshot_id=snapshots[-2]).to_arrow().num_rows == second_last.num_rows
    current = lake.read("bronze.orders")
    assert sorted(current.column("qty_lots").to_pylist()) == [1, 2, 3, 3, 3, 3, 3, 4]
    # the files of the three expired replacements of DAY1 (qty 0, 1 and 2) are gone from disk
    left = _rows_in_files(settings, "orders")
    assert set(left.column("qty_lots").to_pylist()) == {1, 2, 3, 4} and left.num_rows == 8
    assert result.files_deleted >= 3 + 3  # three data files, their manifests and manifest lists
    # a second run has nothing to do
    assert expire_snapshots(lake, "bronze.orders", older_than=now, retain_last=2).snapshots_expired == 0


def test_suppress_keeps_erased_accounts_out_of_tables_about_to_be_written():
    from resources.erasure import suppress

    tables = {"bronze.accounts": _accounts(DAY1), "bronze.orders": _orders(DAY1), "bronze.fills": _fills(DAY1),
              "bronze.anomaly_labels": _labels(DAY1), "bronze.reference_prices": pa.table({"x": [1]})}
    out, changed = suppress(tables, {2})
    assert out["bronze.accounts"].column("account_id").to_pylist() == [1, 3]
    assert out["bronze.orders"].column("account_id").to_pylist() == [1, None, None, 3]
    assert out["bronze.fills"].column("counterparty_account_id").to_pylist() == [1, None, 1, 3]
    assert out["bronze.anomaly_labels"].column("account_ids").to_pylist() == ["3", "", "1"]
    assert out["bronze.reference_prices"] is tables["bronze.reference_prices"]
    assert changed == {"bronze.accounts": 1, "bronze.orders": 2, "bronze.fills": 2, "bronze.anomaly_labels": 1}
    assert suppress(tables, set())[1] == {t: 0 for t in changed}
    # a quarantined JSON record names the account under any case of the key (landing matches columns so)
    held = pa.table({"raw_record": ['{"ACCOUNT_ID": 2}', '{"Account_Id": "0002"}', '{"account_id": 3}']})
    kept, count = suppress({"quarantine.landing": held}, {2})
    assert kept["quarantine.landing"].column("raw_record").to_pylist() == ['{"account_id": 3}'] and count == {
        "quarantine.landing": 2}


def test_the_lake_maintenance_job_carries_out_requests_and_checks_nothing_names_the_subject(settings, small_lake):
    """Through Dagster, as the nightly schedule runs it: the erasure asset, its blocking check, then expiry."""
    from dagster import AssetKey, DagsterInstance

    from platformq_assets.definitions import build_definitions
    from resources import erasure

    erasure.request_erasure(small_lake, ACME, 2, "DSR-19", "dpo")
    defs = build_definitions(settings)
    assert {s.name for s in defs.schedules} >= {"lake_maintenance_daily"}
    result = defs.resolve_job_def("lake_maintenance").execute_in_process(
        instance=DagsterInstance.get(), run_config={"ops": {"maintenance__snapshot_expiry": {
            "config": {"retention_days": 0, "retain_last": 1}}}})
    assert result.success
    meta = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    erased = meta[AssetKey(["governance", "erasure_log"])]
    assert (erased["completed"].value, erased["rows_deleted"].value, erased["rows_pseudonymised"].value) == (1, 6, 10)
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "erased_subjects_absent" and check.passed
    expiry = meta[AssetKey(["maintenance", "snapshot_expiry"])]
    # the erasure left one snapshot per table it touched; the expiry trims the request and log tables
    assert expiry["tables"].value == len(small_lake.list_tables())
    assert all(len(small_lake.load_table(t).snapshots()) == 1 for t in small_lake.list_tables())


def test_a_write_that_brings_an_erased_account_back_is_erased_again_by_the_next_run(settings, small_lake):
    """A writer that read its inputs (or the erased list) before the erasure committed and committed after (here
    by hand): the request is done, so only the tables can say so; the next run finds the rows, erases them again
    with the history that holds them, and its check passes."""
    from dagster import AssetKey, DagsterInstance

    from platformq_assets.definitions import build_definitions
    from resources import erasure

    erasure.request_erasure(small_lake, ACME, 2, "DSR-20", "dpo")
    erasure.process_requests(small_lake)
    small_lake.replace_partition("bronze.accounts", _accounts(DAY1), "partition_date", DAY1)
    assert erasure.remaining_rows(small_lake, {2}) == {"bronze.accounts": 1}
    job = build_definitions(settings).resolve_job_def("lake_maintenance")
    result = job.execute_in_process(instance=DagsterInstance.get())
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    meta = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    erased = meta[AssetKey(["governance", "erasure_log"])]
    assert (erased["requests"].value, erased["residue_rows"].value, erased["residue_tables"].value) == (
        0, 1, "bronze.accounts")
    assert erasure.remaining_rows(small_lake, {2}) == {}
    assert len(small_lake.load_table("bronze.accounts").snapshots()) == 1
    assert 2 not in set(_rows_in_files(settings, "accounts").column("account_id").to_pylist())


def test_a_feature_export_written_after_an_erasure_is_erased_again_by_the_next_run(settings, small_lake):
    """The features step read the lake before the erasure and exported the account's rows after the erasure
    reached Feast: the next run of the erasure asset removes them from the offline export (real Feast files; the
    next online materialisation would otherwise have put the account back in the online store)."""
    from dagster import AssetKey, DagsterInstance

    from platformq_assets.definitions import build_definitions
    from resources import erasure
    from resources.feast import feast_resource
    from tests.ml.test_feast_erasure import _activity

    erasure.request_erasure(small_lake, ACME, 2, "DSR-21", "dpo")
    feast = feast_resource(settings)
    erasure.process_requests(small_lake, online_eraser=lambda accounts: sum(
        feast.erase_entities("account_activity", "account_id", accounts).values()))
    export = feast.export_partition("account_activity", DAY2.isoformat(),  # the late writer
                                    _activity(DAY2.isoformat(), [1, 2, 3]))
    result = build_definitions(settings).resolve_job_def("lake_maintenance").execute_in_process(
        instance=DagsterInstance.get())
    assert result.success
    meta = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    erased = meta[AssetKey(["governance", "erasure_log"])]
    assert (erased["requests"].value, erased["residue_feature_rows"].value) == (0, 1)
    assert sorted(pq.read_table(export).column("account_id").to_pylist()) == [1, 3]


def test_a_feature_store_outage_does_not_stop_the_lakes_residue_sweep(settings, small_lake):
    """The Feast part of the nightly sweep runs for every completed erasure: with Redis down it must not fail the
    erasure step (retention, compaction, expiry and the orphan sweep follow it); the lake's residue is erased and
    the outage recorded, and the next run tries Feast again."""
    from resources import erasure
    from resources.feast import FeastResource
    from tests.ml.test_online_store import ROOT

    erasure.request_erasure(small_lake, ACME, 2, "DSR-22", "dpo")
    erasure.process_requests(small_lake)
    small_lake.replace_partition("bronze.accounts", _accounts(DAY1), "partition_date", DAY1)  # a late writer
    down = FeastResource(registry_uri=f"sqlite:///{settings.home / 'feast-down' / 'registry.db'}",
                         online_store="redis", redis_url="redis://127.0.0.1:1/0",  # nothing listens there
                         offline_root=str(settings.home / "feast-down" / "offline"), repo_path=str(ROOT / "features"))
    summary = erasure.process_requests(small_lake, online_eraser=lambda accounts: sum(
        down.erase_entities("account_activity", "account_id", accounts).values()))
    assert summary["residue_rows"] == 1 and erasure.remaining_rows(small_lake, {2}) == {}
    assert summary["residue_feature_rows"] == 0 and "Connection" in summary["residue_feature_error"]


def test_the_erasure_check_fails_when_a_table_still_names_an_erased_account(settings, small_lake, monkeypatch):
    """The check reads the tables, not the log: a row that survives the run (here: the sweep is taken out, as
    if the row had been committed between the sweep and the check) fails it."""
    from dagster import DagsterInstance

    from platformq_assets.definitions import build_definitions
    from resources import erasure

    erasure.request_erasure(small_lake, ACME, 2, "DSR-20", "dpo")
    erasure.process_requests(small_lake)
    small_lake.replace_partition("bronze.accounts", _accounts(DAY1), "partition_date", DAY1)
    monkeypatch.setattr(erasure, "sweep_residue", lambda lake, log=None, online_eraser=None: {
        "residue_rows": 0, "residue_tables": "none", "snapshots_expired": 0, "files_deleted": 0})
    job = build_definitions(settings).resolve_job_def("lake_maintenance")
    result = job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["tables_still_naming_them"].value == "bronze.accounts"


def test_the_erasure_expires_history_whatever_the_clocks_say(settings, small_lake, monkeypatch):
    """Snapshots dated after the erasure host's clock (a writer whose clock runs ahead, or this host's behind)
    still go: the erasure keeps only each table's current snapshot."""
    from resources import erasure

    behind = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    monkeypatch.setattr(erasure, "_now", lambda: behind)
    erasure.request_erasure(small_lake, ACME, 2, "DSR-24", "dpo")
    assert _process(small_lake)["completed"] == 1
    for identifier in BUILDERS:
        assert len(small_lake.load_table(identifier).snapshots()) == 1, identifier
    assert 2 not in set(_rows_in_files(settings, "accounts").column("account_id").to_pylist())


def test_a_day_simulated_again_after_an_erasure_keeps_the_account_out(built_day):
    """The real daily graph (venue -> bronze -> dbt silver and gold): erase a trader, then rebuild the day;
    the account is in no table, its trades still are (unattributed), and the dbt tests pass."""
    from dagster import DagsterInstance

    from resources import erasure
    from tests.integration.helpers import definitions, failed_checks, run_day

    day = "2024-01-02"
    built = built_day("medallion_daily", day)
    lake, defs = built.lake, definitions(built.settings)
    accounts = lake.read("bronze.accounts").to_pylist()
    trades_before = lake.read("silver.trades").num_rows
    ranked = {r["account_id"] for r in lake.read("gold.trader_leaderboard").to_pylist()}
    subject = next(a for a in accounts if a["account_id"] in ranked)
    erasure.request_erasure(lake, subject["tenant_id"], subject["account_id"], "DSR-21", "dpo")
    maintenance = defs.resolve_job_def("lake_maintenance").execute_in_process(instance=DagsterInstance.get())
    assert maintenance.success and all(c.passed for c in maintenance.get_asset_check_evaluations())
    assert erasure.remaining_rows(lake, {subject["account_id"]}) == {}

    rerun = run_day(defs, day, job="medallion_daily")
    assert rerun.success and not failed_checks(rerun)
    assert erasure.remaining_rows(lake, {subject["account_id"]}) == {}
    assert lake.read("silver.trades").num_rows == trades_before
    pnl = lake.read("gold.positions_pnl").column("account_id")
    assert pnl.null_count == 0  # the unattributed fills make no position of their own


def test_dbt_keeps_out_an_account_erased_while_it_ran_and_a_failed_build_leaves_no_staged_copy(
        built_day, monkeypatch):
    """An erasure that commits while dbt builds (its inputs were staged before): the models written back leave
    the account out. A build that fails keeps its compiled SQL and logs but not the staged inputs (identities
    and emails that no erasure reaches)."""
    from pathlib import Path

    from resources import erasure
    from resources.dbt import DbtRunnerResource
    from resources.lake import LakeResource
    from tests.integration.helpers import definitions, run_day

    day = "2024-01-02"
    built = built_day("medallion_daily", day)
    lake, settings, defs = built.lake, built.settings, definitions(built.settings)
    ranked = {r["account_id"] for r in lake.read("gold.trader_leaderboard").to_pylist()}
    subject = next(a for a in lake.read("bronze.accounts").to_pylist() if a["account_id"] in ranked)
    real_build = DbtRunnerResource.build

    def erased_during_the_build(self, *args, **kwargs):
        run = real_build(self, *args, **kwargs)
        erasure.request_erasure(lake, subject["tenant_id"], subject["account_id"], "DSR-26", "dpo")
        assert erasure.process_requests(lake)["completed"] == 1
        return run

    monkeypatch.setattr(DbtRunnerResource, "build", erased_during_the_build)
    rerun = run_day(defs, day, job="medallion_daily")
    assert rerun.success
    assert erasure.remaining_rows(lake, {subject["account_id"]}) == {}

    monkeypatch.setattr(DbtRunnerResource, "build", real_build)
    real_replace = LakeResource.replace_partition

    def broken_gold(self, identifier, *args, **kwargs):
        if identifier.startswith("gold."):
            raise OSError("object store unavailable")
        return real_replace(self, identifier, *args, **kwargs)

    monkeypatch.setattr(LakeResource, "replace_partition", broken_gold)
    runs = Path(settings.home) / "dbt-runs"
    before = set(runs.iterdir())
    assert not run_day(defs, day, job="medallion_daily").success
    failed = set(runs.iterdir()) - before
    assert failed  # kept for the diagnosis (two tries: the step retries once)
    for folder in failed:
        assert not (folder / "lake.duckdb").exists() and (folder / "run_results.json").exists()


def test_a_landing_file_naming_an_erased_account_is_read_counted_and_not_stored(settings, small_lake):
    """KYC events keep arriving from the source system after an erasure: the erased account's records are
    counted in the ledger (read = accepted + quarantined + erased) and never stored; the check reconciles."""
    from dagster import DagsterInstance

    from resources import erasure
    from tests.integration.helpers import QUIET, definitions

    erasure.request_erasure(small_lake, ACME, 2, "DSR-22", "dpo")
    erasure.process_requests(small_lake)
    path = settings.landing_dir / "kyc_events" / "k.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"account_id": 1, "event": "kyc"}\n{"account_id": 2, "event": "kyc"}\n'
                     b'{"account_id": 3, "event": "kyc"}\n{"account_id": "x", "event": "kyc"}\n'
                     b'{"account_id": "2", "event": "kyc"}\n')
    result = definitions(settings).resolve_job_def("ingest_landing").execute_in_process(
        run_config=QUIET, instance=DagsterInstance.get(), raise_on_error=False)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert sorted(small_lake.read("bronze.kyc_events").column("account_id").to_pylist()) == [1, 3]
    [row] = small_lake.read("ops.landing_files").to_pylist()
    # the record naming the account as a string was quarantined (not an integer): counted, not kept either
    assert (row["rows_read"], row["rows_accepted"], row["rows_quarantined"], row["rows_erased"]) == (5, 2, 1, 2)
    assert "account_id\": \"2\"" not in "".join(small_lake.read("quarantine.landing").column("raw_record").to_pylist())


@pytest.mark.slow  # two servers
def test_erasure_and_expiry_on_the_production_twins_postgres_catalog_and_s3(production):
    """The same erasure with the catalog on Postgres and the files in an S3 bucket (moto_server): the files
    only old snapshots reached are deleted from the bucket, and none left there holds the subject."""
    import pyarrow.fs as pafs

    from resources import erasure
    from resources import lake_resource

    settings, endpoint, _db = production
    lake = lake_resource(settings)
    for day in (DAY1, DAY2):
        for identifier, build in BUILDERS.items():
            lake.replace_partition(identifier, build(day), "partition_date", day)
    assert lake.load_table("bronze.accounts").location().startswith("s3://lake/")
    s3 = pafs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test", scheme="http",
                           region="us-east-1")

    def objects() -> list[str]:
        return [i.path for i in s3.get_file_info(pafs.FileSelector("lake/warehouse", recursive=True))
                if i.type == pafs.FileType.File]

    before = objects()
    erasure.request_erasure(lake, ACME, 2, "DSR-23", "dpo")
    summary = erasure.process_requests(lake)
    assert summary["completed"] == 1 and summary["files_deleted"] > 0
    after = objects()
    # every accounts file written before held the subject: all deleted from the bucket itself
    old_accounts = [p for p in before if "/bronze/accounts/data/" in p]
    assert old_accounts and not set(old_accounts) & set(after)
    for path in after:
        if path.endswith(".parquet") and "/accounts/" in path:
            assert 2 not in pq.read_table(path, filesystem=s3).column("account_id").to_pylist(), path
    assert erasure.remaining_rows(lake, {2}) == {}
    assert sorted(lake.read("bronze.accounts").column("account_id").to_pylist()) == [1, 1, 3, 3]


def test_the_erasure_cli_records_lists_and_carries_out_requests(platform_home, small_lake):
    """`platformq erasure request|list|process` in a subprocess, on the test's home."""
    import subprocess

    from tests.conftest import ROOT, subprocess_env

    def cli(*args):
        return subprocess.run([str(ROOT / ".venv" / "bin" / "platformq"), "erasure", *args], cwd=ROOT,
                              env=subprocess_env(platform_home), capture_output=True, text=True, timeout=300)

    missing = cli("request", ACME, "2")
    assert missing.returncode == 2 and "--reason" in missing.stderr
    made = cli("request", ACME, "2", "--reason", "DSR-24", "--by", "dpo")
    assert made.returncode == 0 and "(pending)" in made.stdout, made.stderr
    assert cli("request", BOREALIS, "1", "--reason", "not theirs").returncode == 0
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in cli("list").stdout.splitlines()
            if line.startswith("|")][1:]
    assert [row[1:4] for row in rows] == [[ACME, "2", "pending"], [BOREALIS, "1", "pending"]]
    done = cli("process")
    assert done.returncode == 0, done.stderr
    assert "requests 2: completed 1, rejected 1; rows deleted 6, pseudonymised 10" in done.stdout
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in cli("list").stdout.splitlines()
            if line.startswith("|")][1:]
    assert [row[3] for row in rows] == ["completed", "rejected"]
    assert rows[1][4].startswith("account 1 is not an account of")


def _append_text_ids(lake, ids: list[str]) -> None:
    """kyc_events rows whose account ids are text, as an ingestion that typed them so wrote them."""
    n, at = len(ids), dt.datetime.now(dt.timezone.utc)
    lake.append("bronze.kyc_events", pa.table({
        "account_id": ids, "event": ["kyc"] * n, "_source": ["landing:kyc_events"] * n, "_batch_id": ["b0"] * n,
        "_ingested_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
        "_source_file": ["kyc_events/old.jsonl"] * n, "_file_sha256": ["0" * 64] * n, "_line": list(range(1, n + 1))}))


def _land_and_ingest(settings, name: str, data: bytes):
    """Drop a kyc_events landing file and run the ingestion job; it must succeed with every check passing."""
    from dagster import DagsterInstance

    from tests.integration.helpers import QUIET, definitions

    path = settings.landing_dir / "kyc_events" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    result = definitions(settings).resolve_job_def("ingest_landing").execute_in_process(
        run_config=QUIET, instance=DagsterInstance.get(), raise_on_error=False)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())


def test_an_erasure_matches_account_ids_a_source_stored_as_text(settings, small_lake):
    """A source whose account ids arrived as text (its table made so by an older version or by the source): the
    erasure filters, rewrite, check and the landing suppression compare the ids' digits, not numbers with text
    (which raised in the Iceberg filter and in Arrow, stopping every erasure and every ingestion of the source)."""
    from resources import erasure

    _append_text_ids(small_lake, ["1", "2", "3"])
    erasure.request_erasure(small_lake, ACME, 2, "DSR-23", "dpo")
    outcome = _process(small_lake)
    assert (outcome["requests"], outcome["completed"]) == (1, 1), outcome
    assert small_lake.read("bronze.kyc_events").column("account_id").to_pylist() == ["1", "3"]
    assert erasure.remaining_rows(small_lake, {2}) == {}
    _land_and_ingest(settings, "k.jsonl", b'{"account_id": "2", "event": "kyc"}\n{"account_id": "4", "event": "kyc"}\n')
    assert sorted(small_lake.read("bronze.kyc_events").column("account_id").to_pylist()) == ["1", "3", "4"]
    [row] = small_lake.read("ops.landing_files").to_pylist()
    assert (row["rows_read"], row["rows_accepted"], row["rows_erased"]) == (2, 1, 1)


def test_erasure_matches_zero_padded_text_ids_and_columns_named_in_another_case(settings, small_lake):
    """"0002" and " 2" in a text id column name account 2; a landing file whose header says ACCOUNT_ID fills the
    table's account_id column (a second column differing only in case hid from the rules and from queries)."""
    from resources import erasure

    _append_text_ids(small_lake, ["1", "0002", " 2", "3"])
    assert erasure.remaining_rows(small_lake, {2})["bronze.kyc_events"] == 2
    erasure.request_erasure(small_lake, ACME, 2, "DSR-25", "dpo")
    assert _process(small_lake)["completed"] == 1
    assert small_lake.read("bronze.kyc_events").column("account_id").to_pylist() == ["1", "3"]
    assert erasure.remaining_rows(small_lake, {2}) == {}
    _land_and_ingest(settings, "k.csv", b"ACCOUNT_ID,Event\n002,kyc\n4,kyc\n")
    table = small_lake.read("bronze.kyc_events")
    assert [n for n in table.column_names if n.lower() in ("account_id", "event")] == ["account_id", "event"]
    assert sorted(table.column("account_id").to_pylist()) == ["1", "3", "4"]
    [row] = small_lake.read("ops.landing_files").to_pylist()
    assert (row["rows_read"], row["rows_accepted"], row["rows_erased"]) == (2, 1, 1)
    assert erasure.remaining_rows(small_lake, {2}) == {}


def test_quarantined_records_name_the_account_as_landing_would_read_it_and_odd_digits_do_not_crash(
        settings, small_lake):
    """A quarantined record names the account in any form landing's reader takes for a whole number (17.0 from a
    pandas export with a gap, "+2"), and a value such as "²" (a digit to str.isdigit, not to int) names no one:
    it raised ValueError in every erasure run, residue sweep and ingestion of a source once an account was erased."""
    from resources import erasure

    odd = ['{"account_id": 2.0, "at": "not-a-date"}', '{"account_id": "+2", "at": "x"}',
           '{"account_id": "\\u00b2", "at": "x"}', '{"account_id": 2.5}', '{"account_id": "2_0"}']
    n = len(odd)
    small_lake.append("quarantine.landing", pa.table({
        "source": ["kyc_events"] * n, "file": ["kyc_events/odd.jsonl"] * n, "line": list(range(1, n + 1)),
        "raw_record": odd, "reason": ["bad value"] * n,
        "quarantined_at": pa.array([dt.datetime.now(dt.timezone.utc)] * n, pa.timestamp("us", tz="UTC"))}))
    assert erasure.remaining_rows(small_lake, {2})["quarantine.landing"] == 2 + 2  # and the fixture's two
    erasure.request_erasure(small_lake, ACME, 2, "DSR-31", "dpo")
    assert _process(small_lake)["completed"] == 1
    left = small_lake.read("quarantine.landing", columns=("raw_record",)).column("raw_record").to_pylist()
    assert [r for r in left if r in odd] == odd[2:]
    assert erasure.remaining_rows(small_lake, {2}) == {}
    # a later file: its quarantined records are checked against the erased accounts as they arrive
    _land_and_ingest(settings, "first.jsonl", b'{"account_id": 1, "event": "kyc", "at": "2024-01-05T10:00:00Z"}\n')
    _land_and_ingest(settings, "late.jsonl", b'{"account_id": "\\u00b2", "event": "kyc", "at": "2024-01-05"}\n'
                                             b'{"account_id": 2.0, "event": "kyc", "at": "no"}\n')
    [row] = small_lake.read("ops.landing_files", row_filter="file = 'kyc_events/late.jsonl'").to_pylist()
    assert (row["rows_read"], row["rows_quarantined"], row["rows_erased"]) == (2, 1, 1), row


def test_a_feature_store_outage_leaves_a_request_in_progress_with_the_lake_and_its_history_done(settings, small_lake):
    """Feast down while a request is processed: the lake's rows and their history go anyway (the expiry ran after
    Feast, so an outage left the subject in time travel, and the step failed, skipping retention, compaction,
    expiry and the orphan sweep every night of it); the request stays in progress, the account stays kept out,
    and the next run with Feast back finishes it."""
    from resources import erasure

    def down(accounts):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    erasure.request_erasure(small_lake, ACME, 2, "DSR-32", "dpo")
    summary = _process(small_lake, online_eraser=down)
    assert summary["completed"] == 0 and "ConnectionError" in summary["online_error"], summary
    assert erasure.remaining_rows(small_lake, {2}) == {}
    for identifier in BUILDERS:
        assert len(small_lake.load_table(identifier).snapshots()) == 1, identifier
    assert 2 not in set(_rows_in_files(settings, "accounts").column("account_id").to_pylist())
    [request] = erasure.list_requests(small_lake)
    assert request["status"] == "in_progress" and "127.0.0.1" not in request["detail"], request  # tenants read it
    assert erasure.erased_accounts(small_lake) == {2}
    reached = []
    summary = _process(small_lake, online_eraser=lambda accounts: reached.append(accounts) or 1)
    assert (summary["completed"], summary["online_error"]) == (1, "none") and reached[0] == {2}
    assert erasure.list_requests(small_lake)[0]["status"] == "completed"


def test_a_feature_store_outage_fails_the_maintenance_job_at_its_end_after_every_step_ran(settings, small_lake):
    """The erasure step goes on past a Feast outage (requests in progress, the lake's part done) and so do
    retention, compaction and expiry; the job's last step then fails naming it, so `run_failure_alerts` reports
    it (it was metadata only: the outage could last for weeks with nobody told)."""
    import shutil

    from dagster import AssetKey, DagsterInstance

    from platformq_assets.definitions import build_definitions
    from resources import erasure

    erasure.request_erasure(small_lake, ACME, 2, "DSR-33", "dpo")
    online = settings.home / "feast" / "online.db"
    online.parent.mkdir(parents=True, exist_ok=True)
    online.unlink(missing_ok=True)
    online.mkdir()  # the online store cannot be opened: the local twin of Redis being down
    job = build_definitions(settings).resolve_job_def("lake_maintenance")
    result = job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False)
    assert not result.success
    done = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {AssetKey(["governance", "erasure_log"]), AssetKey(["maintenance", "snapshot_expiry"])} <= done
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key.endswith("orphan_files"), failure.step_key
    assert "erasure: feature store" in failure.event_specific_data.error.message
    assert erasure.list_requests(small_lake)[0]["status"] == "in_progress"
    shutil.rmtree(online)  # the store is back: the next run finishes the request and succeeds
    result = job.execute_in_process(instance=DagsterInstance.get(), raise_on_error=False)
    assert result.success and erasure.list_requests(small_lake)[0]["status"] == "completed"


def test_the_erasure_cli_exits_1_when_the_feature_store_could_not_be_reached(platform_home, small_lake):
    """`platformq erasure process` with the online store unreachable: the lake's part is done and the request
    stays in progress; the command said so nowhere and exited 0 (the alert lives in the nightly job's end)."""
    import shutil
    import subprocess

    from resources import erasure
    from tests.conftest import ROOT, subprocess_env

    def process():
        return subprocess.run([str(ROOT / ".venv" / "bin" / "platformq"), "erasure", "process"], cwd=ROOT,
                              env=subprocess_env(platform_home), capture_output=True, text=True, timeout=300)

    erasure.request_erasure(small_lake, ACME, 2, "DSR-34", "dpo")
    online = platform_home / "feast" / "online.db"
    online.parent.mkdir(parents=True, exist_ok=True)
    online.unlink(missing_ok=True)
    online.mkdir()  # the online store cannot be opened
    out = process()
    assert out.returncode == 1 and "feature store (the requests stay in progress)" in out.stderr, out.stderr
    assert erasure.list_requests(small_lake)[0]["status"] == "in_progress"
    shutil.rmtree(online)
    out = process()
    assert out.returncode == 0, out.stderr
    assert erasure.list_requests(small_lake)[0]["status"] == "completed"
