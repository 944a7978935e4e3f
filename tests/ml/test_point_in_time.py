"""The training set's point-in-time check reads event times as epoch seconds whatever their unit (no Dagster run)."""

import pandas as pd
import pytest


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_event_times_are_epoch_seconds_in_every_unit(unit):
    """``astype("int64") // 10**9`` read nanoseconds: a microsecond column (what Arrow and Iceberg hold) came out
    1000 times too small, and every row's features looked like they came from the future."""
    from platformq_assets.ml.lifecycle import epoch_seconds

    times = pd.Series(pd.to_datetime(["2024-02-05 15:00:00.000", "2024-02-05 15:05:00.900"], utc=True)).astype(
        f"datetime64[{unit}, UTC]")
    expected = [1707145200, 1707145500]
    assert epoch_seconds(times).tolist() == expected
    naive = times.dt.tz_localize(None)
    assert epoch_seconds(naive).tolist() == expected
