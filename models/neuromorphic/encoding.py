"""Order and trade events -> labelled spike-train windows (numpy only, no Dagster, no torch).

Every instrument's session is cut into windows of ``window_seconds``, each made of ``bins`` time
bins (one bin = one simulation time step of the network). Per bin we aggregate the raw
microstructure features (kept for the non-spiking baseline) and encode them as binary spikes:

* price: delta modulation of the last trade price (a spike on the up/down channel each time the
  price has moved ``price_small_bps`` / ``price_large_bps`` from the level of the last spike);
* activity, volume, new buy/sell lots, the largest single order, cancelled lots: threshold
  (population) coding, one channel per threshold, the channel spikes when the bin reaches it;
* order-flow imbalance (buy - sell new lots over their sum): an up and a down channel.

A window is labelled anomalous when it overlaps a labelled anomaly of the same instrument.
"""

from __future__ import annotations

import dataclasses

import numpy as np

US = 1_000_000

FEATURES = ("trade_count", "traded_lots", "price_return_bps", "new_buy_lots", "new_sell_lots", "max_order_lots",
            "cancelled_lots", "order_flow_imbalance", "order_count")


@dataclasses.dataclass(frozen=True)
class EncodingConfig:
    window_seconds: int = 60
    bins: int = 12
    price_small_bps: float = 8.0
    price_large_bps: float = 60.0
    trade_count_levels: tuple[int, ...] = (1, 3)
    traded_lots_levels: tuple[int, ...] = (20, 60)
    side_lots_levels: tuple[int, ...] = (30, 150)
    large_order_lots: int = 60
    cancelled_lots_levels: tuple[int, ...] = (30, 150)
    imbalance_level: float = 0.6
    imbalance_min_lots: int = 20

    @property
    def bin_us(self) -> int:
        if (self.window_seconds * US) % self.bins:
            raise ValueError("window_seconds * 1e6 must be a multiple of bins")
        return self.window_seconds * US // self.bins

    def channel_names(self) -> list[str]:
        names = ["price_up", "price_down", "price_up_large", "price_down_large"]
        names += [f"trades>={n}" for n in self.trade_count_levels]
        names += [f"traded_lots>={n}" for n in self.traded_lots_levels]
        names += [f"buy_lots>={n}" for n in self.side_lots_levels]
        names += [f"sell_lots>={n}" for n in self.side_lots_levels]
        names += [f"order_lots>={self.large_order_lots}"]
        names += [f"cancelled_lots>={n}" for n in self.cancelled_lots_levels]
        names += ["imbalance_buy", "imbalance_sell"]
        return names


def overlaps(starts: np.ndarray, window_us: int, start: int, end: int) -> np.ndarray:
    """Windows ``[w, w + window_us)`` that overlap the labelled anomaly ``[start, end)``.

    The end is exclusive (a flash move ends where the next minute begins), but an anomaly with one timestamp
    (``start == end``: a wash trade or spoofing burst of one instant) is that instant, so it lands in the
    window that contains it, also when it falls exactly on a window's start.
    """
    return (starts < max(int(end), int(start) + 1)) & (starts + window_us > start)


def _per_bin_sum(bins: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(bins, weights=values, minlength=n)[:n] if len(bins) else np.zeros(n)


def _delta_modulate(prices: np.ndarray, small_bps: float, large_bps: float) -> tuple[np.ndarray, ...]:
    """Up/down spikes each time the (carried-forward) price leaves a band around the last spike's level."""
    n = len(prices)
    up, down, up_l, down_l = (np.zeros(n, np.uint8) for _ in range(4))
    level = level_l = np.nan
    for i, p in enumerate(prices):
        if np.isnan(p):
            continue
        if np.isnan(level):
            level = level_l = p
            continue
        # (p - level) * 1e4 / level, not (p / level - 1) * 1e4: for tick prices the former is the correctly rounded
        # move, so a move of exactly the threshold reaches it (10,000 -> 10,008 gave 7.999999999999119 bps)
        move = (p - level) * 1e4 / level
        if move >= small_bps:
            up[i], level = 1, p
        elif move <= -small_bps:
            down[i], level = 1, p
        move_l = (p - level_l) * 1e4 / level_l
        if move_l >= large_bps:
            up_l[i], level_l = 1, p
        elif move_l <= -large_bps:
            down_l[i], level_l = 1, p
    return up, down, up_l, down_l


def encode_instrument(trades: dict, orders: dict, t0: int, n_bins: int, config: EncodingConfig):
    """Features (F, n_bins) and spikes (C, n_bins) for one instrument's events (µs timestamps)."""
    bin_us = config.bin_us
    tb = ((trades["ts"] - t0) // bin_us).astype(np.int64)
    keep = (tb >= 0) & (tb < n_bins)
    tb, t_ts = tb[keep], trades["ts"][keep]
    t_price, t_qty = trades["price_ticks"][keep].astype(float), trades["qty"][keep].astype(float)
    ob = ((orders["ts"] - t0) // bin_us).astype(np.int64)
    keep = (ob >= 0) & (ob < n_bins)
    ob, o_qty, o_buy = ob[keep], orders["qty"][keep].astype(float), orders["is_buy"][keep]
    cts, clots = orders["cancel_ts"], orders["cancelled_lots"].astype(float)
    cb = ((cts[cts >= 0] - t0) // bin_us).astype(np.int64)
    clots = clots[cts >= 0]
    keep = (cb >= 0) & (cb < n_bins)
    cb, clots = cb[keep], clots[keep]

    trade_count = _per_bin_sum(tb, np.ones(len(tb)), n_bins)
    traded = _per_bin_sum(tb, t_qty, n_bins)
    last_price = np.full(n_bins, np.nan)
    if len(tb):
        order = np.argsort(t_ts, kind="stable")
        rev_bins = tb[order][::-1]
        uniq, first_rev = np.unique(rev_bins, return_index=True)  # first in reverse = the bin's last trade
        last_price[uniq] = t_price[order][::-1][first_rev]
    carried = last_price.copy()
    for i in range(1, n_bins):  # forward fill
        if np.isnan(carried[i]):
            carried[i] = carried[i - 1]
    prev = np.concatenate([[np.nan], carried[:-1]])
    ret = np.nan_to_num((carried / prev - 1.0) * 1e4)
    buy = _per_bin_sum(ob[o_buy], o_qty[o_buy], n_bins)
    sell = _per_bin_sum(ob[~o_buy], o_qty[~o_buy], n_bins)
    max_order = np.zeros(n_bins)
    if len(ob):
        np.maximum.at(max_order, ob, o_qty)
    cancelled = _per_bin_sum(cb, clots, n_bins)
    total = buy + sell
    imbalance = np.divide(buy - sell, total, out=np.zeros(n_bins), where=total > 0)
    order_count = _per_bin_sum(ob, np.ones(len(ob)), n_bins)
    features = np.stack([trade_count, traded, ret, buy, sell, max_order, cancelled, imbalance, order_count])

    c = config
    channels = list(_delta_modulate(carried, c.price_small_bps, c.price_large_bps))
    channels += [trade_count >= n for n in c.trade_count_levels]
    channels += [traded >= n for n in c.traded_lots_levels]
    channels += [buy >= n for n in c.side_lots_levels]
    channels += [sell >= n for n in c.side_lots_levels]
    channels += [max_order >= c.large_order_lots]
    channels += [cancelled >= n for n in c.cancelled_lots_levels]
    channels += [(imbalance >= c.imbalance_level) & (total >= c.imbalance_min_lots),
                 (imbalance <= -c.imbalance_level) & (total >= c.imbalance_min_lots)]
    spikes = np.stack([np.asarray(ch, np.uint8) for ch in channels])
    return features.astype(np.float32), spikes


def encode_day(events: dict, config: EncodingConfig = EncodingConfig()) -> dict:
    """Encode one day of events (the arrays the Dagster side writes, see ``EVENT_ARRAYS``) into windows.

    Returns arrays: ``spikes`` (N, C, T) uint8, ``features`` (N, F, T) float32, ``label`` (N,) uint8,
    ``anomaly_type``/``anomaly_id``/``instrument`` (N,) str, ``window_start_us`` (N,) int64. A day without trades
    or orders (a closed venue) has no windows: N = 0, the arrays keep their other dimensions.
    """
    window_us = config.window_seconds * US
    out = {"spikes": [np.zeros((0, len(config.channel_names()), config.bins), np.uint8)],
           "features": [np.zeros((0, len(FEATURES), config.bins), np.float32)], "label": [np.zeros(0, np.uint8)],
           "anomaly_type": [np.zeros(0, "<U16")], "anomaly_id": [np.zeros(0, "<U64")],
           "instrument": [np.zeros(0, "<U16")], "window_start_us": [np.zeros(0, np.int64)]}
    stamps = [a for a in (events["trade_ts"], events["order_ts"]) if len(a)]
    first = min((int(a.min()) for a in stamps), default=0)
    last = max((int(a.max()) for a in stamps), default=0)
    t0 = first - first % window_us
    n_windows = (last - t0) // window_us + 1
    n_bins = n_windows * config.bins
    instruments = sorted(set(events["trade_instrument"].tolist()) | set(events["order_instrument"].tolist()))
    starts = t0 + np.arange(n_windows, dtype=np.int64) * window_us
    for symbol in instruments:
        tm = events["trade_instrument"] == symbol
        om = events["order_instrument"] == symbol
        trades = {"ts": events["trade_ts"][tm], "price_ticks": events["trade_price_ticks"][tm],
                  "qty": events["trade_qty"][tm]}
        orders = {"ts": events["order_ts"][om], "qty": events["order_qty"][om],
                  "is_buy": events["order_side"][om] == "BUY", "cancel_ts": events["order_cancel_ts"][om],
                  "cancelled_lots": events["order_cancelled_lots"][om]}
        features, spikes = encode_instrument(trades, orders, t0, n_bins, config)
        out["features"].append(features.reshape(len(FEATURES), n_windows, config.bins).transpose(1, 0, 2))
        out["spikes"].append(spikes.reshape(spikes.shape[0], n_windows, config.bins).transpose(1, 0, 2))
        label = np.zeros(n_windows, np.uint8)
        kind = np.full(n_windows, "", dtype="<U16")
        ident = np.full(n_windows, "", dtype="<U64")
        lm = events["label_instrument"] == symbol
        for a_type, a_id, s, e in zip(events["label_type"][lm], events["label_id"][lm], events["label_start"][lm],
                                      events["label_end"][lm]):
            hit = overlaps(starts, window_us, s, e) & (label == 0)
            label[hit], kind[hit], ident[hit] = 1, a_type, a_id
        out["label"].append(label)
        out["anomaly_type"].append(kind)
        out["anomaly_id"].append(ident)
        out["instrument"].append(np.full(n_windows, symbol, dtype="<U16"))
        out["window_start_us"].append(starts)
    result = {k: np.concatenate(v) for k, v in out.items()}
    result["spikes"] = np.ascontiguousarray(result["spikes"], dtype=np.uint8)
    result["features"] = np.ascontiguousarray(result["features"], dtype=np.float32)
    result["channel_names"] = np.array(config.channel_names())
    result["feature_names"] = np.array(FEATURES)
    result["window_us"] = np.int64(window_us)
    result["bin_us"] = np.int64(config.bin_us)
    return result


def anomalies_in_windows(events: dict, windows: dict) -> set[str]:
    """Ids of the labelled anomalies that overlap at least one window of their instrument.

    A window carries one anomaly id (the first that overlaps it), so two anomalies of one instrument
    in the same window leave only one id on the windows: coverage is decided from the overlaps.
    """
    window_us = int(windows["window_us"])
    covered = set()
    for symbol, a_id, s, e in zip(events["label_instrument"], events["label_id"], events["label_start"],
                                  events["label_end"]):
        starts = windows["window_start_us"][windows["instrument"] == symbol]
        if overlaps(starts, window_us, s, e).any():
            covered.add(str(a_id))
    return covered


def encoding_of(windows: dict) -> dict:
    """What a model and the windows it reads must share: channels and steps (the network's shape), and the time
    a window and a bin cover (windows of 60 s and of 120 s with 12 bins each have the same shape, not the same
    meaning)."""
    return {"channels": int(windows["spikes"].shape[1]), "time_steps": int(windows["spikes"].shape[2]),
            "window_us": int(windows["window_us"]), "bin_us": int(windows["bin_us"])}


# What the Dagster side writes per trading day (np.savez, no pickled objects).
EVENT_ARRAYS = ("trade_ts", "trade_instrument", "trade_price_ticks", "trade_qty", "order_ts", "order_instrument",
                "order_side", "order_qty", "order_cancel_ts", "order_cancelled_lots", "label_instrument",
                "label_type", "label_id", "label_start", "label_end")


def load_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
