"""Landing zone: sensor with cursor, exactly-once ingestion, quarantine, schema evolution."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, build_sensor_context
from pyiceberg.expressions import EqualTo

from resources.landing_zone import LandingZoneResource
from tests.integration.helpers import QUIET, definitions, drop

pytestmark = pytest.mark.slow


def tick(defs, cursor=None, landing_zone=None):
    sensor = defs.resolve_sensor_def("landing_zone_sensor")
    context = build_sensor_context(instance=DagsterInstance.get(), cursor=cursor,
                                   resources={"landing_zone": landing_zone or defs.resources["landing_zone"]})
    result = sensor.evaluate_tick(context)
    return result.run_requests, result.cursor


def execute(defs, request):
    job = defs.resolve_job_def("ingest_landing")
    return job.execute_in_process(run_config={**QUIET, **request.run_config}, instance=DagsterInstance.get(),
                                  tags=request.tags, asset_selection=request.asset_selection, raise_on_error=False)


def parquet_bytes(table):
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def ledger(lake):
    return {r["file"]: r for r in lake.read("ops.landing_files").to_pylist()}


def test_sensor_ingests_each_file_exactly_once_across_restarts(settings, lake):
    defs = definitions(settings)
    drop(settings, "partner_quotes/a.csv", b"symbol,price\nAAA,1.5\nBBB,2.5\n")
    drop(settings, "kyc_events/k.jsonl", b'{"account_id": 1, "ok": true}\n{"account_id": 2, "ok": false}\n')
    drop(settings, "partner_quotes/writing.csv.tmp", b"symbol,price\n")  # still being written: ignored

    requests, cursor = tick(defs)
    assert sorted(r.tags["platformq/landing_file"] for r in requests) == ["kyc_events/k.jsonl", "partner_quotes/a.csv"]
    for request in requests:
        result = execute(defs, request)
        assert result.success
        assert all(c.passed for c in result.get_asset_check_evaluations())
    assert lake.read("bronze.partner_quotes").num_rows == 2 and lake.read("bronze.kyc_events").num_rows == 2

    again, cursor2 = tick(defs, cursor)
    assert again == []  # cursor: nothing new
    # A restart that lost the cursor sees the files again with the same run keys (Dagster dedupes
    # run keys) and even if the runs are executed, the ledger makes them no-ops.
    replay, _ = tick(defs, None)
    assert {r.run_key for r in replay} == {r.run_key for r in requests}
    for request in replay:
        assert execute(defs, request).success
    assert lake.read("bronze.partner_quotes").num_rows == 2 and lake.read("bronze.kyc_events").num_rows == 2
    assert len(lake.read("ops.landing_files")) == 2

    # A changed file is new content: it is ingested, the old content's rows stay
    drop(settings, "partner_quotes/b.csv", b"symbol,price\nCCC,3.5\n")
    new, _ = tick(defs, cursor2)
    assert [r.tags["platformq/landing_file"] for r in new] == ["partner_quotes/b.csv"]
    assert execute(defs, new[0]).success
    assert lake.read("bronze.partner_quotes").num_rows == 3


def test_a_large_drop_is_hashed_over_several_ticks_within_the_budget(settings, lake):
    """A tick hashes new files up to the landing zone's byte budget (at least one file) and leaves the rest
    out of its cursor: every file is requested once, over as many ticks as the budget needs; a file that
    changes while it waits is requested with its new bytes."""
    defs = definitions(settings)
    zone = defs.resources["landing_zone"]
    small = LandingZoneResource(root=zone.root, sources=zone.sources, hash_budget_bytes=30)
    for name in ("a", "b", "c", "d"):
        drop(settings, f"partner_quotes/{name}.csv", b"symbol,price\nAAA,1.5\nBBB,2.5\n" + name.encode() * 3)
    seen, cursor, per_tick = [], None, []
    for _ in range(4):
        requests, cursor = tick(defs, cursor, small)
        per_tick.append(len(requests))
        seen += [r.tags["platformq/landing_file"] for r in requests]
        if len(seen) == 2:  # d changes while it waits for its tick
            drop(settings, "partner_quotes/d.csv", b"symbol,price\nDDD,4.5\n")
    assert per_tick == [1, 1, 1, 1]  # 32-byte files, a 30-byte budget: one file a tick
    assert seen == ["partner_quotes/a.csv", "partner_quotes/b.csv", "partner_quotes/c.csv", "partner_quotes/d.csv"]
    assert tick(defs, cursor, small)[0] == []
    [d] = [r for r in tick(defs, None, zone)[0] if r.tags["platformq/landing_file"] == "partner_quotes/d.csv"]
    assert d.tags["platformq/file_sha256"] == _sha(settings.landing_dir / "partner_quotes/d.csv")[:16]
    # the default budget takes the whole drop in one tick
    assert len(tick(defs, None, zone)[0]) == 4


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_files_are_quarantined_and_counts_reconcile(settings, lake):
    defs = definitions(settings)
    good = pa.table({"symbol": ["A", "B", "C"], "price": [1.0, 2.0, 3.0]})
    truncated = parquet_bytes(pa.table({"symbol": ["X"] * 500, "price": [1.0] * 500}))[:-64]
    files = {
        "partner_quotes/1_good.parquet": parquet_bytes(good),
        "partner_quotes/2_rows.csv": b"symbol,price\nD,4.0\nE,not-a-price\nF,6.0,extra\n",
        "partner_quotes/3_empty.csv": b"",
        "partner_quotes/4_header_only.csv": b"symbol,price\n",
        "partner_quotes/5_latin1.csv": "symbol,price\nÉ,1.0\n".encode("latin-1"),
        "partner_quotes/6_truncated.parquet": truncated,
        "partner_quotes/7_bigint.csv": b"symbol,price,volume\nG,7.0,10\nH,8.0,99999999999999999999\nJ,9.0,11\n",
        "partner_quotes/8_reserved.jsonl": b'{"symbol": "I", "price": 9.0, "_line": 1}\n',
    }
    for relpath, data in files.items():
        drop(settings, relpath, data)
    requests, _ = tick(defs)
    assert len(requests) == len(files)
    for request in sorted(requests, key=lambda r: r.run_key):  # never crashes, whatever the file
        result = execute(defs, request)
        assert result.success, request.run_key
        assert all(c.passed for c in result.get_asset_check_evaluations())

    rows = ledger(lake)
    for relpath, row in rows.items():
        assert row["rows_read"] == row["rows_accepted"] + row["rows_quarantined"], relpath
        stored = lake.read("bronze.partner_quotes", row_filter=EqualTo("_file_sha256", row["file_sha256"])).num_rows
        quarantined = lake.read("quarantine.landing", row_filter=EqualTo("file_sha256", row["file_sha256"])).num_rows
        assert (stored, quarantined) == (row["rows_accepted"], row["rows_quarantined"]), relpath
    quarantine = {(r["file"], r["line"]): r for r in lake.read("quarantine.landing").to_pylist()}
    assert "empty file" in quarantine[("partner_quotes/3_empty.csv", None)]["reason"]
    assert "header but no data rows" in quarantine[("partner_quotes/4_header_only.csv", None)]["reason"]
    assert "not valid UTF-8" in quarantine[("partner_quotes/5_latin1.csv", None)]["reason"]
    assert "unreadable Parquet" in quarantine[("partner_quotes/6_truncated.parquet", None)]["reason"]
    assert "'not-a-price' is not a double" in quarantine[("partner_quotes/2_rows.csv", 3)]["reason"]
    assert quarantine[("partner_quotes/2_rows.csv", 3)]["raw_record"] == "E,not-a-price"
    assert "expected 2 fields, found 3" in quarantine[("partner_quotes/2_rows.csv", 4)]["reason"]
    assert "outside the 64-bit integer range" in quarantine[("partner_quotes/7_bigint.csv", 3)]["reason"]
    assert "reserved for the lake's lineage columns" in quarantine[("partner_quotes/8_reserved.jsonl", None)]["reason"]
    assert sorted(lake.read("bronze.partner_quotes").column("symbol").to_pylist()) == ["A", "B", "C", "D", "G", "J"]


def test_same_bytes_in_two_sources_reconcile_per_source(settings, lake):
    defs = definitions(settings)
    data = b"symbol,price\nA,1.0\nB,oops\nC,2.0\n"
    drop(settings, "partner_quotes/x.csv", data)
    drop(settings, "kyc_events/x.csv", data)
    requests, _ = tick(defs)
    for request in sorted(requests, key=lambda r: r.run_key):
        result = execute(defs, request)
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations()), request.run_key
    assert {(r["source"], r["rows_quarantined"]) for r in lake.read("ops.landing_files").to_pylist()} == {
        ("partner_quotes", 1), ("kyc_events", 1)}


def test_sensor_sees_new_bytes_even_when_size_and_mtime_are_kept(settings, lake):
    import os

    defs = definitions(settings)
    path = drop(settings, "partner_quotes/q.csv", b"symbol,price\nAAA,1.5\n")
    first, cursor = tick(defs)
    stat = path.stat()
    path.write_bytes(b"symbol,price\nAAA,1.6\n")  # same size, then the sender's mtime restored (rsync -t, cp -p)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    second, _ = tick(defs, cursor)
    assert len(first) == len(second) == 1 and first[0].run_key != second[0].run_key


def test_new_columns_evolve_the_schema_and_cli_pass_uses_the_same_job(settings, lake):
    from platformq_assets.cli import run_landing_pass

    defs = definitions(settings)
    drop(settings, "kyc_events/1.jsonl", b'{"account_id": 1, "event": "opened"}\n')
    first = run_landing_pass(DagsterInstance.get(), defs)
    assert first["files"] == 1 and first["success"]
    drop(settings, "kyc_events/2.jsonl", b'{"account_id": 2, "event": "kyc", "risk": 0.7}\n')
    assert run_landing_pass(DagsterInstance.get(), defs)["files"] == 1
    table = lake.read("bronze.kyc_events").sort_by("account_id")
    assert "risk" in table.column_names and table.column("risk").to_pylist() == [None, 0.7]
    assert run_landing_pass(DagsterInstance.get(), defs)["files"] == 0  # nothing pending: nothing run
    runs = DagsterInstance.get().get_runs()
    assert {r.job_name for r in runs} == {"ingest_landing"}


def test_quarantined_values_stay_in_the_lake_never_in_the_event_log(settings, lake):
    from dagster._serdes import serialize_value

    defs = definitions(settings)
    email = "jane.doe@example.com"
    lines = [b'{"account_id": %d, "event": "kyc_reviewed"}' % i for i in range(1, 6)]
    lines.append(b'{"account_id": "Jane Doe <%s>", "event": "kyc_reviewed"}' % email.encode())
    drop(settings, "kyc_events/k.jsonl", b"\n".join(lines) + b"\n")
    [request], _ = tick(defs)
    result = execute(defs, request)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())

    [row] = lake.read("quarantine.landing").to_pylist()
    assert email in row["raw_record"] and email in row["reason"]  # the full reason stays in the lake
    # the event log (metadata, check results, log lines) is out of reach of masking and erasure
    logs = DagsterInstance.get().all_logs(result.run_id)
    assert not [e for e in logs if email in serialize_value(e)]
    [quarantine] = [e.materialization.metadata for e in result.get_asset_materialization_events()
                    if e.asset_key.path == ["quarantine", "landing"]]
    assert quarantine["reasons"].value == ("1 record(s): column 'account_id': not a long (a whole number) "
                                          "(the type inferred for this file is long)")
    assert quarantine["rows_quarantined_this_run"].value == 1
    assert ledger(lake)["kyc_events/k.jsonl"]["rows_accepted"] == 5


def test_a_column_blank_in_the_first_file_takes_the_type_of_its_first_values(settings, lake):
    """The first file of a new table has no account_id values: the column waits for data instead of becoming
    text for good (a text account_id refused later numbers and broke erasure's id filters)."""
    from resources.erasure import RULES, apply_rule

    defs = definitions(settings)
    drop(settings, "kyc_events/1.jsonl", b'{"event": "opened", "account_id": null}\n')
    [first], cursor = tick(defs)
    assert execute(defs, first).success
    assert "account_id" not in lake.read("bronze.kyc_events").column_names
    drop(settings, "kyc_events/2.jsonl", b'{"event": "kyc", "account_id": 7}\n{"event": "kyc", "account_id": 8}\n')
    [second], _ = tick(defs, cursor)
    assert execute(defs, second).success
    table = lake.read("bronze.kyc_events").sort_by("_line")
    assert pa.types.is_int64(table.schema.field("account_id").type)
    assert sorted(table.column("account_id").to_pylist(), key=str) == [7, 8, None]
    [rule] = [r for r in RULES if r.table == "bronze.kyc_events"]
    kept, erased = apply_rule(rule, table, {7})  # an accepted erasure's ids filter the column
    assert erased == 1 and 7 not in kept.column("account_id").to_pylist()


def test_a_run_of_one_source_ingests_only_its_files(settings, lake):
    """A selection (the sensor's runs, or one source in the UI) ingests the selected sources' pending files;
    one that leaves out the ledger fails before anything is written, saying what to select."""
    from dagster import AssetKey

    defs = definitions(settings)
    drop(settings, "partner_quotes/a.csv", b"symbol,price\nAAA,1.5\n")
    drop(settings, "kyc_events/k.jsonl", b'{"account_id": 1, "event": "opened"}\n')
    job = defs.resolve_job_def("ingest_landing")
    quotes, quarantine, files = AssetKey(["bronze", "partner_quotes"]), AssetKey(["quarantine", "landing"]), \
        AssetKey(["ops", "landing_files"])
    failed = job.execute_in_process(run_config=QUIET, instance=DagsterInstance.get(), raise_on_error=False,
                                    asset_selection=[quotes])
    assert not failed.success
    [error] = [e.event_specific_data.error.to_string() for e in failed.all_events if e.is_step_failure]
    assert "writes the quarantine and the ledger" in error and "ops/landing_files" in error
    assert not lake.table_exists("ops.landing_files") and not lake.table_exists("bronze.partner_quotes")
    only_ledger = job.execute_in_process(run_config=QUIET, instance=DagsterInstance.get(), raise_on_error=False,
                                         asset_selection=[files])  # no source: nothing to ingest, nothing fails
    assert only_ledger.success and not lake.table_exists("bronze.partner_quotes")
    result = job.execute_in_process(run_config=QUIET, instance=DagsterInstance.get(), raise_on_error=False,
                                    asset_selection=[quotes, quarantine, files])
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {quotes, files}
    assert set(ledger(lake)) == {"partner_quotes/a.csv"} and not lake.table_exists("bronze.kyc_events")


def test_the_rows_stored_are_those_of_the_hash_recorded(settings, lake, monkeypatch):
    """A feed that renames a new version over a file at any moment: the rows and the hash that records them come
    from one read, so the ledger never marks one version while the table holds another's rows."""
    import hashlib

    from resources.landing_zone import LandingFile

    defs = definitions(settings)
    path = drop(settings, "partner_quotes/q.csv", b"symbol,price\nOLD,1.0\n")
    [request], _ = tick(defs)
    hashed = LandingFile.sha256

    def hash_then_replace(self):
        digest = hashed(self)
        path.write_bytes(b"symbol,price\nNEW,2.0\n")  # the next version lands right after any hash
        return digest

    monkeypatch.setattr(LandingFile, "sha256", hash_then_replace)
    assert execute(defs, request).success
    [row] = lake.read("bronze.partner_quotes").to_pylist()
    assert row["_file_sha256"] == hashlib.sha256(f"symbol,price\n{row['symbol']},{row['price']}\n".encode()).hexdigest()
    assert ledger(lake)["partner_quotes/q.csv"]["file_sha256"] == row["_file_sha256"]


def test_a_file_whose_name_is_not_utf8_is_left_in_place_and_named(settings, lake):
    """A Latin-1 name (b"caf\xe9.csv") comes out of the folder listing as a surrogate escape: its run's tags,
    the ledger and the quarantine could not store it, and the run failed on every retry. It is left where it
    is, and the sensor's log and the CLI say which file to rename; the other files are ingested."""
    import os

    from click.testing import CliRunner

    from platformq_assets.cli import main
    from resources.landing_zone import LandingZoneResource

    drop(settings, "partner_quotes/a.csv", b"symbol,price\nAAA,1.5\n")
    folder = os.fsencode(settings.landing_dir / "partner_quotes")
    with open(os.path.join(folder, b"caf\xe9.csv"), "wb") as handle:
        handle.write(b"symbol,price\nBBB,2.5\n")
    zone = LandingZoneResource(root=str(settings.landing_dir), sources=list(settings.landing_sources))
    misnamed = []
    assert [f.relpath for f in zone.list_files(misnamed)] == ["partner_quotes/a.csv"]
    assert misnamed == ["partner_quotes/caf\\udce9.csv"]
    result = CliRunner().invoke(main, ["ingest-landing"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "left in place: partner_quotes/caf\\udce9.csv (its name is not UTF-8: rename it)" in result.output
    assert "Ingested 1 file(s)" in result.output
    assert lake.read("bronze.partner_quotes").num_rows == 1
    assert os.path.exists(os.path.join(folder, b"caf\xe9.csv"))


def test_a_landing_tables_profile_quotes_no_number_or_time_of_its_rows(settings, lake):
    """A partner's number or time can be a person's (a date of birth, a national id stored as a number); the
    event log is out of reach of masking and erasure, so a landing table's profile quotes no min or max."""
    from dagster._serdes import serialize_value

    defs = definitions(settings)
    birth, national_id = "1961-07-23", 840612345678
    lines = [b'{"account_id": 1, "event": "kyc_reviewed", "national_id": %d, "born": "%s"}'
             % (national_id, birth.encode())]
    lines += [b'{"account_id": %d, "event": "kyc_reviewed", "national_id": %d, "born": "1990-01-0%d"}'
              % (i, 900000000000 + i, i) for i in range(2, 6)]
    drop(settings, "kyc_events/k.jsonl", b"\n".join(lines) + b"\n")
    [request], _ = tick(defs)
    result = execute(defs, request)
    assert result.success
    [meta] = [e.materialization.metadata for e in result.get_asset_materialization_events()
              if e.asset_key.path[-1] == "kyc_events"]
    assert "national_id" in meta["profile"].value and meta["dagster/row_count"].value == 5  # still profiled
    logs = serialize_value(DagsterInstance.get().all_logs(result.run_id))
    assert str(national_id) not in logs and "1961" not in logs
