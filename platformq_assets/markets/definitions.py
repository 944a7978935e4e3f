"""The markets domain: derivatives clearing on top of the venue."""

from dagster import Definitions


def markets_definitions() -> Definitions:
    from platformq_assets.markets.futures import futures_final_settlement, futures_margin

    return Definitions(assets=[futures_margin, futures_final_settlement])
