"""The ML platform as assets: features (Feast), training (Ray Tune + MLflow), promotion, serving, drift."""
