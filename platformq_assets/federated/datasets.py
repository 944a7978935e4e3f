"""The per-tenant learning task on the platform's own data: is an order part of a labelled
market-abuse episode (spoofing, wash trades, flash moves injected by the venue simulation)?

Each order in ``bronze.orders`` becomes one example with features that need no other tenant's
data (side, order type, size, fill and cancel ratios, time to cancel, distance from the median
price of the tenant's own orders in that instrument that day, the account's order burst in that
minute), labelled by ``anomaly_type is not null``. Orders are grouped by their account's tenant
(``silver.accounts``): each tenant is one participant and its file holds only its own orders.
"""

from __future__ import annotations

from pathlib import Path

FEATURES = ("is_buy", "is_limit", "log_qty", "fill_ratio", "cancel_ratio", "is_cancelled", "log_cancel_seconds",
            "price_deviation", "log_burst")

FEATURE_SQL = """
with acc as (select distinct account_id, tenant_id from accounts where tenant_id is not null),
o as (
  select o.*, acc.tenant_id,
         -- the tenant's own orders only: another tenant's prices must not shape this tenant's export
         median(price_ticks) over (partition by acc.tenant_id, instrument, partition_date) as median_price,
         count(*) over (partition by o.account_id, date_trunc('minute', ts)) as burst
  from orders o join acc on o.account_id = acc.account_id
)
select tenant_id, order_id,
       case when side = 'BUY' then 1.0 else 0.0 end as is_buy,
       case when order_type = 'LIMIT' then 1.0 else 0.0 end as is_limit,
       ln(1 + qty_lots) as log_qty,
       coalesce(filled_lots, 0)::double / greatest(qty_lots, 1) as fill_ratio,
       coalesce(cancelled_lots, 0)::double / greatest(qty_lots, 1) as cancel_ratio,
       case when status = 'CANCELLED' then 1.0 else 0.0 end as is_cancelled,
       ln(1 + coalesce(epoch_ms(cancelled_ts) - epoch_ms(ts), 0) / 1000.0) as log_cancel_seconds,
       least(greatest(coalesce((price_ticks - median_price) / nullif(median_price, 0), 0) * 100, -10), 10)
         as price_deviation,
       ln(burst) as log_burst,
       case when anomaly_type is not null then 1 else 0 end as label
from o
order by tenant_id, order_id
"""


def order_examples(lake):
    """All tenants' examples as one Arrow table (tenant_id, order_id, features..., label)."""
    import duckdb

    orders = lake.read("bronze.orders", columns=("order_id", "account_id", "instrument", "side", "order_type",
                                                 "price_ticks", "qty_lots", "filled_lots", "cancelled_lots",
                                                 "status", "anomaly_type", "ts", "cancelled_ts", "partition_date"))
    table = "silver.accounts" if lake.table_exists("silver.accounts") else "bronze.accounts"
    accounts = lake.read(table, columns=("account_id", "tenant_id"))
    con = duckdb.connect()
    try:
        con.register("orders", orders)
        con.register("accounts", accounts)
        return con.sql(FEATURE_SQL).to_arrow_table()  # a relation's Arrow output: no extra copy of the rows
    finally:
        con.close()


def write_tenant_files(examples, tenants: list[str], data_dir: Path, seed: int = 0,
                       test_share: float = 0.25) -> dict:
    """One npz per tenant (stratified train/test split inside the tenant); returns per-tenant counts."""
    import numpy as np

    from models.federated.data import Split, write_participant_files

    frame = examples.to_pandas()
    splits, counts = [], {}
    rng = np.random.default_rng(seed)
    for tenant in tenants:
        part = frame[frame["tenant_id"] == tenant]
        x = part[list(FEATURES)].to_numpy(dtype=np.float32)
        y = part["label"].to_numpy(dtype=np.int64)
        test = np.zeros(len(y), dtype=bool)
        for label in (0, 1):
            idx = rng.permutation(np.flatnonzero(y == label))
            test[idx[: int(round(len(idx) * test_share))]] = True
        splits.append(Split(tenant, x[~test], y[~test], x[test], y[test]))
        counts[tenant] = {"orders": int(len(y)), "anomalous": int(y.sum()), "train": int((~test).sum()),
                          "test": int(test.sum())}
    write_participant_files(data_dir, splits, num_classes=2)
    return counts
