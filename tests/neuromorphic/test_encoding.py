"""Spike encoding of order and trade events (numpy only: runs in the main environment too)."""

import numpy as np
import pytest

from models.neuromorphic.encoding import EVENT_ARRAYS, EncodingConfig, encode_day

US = 1_000_000
T0 = 1_704_205_800 * US  # 2024-01-02 14:30 UTC, a whole minute


def events(trades=(), orders=(), labels=()):
    """trades: (second, symbol, price_ticks, qty); orders: (second, symbol, side, qty, cancel_second or None, lots)."""
    out = {
        "trade_ts": np.array([T0 + int(s * US) for s, *_ in trades], np.int64),
        "trade_instrument": np.array([t[1] for t in trades], str),
        "trade_price_ticks": np.array([t[2] for t in trades], np.int64),
        "trade_qty": np.array([t[3] for t in trades], np.int64),
        "order_ts": np.array([T0 + int(o[0] * US) for o in orders], np.int64),
        "order_instrument": np.array([o[1] for o in orders], str),
        "order_side": np.array([o[2] for o in orders], str),
        "order_qty": np.array([o[3] for o in orders], np.int64),
        "order_cancel_ts": np.array([-1 if o[4] is None else T0 + int(o[4] * US) for o in orders], np.int64),
        "order_cancelled_lots": np.array([o[5] for o in orders], np.int64),
        "label_instrument": np.array([lab[0] for lab in labels], str),
        "label_type": np.array([lab[1] for lab in labels], str),
        "label_id": np.array([lab[2] for lab in labels], str),
        "label_start": np.array([T0 + int(lab[3] * US) for lab in labels], np.int64),
        "label_end": np.array([T0 + int(lab[4] * US) for lab in labels], np.int64),
    }
    assert set(out) == set(EVENT_ARRAYS)
    return out


def channel(result, name):
    return list(result["channel_names"]).index(name)


def test_windows_bins_and_labels():
    config = EncodingConfig(window_seconds=60, bins=12)
    day = events(
        trades=[(1, "AAA", 10000, 5), (179, "AAA", 10000, 5), (30, "BBB", 500, 1)],
        labels=[("AAA", "spoofing", "a-1", 70, 100), ("BBB", "flash_move", "f-1", 100, 170)],
    )
    result = encode_day(day, config)
    # 3 minutes of events -> 3 windows per instrument, 12 bins of 5 s each
    assert result["spikes"].shape == (6, 17, 12) and result["features"].shape == (6, 9, 12)
    assert result["spikes"].dtype == np.uint8 and set(np.unique(result["spikes"])) <= {0, 1}
    assert list(result["instrument"]) == ["AAA"] * 3 + ["BBB"] * 3
    assert list(result["label"]) == [0, 1, 0, 0, 1, 1]
    assert list(result["anomaly_id"]) == ["", "a-1", "", "", "f-1", "f-1"]
    assert list(result["window_start_us"][:3]) == [T0, T0 + 60 * US, T0 + 120 * US]
    # a trade at second 1 lands in bin 0 of window 0; at second 179 in bin 11 of window 2
    trades = channel(result, "trades>=1")
    assert result["spikes"][0, trades, 0] == 1 and result["spikes"][2, trades, 11] == 1
    assert result["spikes"][:3, trades].sum() == 2


def test_price_moves_are_delta_modulated():
    config = EncodingConfig(window_seconds=60, bins=12, price_small_bps=8, price_large_bps=60)
    # +10 bps, flat, +100 bps, then -100 bps: up, nothing, up+large up, down+large down
    prices = [(2, 10000), (7, 10010), (12, 10010), (17, 10110), (22, 10009)]
    result = encode_day(events(trades=[(s, "AAA", p, 1) for s, p in prices]), config)
    spikes = result["spikes"][0]
    up, down = channel(result, "price_up"), channel(result, "price_down")
    up_l, down_l = channel(result, "price_up_large"), channel(result, "price_down_large")
    assert list(spikes[up, :5]) == [0, 1, 0, 1, 0]
    assert list(spikes[down, :5]) == [0, 0, 0, 0, 1]
    assert list(spikes[up_l, :5]) == [0, 0, 0, 1, 0] and list(spikes[down_l, :5]) == [0, 0, 0, 0, 1]
    assert result["features"][0, 2, 1] == pytest.approx(10.0)  # price_return_bps of bin 1


def test_order_flow_spoofing_pattern_spikes_on_large_orders_and_cancels():
    config = EncodingConfig(window_seconds=60, bins=12)
    layered = [(10.0 + 0.001 * j, "AAA", "BUY", 150, 12.0, 150) for j in range(5)]
    noise = [(40, "AAA", "SELL", 5, None, 0)]
    result = encode_day(events(trades=[(0, "AAA", 100, 1)], orders=layered + noise), config)
    spikes = result["spikes"][0]
    assert spikes[channel(result, "order_lots>=60"), 2] == 1  # the layered orders at second 10 -> bin 2
    assert spikes[channel(result, "buy_lots>=150"), 2] == 1
    assert spikes[channel(result, "imbalance_buy"), 2] == 1
    assert spikes[channel(result, "cancelled_lots>=150"), 2] == 1  # cancelled at second 12, same bin
    assert spikes[channel(result, "order_lots>=60")].sum() == 1  # the small order at 40 s does not fire it
    assert spikes[channel(result, "sell_lots>=30")].sum() == 0
    assert result["features"][0, 3, 2] == 750  # new buy lots in bin 2


def test_an_instant_anomaly_on_a_window_start_labels_the_window_that_contains_it():
    """A wash trade or spoofing burst of one instant (start == end) at a whole minute: its window is [60 s, 120 s),
    which contains it; an anomaly's end is otherwise exclusive (a flash move ends where the next minute begins)."""
    from models.neuromorphic.encoding import anomalies_in_windows

    day = events(trades=[(1, "AAA", 100, 1), (60, "AAA", 101, 1), (150, "AAA", 100, 1)],
                 labels=[("AAA", "wash_trade", "w-1", 60, 60), ("AAA", "flash_move", "f-1", 130, 180)])
    result = encode_day(day, EncodingConfig(window_seconds=60, bins=12))
    assert list(result["label"]) == [0, 1, 1]
    assert list(result["anomaly_id"]) == ["", "w-1", "f-1"]
    assert anomalies_in_windows(day, result) == {"w-1", "f-1"}


def test_a_move_of_exactly_the_threshold_spikes_up_and_down():
    """The README: a spike "each time the price has moved 8 / 60 bps". 10,000 -> 10,008 ticks is exactly 8 bps,
    but (10008 / 10000 - 1) * 1e4 is 7.999999999999119 in floating point: the up move fired nothing while the same
    move down did (asymmetric, and for most price levels)."""
    config = EncodingConfig(window_seconds=60, bins=12, price_small_bps=8, price_large_bps=60)
    day = events(trades=[(2, "UP", 10000, 1), (7, "UP", 10008, 1), (12, "UP", 10068, 1),
                         (2, "DN", 10000, 1), (7, "DN", 9992, 1), (12, "DN", 9932, 1),
                         (2, "BIG", 10000, 1), (7, "BIG", 10060, 1), (12, "BIG", 10000, 1),
                         (2, "B2", 20000, 1), (7, "B2", 20016, 1), (12, "B2", 20120, 1)])
    result = encode_day(day, config)
    up, down = channel(result, "price_up"), channel(result, "price_down")
    up_l, down_l = channel(result, "price_up_large"), channel(result, "price_down_large")
    spikes = dict(zip(result["instrument"], result["spikes"]))
    assert list(spikes["UP"][up, :3]) == [0, 1, 1]  # +8 bps, then +59.6 bps from 10,008 (>= 8, < 60 from 10,000)
    assert list(spikes["UP"][up_l, :3]) == [0, 0, 1]  # 10,068 is +68 bps from the large band's level 10,000
    assert list(spikes["DN"][down, :3]) == [0, 1, 1] and list(spikes["DN"][down_l, :3]) == [0, 0, 1]
    assert list(spikes["BIG"][up, :3]) == [0, 1, 0] and list(spikes["BIG"][up_l, :3]) == [0, 1, 0]
    assert list(spikes["BIG"][down, :3]) == [0, 0, 1]  # back to 10,000: -59.6 bps from 10,060, not -60
    assert list(spikes["BIG"][down_l, :3]) == [0, 0, 0]
    assert list(spikes["B2"][up, :3]) == [0, 1, 1] and list(spikes["B2"][up_l, :3]) == [0, 0, 1]  # +8, then +60

