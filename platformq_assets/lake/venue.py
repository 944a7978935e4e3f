"""Bronze from the platform's own trading venue.

One daily partition = one simulated trading session: the seeded market
simulation drives the matching engine, and this asset writes what the venue
produced (orders with their final state, fills, reference prices, the account
snapshot, the labelled anomalies) to Iceberg, replacing the partition in one
commit per table. The engine's journal goes to the object store so the day's
book can be rebuilt by replay.
"""


import datetime as dt
import json

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
from pydantic import Field

from pipelines.partitions import LAKE_START_DATE, PARTITION_COLUMN, daily_partitions
from pipelines.pods import pod_resources
from pipelines.pools import group_pool
from platformq_assets.quality import table_checks
from platformq_assets.quality.profiling import profile_metadata
from resources.lake import LakeResource
from resources.object_store import ObjectStoreResource
from resources.services import ServiceClientResource

SOURCE = "venue-simulation"

BRONZE_ORDERS = AssetKey(["bronze", "orders"])
BRONZE_FILLS = AssetKey(["bronze", "fills"])
BRONZE_REFERENCE_PRICES = AssetKey(["bronze", "reference_prices"])
BRONZE_ACCOUNTS = AssetKey(["bronze", "accounts"])
BRONZE_ANOMALY_LABELS = AssetKey(["bronze", "anomaly_labels"])

_TABLES = {
    BRONZE_ORDERS: "Orders sent to the venue, one row per order with its final state (integer ticks and lots).",
    BRONZE_FILLS: "Fills, one row per side of each trade, at the resting order's price.",
    BRONZE_REFERENCE_PRICES: "Minute reference prices on a bridge between real monthly closes (vega_datasets stocks).",
    BRONZE_ACCOUNTS: "Daily snapshot of tenants, users and accounts. Contains PII (name, email): bronze only.",
    BRONZE_ANOMALY_LABELS: "Anomalies the simulation injected (spoofing, wash trades, flash moves), for ML labels.",
}


def _check(key: AssetKey, name: str, description: str, blocking: bool = True) -> AssetCheckSpec:
    return AssetCheckSpec(name=name, asset=key, description=description, blocking=blocking)


CHECK_SPECS = [
    _check(BRONZE_ORDERS, "orders_not_empty", "The session produced orders."),
    _check(BRONZE_ORDERS, "orders_key_unique", "order_id is unique and not null."),
    _check(BRONZE_ORDERS, "orders_accepted_values", "side, order type, time in force and status use known values."),
    _check(BRONZE_ORDERS, "orders_quantity_conserved", "qty = filled + cancelled for every order after the close."),
    _check(BRONZE_FILLS, "fills_key_unique", "fill_id is unique and not null."),
    _check(BRONZE_FILLS, "fills_balanced", "Every trade has exactly one buy fill and one sell fill of equal size."),
    _check(BRONZE_FILLS, "fills_match_journal_replay",
           "Replaying the day's journal into a fresh engine reproduces every trade."),
    _check(BRONZE_FILLS, "venue_matches_trading_service",
           "The trading service, sent the session's orders through its resource, made exactly these trades."),
    _check(BRONZE_REFERENCE_PRICES, "reference_prices_positive", "Every reference price is > 0."),
    _check(BRONZE_ACCOUNTS, "accounts_key_unique", "account_id is unique and not null."),
    _check(BRONZE_ACCOUNTS, "accounts_email_format", "Emails look like emails.", blocking=False),
    _check(BRONZE_ANOMALY_LABELS, "anomaly_labels_key_unique", "anomaly_id is unique and not null."),
    _check(BRONZE_ANOMALY_LABELS, "anomaly_labels_accepted_values",
           "anomaly_type is spoofing, wash_trade or flash_move."),
]


class VenueConfig(Config):
    seed: int | None = Field(default=None, ge=0)  # defaults to the platform setting PLATFORMQ_SIM_SEED
    scale: float | None = Field(default=None, gt=0)  # multiplies every arrival rate (PLATFORMQ_SIM_SCALE)


def _ingestion_columns(table, batch_id: str, ingested_at: dt.datetime, day: dt.date):
    import pyarrow as pa

    n = table.num_rows
    return (
        table.append_column(PARTITION_COLUMN, pa.array([day] * n, pa.date32()))
        .append_column("_source", pa.array([SOURCE] * n, pa.string()))
        .append_column("_batch_id", pa.array([batch_id] * n, pa.string()))
        .append_column("_ingested_at", pa.array([ingested_at] * n, pa.timestamp("us", tz="UTC")))
    )


def _with_timestamps(columns: dict, *names: str) -> dict:
    import pyarrow as pa

    out = dict(columns)
    for name in names:
        out[name.removesuffix("_us")] = pa.array(out.pop(name), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return out


def _no_null_types(table):
    """Columns that were empty in a small day would be typed null: make them strings."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(pa.string()))
    return table


def venue_tables(result, accounts, batch_id: str, ingested_at: dt.datetime) -> dict:
    """Arrow tables for each bronze output of one simulated day."""
    import pyarrow as pa

    day = result.day
    orders = pa.table(_with_timestamps(result.orders, "ts_us", "cancelled_ts_us"))
    orders = orders.set_column(orders.schema.get_field_index("price_ticks"), "price_ticks",
                               pa.array(result.orders["price_ticks"], pa.int64()))
    fills = pa.table(_with_timestamps(result.fills, "ts_us"))
    refs = pa.table(_with_timestamps(result.reference_prices, "ts_us"))
    anomalies = _no_null_types(pa.table(_with_timestamps(result.anomalies, "start_ts_us", "end_ts_us")))
    accts = pa.Table.from_pylist([a.__dict__ for a in accounts])
    return {
        key: _ingestion_columns(_no_null_types(table), batch_id, ingested_at, day)
        for key, table in (
            (BRONZE_ORDERS, orders),
            (BRONZE_FILLS, fills),
            (BRONZE_REFERENCE_PRICES, refs),
            (BRONZE_ACCOUNTS, accts),
            (BRONZE_ANOMALY_LABELS, anomalies),
        )
    }


def _trades_from_fills(fills) -> list[tuple]:
    """(instrument, price, lots, buyer, seller) per trade, in trade order, from its buy and sell fill."""
    trades: dict[int, dict] = {}
    for fill in fills.select(["trade_id", "instrument", "price_ticks", "qty_lots", "account_id", "side"]).to_pylist():
        trade = trades.setdefault(fill["trade_id"], {"key": (fill["instrument"], fill["price_ticks"], fill["qty_lots"])})
        if trade["key"] != (fill["instrument"], fill["price_ticks"], fill["qty_lots"]):
            trade["key"] = None  # its two fills disagree: it matches no trade
        trade[fill["side"]] = fill["account_id"]
    return [(*(t["key"] or (None,) * 3), t.get("BUY"), t.get("SELL")) for _, t in sorted(trades.items())]


def _venue_checks(tables: dict, journal, config) -> list[AssetCheckResult]:
    import pyarrow.compute as pc

    from services.trading.engine import MatchingEngine

    orders, fills = tables[BRONZE_ORDERS], tables[BRONZE_FILLS]
    results = []

    def add(key, name, outcome, severity=AssetCheckSeverity.ERROR):
        passed, metadata = outcome
        results.append(AssetCheckResult(asset_key=key, check_name=name, passed=bool(passed),
                                        metadata=metadata, severity=severity))

    add(BRONZE_ORDERS, "orders_not_empty", table_checks.not_empty(orders))
    add(BRONZE_ORDERS, "orders_key_unique", table_checks.unique_not_null(orders, ["order_id"]))
    value_checks = [
        table_checks.accepted_values(orders, "side", ["BUY", "SELL"]),
        table_checks.accepted_values(orders, "order_type", ["LIMIT", "MARKET"]),
        table_checks.accepted_values(orders, "time_in_force", ["GTC", "IOC", "FOK"]),
        table_checks.accepted_values(orders, "status", ["FILLED", "CANCELLED", "EXPIRED", "REJECTED"]),
    ]
    add(BRONZE_ORDERS, "orders_accepted_values",
        (all(p for p, _ in value_checks), {m["column"]: m["unexpected_rows"] for _, m in value_checks}))
    leftover = pc.subtract(orders.column("qty_lots"), pc.add(orders.column("filled_lots"), orders.column("cancelled_lots")))
    bad = int(pc.sum(pc.fill_null(pc.not_equal(leftover, 0), True)).as_py() or 0)  # a null lot count is one too
    add(BRONZE_ORDERS, "orders_quantity_conserved", (bad == 0, {"violations": bad}))

    add(BRONZE_FILLS, "fills_key_unique", table_checks.unique_not_null(fills, ["fill_id"]))
    per_trade = fills.group_by("trade_id").aggregate([("side", "count_distinct"), ("qty_lots", "min"),
                                                       ("qty_lots", "max"), ("side", "count")])
    unbalanced = per_trade.filter(pc.or_(
        pc.or_(pc.not_equal(per_trade.column("side_count_distinct"), 2), pc.not_equal(per_trade.column("side_count"), 2)),
        pc.not_equal(per_trade.column("qty_lots_min"), per_trade.column("qty_lots_max")),
    )).num_rows
    add(BRONZE_FILLS, "fills_balanced", (unbalanced == 0, {"trades": per_trade.num_rows, "unbalanced": unbalanced}))
    replayed = MatchingEngine.replay(journal, config.instruments)
    # trade by trade, in order: instrument, price, size, buyer and seller (a count alone let any of them differ)
    from_replay = [(t[2], t[3], t[4], t[7], t[8]) for t in replayed.trades]
    from_fills = _trades_from_fills(fills)
    mismatched = sum(a != b for a, b in zip(from_replay, from_fills)) + abs(len(from_replay) - len(from_fills))
    add(BRONZE_FILLS, "fills_match_journal_replay",
        (mismatched == 0, {"journal_events": len(journal), "replayed_trades": len(from_replay),
                           "fills": fills.num_rows, "mismatched_trades": mismatched}))
    add(BRONZE_REFERENCE_PRICES, "reference_prices_positive",
        table_checks.all_positive(tables[BRONZE_REFERENCE_PRICES], "reference_price"))
    accounts = tables[BRONZE_ACCOUNTS]
    add(BRONZE_ACCOUNTS, "accounts_key_unique", table_checks.unique_not_null(accounts, ["account_id"]))
    emails_ok = pc.match_substring_regex(accounts.column("email"), r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    bad_emails = accounts.num_rows - int(pc.sum(emails_ok).as_py() or 0)
    add(BRONZE_ACCOUNTS, "accounts_email_format", (bad_emails == 0, {"bad_emails": bad_emails}),
        severity=AssetCheckSeverity.WARN)
    labels = tables[BRONZE_ANOMALY_LABELS]
    add(BRONZE_ANOMALY_LABELS, "anomaly_labels_key_unique", table_checks.unique_not_null(labels, ["anomaly_id"]))
    add(BRONZE_ANOMALY_LABELS, "anomaly_labels_accepted_values",
        table_checks.accepted_values(labels, "anomaly_type", ["spoofing", "wash_trade", "flash_move"]))
    return results


@multi_asset(
    name="venue_session",
    pool=group_pool("bronze.venue"),  # every table it writes is its own
    specs=[
        AssetSpec(key, description=description, group_name="bronze", kinds={"iceberg", "python"},
                  owners=["team:lake"], tags={"layer": "bronze", "source": "venue"})
        for key, description in _TABLES.items()
    ],
    check_specs=CHECK_SPECS,
    partitions_def=daily_partitions,
    can_subset=False,
    description="Runs one simulated trading session on the matching engine and lands its output in bronze.",
    op_tags=pod_resources("500m", "1Gi", "1", "2Gi"),
)
def venue_session(context: AssetExecutionContext, config: VenueConfig, lake: LakeResource,
                  object_store: ObjectStoreResource, trading: ServiceClientResource):
    from resources.settings import load_settings
    from services.trading.simulation import SimulationConfig, accounts, simulate_day

    settings = load_settings()
    day = dt.date.fromisoformat(context.partition_key)
    sim_config = SimulationConfig(
        seed=config.seed if config.seed is not None else settings.sim_seed,
        scale=config.scale if config.scale is not None else settings.sim_scale,
        start_date=LAKE_START_DATE,
    )
    result = simulate_day(day, sim_config)
    batch_id = f"{context.run.run_id}:{context.partition_key}"
    ingested_at = dt.datetime.now(dt.timezone.utc)
    tables = venue_tables(result, accounts(sim_config), batch_id, ingested_at)

    journal_key = f"venue/journal/{PARTITION_COLUMN}={day.isoformat()}.jsonl"
    journal_uri = object_store.put_bytes(
        journal_key, "\n".join(json.dumps(e) for e in result.journal).encode(), "application/x-ndjson")

    checks = _venue_checks(tables, result.journal, sim_config)
    # The session's order flow goes to the trading service through its resource (a fresh
    # exchange per trading day in process; the deployed service in production).
    from platformq_assets.lake.venue_routing import route_session, trades_match

    routed = route_session(trading.for_session(f"venue-{day.isoformat()}"), result.journal, sim_config.instruments,
                           [a.account_id for a in accounts(sim_config)])
    matched, match_meta = trades_match(result.trades, routed["trades"])
    checks.append(AssetCheckResult(asset_key=BRONZE_FILLS, check_name="venue_matches_trading_service",
                                   passed=matched, severity=AssetCheckSeverity.ERROR,
                                   metadata={**match_meta, "orders_sent": routed["orders"],
                                             "orders_refused": routed["rejected"]}))
    # accounts whose erasure completed stay out of a day simulated again (after the checks, which compare the
    # simulation with its own journal)
    from resources.erasure import erased_accounts, suppress

    erased = erased_accounts(lake)
    if erased:
        suppressed, changed = suppress({".".join(key.path): table for key, table in tables.items()}, erased)
        tables = {key: suppressed[".".join(key.path)] for key in tables}
        context.log.info(f"erased accounts kept out: {sum(changed.values())} row(s) removed or pseudonymised")
    for key, table in tables.items():
        identifier = ".".join(key.path)
        written = lake.replace_partition(identifier, table, PARTITION_COLUMN, day)
        metadata = {
            "table": identifier,
            "snapshot_id": str(written["snapshot_id"]),
            "table_total_rows": written["total_rows"],
            "batch_id": batch_id,
            **profile_metadata(table),
        }
        if key == BRONZE_ORDERS:
            metadata.update({"journal": journal_uri, "journal_events": len(result.journal), "seed": sim_config.seed})
        yield MaterializeResult(asset_key=key, metadata=metadata)
    yield from checks
