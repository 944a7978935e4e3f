"""Feature tables computed from the lake, with one SQL text run by DuckDB or Spark.

Both feature sets are computed within a trading day (windows never cross midnight), so a
daily partition is self-contained and recomputing the whole history (Spark) must equal the
union of the daily partitions (DuckDB): ``tests/ml/test_spark_features.py`` checks exactly that.

Time bucketing is done in Arrow before either engine sees the data (``bucket`` = epoch
seconds floored to the interval), so the SQL needs only integer maths, joins and window
functions that DuckDB and Spark SQL spell the same way.

A feature row is known at its ``event_ts`` (the interval's end), so it may use only what had
happened by then. ``bronze.orders`` holds each order's *final* state: its ``cancelled_lots``
may come from a cancel minutes or hours after the window closed. A window therefore counts an
order as cancelled only if the cancel happened before the window's end (``cancel_known``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

INSTRUMENT_INTERVAL_S = 300  # 5-minute intervals
ACCOUNT_WINDOW_S = 900  # 15-minute activity windows

INSTRUMENT_FEATURES = ["ret_1", "ret_3", "ret_6", "vol_6", "vol_12", "volume_1", "volume_6", "range_1", "trade_count_1"]
ACCOUNT_FEATURES = ["orders", "cancel_ratio", "fills", "fill_ratio", "traded_notional", "counterparties",
                    "fills_per_counterparty"]
# The account model's positives: abuse an account commits (the venue's labels name its accounts). A flash move is
# the instrument's price jumping: every order placed on it meanwhile carries its label, whoever placed it, and
# bronze.anomaly_labels names no account for it, so it makes no account window anomalous.
ACCOUNT_ANOMALY_TYPES = ("spoofing", "wash_trade")
_ACCOUNT_ANOMALOUS = ("CASE WHEN anomaly_type IN (" + ", ".join(f"'{t}'" for t in ACCOUNT_ANOMALY_TYPES)
                      + ") THEN 1 ELSE 0 END")

INSTRUMENT_SQL = """
WITH ranked AS (
  SELECT instrument, partition_date, bucket, bar_start, high, low, close, volume, trade_count,
         ROW_NUMBER() OVER (PARTITION BY instrument, partition_date, bucket ORDER BY bar_start DESC) AS rn_last
  FROM bars
), iv AS (
  SELECT instrument, partition_date, bucket, MAX(high) AS high, MIN(low) AS low,
         SUM(volume) AS volume, SUM(trade_count) AS trade_count,
         MAX(CASE WHEN rn_last = 1 THEN close END) AS close
  FROM ranked GROUP BY instrument, partition_date, bucket
), r AS (
  SELECT iv.*,
         LN(close / LAG(close, 1) OVER w) AS ret_1,
         LN(close / LAG(close, 3) OVER w) AS ret_3,
         LN(close / LAG(close, 6) OVER w) AS ret_6,
         LEAD(close, 1) OVER w AS next_close
  FROM iv WINDOW w AS (PARTITION BY instrument, partition_date ORDER BY bucket)
)
SELECT instrument, partition_date, bucket, close,
       ret_1, ret_3, ret_6,
       STDDEV_SAMP(ret_1) OVER (PARTITION BY instrument, partition_date ORDER BY bucket
                                ROWS BETWEEN 5 PRECEDING AND CURRENT ROW) AS vol_6,
       STDDEV_SAMP(ret_1) OVER (PARTITION BY instrument, partition_date ORDER BY bucket
                                ROWS BETWEEN 11 PRECEDING AND CURRENT ROW) AS vol_12,
       CAST(volume AS DOUBLE) AS volume_1,
       CAST(SUM(volume) OVER (PARTITION BY instrument, partition_date ORDER BY bucket
                              ROWS BETWEEN 5 PRECEDING AND CURRENT ROW) AS DOUBLE) AS volume_6,
       (high - low) / close AS range_1,
       CAST(trade_count AS DOUBLE) AS trade_count_1,
       CASE WHEN next_close IS NULL THEN NULL WHEN next_close > close THEN 1 ELSE 0 END AS label_up
FROM r
"""

ACCOUNT_SQL = """
WITH o AS (
  SELECT account_id, partition_date, bucket, COUNT(*) AS orders,
         SUM(cancel_known) AS cancelled,  -- cancels that had happened by the window's end (event_ts)
         MAX({anomalous}) AS anomalous
  FROM orders WHERE account_id IS NOT NULL  -- null: an erased account (its orders stay, unattributed)
  GROUP BY account_id, partition_date, bucket
), f AS (
  SELECT account_id, partition_date, bucket, COUNT(*) AS fills,
         SUM(CAST(qty_lots AS DOUBLE) * price_ticks) / 100.0 AS traded_notional,
         COUNT(DISTINCT counterparty_account_id) AS counterparties,
         MAX({anomalous}) AS anomalous
  FROM fills WHERE account_id IS NOT NULL
  GROUP BY account_id, partition_date, bucket
), j AS (
  SELECT COALESCE(o.account_id, f.account_id) AS account_id,
         COALESCE(o.partition_date, f.partition_date) AS partition_date,
         COALESCE(o.bucket, f.bucket) AS bucket,
         COALESCE(o.orders, 0) AS orders, COALESCE(o.cancelled, 0) AS cancelled,
         COALESCE(f.fills, 0) AS fills, COALESCE(f.traded_notional, 0.0) AS traded_notional,
         COALESCE(f.counterparties, 0) AS counterparties,
         CASE WHEN COALESCE(o.anomalous, 0) + COALESCE(f.anomalous, 0) > 0 THEN 1 ELSE 0 END AS label_anomalous
  FROM o FULL OUTER JOIN f
    ON o.account_id = f.account_id AND o.partition_date = f.partition_date AND o.bucket = f.bucket
)
SELECT j.account_id, a.tenant_id, j.partition_date, j.bucket,
       CAST(j.orders AS DOUBLE) AS orders,
       CASE WHEN j.orders > 0 THEN CAST(j.cancelled AS DOUBLE) / j.orders ELSE 0.0 END AS cancel_ratio,
       CAST(j.fills AS DOUBLE) AS fills,
       CASE WHEN j.orders > 0 THEN CAST(j.fills AS DOUBLE) / j.orders ELSE 0.0 END AS fill_ratio,
       j.traded_notional,
       CAST(j.counterparties AS DOUBLE) AS counterparties,
       CASE WHEN j.counterparties > 0 THEN CAST(j.fills AS DOUBLE) / j.counterparties ELSE 0.0 END
         AS fills_per_counterparty,
       j.label_anomalous
FROM j LEFT JOIN accounts a ON a.account_id = j.account_id
""".replace("{anomalous}", _ACCOUNT_ANOMALOUS)


def with_bucket(table: "pa.Table", ts_column: str, seconds: int) -> "pa.Table":
    """Add ``bucket``: the epoch second that starts the row's interval."""
    import pyarrow as pa
    import pyarrow.compute as pc

    micros = pc.cast(pc.cast(table[ts_column], pa.timestamp("us")), pa.int64())
    bucket = pc.multiply(pc.divide(micros, seconds * 1_000_000), seconds)  # integer division on int64
    return table.append_column("bucket", pc.cast(bucket, pa.int64()))


def finish(result: "pa.Table", seconds: int) -> "pa.Table":
    """Order rows and add ``event_ts`` (interval end, UTC): when the features become known."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = "instrument" if "instrument" in result.column_names else "account_id"
    result = result.sort_by([(key, "ascending"), ("bucket", "ascending")])
    end = pc.multiply(pc.add(result["bucket"], seconds), 1_000_000)
    event_ts = pc.cast(end, pa.timestamp("us", tz="UTC"))
    return result.append_column("event_ts", event_ts)


def instrument_inputs(bars_1m: "pa.Table") -> dict[str, "pa.Table"]:
    columns = ["instrument", "partition_date", "bar_start", "high", "low", "close", "volume", "trade_count"]
    return {"bars": with_bucket(bars_1m.select(columns), "bar_start", INSTRUMENT_INTERVAL_S)}


# Order states whose cancelled lots were cancelled as the order arrived (no cancelled_ts is recorded for them):
# an IOC/market remainder that expired, a FOK order that could not fill completely.
CANCELLED_ON_ARRIVAL = ("EXPIRED", "REJECTED")


def _micros(column) -> "pa.Array":
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64())


def with_cancel_known(orders: "pa.Table", seconds: int) -> "pa.Table":
    """Add ``cancel_known``: 1 where the order's cancel had happened before the end of its window
    (``bucket + seconds``), else 0. The cancel time is ``cancelled_ts``; for orders cancelled on arrival
    (``CANCELLED_ON_ARRIVAL``, which record none) it is the order's ``ts``. A cancelled order with
    neither is not known to have been cancelled by then and does not count."""
    import pyarrow as pa
    import pyarrow.compute as pc

    placed = _micros(orders["ts"])
    on_arrival = pc.is_in(orders["status"], value_set=pa.array(CANCELLED_ON_ARRIVAL, pa.string()))
    cancelled_at = pc.coalesce(_micros(orders["cancelled_ts"]),
                               pc.if_else(on_arrival, placed, pa.scalar(None, pa.int64())))
    window_end = pc.multiply(pc.add(orders["bucket"], seconds), 1_000_000)
    known = pc.and_(pc.greater(orders["cancelled_lots"], 0), pc.less(cancelled_at, window_end))
    return orders.append_column("cancel_known", pc.cast(pc.fill_null(known, False), pa.int64()))


def account_inputs(orders: "pa.Table", fills: "pa.Table", accounts: "pa.Table") -> dict[str, "pa.Table"]:
    orders = orders.select(["account_id", "partition_date", "ts", "cancelled_lots", "cancelled_ts", "status",
                            "anomaly_type"])
    fills = fills.select(["account_id", "partition_date", "ts", "qty_lots", "price_ticks", "counterparty_account_id",
                          "anomaly_type"])
    accounts = accounts.select(["account_id", "tenant_id"])
    # bronze.accounts holds one row per account per day: keep one per account
    accounts = accounts.group_by(["account_id"]).aggregate([("tenant_id", "max")]).rename_columns(
        ["account_id", "tenant_id"])
    orders = with_cancel_known(with_bucket(orders, "ts", ACCOUNT_WINDOW_S), ACCOUNT_WINDOW_S)
    return {"orders": orders, "fills": with_bucket(fills, "ts", ACCOUNT_WINDOW_S),
            "accounts": accounts}


def run_duckdb(sql: str, inputs: dict[str, "pa.Table"]) -> "pa.Table":
    import duckdb

    con = duckdb.connect()
    try:
        for name, table in inputs.items():
            con.register(name, table)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def run_spark(spark, sql: str, inputs: dict[str, "pa.Table"]) -> "pa.Table":
    """The same SQL on Spark (local[2] here, a standalone/K8s master in production)."""
    import pyarrow as pa

    for name, table in inputs.items():
        spark.createDataFrame(table.to_pandas()).createOrReplaceTempView(name)
    frame = spark.sql(sql).toPandas()
    return pa.Table.from_pandas(frame, preserve_index=False)


def instrument_features(bars_1m: "pa.Table", spark=None) -> "pa.Table":
    inputs = instrument_inputs(bars_1m)
    out = run_spark(spark, INSTRUMENT_SQL, inputs) if spark is not None else run_duckdb(INSTRUMENT_SQL, inputs)
    return finish(normalise(out), INSTRUMENT_INTERVAL_S)


def account_features(orders: "pa.Table", fills: "pa.Table", accounts: "pa.Table", spark=None) -> "pa.Table":
    inputs = account_inputs(orders, fills, accounts)
    out = run_spark(spark, ACCOUNT_SQL, inputs) if spark is not None else run_duckdb(ACCOUNT_SQL, inputs)
    return finish(normalise(out), ACCOUNT_WINDOW_S)


def normalise(table: "pa.Table") -> "pa.Table":
    """One set of Arrow types whichever engine produced the table (dates as ISO strings)."""
    import pyarrow as pa

    fields = []
    arrays = []
    for field, column in zip(table.schema, table.columns):
        name = field.name
        if name in ("partition_date",):
            column = column.cast(pa.string()) if not pa.types.is_date(field.type) else column.cast(pa.date32()).cast(pa.string())
            target = pa.string()
        elif name in ("bucket", "account_id", "label_up", "label_anomalous"):
            target = pa.int64()
        elif name in ("instrument", "tenant_id"):
            target = pa.string()
        else:
            target = pa.float64()
        arrays.append(column.cast(target))
        fields.append(pa.field(name, target))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
