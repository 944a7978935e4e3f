"""Real-time model serving: online features from Feast, the champion (or an A/B challenger) from MLflow."""
