"""Federated learning: tenants as Flower participants, federated rounds as Dagster assets."""
