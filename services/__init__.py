"""Pure domain services (no Dagster) and their thin HTTP layers."""
