"""Neuromorphic inference (lava-dl through Dagster Pipes); the lava-side code lives in ``models/neuromorphic``."""
