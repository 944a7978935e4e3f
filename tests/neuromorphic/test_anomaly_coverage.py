"""`labelled_anomalies_in_windows` when two anomalies of one instrument share a window (a wash trade inside a
spoofing burst or a flash move): a window carries one anomaly id, yet both anomalies are in a window."""

import numpy as np
from dagster import AssetCheckSpec, AssetKey, DagsterInstance, asset, materialize

from models.neuromorphic.encoding import EncodingConfig, encode_day
from platformq_assets.neuromorphic.runner import PROJECT_ROOT, run_lava_script
from tests.neuromorphic.test_encoding import events

LABELS = [("AAPL", "wash_trade", "d-wash_trade-1", 0, 12), ("AAPL", "spoofing", "d-spoofing-2", 0, 30),
          ("AAPL", "flash_move", "d-flash_move-3", 120, 540)]
DAY = events(trades=[(5, "AAPL", 10000, 3), (70, "AAPL", 10010, 4), (600, "AAPL", 10020, 1)],
             orders=[(1, "AAPL", "BUY", 5, None, 0)], labels=LABELS)


def test_overlapping_anomalies_are_all_covered():
    from models.neuromorphic.encoding import anomalies_in_windows

    windows = encode_day(DAY, EncodingConfig())
    assert windows["label"][0] == 1 and windows["anomaly_id"][0] == "d-wash_trade-1"  # the window keeps one id
    assert anomalies_in_windows(DAY, windows) == {"d-wash_trade-1", "d-spoofing-2", "d-flash_move-3"}
    # an anomaly after the last event, or on an instrument without events, is not in any window
    late = dict(DAY, label_instrument=np.array(["AAPL", "MSFT"]), label_type=np.array(["spoofing", "spoofing"]),
                label_id=np.array(["late", "other"]), label_start=DAY["trade_ts"][[2, 0]] + 3600 * 10**6,
                label_end=DAY["trade_ts"][[2, 0]] + 3700 * 10**6)
    late["label_start"][1] = late["label_end"][1] = DAY["trade_ts"][0]
    assert anomalies_in_windows(late, encode_day(late, EncodingConfig())) == set()


class _Settings:
    effective_lava_runner = "subprocess"
    lava_python = str(PROJECT_ROOT / ".venv-lava" / "bin" / "python")


def test_encoder_check_passes_for_anomalies_sharing_a_window(tmp_path):
    np.savez(tmp_path / "events.npz", **DAY)

    key = AssetKey(["neuromorphic", "spike_trains"])

    @asset(key=key, check_specs=[AssetCheckSpec("labelled_anomalies_in_windows", asset=key)])
    def spike_trains(context):
        yield from run_lava_script(context, _Settings(), "models.neuromorphic.pipes_encode", {
            "events": str(tmp_path / "events.npz"), "out": str(tmp_path / "windows.npz")}).get_results()

    with DagsterInstance.ephemeral() as instance:
        result = materialize([spike_trains], instance=instance, raise_on_error=False)
    assert result.success, result.all_events
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "labelled_anomalies_in_windows"
    assert check.passed, check.metadata
    assert check.metadata["covered"].value == 3 and check.metadata["missing"].value == "none"
