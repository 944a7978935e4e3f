"""Markets: a daily GPU-hour futures session cleared by the derivatives service.

Each trading day lists a GPU-hour futures contract expiring ``TENOR_DAYS`` later,
the venue's accounts trade it (a seeded order flow around a GPU-hour reference
price), and the clearing house marks every position to the day's settlement
price: variation margin is paid, margin calls are raised. The day's margin
statement lands in ``gold.futures_margin``.

The same day then cash-settles every contract the platform listed that has
expired by that day, at its expiry day's settlement price: the last variation
margin is paid and every position closes. The closing statement lands in
``gold.futures_final_settlement``. Blocking checks guard the clearing arithmetic.
"""

import datetime as dt
import math
import random

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    asset,
)

from pipelines.partitions import LAKE_START_DATE, PARTITION_COLUMN, daily_partitions
from pipelines.pools import table_pool
from platformq_assets.quality.profiling import profile_metadata
from resources.lake import LakeResource
from resources.services import ServiceClientResource

FUTURES_MARGIN = AssetKey(["gold", "futures_margin"])
FUTURES_FINAL = AssetKey(["gold", "futures_final_settlement"])
DEPOSIT_CENTS = 1_000_000
UNDERLYING = "GPU-hour"
TENOR_DAYS = 2  # a contract listed on day D expires on D + 2 and is settled by day D + 2's run


def gpu_hour_prices(day: dt.date, seed: int) -> tuple[float, float]:
    """Opening and settlement price (USD per GPU-hour) of the day's contract: seeded and smooth."""
    rng = random.Random(f"{seed}:gpu-hour:{day.isoformat()}")
    n = (day - LAKE_START_DATE).days
    open_price = round(2.0 + 0.4 * math.sin(n / 9) + rng.uniform(-0.05, 0.05), 2)
    return open_price, round(open_price * (1 + rng.gauss(0, 0.03)), 2)


@asset(
    key=FUTURES_MARGIN,
    pool=table_pool(".".join(FUTURES_MARGIN.path)),
    deps=[AssetKey(["bronze", "accounts"])],
    partitions_def=daily_partitions,
    group_name="markets",
    kinds={"python", "iceberg"},
    owners=["team:markets"],
    check_specs=[
        AssetCheckSpec("variation_margin_sums_to_zero", asset=FUTURES_MARGIN, blocking=True,
                       description="Variation margin paid equals variation margin received."),
        AssetCheckSpec("open_interest_long_equals_short", asset=FUTURES_MARGIN, blocking=True,
                       description="The venue's long contracts equal its short contracts, and the clearing house's "
                                   "open interest holds them (other tenants' positions in the contract come on top)."),
    ],
    description="Daily GPU-hour futures session: trades, mark-to-market, variation margin and margin calls.",
)
def futures_margin(context: AssetExecutionContext, lake: LakeResource, derivatives: ServiceClientResource):
    import pyarrow as pa

    from resources.settings import load_settings

    day = dt.date.fromisoformat(context.partition_key)
    seed = load_settings().sim_seed
    rng = random.Random(f"{seed}:gpu-hour-flow:{day.isoformat()}")
    roster = lake.read_partition("bronze.accounts", PARTITION_COLUMN, day)
    tenant_of = dict(zip(roster.column("account_id").to_pylist(), roster.column("tenant_id").to_pylist()))
    accounts = sorted(tenant_of)
    # one contract per run: a re-run of the day clears a fresh session and replaces the partition
    symbol = f"GPU{day:%y%m%d}-{context.run.run_id[:6].upper()}"
    open_price, settle_price = gpu_hour_prices(day, seed)
    # the open is the listing's reference price: trades before the first settlement are held to the service's
    # price band around it
    derivatives.request("POST", "/v1/futures/contracts", json_body={
        "symbol": symbol, "expiry": (day + dt.timedelta(days=TENOR_DAYS)).isoformat(), "contract_size": 100,
        "underlying": UNDERLYING, "reference_price": f"{open_price:.2f}"})
    names = [f"acct-{a}" for a in accounts]
    # each request under an idempotency key of this run's session: one whose answer is lost (a timeout, a
    # gateway's 502) is sent again and the service answers it once, instead of failing the step
    for name in names:
        derivatives.request("POST", f"/v1/futures/{symbol}/accounts", idempotency_key=f"{symbol}:open:{name}",
                            json_body={"account_id": name, "deposit_cents": DEPOSIT_CENTS})
    trades = 0
    for i in range(4 * len(names)):
        buyer, seller = rng.sample(names, 2)
        price = round(open_price * (1 + rng.gauss(0, 0.01)), 2)
        derivatives.request("POST", f"/v1/futures/{symbol}/trades", idempotency_key=f"{symbol}:trade:{i}",
                            json_body={"buyer_account_id": buyer, "seller_account_id": seller,
                                       "contracts": rng.randint(1, 5), "price": f"{price:.2f}",
                                       "day": day.isoformat()})
        trades += 1
    settlement = derivatives.request("POST", f"/v1/futures/{symbol}/settlements",
                                     json_body={"day": day.isoformat(), "settlement_price": f"{settle_price:.2f}"})
    vm = {v["account_id"]: v["variation_margin_cents"] for v in settlement["variation_margin"]}
    calls = {c["account_id"]: c["amount_cents"] for c in settlement["margin_calls"]}
    rows = []
    for name, account_id in zip(names, accounts):
        state = derivatives.request("GET", f"/v1/futures/{symbol}/accounts/{name}")
        rows.append({"account_id": account_id, "tenant_id": tenant_of[account_id],  # read API: per tenant
                     "symbol": symbol, "position": state["position"],
                     "variation_margin_cents": vm.get(name, 0), "balance_cents": state["balance_cents"],
                     "margin_call_cents": calls.get(name, 0), "settlement_price": settle_price,
                     PARTITION_COLUMN: day})
    table = pa.Table.from_pylist(rows)
    written = lake.replace_partition(".".join(FUTURES_MARGIN.path), table, PARTITION_COLUMN, day)
    contract = derivatives.request("GET", f"/v1/futures/contracts/{symbol}")
    longs = sum(r["position"] for r in rows if r["position"] > 0)
    shorts = -sum(r["position"] for r in rows if r["position"] < 0)
    yield MaterializeResult(metadata={"symbol": symbol, "trades": trades, "open_price": open_price,
                                      "settlement_price": settle_price, "margin_calls": len(calls),
                                      "snapshot_id": str(written["snapshot_id"]),
                                      **profile_metadata(table, COLUMNS)})
    total_vm = sum(r["variation_margin_cents"] for r in rows)
    yield AssetCheckResult(check_name="variation_margin_sums_to_zero", passed=total_vm == 0,
                           metadata={"sum_cents": total_vm, "accounts": len(rows)})
    # the contract is market-wide: another tenant may clear trades between its own accounts in it, so the service's
    # open interest is the venue's plus theirs (each tenant's longs equal its shorts: its trades are between its
    # own accounts), never less than the venue's
    yield AssetCheckResult(check_name="open_interest_long_equals_short",
                           passed=longs == shorts <= contract["open_interest"],
                           metadata={"long": longs, "short": shorts, "open_interest": contract["open_interest"],
                                     "other_tenants_open_interest": contract["open_interest"] - longs})


def _contracts(derivatives: ServiceClientResource, **filters) -> list[dict]:
    """Every GPU-hour contract the platform's tenant listed that matches the filters, page by page (the service
    filters by underlying: a contract on another one listed by the same tenant is not this asset's, its final
    price is not the GPU-hour index)."""
    found, token = [], None
    while True:
        page = derivatives.request("GET", "/v1/futures/contracts", params={
            **filters, "operated": "true", "underlying": UNDERLYING, "page_size": 1000,
            **({"page_token": token} if token else {})})
        found += page["contracts"]
        token = page["next_page_token"]
        if token is None:
            return found


def _settle(derivatives: ServiceClientResource, contract: dict, day: dt.date, seed: int) -> None:
    """Cash-settle at the expiry day's settlement price; settled on ``day`` (the expiry, or later when a run
    missed it). An answer lost after the service settled is seen when the contract says it is settled."""
    from resources.services import ServiceError

    expiry = dt.date.fromisoformat(contract["expiry"])
    _, final_price = gpu_hour_prices(expiry, seed)
    try:
        derivatives.request("POST", f"/v1/futures/{contract['symbol']}/final-settlement",
                            json_body={"day": day.isoformat(), "final_price": f"{final_price:.2f}"})
    except ServiceError as exc:
        if exc.status != 422 or derivatives.request(
                "GET", f"/v1/futures/contracts/{contract['symbol']}")["status"] != "settled":
            raise


def _lake_account(name: str) -> int | None:
    """The lake's account id of a clearing account this asset opened (``acct-<id>``); None for any other."""
    digits = name.removeprefix("acct-")
    return int(digits) if name.startswith("acct-") and digits.isdigit() and digits.isascii() else None


COLUMNS = {
    "account_id": "the venue account (bronze.accounts)", "tenant_id": "the account's tenant",
    "symbol": "the futures contract", "position": "signed contracts held after the day's trades (> 0 long)",
    "variation_margin_cents": "cash paid (+) or taken (-) at this settlement, in cents",
    "balance_cents": "the clearing account's cash after this settlement, in cents",
    "margin_call_cents": "cash owed to bring equity back to the initial requirement",
    "settlement_price": "the day's settlement price, USD per GPU-hour",
    "expiry": "the contract's expiry day", "closed_position": "the position the final settlement closed",
    "final_price": "the expiry day's settlement price the contract was cash-settled at, USD per GPU-hour",
    PARTITION_COLUMN: "the trading day whose run settled it (the partition)",
}

FINAL_SCHEMA_FIELDS = (("account_id", "int64"), ("tenant_id", "string"), ("symbol", "string"), ("expiry", "date32"),
                       ("closed_position", "int64"), ("variation_margin_cents", "int64"),
                       ("balance_cents", "int64"), ("final_price", "float64"), (PARTITION_COLUMN, "date32"))


@asset(
    key=FUTURES_FINAL,
    pool=table_pool(".".join(FUTURES_FINAL.path)),
    deps=[FUTURES_MARGIN, AssetKey(["bronze", "accounts"])],
    partitions_def=daily_partitions,
    group_name="markets",
    kinds={"python", "iceberg"},
    owners=["team:markets"],
    check_specs=[
        AssetCheckSpec("final_variation_margin_sums_to_zero", asset=FUTURES_FINAL, blocking=True,
                       description="Each contract settled today: final variation margin paid equals received, "
                                   "and the positions it closed net to zero."),
        AssetCheckSpec("no_open_contract_past_expiry", asset=FUTURES_FINAL, blocking=True,
                       description="No contract the platform listed is still open on or after its expiry day."),
    ],
    description="Cash settlement at expiry: every platform-listed GPU-hour contract that has expired by the day "
                "pays its last variation margin at the expiry day's settlement price and closes its positions.",
)
def futures_final_settlement(context: AssetExecutionContext, lake: LakeResource,
                             derivatives: ServiceClientResource):
    import pyarrow as pa
    from pyiceberg.expressions import In

    from resources.settings import load_settings

    day = dt.date.fromisoformat(context.partition_key)
    seed = load_settings().sim_seed
    due = _contracts(derivatives, status="open", expires_by=day.isoformat())
    for contract in due:
        _settle(derivatives, contract, day, seed)
    # the statement is every contract settled on this day, by this run or an earlier run of it: a re-run
    # settles nothing new and writes the same rows
    settled = _contracts(derivatives, status="settled", settled_on=day.isoformat())
    statements = {c["symbol"]: (c, derivatives.request("GET", f"/v1/futures/{c['symbol']}/final-settlement"))
                  for c in settled}
    ids = sorted({i for _, s in statements.values() for a in s["accounts"]
                  if (i := _lake_account(a["account_id"])) is not None})
    tenant_of = {}
    if ids:
        roster = lake.read("bronze.accounts", row_filter=In("account_id", ids), columns=("account_id", "tenant_id"))
        tenant_of = dict(zip(roster.column("account_id").to_pylist(), roster.column("tenant_id").to_pylist()))
    rows, unknown = [], 0
    for symbol, (contract, statement) in sorted(statements.items()):
        for a in statement["accounts"]:
            account_id = _lake_account(a["account_id"])
            if account_id not in tenant_of:  # not a lake account (or erased from it): nothing to say whose it is
                unknown += 1
                continue
            rows.append({"account_id": account_id, "tenant_id": tenant_of[account_id], "symbol": symbol,
                         "expiry": dt.date.fromisoformat(contract["expiry"]),
                         "closed_position": a["closed_position"], "variation_margin_cents": a["variation_margin_cents"],
                         "balance_cents": a["balance_cents"], "final_price": float(statement["final_price"]),
                         PARTITION_COLUMN: day})
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in FINAL_SCHEMA_FIELDS])
    table = pa.Table.from_pylist(rows, schema=schema)
    written = lake.replace_partition(".".join(FUTURES_FINAL.path), table, PARTITION_COLUMN, day)
    still_open = _contracts(derivatives, status="open", expires_by=day.isoformat())
    yield MaterializeResult(metadata={
        "contracts_settled": len(statements), "settled_by_this_run": len(due), "symbols": ", ".join(sorted(statements)),
        "accounts_not_in_lake": unknown, "snapshot_id": str(written["snapshot_id"]),
        **profile_metadata(table, COLUMNS)})
    totals = {symbol: (sum(a["variation_margin_cents"] for a in s["accounts"]),
                      sum(a["closed_position"] for a in s["accounts"])) for symbol, (_, s) in statements.items()}
    unbalanced = sorted(symbol for symbol, total in totals.items() if total != (0, 0))
    yield AssetCheckResult(check_name="final_variation_margin_sums_to_zero", passed=not unbalanced,
                           metadata={"contracts": len(totals), "unbalanced": ", ".join(unbalanced) or "none"})
    yield AssetCheckResult(check_name="no_open_contract_past_expiry", passed=not still_open,
                           metadata={"open_past_expiry": ", ".join(c["symbol"] for c in still_open) or "none"})
