"""Run configs (what a user types in the launchpad) refuse values the assets cannot use, by name, before the
asset body runs: Dagster builds the Config object at step start."""

import math

import pytest
from dagster import asset, materialize
from pydantic import ValidationError

from platformq_assets.lake.venue import VenueConfig
from platformq_assets.ml.lifecycle import TrainingConfig
from platformq_assets.neuromorphic.assets import ScoringConfig, SnnTrainingConfig, SpikeEncodingConfig

BAD = [
    (VenueConfig, "scale", -1.0), (VenueConfig, "scale", 0.0), (VenueConfig, "seed", -3),
    (SpikeEncodingConfig, "window_seconds", 0), (SpikeEncodingConfig, "bins", 0),
    (SnnTrainingConfig, "epochs", 0), (SnnTrainingConfig, "hidden", 0), (SnnTrainingConfig, "lr", math.nan),
    (ScoringConfig, "pad", -1), (ScoringConfig, "agreement_threshold", 1.5),
    (TrainingConfig, "num_samples", 0), (TrainingConfig, "time_budget_s", -5.0),
]


@pytest.mark.parametrize(("config", "field", "value"), BAD, ids=[f"{c.__name__}.{f}={v}" for c, f, v in BAD])
def test_a_run_config_refuses_an_out_of_range_value_by_name(config, field, value):
    config()  # the defaults are valid
    with pytest.raises(ValidationError, match=field):
        config(**{field: value})


def test_dagster_fails_the_step_with_the_reason_before_the_asset_body_runs():
    ran = []

    @asset
    def venue_like(config: VenueConfig):
        ran.append(config)

    result = materialize([venue_like], run_config={"ops": {"venue_like": {"config": {"scale": -1.0}}}},
                         raise_on_error=False)
    assert not result.success and ran == []
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.event_specific_data.error
    text = str(error.message) + "".join(str(c.message) for c in [error.cause] if c is not None)
    assert "scale" in text and "greater than 0" in text
