"""A day without trades or orders (a closed venue) is an empty day, not a failure: its spike trains have no windows,
training on days that include it works, and scoring it writes no rows with checks that say so (through Pipes)."""

import json

import numpy as np
from dagster import AssetCheckSpec, AssetKey, DagsterInstance, asset, materialize

from models.neuromorphic.encoding import EncodingConfig, encode_day, encoding_of
from platformq_assets.neuromorphic.runner import PROJECT_ROOT, run_lava_script
from tests.neuromorphic.test_encoding import events

BUSY = events(trades=[(s, "AAA", 10000 + s % 7, 1 + s % 5) for s in range(0, 300, 17)],
              orders=[(s, "AAA", "BUY", 10, None, 0) for s in range(3, 300, 23)])


class _Settings:
    effective_lava_runner = "subprocess"
    lava_python = str(PROJECT_ROOT / ".venv-lava" / "bin" / "python")


def _run(name, module, extras, checks):
    key = AssetKey(["neuromorphic", name])

    @asset(key=key, check_specs=[AssetCheckSpec(check, asset=key) for check in checks])
    def probe(context):
        yield from run_lava_script(context, _Settings(), module, extras).get_results()

    with DagsterInstance.ephemeral() as instance:
        result = materialize([probe], instance=instance, raise_on_error=False)
    return result


def test_an_empty_day_has_no_windows_of_the_days_shape():
    config = EncodingConfig(window_seconds=60, bins=12)
    empty = encode_day(events(), config)
    busy = encode_day(BUSY, config)
    assert empty["spikes"].shape == (0, 17, 12) and empty["features"].shape == (0, 9, 12)
    assert len(empty["label"]) == len(empty["instrument"]) == len(empty["window_start_us"]) == 0
    assert encoding_of(empty) == encoding_of(busy)  # trains and scores alongside the other days
    for name in ("spikes", "features", "label", "instrument", "anomaly_id"):
        assert len(np.concatenate([empty[name], busy[name]])) == len(busy[name])


def test_an_empty_day_is_encoded_and_scored_to_no_rows(tmp_path):
    from platformq_assets.neuromorphic.scores import scores_table

    np.savez(tmp_path / "events.npz", **events())
    windows = tmp_path / "windows.npz"
    result = _run("spike_trains", "models.neuromorphic.pipes_encode",
                  {"events": str(tmp_path / "events.npz"), "out": str(windows)}, ["labelled_anomalies_in_windows"])
    assert result.success, result.all_events
    [event] = result.get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    assert meta["windows"] == 0 and meta["empty_day"] is True
    assert all(c.passed for c in result.get_asset_check_evaluations())

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"sizes": [17, 4, 2], "hidden": 4, "time_steps": 12,
                                                  "window_us": 60_000_000, "bin_us": 5_000_000}))
    out = tmp_path / "scores.npz"
    checks = ["float_fixed_point_agreement", "snn_vs_baseline", "energy_proxy"]
    result = _run("anomaly_scores", "models.neuromorphic.pipes_score",
                  {"spikes": str(windows), "model_dir": str(model), "out": str(out), "pad": 2,
                   "backend": "loihi2_sim", "partition": None, "agreement_threshold": 0.95}, checks)
    assert result.success, result.all_events
    evaluations = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert evaluations == dict.fromkeys(checks, True)
    table = scores_table(out, "2024-01-02", "3")
    assert table.num_rows == 0 and "snn_score" in table.column_names and "partition_date" in table.column_names


def test_spike_trains_of_a_built_day_without_events_materialise_empty(settings, lake):
    from pipelines.partitions import PARTITION_COLUMN
    from platformq_assets.neuromorphic.assets import SOURCES, spike_trains
    from tests.neuromorphic.seed import report_sources, seed_days

    day = "2024-01-02"
    seed_days(lake, [day])
    for table in ("silver.trades", "bronze.orders", "bronze.anomaly_labels"):  # the venue was closed that day
        lake.replace_partition(table, lake.read(table).slice(0, 0), PARTITION_COLUMN, day)
    with DagsterInstance.ephemeral() as instance:
        report_sources(instance, [day], SOURCES)
        result = materialize([spike_trains], partition_key=day, instance=instance, raise_on_error=False,
                             resources={"lake": lake})
    assert result.success, result.all_events
    [event] = result.get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    assert meta["windows"] == 0 and meta["empty_day"] is True and meta["source_trades"] == 0
    with np.load(settings.effective_lava_workdir / "spike_trains" / f"{day}.npz") as stored:
        assert stored["spikes"].shape == (0, 17, 12)
