"""platformQ's Dagster code location (see definitions.py)."""
