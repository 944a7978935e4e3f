"""The neuromorphic domain: spike trains -> spiking network -> anomaly scores on Lava (all through Pipes)."""

from dagster import AssetSelection, Definitions, define_asset_job


def neuromorphic_definitions() -> Definitions:
    from platformq_assets.neuromorphic.assets import GROUP, anomaly_scores, snn_model, spike_trains

    job = define_asset_job("neuromorphic_daily", selection=AssetSelection.groups(GROUP),
                           description="Encode the day's events as spike trains, train on the previous days, "
                           "score the day on Lava.")
    return Definitions(assets=[spike_trains, snn_model, anomaly_scores], jobs=[job])
