"""Real historical reference prices shipped in a PyPI package.

The venue's instruments track the monthly closing prices of five US stocks
(2000-2010) from ``vega_datasets`` (bundled locally; nothing is downloaded).
Each simulated trading day walks from one real monthly observation to the
next, so a 30-day history covers 30 real months of price moves.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import importlib.resources

SOURCE = "vega_datasets.stocks"


@functools.lru_cache(maxsize=1)
def monthly_series() -> dict[str, list[tuple[dt.date, float]]]:
    """symbol -> [(month, close price in USD)] in date order."""
    path = importlib.resources.files("vega_datasets") / "_data" / "stocks.csv"
    series: dict[str, list[tuple[dt.date, float]]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            month = dt.datetime.strptime(row["date"], "%b %d %Y").date()
            series.setdefault(row["symbol"], []).append((month, float(row["price"])))
    for points in series.values():
        points.sort()
    return series


def anchors(symbol: str, day_number: int) -> tuple[tuple[dt.date, float], tuple[dt.date, float]]:
    """The two real observations a simulated day runs between (wrapping at the end of history)."""
    points = monthly_series()[symbol]
    i = day_number % (len(points) - 1)
    return points[i], points[i + 1]
