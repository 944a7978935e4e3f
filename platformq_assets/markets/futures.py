"""Markets: a daily GPU-hour futures session cleared by the derivatives service.

Each trading day lists a GPU-hour futures contract, the venue's accounts trade
it (a seeded order flow around a GPU-hour reference price), and the clearing
house marks every position to the day's settlement price: variation margin is
paid, margin calls are raised. The day's margin statement lands in
``gold.futures_margin``; two blocking checks guard the clearing arithmetic.
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
DEPOSIT_CENTS = 1_000_000


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
                       description="Long contracts equal short contracts across the clearing house."),
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
    derivatives.request("POST", "/v1/futures/contracts", json_body={
        "symbol": symbol, "expiry": (day + dt.timedelta(days=7)).isoformat(), "contract_size": 100})
    names = [f"acct-{a}" for a in accounts]
    for name in names:
        derivatives.request("POST", f"/v1/futures/{symbol}/accounts",
                            json_body={"account_id": name, "deposit_cents": DEPOSIT_CENTS})
    open_price, settle_price = gpu_hour_prices(day, seed)
    trades = 0
    for _ in range(4 * len(names)):
        buyer, seller = rng.sample(names, 2)
        price = round(open_price * (1 + rng.gauss(0, 0.01)), 2)
        derivatives.request("POST", f"/v1/futures/{symbol}/trades", json_body={
            "buyer_account_id": buyer, "seller_account_id": seller, "contracts": rng.randint(1, 5),
            "price": f"{price:.2f}"})
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
                                      "snapshot_id": str(written["snapshot_id"]), **profile_metadata(table)})
    total_vm = sum(r["variation_margin_cents"] for r in rows)
    yield AssetCheckResult(check_name="variation_margin_sums_to_zero", passed=total_vm == 0,
                           metadata={"sum_cents": total_vm, "accounts": len(rows)})
    yield AssetCheckResult(check_name="open_interest_long_equals_short",
                           passed=longs == shorts == contract["open_interest"],
                           metadata={"long": longs, "short": shorts, "open_interest": contract["open_interest"]})
