"""The day's lake tables -> the event arrays the spike encoder reads."""

import datetime as dt

import pyarrow as pa

from models.neuromorphic.encoding import EncodingConfig, encode_day
from platformq_assets.neuromorphic.events import event_arrays

T0 = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.timezone.utc)


def _at(seconds):
    return T0 + dt.timedelta(seconds=seconds)


def test_lots_cancelled_on_arrival_are_cancelled_lots_at_the_orders_time():
    """An IOC/market remainder that expired or a FOK order rejected records cancelled_lots but no cancelled_ts
    (features/compute.py's CANCELLED_ON_ARRIVAL): the encoder dropped those lots, so the cancelled-lots channels
    never saw them; they are cancelled as the order arrives."""
    trades = pa.table({"ts": pa.array([_at(1)], pa.timestamp("us", "UTC")), "instrument": ["AAA"],
                       "price_ticks": [10000], "quantity": [5]})
    orders = pa.table({
        "ts": pa.array([_at(10), _at(20), _at(30), _at(40)], pa.timestamp("us", "UTC")),
        "instrument": ["AAA"] * 4, "side": ["BUY", "SELL", "BUY", "BUY"], "qty_lots": [200, 160, 50, 40],
        "cancelled_ts": pa.array([None, None, _at(33), None], pa.timestamp("us", "UTC")),
        "cancelled_lots": [180, 160, 50, 0], "status": ["EXPIRED", "REJECTED", "CANCELLED", "FILLED"]})
    labels = pa.table({"anomaly_id": pa.array([], pa.string()), "anomaly_type": pa.array([], pa.string()),
                       "instrument": pa.array([], pa.string()),
                       "start_ts": pa.array([], pa.timestamp("us", "UTC")),
                       "end_ts": pa.array([], pa.timestamp("us", "UTC"))})
    arrays = event_arrays(trades, orders, labels)
    us = [int(_at(s).timestamp()) * 1_000_000 for s in (10, 20, 33)]
    assert arrays["order_cancel_ts"].tolist() == [us[0], us[1], us[2], -1]
    windows = encode_day(arrays, EncodingConfig(window_seconds=60, bins=12))
    cancelled = list(windows["feature_names"]).index("cancelled_lots")
    assert windows["features"][0, cancelled, [2, 4, 6]].tolist() == [180, 160, 50]
