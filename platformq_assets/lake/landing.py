"""Landing zone: files dropped in ``data/landing/<source>/`` become ``bronze.<source>``.

One step ingests a list of files (the sensor sends one file per run; the CLI
sends every pending file). For each file it records, in this order, the
accepted rows in ``bronze.<source>``, the rejected records in
``quarantine.landing`` (raw record, file, line, reason) and a row in the
ledger ``ops.landing_files``. Each of the three writes replaces whatever an
earlier attempt wrote for the same file content (keyed by SHA-256), so a crash
between them is repaired by re-running, and a file already in the ledger is
never ingested twice.
"""


import collections
import datetime as dt
import hashlib

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    MaterializeResult,
    multi_asset,
)

from pipelines.pools import group_pool
from platformq_assets.lake import landing_reader
from platformq_assets.quality.profiling import profile_metadata
from resources.lake import LakeResource
from resources.landing_zone import LandingFile, LandingZoneResource

QUARANTINE_KEY = AssetKey(["quarantine", "landing"])
LEDGER_KEY = AssetKey(["ops", "landing_files"])

_ARROW_TYPES = {
    landing_reader.LONG: "int64",
    landing_reader.DOUBLE: "float64",
    landing_reader.BOOLEAN: "bool",
    landing_reader.STRING: "string",
    landing_reader.EMPTY: "null",  # no value yet: the table takes the column once a file gives it a type
}


def landing_key(source: str) -> AssetKey:
    return AssetKey(["bronze", source])


def _table_types(lake: LakeResource, identifier: str) -> dict[str, str]:
    """The existing table's columns as landing types (for casting new files)."""
    if not lake.table_exists(identifier):
        return {}
    from pyiceberg.types import BooleanType, DoubleType, FloatType, IntegerType, LongType, TimestamptzType, TimestampType

    kinds = {LongType: "long", IntegerType: "long", DoubleType: "double", FloatType: "double",
             BooleanType: "boolean", TimestampType: "timestamp", TimestamptzType: "timestamp"}
    out = {}
    for field in lake.load_table(identifier).schema().fields:
        if not field.name.startswith("_"):
            out[field.name] = kinds.get(type(field.field_type), "string")
    return out


def _arrow_rows(parsed: landing_reader.ParsedFile, lineage: dict):
    import pyarrow as pa

    arrays, fields = [], []
    for col, kind in parsed.columns.items():
        arrow_type = pa.timestamp("us", tz="UTC") if kind == landing_reader.TIMESTAMP else pa.type_for_alias(_ARROW_TYPES[kind])
        arrays.append(pa.array([r[col] for r in parsed.accepted], type=arrow_type))
        fields.append(pa.field(col, arrow_type))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields)) if fields else pa.table({})
    n = len(parsed.accepted)
    extra = {
        "_source": pa.array([lineage["source"]] * n, pa.string()),
        "_batch_id": pa.array([lineage["batch_id"]] * n, pa.string()),
        "_ingested_at": pa.array([lineage["ingested_at"]] * n, pa.timestamp("us", tz="UTC")),
        "_source_file": pa.array([lineage["file"]] * n, pa.string()),
        "_file_sha256": pa.array([lineage["sha256"]] * n, pa.string()),
        "_line": pa.array(parsed.accepted_lines, pa.int64()),
    }
    for name, array in extra.items():
        table = table.append_column(name, array)
    return table


def _quarantine_rows(parsed: landing_reader.ParsedFile, lineage: dict):
    import pyarrow as pa

    q = parsed.quarantined
    return pa.table({
        "source": pa.array([lineage["source_name"]] * len(q), pa.string()),
        "file": pa.array([lineage["file"]] * len(q), pa.string()),
        "file_sha256": pa.array([lineage["sha256"]] * len(q), pa.string()),
        "line": pa.array([r.line for r in q], pa.int64()),
        "raw_record": pa.array([r.raw for r in q], pa.string()),
        "reason": pa.array([r.reason for r in q], pa.string()),
        "batch_id": pa.array([lineage["batch_id"]] * len(q), pa.string()),
        "quarantined_at": pa.array([lineage["ingested_at"]] * len(q), pa.timestamp("us", tz="UTC")),
    })


def _ledger_row(lineage: dict, status: str, read: int, accepted: int, quarantined: int, fmt: str, erased: int = 0):
    import pyarrow as pa

    return pa.table({
        "source": pa.array([lineage["source_name"]], pa.string()),
        "file": pa.array([lineage["file"]], pa.string()),
        "file_sha256": pa.array([lineage["sha256"]], pa.string()),
        "file_format": pa.array([fmt], pa.string()),
        "status": pa.array([status], pa.string()),
        "rows_read": pa.array([read], pa.int64()),
        "rows_accepted": pa.array([accepted], pa.int64()),
        "rows_quarantined": pa.array([quarantined], pa.int64()),
        # records of accounts whose erasure was accepted: read, not stored (read = accepted + quarantined + erased)
        "rows_erased": pa.array([erased], pa.int64()),
        "batch_id": pa.array([lineage["batch_id"]], pa.string()),
        "ingested_at": pa.array([lineage["ingested_at"]], pa.timestamp("us", tz="UTC")),
    })


def ingested_hashes(lake: LakeResource) -> set[tuple[str, str]]:
    """(source, sha256) of every file the ledger says was ingested."""
    identifier = ".".join(LEDGER_KEY.path)
    if not lake.table_exists(identifier):
        return set()
    ledger = lake.read(identifier, columns=("source", "file_sha256"))
    return set(zip(ledger.column("source").to_pylist(), ledger.column("file_sha256").to_pylist()))


def ingest_file(lake: LakeResource, landing: LandingFile, batch_id: str, already: set[tuple[str, str]],
                erased: frozenset[int] | set[int] = frozenset()) -> dict:
    """Ingest one file (idempotent per content hash). Returns its ledger counts. Accepted records of an
    ``erased`` account (an accepted erasure request) are read and counted, not stored."""
    from pyiceberg.expressions import And, EqualTo

    # one read: the bytes hashed are the bytes parsed (a feed that renames a new version over the file between
    # two reads would store the new rows under the old version's hash)
    data = landing.path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    lineage = {
        "source": f"landing:{landing.source}",
        "source_name": landing.source,
        "batch_id": batch_id,
        "ingested_at": dt.datetime.now(dt.timezone.utc),
        "file": landing.relpath,
        "sha256": sha,
    }
    if (landing.source, sha) in already:
        return {"file": landing.relpath, "status": "already_ingested", "rows_read": 0, "rows_accepted": 0,
                "rows_quarantined": 0, "rows_erased": 0, "sha256": sha}

    identifier = ".".join(landing_key(landing.source).path)
    parsed = landing_reader.parse_file(landing.name, data, _table_types(lake, identifier))
    if not parsed.reconciles:  # a bug in the reader, never bad input: stop loudly
        raise RuntimeError(f"{landing.relpath}: read {parsed.records_read} != accepted + quarantined")
    rows = None
    if parsed.accepted:
        try:
            rows = _arrow_rows(parsed, lineage)
        except (ValueError, TypeError, OverflowError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            # The reader accepted values the table cannot hold (a reader gap, not a lake fault): keep the
            # whole file in quarantine with the reason instead of failing the batch it is part of.
            problem = f"rows could not be converted for the table ({type(exc).__name__})"
            parsed = landing_reader.file_problem(parsed.file_format, f"{problem}: {exc}", data, problem)
    quarantine_id = ".".join(QUARANTINE_KEY.path)
    held = _quarantine_rows(parsed, lineage) if parsed.quarantined or lake.table_exists(quarantine_id) else None
    erased_accepted = erased_quarantined = 0
    if erased:  # records naming an erased account, accepted or quarantined raw, are counted, not kept
        from resources.erasure import suppress

        present = {k: v for k, v in ((identifier, rows), (quarantine_id, held)) if v is not None}
        suppressed, changed = suppress(present, set(erased))
        rows, held = suppressed.get(identifier, rows), suppressed.get(quarantine_id, held)
        erased_accepted, erased_quarantined = changed.get(identifier, 0), changed.get(quarantine_id, 0)
    accepted = len(parsed.accepted) - erased_accepted
    quarantined = len(parsed.quarantined) - erased_quarantined
    erased_rows = erased_accepted + erased_quarantined
    same_file = EqualTo("_file_sha256", sha)
    same_source_file = And(EqualTo("source", landing.source), EqualTo("file_sha256", sha))
    if rows is not None:
        lake.replace_where(identifier, rows, same_file)
    if held is not None:
        lake.replace_where(quarantine_id, held, same_source_file)
    status = "ingested" if not parsed.quarantined else ("quarantined" if not parsed.accepted else "partially_quarantined")
    lake.replace_where(".".join(LEDGER_KEY.path),
                       _ledger_row(lineage, status, parsed.records_read, accepted,
                                   quarantined, parsed.file_format, erased_rows),
                       same_source_file)
    already.add((landing.source, sha))
    return {"file": landing.relpath, "status": status, "rows_read": parsed.records_read,
            "rows_accepted": accepted, "rows_quarantined": quarantined, "rows_erased": erased_rows,
            "sha256": sha,
            "reasons": collections.Counter(q.summary for q in parsed.quarantined)}


class LandingConfig(Config):
    files: list[str] = []  # "<source>/<file name>" relative to the landing folder; empty = every pending file


def build_landing_assets(sources: list[str]):
    source_keys = {source: landing_key(source) for source in sources}

    @multi_asset(
        name="landing_ingest",
        pool=group_pool("bronze.landing"),  # the landing tables, quarantine and ledger
        specs=[
            *[AssetSpec(key, description=f"Rows ingested from data/landing/{source}/ (CSV, JSON lines, Parquet).",
                        group_name="landing", kinds={"iceberg", "python"}, owners=["team:lake"],
                        tags={"layer": "bronze", "source": "landing"}, skippable=True)
              for source, key in source_keys.items()],
            AssetSpec(QUARANTINE_KEY, description="Landing records that could not be accepted: raw record, file, "
                      "line and reason.", group_name="landing", kinds={"iceberg"}, owners=["team:lake"],
                      skippable=True),
            AssetSpec(LEDGER_KEY, description="One row per landing file ingested: hash, counts, status.",
                      group_name="landing", kinds={"iceberg"}, owners=["team:lake"], skippable=True),
        ],
        check_specs=[
            AssetCheckSpec("landing_counts_reconcile", asset=LEDGER_KEY, blocking=True,
                           description="For every file of the run: rows read = accepted + quarantined (+ "
                           "records of erased accounts, counted, not stored), and the lake holds exactly those rows."),
            AssetCheckSpec("quarantine_records_explained", asset=QUARANTINE_KEY, blocking=False,
                           description="Every quarantined record names its file and a reason."),
            *[AssetCheckSpec("lineage_columns_present", asset=key, blocking=True,
                             description="Every row names its source file, content hash and line.")
              for key in source_keys.values()],
        ],
        can_subset=True,
        description="Ingests landing-zone files into bronze, quarantining what does not parse.",
    )
    def landing_ingest(context: AssetExecutionContext, config: LandingConfig, lake: LakeResource,
                       landing_zone: LandingZoneResource):
        from pyiceberg.expressions import And, EqualTo

        available = {f.relpath: f for f in landing_zone.list_files()}
        # a subset (the sensor's runs, a selection in the UI) ingests the selected sources' files only; every
        # ingestion writes the quarantine and the ledger, so those two come with any source
        selected = context.selected_asset_keys
        chosen = {source for source, key in source_keys.items() if key in selected}
        wanted = config.files or sorted(f for f, landing in available.items() if landing.source in chosen)
        missing = [f for f in wanted if f not in available]
        if missing:
            raise FileNotFoundError(f"landing files not found under {landing_zone.root}: {missing}")
        unselected = sorted({available[f].source for f in wanted} - chosen)
        if unselected:
            raise ValueError(f"config.files names files of landing sources not selected in this run: "
                             f"{[landing_key(s).to_user_string() for s in unselected]}; select those assets too")
        needed = [k.to_user_string() for k in (QUARANTINE_KEY, LEDGER_KEY) if k not in selected]
        if chosen and needed:
            raise ValueError(f"every landing ingestion writes the quarantine and the ledger: select {needed} "
                             f"with {[source_keys[s].to_user_string() for s in sorted(chosen)]}")
        already = ingested_hashes(lake)
        batch_id = context.run.run_id
        from resources.erasure import erased_accounts

        erased = erased_accounts(lake)
        reports = [ingest_file(lake, available[f], batch_id, already, erased) for f in wanted]
        for report in reports:
            context.log.info(f"{report['file']}: {report['status']} read={report['rows_read']} "
                             f"accepted={report['rows_accepted']} quarantined={report['rows_quarantined']} "
                             f"erased={report['rows_erased']}")

        touched = sorted({r["file"].split("/")[0] for r in reports if r["rows_accepted"]})
        for source in touched:
            identifier = ".".join(source_keys[source].path)
            rows = sum(r["rows_accepted"] for r in reports if r["file"].startswith(source + "/"))
            table = lake.read(identifier)
            written = lake.describe(identifier)
            yield MaterializeResult(asset_key=source_keys[source], metadata={
                "table": identifier, "rows_accepted_this_run": rows, "snapshot_id": str(written["snapshot_id"]),
                **profile_metadata(table, extremes=False)})  # partners' data: no value quoted
            missing = sum(table.column(c).null_count for c in ("_source_file", "_file_sha256", "_line"))
            yield AssetCheckResult(asset_key=source_keys[source], check_name="lineage_columns_present",
                                   passed=missing == 0, metadata={"null_lineage_values": missing})
        totals = {k: sum(r[k] for r in reports)
                  for k in ("rows_read", "rows_accepted", "rows_quarantined", "rows_erased")}
        if any(r["rows_quarantined"] for r in reports):
            # summaries only: the event log is out of reach of masking and erasure, the values stay in the lake
            reasons = sum((r.get("reasons", collections.Counter()) for r in reports), collections.Counter())
            yield MaterializeResult(asset_key=QUARANTINE_KEY, metadata={
                "rows_quarantined_this_run": totals["rows_quarantined"],
                "reasons": "\n".join(f"{n} record(s): {summary}" for summary, n in reasons.most_common())})
            quarantine = lake.read(".".join(QUARANTINE_KEY.path), columns=("file", "reason"))
            unexplained = sum(1 for f, r in zip(quarantine.column("file").to_pylist(),
                                                quarantine.column("reason").to_pylist()) if not f or not r)
            yield AssetCheckResult(asset_key=QUARANTINE_KEY, check_name="quarantine_records_explained",
                                   passed=unexplained == 0, severity=AssetCheckSeverity.WARN,
                                   metadata={"records": quarantine.num_rows, "unexplained": unexplained})
        yield MaterializeResult(asset_key=LEDGER_KEY, metadata={
            "files": len(reports), **totals,
            "already_ingested": sum(r["status"] == "already_ingested" for r in reports)})

        # Reconcile against what the lake now holds, not against our own counters.
        mismatches = []
        for r in reports:
            if r["status"] == "already_ingested":
                continue
            source = r["file"].split("/")[0]
            stored_ok = lake.read(".".join(source_keys[source].path), row_filter=EqualTo("_file_sha256", r["sha256"]),
                                  columns=("_line",)).num_rows if lake.table_exists(".".join(source_keys[source].path)) else 0
            stored_q = lake.read(".".join(QUARANTINE_KEY.path),
                                 row_filter=And(EqualTo("source", source), EqualTo("file_sha256", r["sha256"])),
                                 columns=("line",)).num_rows if r["rows_quarantined"] else 0
            if r["rows_read"] != stored_ok + stored_q + r["rows_erased"] or stored_ok != r["rows_accepted"]:
                mismatches.append(f"{r['file']}: read {r['rows_read']}, lake holds {stored_ok} + {stored_q}"
                                  + (f" (+ {r['rows_erased']} erased)" if r["rows_erased"] else ""))
        yield AssetCheckResult(asset_key=LEDGER_KEY, check_name="landing_counts_reconcile",
                               passed=not mismatches, severity=AssetCheckSeverity.ERROR,
                               metadata={**totals, "mismatches": "\n".join(mismatches) or "none"})

    return landing_ingest
