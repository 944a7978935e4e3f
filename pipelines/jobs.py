"""Jobs: named selections of the asset graph that schedules, sensors and people launch."""

from dagster import AssetCheckKey, AssetKey, AssetSelection, define_asset_job

VENUE_GROUP = "bronze"

# Freshness checks judge the latest partition against the clock: they run from
# their own sensor, not inside jobs that build (possibly older) partitions.
FRESHNESS_CHECKED = [AssetKey(["bronze", "orders"]), AssetKey(["bronze", "fills"]), AssetKey(["silver", "trades"]),
                     AssetKey(["gold", "ohlcv_bars"])]
_FRESHNESS = AssetSelection.checks(*[AssetCheckKey(key, "freshness_check") for key in FRESHNESS_CHECKED])

# The venue's bronze tables for one trading day (the daily schedule runs this).
venue_daily_job = define_asset_job(
    "venue_daily",
    selection=AssetSelection.groups(VENUE_GROUP) - _FRESHNESS,
    description="Simulate one trading session and land it in bronze.",
)

# Bronze + silver + gold (+ the day's dataset credentials and their anchor): what backfills and the demo run.
lake_daily_job = define_asset_job(
    "lake_daily",
    selection=AssetSelection.groups(VENUE_GROUP, "silver", "gold", "trust", "markets", "governance") - _FRESHNESS,
    description="The whole daily graph for one trading day: bronze -> silver -> gold -> credentials -> anchor.",
)

# The medallion lakehouse alone (bronze -> silver -> gold), without the service-backed assets.
medallion_daily_job = define_asset_job(
    "medallion_daily",
    selection=AssetSelection.groups(VENUE_GROUP, "silver", "gold") - _FRESHNESS,
    description="Bronze, silver and gold for one trading day.",
)

# Landing-zone ingestion (the sensor starts one run per file).
landing_ingest_job = define_asset_job(
    "ingest_landing",
    selection=AssetSelection.groups("landing"),
    description="Ingest landing-zone files into bronze, quarantining bad records.",
)

# ML, per trading day: feature tables, their Feast online materialisation, batch scores, drift.
ML_DAILY_KEYS = [AssetKey(["features", "instrument_intervals"]), AssetKey(["features", "account_activity"]),
                 AssetKey(["features", "online_store"])] + [
    AssetKey([layer, f"{model}_{suffix}"]) for model in ("price_direction", "account_anomaly")
    for layer, suffix in (("gold", "predictions"), ("ml", "drift"))]
ml_daily_job = define_asset_job(
    "ml_daily",
    selection=AssetSelection.assets(*ML_DAILY_KEYS),
    description="One trading day of ML: features -> Feast online store -> batch scores -> drift.",
)

# ML training (not partitioned): apply the feature registry, rebuild the history on Spark, then per model
# training set -> Ray Tune -> evaluation (gate) -> champion.
ML_TRAINING_KEYS = [AssetKey(["features", "registry"]), AssetKey(["features", "instrument_intervals_history"])] + [
    AssetKey(["ml", f"{model}{suffix}"]) for model in ("price_direction", "account_anomaly")
    for suffix in ("_training_set", "", "_evaluation", "_champion")]
ml_training_job = define_asset_job(
    "ml_training",
    selection=AssetSelection.assets(*ML_TRAINING_KEYS),
    description="Retrain every model on the feature history and promote challengers that pass the gate.",
)

# Lake maintenance (not partitioned): erasure requests, retention, compaction, snapshot expiry, orphan files.
lake_maintenance_job = define_asset_job(
    "lake_maintenance",
    selection=AssetSelection.groups("maintenance"),
    description="Carry out erasure requests, apply retention, compact small files, expire old snapshots "
                "(deleting the files only they reached) and delete orphan files.",
)

# The services' audit trail into the lake (started by the audit_trail_sensor).
governance_audit_job = define_asset_job(
    "governance_audit",
    selection=AssetSelection.assets(AssetKey(["governance", "audit_log"])),
    description="Read the services' new audit lines into governance.audit_log.",
)
