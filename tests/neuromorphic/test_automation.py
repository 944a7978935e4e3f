"""snn_model's automation: it trains on whichever of the previous days have spike trains, so one missing day
must not hold it (and the scores after it) back for the length of the window."""

import datetime as dt

import pytest
from dagster import (AssetMaterialization, AssetSpec, DagsterInstance, Definitions, ResourceDefinition,
                     evaluate_automation_conditions)

from platformq_assets.neuromorphic.assets import SNN_MODEL_KEY, SOURCES, SPIKE_TRAINS_KEY, anomaly_scores, snn_model, spike_trains

DAYS = ["2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08", "2024-03-09"]


def requested(present: list[str]) -> list[str]:
    defs = Definitions(assets=[spike_trains, snn_model, anomaly_scores, *[AssetSpec(k) for k in SOURCES]],
                       resources={"lake": ResourceDefinition.none_resource(),
                                  "mlflow": ResourceDefinition.none_resource()})
    with DagsterInstance.ephemeral() as instance:
        for day in present:
            instance.report_runless_asset_event(AssetMaterialization(SPIKE_TRAINS_KEY, partition=day))
        first = evaluate_automation_conditions(defs, instance,
                                               evaluation_time=dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc))
        # the next day's partition (2024-03-10) appears: snn_model for it trains on 03-05 .. 03-09
        second = evaluate_automation_conditions(defs, instance, cursor=first.cursor,
                                                evaluation_time=dt.datetime(2024, 3, 11, 0, 5, tzinfo=dt.timezone.utc))
        return sorted(second.get_requested_partitions(SNN_MODEL_KEY))


@pytest.mark.parametrize("missing", [None, "2024-03-07", "2024-03-05"])
def test_a_missing_training_day_does_not_hold_the_model_back(missing):
    assert requested([d for d in DAYS if d != missing]) == ["2024-03-10"]


def test_no_training_day_at_all_requests_nothing():
    assert requested([]) == []
