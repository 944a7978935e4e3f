"""The participant registry: which tenants take part in federated rounds, with their consent,
suspension, last contact and the differential-privacy budget they have spent.

One Iceberg table, ``federated.participants`` (one row per tenant, replaced row by row). Only
tenants with status ``enrolled`` and consent are sampled; a suspended tenant is passed to the
ServerApp, which never samples it (its node may still be connected).
"""

from __future__ import annotations

import datetime as dt

PARTICIPANTS_TABLE = "federated.participants"
ENROLLED, SUSPENDED = "enrolled", "suspended"
COLUMNS = ("tenant_id", "status", "consent", "enrolled_at", "last_seen", "epsilon_spent", "rounds_joined",
           "suspended_reason", "updated_at")


def _schema():
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([pa.field("tenant_id", pa.string(), nullable=False), ("status", pa.string()),
                      ("consent", pa.bool_()), ("enrolled_at", ts), ("last_seen", ts), ("epsilon_spent", pa.float64()),
                      ("rounds_joined", pa.int64()), ("suspended_reason", pa.string()), ("updated_at", ts)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def list_participants(lake) -> list[dict]:
    if not lake.table_exists(PARTICIPANTS_TABLE):
        return []
    return sorted(lake.read(PARTICIPANTS_TABLE).to_pylist(), key=lambda row: row["tenant_id"])


def get(lake, tenant_id: str) -> dict | None:
    return next((row for row in list_participants(lake) if row["tenant_id"] == tenant_id), None)


def _write(lake, row: dict) -> dict:
    import pyarrow as pa
    from pyiceberg.expressions import EqualTo

    row = {**row, "updated_at": _now()}
    lake.replace_where(PARTICIPANTS_TABLE, pa.Table.from_pylist([row], schema=_schema()),
                       EqualTo("tenant_id", row["tenant_id"]))
    return row


def known_tenants(lake) -> list[str]:
    for table in ("silver.accounts", "bronze.accounts"):
        if lake.table_exists(table):
            return sorted(set(lake.read(table, columns=("tenant_id",)).column("tenant_id").to_pylist()) - {None})
    return []


def enrol(lake, tenant_id: str, consent: bool | None = None) -> dict:
    """Enrol (or re-enrol) a tenant; its spent ε is kept: privacy budgets never reset. ``consent`` None: a
    new participant consents, an existing one keeps its recorded consent (re-enrolling, e.g. with
    ``enrol --all``, never overrides a withdrawal; only an explicit ``consent=True`` does)."""
    current = get(lake, tenant_id)
    row = current or {"tenant_id": tenant_id, "enrolled_at": _now(), "last_seen": None, "epsilon_spent": 0.0,
                      "rounds_joined": 0, "consent": True}
    if consent is None:
        consent = bool(row["consent"])
    return _write(lake, {**row, "status": ENROLLED, "consent": consent, "suspended_reason": None})


def suspend(lake, tenant_id: str, reason: str) -> dict:
    current = get(lake, tenant_id)
    if current is None:
        raise KeyError(f"{tenant_id} is not a participant")
    return _write(lake, {**current, "status": SUSPENDED, "suspended_reason": reason})


def set_consent(lake, tenant_id: str, consent: bool) -> dict:
    current = get(lake, tenant_id)
    if current is None:
        raise KeyError(f"{tenant_id} is not a participant")
    return _write(lake, {**current, "consent": consent})


def eligible(rows: list[dict]) -> list[str]:
    return [r["tenant_id"] for r in rows if r["status"] == ENROLLED and r["consent"]]


def excluded(rows: list[dict]) -> list[str]:
    return [r["tenant_id"] for r in rows if not (r["status"] == ENROLLED and r["consent"])]


def record_run(lake, rows: list[dict], history: dict) -> None:
    """After a run: last contact, rounds joined and the ε each participant has now spent.

    ``rows`` (read when the run started) only names the participants; each is updated from its row as it
    is now, so a suspension or consent withdrawal made while the run was going is kept."""
    now = {row["tenant_id"]: row for row in list_participants(lake)}
    joined: dict[str, int] = {}
    for rnd in history["rounds"]:
        if rnd.get("skipped"):
            continue  # its accepted updates were not aggregated: the participant did not join that round
        for tenant in rnd.get("accepted", []):
            joined[tenant] = joined.get(tenant, 0) + 1
    seen = set(history.get("participants", []))
    for started in rows:
        tenant = started["tenant_id"]
        row = now.get(tenant)
        if tenant not in seen or row is None:
            continue
        update = {**row, "last_seen": _now(), "rounds_joined": (row["rounds_joined"] or 0) + joined.get(tenant, 0)}
        # ε its recorded replies report, or, for a round the server never finished (it died with the
        # participant's noised update sent) or that the participant did not answer in time (it may have sent
        # its update late), the most the run can have cost it: the larger counts
        spent = [float(source[tenant]) for source in (history.get("epsilon", {}), history.get("epsilon_in_flight", {}))
                 if tenant in source]
        if spent:
            update["epsilon_spent"] = max(float(row["epsilon_spent"] or 0.0), *spent)
        _write(lake, update)
