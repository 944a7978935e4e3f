"""Lake -> the event arrays the spike encoder reads (the Dagster side of the file hand-over).

The lava environment has no pyarrow, so one trading day travels as an ``.npz`` of plain numpy
arrays (timestamps in µs since the epoch, strings as fixed-width unicode: no pickled objects).
"""

from __future__ import annotations

from pathlib import Path

TRADE_COLUMNS = ("ts", "instrument", "price_ticks", "quantity")
ORDER_COLUMNS = ("ts", "instrument", "side", "qty_lots", "cancelled_ts", "cancelled_lots", "status")
LABEL_COLUMNS = ("anomaly_id", "anomaly_type", "instrument", "start_ts", "end_ts")


def _us(column):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    as_int = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
    return np.asarray(pc.fill_null(as_int, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _str(column):
    import numpy as np
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(column.cast("string"), "").to_pylist(), dtype=str)


def _int(column):
    import numpy as np
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(column, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _cancel_ts(orders):
    """When each order's cancelled lots were cancelled: ``cancelled_ts``, or the order's own ``ts`` for orders
    cancelled as they arrived (an expired IOC/market remainder, a rejected FOK: they record no ``cancelled_ts``,
    as ``features.compute.CANCELLED_ON_ARRIVAL`` says), so their lots reach the cancelled-lots channels."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from features.compute import CANCELLED_ON_ARRIVAL

    cancelled = orders.column("cancelled_ts").cast(pa.timestamp("us", tz="UTC"))
    placed = orders.column("ts").cast(pa.timestamp("us", tz="UTC"))
    on_arrival = pc.fill_null(pc.is_in(orders.column("status"), value_set=pa.array(CANCELLED_ON_ARRIVAL)), False)
    return pc.coalesce(cancelled, pc.if_else(on_arrival, placed, pa.scalar(None, cancelled.type)))


def event_arrays(trades, orders, labels) -> dict:
    """numpy arrays (see ``models.neuromorphic.encoding.EVENT_ARRAYS``) from the day's Arrow tables."""
    return {
        "trade_ts": _us(trades.column("ts")), "trade_instrument": _str(trades.column("instrument")),
        "trade_price_ticks": _int(trades.column("price_ticks")), "trade_qty": _int(trades.column("quantity")),
        "order_ts": _us(orders.column("ts")), "order_instrument": _str(orders.column("instrument")),
        "order_side": _str(orders.column("side")), "order_qty": _int(orders.column("qty_lots")),
        "order_cancel_ts": _us(_cancel_ts(orders)),
        "order_cancelled_lots": _int(orders.column("cancelled_lots")),
        "label_instrument": _str(labels.column("instrument")), "label_type": _str(labels.column("anomaly_type")),
        "label_id": _str(labels.column("anomaly_id")), "label_start": _us(labels.column("start_ts")),
        "label_end": _us(labels.column("end_ts")),
    }


def write_day_events(lake, day: str, path: Path) -> dict:
    """Read one partition of silver.trades, bronze.orders and bronze.anomaly_labels into ``path``."""
    import numpy as np

    from pipelines.partitions import PARTITION_COLUMN

    trades = lake.read_partition("silver.trades", PARTITION_COLUMN, day).select(list(TRADE_COLUMNS))
    orders = lake.read_partition("bronze.orders", PARTITION_COLUMN, day).select(list(ORDER_COLUMNS))
    labels = lake.read_partition("bronze.anomaly_labels", PARTITION_COLUMN, day).select(list(LABEL_COLUMNS))
    arrays = event_arrays(trades, orders, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return {"trades": trades.num_rows, "orders": orders.num_rows, "anomaly_labels": labels.num_rows}
