"""Erasure requests: remove a data subject (one trading account) from the lake (no Dagster here).

A request names a tenant and one of its accounts. It is recorded in ``governance.erasure_requests`` (the CLI,
``platformq erasure request``, or a tenant admin through the data API's ``POST /v1/erasure-requests``, which
takes the tenant from the caller's credentials) and carried out by the ``governance/erasure_log`` asset (daily
schedule, or a materialisation from the UI), which writes one row per request to ``governance.erasure_log``:

* rows that describe the subject (identity, KYC, per-account features, positions, ranks, scores, margin) are
  deleted from every table in ``RULES``;
* rows that record the subject's part in something shared (an order book, a trade with a counterparty) keep
  the event and lose the subject: the account id is set to null there, so market data (bars, volumes) and the
  counterparty's own history stay as they were;
* then every snapshot of those tables but the current one is expired (whatever the snapshots' clocks say) and
  the files that only those snapshots reached are deleted (``resources.lake_maintenance``), so neither time
  travel nor the object store still holds the rows;
* a completed request keeps its account id in the log: the venue, landing and dbt writers read it to keep the
  subject out of a day written again (``suppress``); a write that read it before the erasure committed and
  committed after is found by every later run of the asset and erased again (``sweep_residue``).

A request is checked against ``bronze.accounts`` first: an account that is not the tenant's is rejected with
the same reason whether or not it exists elsewhere (a tenant learns nothing of another's accounts).
Processing is idempotent: a request is done when its log row exists; a run interrupted before that repeats the
deletes (they match nothing the second time) and the expiry (which finishes the clean-up it had begun).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pyarrow as pa

    from resources.lake import LakeResource

REQUESTS_TABLE = "governance.erasure_requests"
LOG_TABLE = "governance.erasure_log"
COMPLETED, REJECTED, IN_PROGRESS = "completed", "rejected", "in_progress"
IDENTITY_TABLE = "bronze.accounts"


@dataclass(frozen=True)
class Rule:
    """How one table holds the subject: ``delete`` its rows, ``null`` the columns naming it, remove it from a
    comma-separated ``list`` column, or delete the rows whose raw ``json`` record has its ``account_id``.

    A ``list`` or ``json`` rule's filter cannot name the subject (the id sits inside a string), so every row it
    reads is a candidate; ``narrow_by`` names a column whose values, taken from the rows that do name the
    subject, bound what is rewritten (the landing file of a quarantined record, a label's id): the other rows
    and their files stay as they are."""

    table: str
    action: str
    columns: tuple[str, ...]
    narrow_by: str | None = None


RULES: tuple[Rule, ...] = (
    Rule("bronze.accounts", "delete", ("account_id",)),
    Rule("silver.accounts", "delete", ("account_id",)),
    Rule("bronze.kyc_events", "delete", ("account_id",)),
    Rule("gold.positions_pnl", "delete", ("account_id",)),
    Rule("gold.trader_leaderboard", "delete", ("account_id",)),
    Rule("gold.futures_margin", "delete", ("account_id",)),
    Rule("gold.futures_final_settlement", "delete", ("account_id",)),
    Rule("gold.account_anomaly_predictions", "delete", ("account_id",)),
    Rule("features.account_activity", "delete", ("account_id",)),
    Rule("ml.account_anomaly_training_set", "delete", ("account_id",)),
    Rule("bronze.orders", "null", ("account_id",)),
    Rule("bronze.fills", "null", ("account_id", "counterparty_account_id")),
    Rule("silver.trades", "null", ("buy_account_id", "sell_account_id")),
    Rule("bronze.anomaly_labels", "list", ("account_ids",), narrow_by="anomaly_id"),
    # a quarantined record is kept raw; one that is a JSON object naming the account goes (a CSV line or a
    # record that does not parse cannot be matched safely and stays)
    Rule("quarantine.landing", "json", ("raw_record",), narrow_by="file"),
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _requests_schema() -> "pa.Schema":
    import pyarrow as pa

    return pa.schema([pa.field("request_id", pa.string(), nullable=False), ("tenant_id", pa.string()),
                      ("account_id", pa.int64()), ("reason", pa.string()), ("requested_by", pa.string()),
                      ("requested_at", pa.timestamp("us", tz="UTC"))])


def _log_schema() -> "pa.Schema":
    import pyarrow as pa

    return pa.schema([pa.field("request_id", pa.string(), nullable=False), ("tenant_id", pa.string()),
                      ("account_id", pa.int64()), ("status", pa.string()), ("detail", pa.string()),
                      ("rows_deleted", pa.int64()), ("rows_pseudonymised", pa.int64()), ("tables", pa.string()),
                      ("snapshots_expired", pa.int64()), ("files_deleted", pa.int64()),
                      ("completed_at", pa.timestamp("us", tz="UTC"))])


# -- requests ---------------------------------------------------------------------------------------------
def request_erasure(lake: "LakeResource", tenant_id: str, account_id: int, reason: str,
                    requested_by: str) -> dict:
    """Record a request (checked when it is processed, so that the check sees the lake as it is then)."""
    import pyarrow as pa

    if not tenant_id.strip():
        raise ValueError("tenant_id is empty")
    if not reason.strip():
        raise ValueError("a reason is required (it is kept with the request)")
    row = {"request_id": str(uuid.uuid4()), "tenant_id": tenant_id, "account_id": int(account_id),
           "reason": reason, "requested_by": requested_by, "requested_at": _now()}
    lake.append(REQUESTS_TABLE, pa.Table.from_pylist([row], schema=_requests_schema()))
    return row


def _rows(lake: "LakeResource", table: str) -> list[dict]:
    return lake.read(table).to_pylist() if lake.table_exists(table) else []


def list_requests(lake: "LakeResource") -> list[dict]:
    """Every request with its outcome (``pending`` until processed)."""
    log = {row["request_id"]: row for row in _rows(lake, LOG_TABLE)}
    out = []
    for row in sorted(_rows(lake, REQUESTS_TABLE), key=lambda r: (r["requested_at"], r["request_id"])):
        done = log.get(row["request_id"])
        out.append({**row, "status": done["status"] if done else "pending",
                    "detail": done["detail"] if done else None,
                    "completed_at": done["completed_at"] if done else None})
    return out


def erased_accounts(lake: "LakeResource") -> set[int]:
    """Accounts whose erasure was accepted (under way or completed): kept out of anything written again."""
    return {row["account_id"] for row in _rows(lake, LOG_TABLE) if row["status"] in (COMPLETED, IN_PROGRESS)}


# -- rewriting ----------------------------------------------------------------------------------------------
def _predicate(rule: Rule, account_ids: set[int], schema=None, text_values: dict[str, list[str]] | None = None):
    """The rows a rule reads; ``schema`` (the Iceberg table's): a text id column is matched by the ids' digits
    and by ``text_values`` (its values that spell an id otherwise, see ``_text_values``)."""
    from pyiceberg.expressions import In, Or

    if rule.action == "list":
        from pyiceberg.expressions import NotEqualTo

        return NotEqualTo(rule.columns[0], "")  # narrowed in memory: the ids sit inside a string
    if rule.action == "json":
        from pyiceberg.expressions import NotNull

        return NotNull(rule.columns[0])  # narrowed in memory: the id sits inside the raw record
    from pyiceberg.types import StringType

    def ids(column):
        field = next((f for f in schema.fields if f.name == column), None) if schema is not None else None
        if field is not None and isinstance(field.field_type, StringType):
            # the exact strings: "17", and "0017" or " 17" where the column holds them (text_values)
            return sorted({str(a) for a in account_ids} | set((text_values or {}).get(column, ())))
        return sorted(account_ids)

    terms = [In(column, ids(column)) for column in rule.columns]
    return terms[0] if len(terms) == 1 else Or(*terms)


def _text_values(table, rule: Rule, account_ids: set[int]) -> dict[str, list[str]]:
    """For each text id column of a delete/null rule: the distinct values of the table that name one of the
    accounts by their digits ("0017", " 17 "), read from that column alone, so the filter can name them."""
    import pyarrow.compute as pc
    from pyiceberg.expressions import NotNull
    from pyiceberg.types import StringType

    if rule.action not in ("delete", "null"):
        return {}
    out = {}
    for column in rule.columns:
        field = next((f for f in table.schema().fields if f.name == column), None)
        if field is None or not isinstance(field.field_type, StringType):
            continue
        values = pc.unique(table.scan(row_filter=NotNull(column), selected_fields=(column,)).to_arrow()
                           .column(column).combine_chunks())
        out[column] = [v for v in values.to_pylist() if _names_account(v, account_ids)]
    return out


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")  # as landing's reader takes text for a long (landing_reader._INTEGER)


def _account_number(value) -> int | None:
    """The account number a value spells as landing's reader would read it into a long column: an integer, a
    float with no fraction (17.0, as a pandas export with gaps writes ids), or text of ASCII digits with an
    optional sign, spaces and leading zeros aside; None for anything else ("²" is a digit to str.isdigit but
    not to int, which raised)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None  # NaN and inf are not whole numbers
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(text := value.strip()):
        return int(text)
    return None


def _names_account(value: str | None, account_ids: set[int]) -> bool:
    """A text id names an account when it is that number's digits (leading zeros, a sign and spaces aside)."""
    return _account_number(value or "") in account_ids


def _hits(values: "pa.ChunkedArray | pa.Array", account_ids: set[int]) -> "pa.Array":
    """Which values name one of the accounts: numbers equal to an id, or, in a text column (a source whose ids
    arrived as text), strings of an id's digits, "0017" as well as "17"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pa.array([_names_account(v, account_ids) for v in values.to_pylist()], pa.bool_())
    return pc.fill_null(pc.is_in(values, value_set=pa.array(sorted(account_ids), pa.int64())), False)


def apply_rule(rule: Rule, data: "pa.Table", account_ids: set[int]) -> tuple["pa.Table", int]:
    """The table's rows with the subjects removed, and how many rows that changed or dropped."""
    import pyarrow.compute as pc

    out, touched = _apply(rule, data, account_ids)
    return out, 0 if touched is None else int(pc.sum(touched).as_py() or 0)


def _apply(rule: Rule, data: "pa.Table", account_ids: set[int]) -> tuple["pa.Table", "pa.Array | None"]:
    """The table's rows with the subjects removed, and which input rows that changed or dropped (None: none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not account_ids or not data.num_rows or not set(rule.columns) <= set(data.column_names):
        return data, None
    if rule.action == "delete":
        hit = _hits(data.column(rule.columns[0]), account_ids)
        return data.filter(pc.invert(hit)), hit
    if rule.action == "null":
        touched = None
        for column in rule.columns:
            index = data.schema.get_field_index(column)
            hit = _hits(data.column(column), account_ids)
            touched = hit if touched is None else pc.or_(touched, hit)
            field = data.schema.field(index)
            data = data.set_column(index, field.with_nullable(True),
                                   pc.if_else(hit, pa.scalar(None, field.type), data.column(column)))
        return data, touched
    column = rule.columns[0]
    if rule.action == "json":
        named = pa.array([_json_names(value, account_ids) for value in data.column(column).to_pylist()], pa.bool_())
        return data.filter(pc.invert(named)), named
    index = data.schema.get_field_index(column)
    changed, values = [], []
    for value in data.column(column).to_pylist():
        hit = False
        if value:
            kept = [part for part in value.split(",") if not _names_account(part, account_ids)]
            if len(kept) != len(value.split(",")):
                hit, value = True, ",".join(kept)
        changed.append(hit)
        values.append(value)
    return (data.set_column(index, data.schema.field(index), pa.array(values, data.schema.field(index).type)),
            pa.array(changed, pa.bool_()))


def _narrowed(rule: Rule, data: "pa.Table", predicate, account_ids: set[int]):
    """(rows, predicate) bounded by ``rule.narrow_by``: only the candidates sharing a value of that column with a
    row that names the subject (all candidates when the column is absent or a named row has no value)."""
    import pyarrow.compute as pc
    from pyiceberg.expressions import And, In

    if rule.narrow_by is None or rule.narrow_by not in data.column_names:
        return data, predicate
    _, touched = _apply(rule, data, account_ids)
    if touched is None:
        return data, predicate
    values = pc.unique(data.column(rule.narrow_by).filter(touched))
    if not len(values) or values.null_count:
        return data, predicate
    narrow = In(rule.narrow_by, sorted(values.to_pylist()))
    return data.filter(pc.is_in(data.column(rule.narrow_by), value_set=values)), And(predicate, narrow)


def _json_names(raw: str | None, account_ids: set[int]) -> bool:
    """True when a raw record is a JSON object whose ``account_id`` is one of the accounts (a whole number, as
    landing's reader takes one: ``_account_number``), or holds such objects: a JSON array of them (a line that
    is a list), a whole file quarantined as one record (``base64:`` and its first bytes: a JSON document, JSON
    Lines with a reserved column name), or text cut short (``RAW_LIMIT``) whose complete objects name one."""
    if raw and raw.startswith("base64:"):
        import base64
        import binascii

        try:
            raw = base64.b64decode(raw.removeprefix("base64:"), validate=True).decode("utf-8", errors="ignore")
        except (binascii.Error, ValueError):
            return False
    if not raw or "account_id" not in raw.lower():  # a cheap pre-check; keys are matched without case
        return False
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return _complete_objects_name(raw, account_ids)
    if isinstance(record, list):
        return any(_object_names(item, account_ids) for item in record)
    return _object_names(record, account_ids)


def _object_names(record, account_ids: set[int]) -> bool:
    if not isinstance(record, dict):
        return False
    value = next((v for k, v in record.items() if isinstance(k, str) and k.lower() == "account_id"), None)
    return _account_number(value) in account_ids


def _complete_objects_name(text: str, account_ids: set[int]) -> bool:
    """Whether text that is not one JSON value (JSON Lines, a document cut anywhere) holds a complete JSON object
    naming one of the accounts: each ``{`` is tried as the start of one (an object left incomplete names no one,
    there is nothing safe to match it on)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            record, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            record = None
        if _object_names(record, account_ids):
            return True
        start = text.find("{", start + 1)
    return False


def suppress(tables: dict[str, "pa.Table"], account_ids: set[int]) -> tuple[dict[str, "pa.Table"], dict[str, int]]:
    """Apply every rule to tables about to be written (identifier -> Arrow table): erased accounts stay out of
    a day that is written again. Returns the tables and the rows changed per table."""
    rules = {rule.table: rule for rule in RULES}
    out, changed = {}, {}
    for identifier, data in tables.items():
        rule = rules.get(identifier)
        if rule is None:
            out[identifier] = data
            continue
        out[identifier], changed[identifier] = apply_rule(rule, data, account_ids)
    return out, changed


def _erase_in_table(lake: "LakeResource", rule: Rule, account_ids: set[int]) -> int:
    """Rewrite the rows of one table that name the subjects, in one commit (readers see before or after)."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    from resources.lake import COMMIT_ATTEMPTS, commit_backoff

    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        table = lake.load_table(identifier := rule.table)
        predicate = _predicate(rule, account_ids, table.schema(), _text_values(table, rule, account_ids))
        data, bounded = _narrowed(rule, table.scan(row_filter=predicate).to_arrow(), predicate, account_ids)
        rewritten, changed = apply_rule(rule, data, account_ids)
        if not changed:
            return 0
        if rule.action != "delete" or rewritten.num_rows:
            rewritten = lake.conform(table, rewritten)
        try:
            with table.transaction() as tx:
                # every row the predicate matched goes; the rewritten ones (nulled ids, kept events) come back
                if rewritten.num_rows:
                    tx.overwrite(rewritten, overwrite_filter=bounded)
                else:
                    tx.delete(bounded)
                # the snapshot that deletes a file lists it (status DELETED) with its column bounds, which can
                # be the subject's values; an empty append on top leaves those manifests behind, so the
                # current snapshot names no deleted file (the expiry then removes the one that did)
                tx.append(table.schema().as_arrow().empty_table())
            return changed
        except (CommitFailedException, ValidationException):  # another writer first: read again, redo
            if attempt == COMMIT_ATTEMPTS:
                raise
            commit_backoff(attempt)
    raise AssertionError(f"unreachable: {identifier}")


# -- processing ---------------------------------------------------------------------------------------------
def _owner_check(lake: "LakeResource", request: dict, completed: set[tuple[str, int]]) -> str | None:
    """None when the tenant may erase the account; else the reason for rejecting (the same whether or not
    the account exists in another tenant)."""
    from pyiceberg.expressions import EqualTo

    key = (request["tenant_id"], request["account_id"])
    owners = set()
    if lake.table_exists(IDENTITY_TABLE):
        owners = set(lake.read(IDENTITY_TABLE, row_filter=EqualTo("account_id", request["account_id"]),
                               columns=("tenant_id",)).column("tenant_id").to_pylist())
    if owners == {request["tenant_id"]} or (not owners and key in completed):
        return None
    return f"account {request['account_id']} is not an account of tenant {request['tenant_id']}"


def _expire_history(lake: "LakeResource", tables) -> tuple[int, int]:
    """Expire every snapshot of the tables but their current ones (and any branch or tag head), whatever the
    snapshots' timestamps say (a writer whose clock ran ahead dates its snapshot after the erasure), and delete
    the files only they reached. Returns (snapshots expired, files deleted)."""
    from resources.lake_maintenance import expire_snapshots

    results = [expire_snapshots(lake, identifier, older_than=_END_OF_TIME, retain_last=0) for identifier in tables]
    return sum(r.snapshots_expired for r in results), sum(r.files_deleted for r in results)


_END_OF_TIME = dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)


def process_requests(lake: "LakeResource", online_eraser: Callable[[set[int]], int] | None = None,
                     log: Callable[[str], Any] = lambda _message: None) -> dict:
    """Carry out every pending request, then erase again what was written about completed erasures since
    (``sweep_residue``); returns what was done (for the asset's metadata)."""
    summary = _process_pending(lake, online_eraser, log)
    residue = sweep_residue(lake, log, online_eraser)
    summary["snapshots_expired"] += residue.pop("snapshots_expired")
    summary["files_deleted"] += residue.pop("files_deleted")
    return {**summary, **residue}


def sweep_residue(lake: "LakeResource", log: Callable[[str], Any] = lambda _message: None,
                  online_eraser: Callable[[set[int]], int] | None = None) -> dict:
    """Rows naming an account whose erasure completed that a writer committed after the erasure (a dbt build,
    a venue or landing run that read its inputs or the erased list before the erasure committed) are erased
    again, with the history that holds them. Without this nothing would remove them: the request is done.
    The feature store likewise (``online_eraser``: a features step that exported the account's rows after the
    erasure reached Feast; the next online materialisation would have put it back in the online store)."""
    erased = {row["account_id"] for row in _rows(lake, LOG_TABLE) if row["status"] == COMPLETED}
    remaining = remaining_rows(lake, erased)
    rows = {}
    for rule in RULES:
        if rule.table in remaining:
            rows[rule.table] = _erase_in_table(lake, rule, erased)
            log(f"{rule.table}: {rows[rule.table]} row(s) naming erased accounts, written after their erasure, "
                f"erased again")
    snapshots, files = _expire_history(lake, sorted(remaining))
    features, feature_error = 0, None
    try:
        features = online_eraser(erased) if (online_eraser and erased) else 0
    except Exception as exc:  # noqa: BLE001 - Feast down: the lake's work and its check go on; tried next run
        feature_error = f"{type(exc).__name__}: {exc}"[:300]
        log(f"feature store: the residue sweep failed ({feature_error}); it is tried again on the next run")
    if features:
        log(f"feature store: {features} row(s) or entit(ies) naming erased accounts, written after their "
            f"erasure, erased again")
    return {"residue_rows": sum(rows.values()), "residue_tables": ", ".join(sorted(rows)) or "none",
            "residue_feature_rows": features, "residue_feature_error": feature_error or "none",
            "snapshots_expired": snapshots, "files_deleted": files}


def _process_pending(lake: "LakeResource", online_eraser: Callable[[set[int]], int] | None,
                     log: Callable[[str], Any]) -> dict:
    requests = [r for r in list_requests(lake) if r["status"] in ("pending", IN_PROGRESS)]
    if not requests:
        return {"requests": 0, "completed": 0, "rejected": 0, "rows_deleted": 0, "rows_pseudonymised": 0,
                "snapshots_expired": 0, "files_deleted": 0, "online_rows_deleted": 0, "online_error": "none"}
    # accounts a tenant's earlier request was accepted for (ownership checked then; under way or done): the account
    # may be gone from bronze.accounts, and a second request for it (a retried filing, a request sent again while
    # the first was under way) is the tenant's own, not "not an account of" the tenant
    done = {(r["tenant_id"], r["account_id"]) for r in list_requests(lake) if r["status"] in (COMPLETED, IN_PROGRESS)}
    # checked once: a request accepted by a run that did not finish is not checked again (its account may
    # already be gone from bronze.accounts)
    verdicts = {r["request_id"]: None if r["status"] == IN_PROGRESS else _owner_check(lake, r, done)
                for r in requests}
    accepted = [r for r in requests if verdicts[r["request_id"]] is None]
    for request in accepted:
        if request["status"] != IN_PROGRESS:
            _write_log(lake, {**_log_row(request, IN_PROGRESS, "accepted; erasure under way", {}),
                              "completed_at": None})
    per_request: dict[str, dict[str, dict]] = {r["request_id"]: {} for r in accepted}
    for rule in RULES:
        if not lake.table_exists(rule.table):
            continue
        for request in accepted:  # one commit per table and request: the log can say what each request removed
            changed = _erase_in_table(lake, rule, {request["account_id"]})
            if changed:
                verb = "deleted" if rule.action in ("delete", "json") else "pseudonymised"
                per_request[request["request_id"]][rule.table] = {verb: changed}
                log(f"{request['request_id']}: {rule.table}: {changed} row(s) {verb}")
    # history goes too: every snapshot but the current one of every table that can hold a subject (before the
    # feature store: an outage there left the rows in time travel until it was over)
    snapshots, files = _expire_history(lake, [rule.table for rule in RULES
                                              if accepted and lake.table_exists(rule.table)])
    online, online_error = 0, None
    try:
        online = online_eraser({r["account_id"] for r in accepted}) if (online_eraser and accepted) else 0
    except Exception as exc:  # noqa: BLE001 - Feast down: the requests stay under way, finished by the next run
        online_error = f"{type(exc).__name__}: {exc}"[:300]
        log(f"feature store: the erasure failed ({online_error}); the requests stay in progress and the next run "
            f"finishes them")

    rows = []
    for request in requests:
        reason = verdicts[request["request_id"]]
        tables = per_request.get(request["request_id"], {})
        if reason:
            detail = reason
        elif online_error:  # the error itself stays in the run's log: tenants read this detail (data API)
            detail = "lake done; the feature store failed, the next run finishes it (the counts are this run's)"
        elif request["status"] == IN_PROGRESS:
            detail = "finished after an interrupted run (the counts are this run's)"
        else:
            detail = f"{len(tables)} table(s) changed" if tables else "nothing left to erase"
        status = REJECTED if reason else (IN_PROGRESS if online_error else COMPLETED)
        row = _log_row(request, status, detail, tables)
        if not reason:
            row.update({"snapshots_expired": snapshots, "files_deleted": files})
        if status == IN_PROGRESS:
            row["completed_at"] = None
        rows.append(row)
    for row in rows:
        _write_log(lake, row)
    return {"requests": len(requests), "completed": sum(r["status"] == COMPLETED for r in rows),
            "rejected": sum(r["status"] == REJECTED for r in rows),
            "rows_deleted": sum(r["rows_deleted"] for r in rows),
            "rows_pseudonymised": sum(r["rows_pseudonymised"] for r in rows),
            "snapshots_expired": snapshots, "files_deleted": files, "online_rows_deleted": online,
            "online_error": online_error or "none"}


def _log_row(request: dict, status: str, detail: str, tables: dict) -> dict:
    return {"request_id": request["request_id"], "tenant_id": request["tenant_id"],
            "account_id": request["account_id"], "status": status, "detail": detail,
            "rows_deleted": sum(v.get("deleted", 0) for v in tables.values()),
            "rows_pseudonymised": sum(v.get("pseudonymised", 0) for v in tables.values()),
            "tables": json.dumps(tables, sort_keys=True), "snapshots_expired": 0, "files_deleted": 0,
            "completed_at": _now()}


def _write_log(lake: "LakeResource", row: dict) -> None:
    """One row per request, replaced (a re-run after a crash writes the same key)."""
    import pyarrow as pa
    from pyiceberg.expressions import EqualTo

    lake.replace_where(LOG_TABLE, pa.Table.from_pylist([row], schema=_log_schema()),
                       EqualTo("request_id", row["request_id"]))


def remaining_rows(lake: "LakeResource", account_ids: set[int]) -> dict[str, int]:
    """Rows that still name one of the accounts, per table (empty when the erasure is complete)."""
    if not account_ids:
        return {}
    out = {}
    for rule in RULES:
        if not lake.table_exists(rule.table):
            continue
        table = lake.load_table(rule.table)  # once: the filter is built for its schema, and the scan reads it
        data = table.scan(row_filter=_predicate(rule, account_ids, table.schema(),
                                                _text_values(table, rule, account_ids)),
                          selected_fields=rule.columns or ("*",)).to_arrow()
        _, named = apply_rule(rule, data, account_ids)
        if named:
            out[rule.table] = named
    return out


class LakeErasureDesk:
    """The data API's view of erasure requests (``services.data_api.api.ErasureDesk``): file one for a tenant,
    list a tenant's own."""

    def __init__(self, lake: "LakeResource"):
        self.lake = lake

    def file(self, tenant: str, account_id: int, reason: str, requested_by: str) -> dict:
        return request_erasure(self.lake, tenant, account_id, reason, requested_by)

    def of_tenant(self, tenant: str) -> list[dict]:
        return [row for row in list_requests(self.lake) if row["tenant_id"] == tenant]
