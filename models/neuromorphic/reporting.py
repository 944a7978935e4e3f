"""Pipes metadata helpers: dagster_pipes takes raw scalars, and dicts/lists only as typed JSON values."""


def pipes_metadata(values: dict) -> dict:
    return {k: {"raw_value": v, "type": "json"} if isinstance(v, (dict, list)) else v for k, v in values.items()}
