"""Feature assets: lake feature tables, the Feast registry, per-partition online materialisation,
and a Spark recomputation of the multi-window features over the full history.

``features.instrument_intervals`` and ``features.account_activity`` are Iceberg tables (one
daily partition per run, replaced idempotently) whose partitions are also exported as the
Parquet files Feast's offline sources read. ``features/registry`` applies the repository
(its data version is the definitions' fingerprint, so a definition change shows up as a new
version in the UI); ``features/online_store`` calls ``materialize(start, end)`` for one day.
"""

import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DataVersion,
    MaterializeResult,
    asset,
)

from pipelines.partitions import PARTITION_COLUMN, daily_partitions
from pipelines.pools import ONLINE_STORE_POOL, table_pool
from platformq_assets.quality.profiling import profile_metadata
from resources.compute import SparkResource
from resources.feast import FeastResource
from resources.lake import LakeResource
from resources.mlflow import shown_uri

INSTRUMENT_FEATURES_KEY = AssetKey(["features", "instrument_intervals"])
ACCOUNT_FEATURES_KEY = AssetKey(["features", "account_activity"])
REGISTRY_KEY = AssetKey(["features", "registry"])
ONLINE_KEY = AssetKey(["features", "online_store"])
HISTORY_KEY = AssetKey(["features", "instrument_intervals_history"])
COMMON = {"group_name": "features", "owners": ["team:ml-platform"]}


def _day_bounds(partition_key: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(dt.date.fromisoformat(partition_key), dt.time(), tzinfo=dt.timezone.utc)
    return start, start + dt.timedelta(days=1)


def _with_as_of(table):
    """``as_of_epoch``: the second the features became known, carried as a feature so training sets
    and online reads can prove they never used a value from after their event time."""
    import pyarrow as pa
    import pyarrow.compute as pc

    seconds = pc.divide(pc.cast(pc.cast(table["event_ts"], pa.timestamp("us")), pa.int64()), 1_000_000)
    return table.append_column("as_of_epoch", pc.cast(seconds, pa.float64()))


def _store_partition(context, lake: LakeResource, feast: FeastResource, identifier: str, view: str, table) -> dict:
    table = _with_as_of(table)
    written = lake.replace_partition(identifier, table, PARTITION_COLUMN, context.partition_key)
    path = feast.export_partition(view, context.partition_key, table)
    return {**written, **profile_metadata(table), "feast/offline_path": path, "dagster/row_count": len(table)}


BARS_KEY = AssetKey(["gold", "ohlcv_bars"])
ACCOUNT_INPUT_KEYS = [AssetKey(["bronze", "orders"]), AssetKey(["bronze", "fills"]), AssetKey(["bronze", "accounts"])]


def _require_inputs(context: AssetExecutionContext, keys: list[AssetKey],
                    build: str = "build the day (venue_daily) first") -> None:
    """A day's inputs must have been built: a partition never materialised reads as an empty table, and the day's
    features would be replaced by nothing (the Feast export deleted, the predictions and drift of the day empty)
    when ``ml_daily`` runs before the venue's day landed (a late or failed ``venue_daily``). Fail, saying what
    to build; the day is built by running it again once its inputs are there."""
    from dagster import Failure

    day = context.partition_key
    missing = [k.to_user_string() for k in keys if day not in context.instance.get_materialized_partitions(k)]
    if missing:
        raise Failure(description=f"{', '.join(missing)} for {day} not materialised yet: {build}, then "
                                  f"materialise this partition again; nothing was written")


def _without_erased(lake: LakeResource, table):
    """The feature rows of accounts whose erasure was accepted left out, and how many there were."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from resources.erasure import erased_accounts

    erased = erased_accounts(lake)
    if not erased or not len(table):
        return table, 0
    keep = pc.invert(pc.is_in(table["account_id"], pa.array(sorted(erased), table["account_id"].type)))
    kept = table.filter(keep)
    return kept, len(table) - len(kept)


def _nonempty_check(key: AssetKey, rows: int, labelled: int) -> AssetCheckResult:
    return AssetCheckResult(asset_key=key, check_name="has_labelled_rows", passed=rows > 0 and labelled > 0,
                            metadata={"rows": rows, "labelled_rows": labelled})


@asset(key=INSTRUMENT_FEATURES_KEY, pool=table_pool(".".join(INSTRUMENT_FEATURES_KEY.path)), deps=[BARS_KEY], partitions_def=daily_partitions,
       kinds={"duckdb", "iceberg", "feast"}, **COMMON,
       check_specs=[AssetCheckSpec("has_labelled_rows", asset=INSTRUMENT_FEATURES_KEY,
                                   description="The day produced feature rows with a next-interval label.")],
       description="5-minute returns, volatility, volume and range per instrument over windows of 1-12 intervals, "
                   "with the next interval's direction as label.")
def instrument_intervals(context: AssetExecutionContext, lake: LakeResource, feast: FeastResource):
    import pyarrow.compute as pc

    from features.compute import instrument_features
    from features.repo import INSTRUMENT_VIEW

    _require_inputs(context, [BARS_KEY])
    bars = lake.read_partition("gold.ohlcv_bars", PARTITION_COLUMN, context.partition_key)
    bars = bars.filter(pc.equal(bars["bar_interval"], "1m"))
    table = instrument_features(bars)
    metadata = _store_partition(context, lake, feast, "features.instrument_intervals", INSTRUMENT_VIEW, table)
    labelled = len(table) - table["label_up"].null_count
    return MaterializeResult(metadata=metadata, check_results=[_nonempty_check(INSTRUMENT_FEATURES_KEY, len(table),
                                                                               labelled)])


@asset(key=ACCOUNT_FEATURES_KEY, pool=table_pool(".".join(ACCOUNT_FEATURES_KEY.path)),
       deps=ACCOUNT_INPUT_KEYS, partitions_def=daily_partitions, kinds={"duckdb", "iceberg", "feast"}, **COMMON,
       check_specs=[AssetCheckSpec("has_labelled_rows", asset=ACCOUNT_FEATURES_KEY,
                                   description="The day produced account windows, some labelled anomalous.")],
       description="Order, cancel, fill and counterparty activity per account over 15-minute windows, labelled "
                   "with the anomalies the simulation injected.")
def account_activity(context: AssetExecutionContext, lake: LakeResource, feast: FeastResource):
    from features.compute import account_features
    from features.repo import ACCOUNT_VIEW

    _require_inputs(context, ACCOUNT_INPUT_KEYS)
    day = context.partition_key
    table = account_features(lake.read_partition("bronze.orders", PARTITION_COLUMN, day),
                             lake.read_partition("bronze.fills", PARTITION_COLUMN, day),
                             lake.read_partition("bronze.accounts", PARTITION_COLUMN, day))
    # an erasure accepted while the inputs were read and the windows computed (it runs in another pool) removed
    # the account from the feature table and exports already: its windows must not be written back
    table, withheld = _without_erased(lake, table)
    metadata = _store_partition(context, lake, feast, "features.account_activity", ACCOUNT_VIEW, table)
    if withheld:
        metadata["erased_rows_withheld"] = withheld
    positives = int(sum(table["label_anomalous"].to_pylist()))
    return MaterializeResult(metadata={**metadata, "anomalous_windows": positives},
                             check_results=[_nonempty_check(ACCOUNT_FEATURES_KEY, len(table), positives)])


@asset(key=REGISTRY_KEY, kinds={"feast"}, **COMMON,
       description="Applies the Feast repository (entities, feature views, on-demand view, feature services). "
                   "The data version is the definitions' fingerprint: a changed definition is a new version.")
def feature_registry(context: AssetExecutionContext, feast: FeastResource):
    applied = feast.apply()
    context.log.info("feast apply: %s", applied)
    return MaterializeResult(
        data_version=DataVersion(applied["fingerprint"]),
        metadata={"fingerprint": applied["fingerprint"], "objects": applied["objects"],
                  "added": applied["added"], "registry": shown_uri(feast.registry_uri)},
    )


ONLINE_WRITE_RULE = ("newer wins: an entity's online row is replaced only by a row with a later event_ts "
                     "(Redis, and the local SQLite store alike)")


@asset(key=ONLINE_KEY, pool=ONLINE_STORE_POOL, deps=[REGISTRY_KEY, INSTRUMENT_FEATURES_KEY, ACCOUNT_FEATURES_KEY],
       partitions_def=daily_partitions, kinds={"feast", "sqlite"}, **COMMON,
       description="Feast materialize(start, end) for one trading day into the online store (never whole history). "
                   "An entity keeps its newest features: re-materialising an older day after a newer one (a "
                   "backfill, a retry) fills in only entities without newer values.")
def online_store(context: AssetExecutionContext, feast: FeastResource):
    from features.repo import ACCOUNT_VIEW, INSTRUMENT_VIEW

    day = context.partition_key
    # the day's Feast exports are written by the feature steps: materialising a day that has none writes nothing
    # online and would still show the day as materialised (run alone from the UI, a partial backfill)
    _require_inputs(context, [INSTRUMENT_FEATURES_KEY, ACCOUNT_FEATURES_KEY],
                    build="materialise the day's feature partitions (their Feast exports; ml_daily builds them) first")
    newest = max(context.instance.get_materialized_partitions(ONLINE_KEY), default=None)
    start, end = _day_bounds(day)
    feast.materialize(start, end, views=[INSTRUMENT_VIEW, ACCOUNT_VIEW])
    metadata = {"window_start": start.isoformat(), "window_end": end.isoformat(), "online_store": feast.online_store,
                "online_write_rule": ONLINE_WRITE_RULE}
    if newest is not None and newest > day:
        note = (f"{day} is older than {newest}, already materialised: entities with newer online features kept "
                f"them; only entities without a newer value took {day}'s.")
        context.log.info(note)
        metadata.update({"newest_day_online": newest, "older_day_note": note})
    return MaterializeResult(metadata=metadata)


@asset(key=HISTORY_KEY, pool=table_pool("features.instrument_intervals_history"), deps=[AssetKey(["gold", "ohlcv_bars"])], kinds={"spark", "iceberg"}, **COMMON,
       description="The instrument features recomputed over the whole bar history on Spark (local[2] here, "
                   "the cluster in production): a full rebuild that must equal the daily partitions.")
def instrument_intervals_history(context: AssetExecutionContext, lake: LakeResource, spark: SparkResource):
    import pyarrow.compute as pc
    from pyiceberg.expressions import AlwaysTrue

    from features.compute import instrument_features

    bars = lake.read("gold.ohlcv_bars")
    bars = bars.filter(pc.equal(bars["bar_interval"], "1m"))
    session = spark.session()
    master = session.sparkContext.master
    try:
        with spark.deadline(session):
            table = _with_as_of(instrument_features(bars, spark=session))
    finally:
        spark.stop()  # the JVM would otherwise outlive the step in the in-process executor
    # one atomic full rebuild (unpartitioned: a single snapshot replaces the whole history)
    written = lake.replace_where("features.instrument_intervals_history", table, AlwaysTrue())
    days = sorted(set(table[PARTITION_COLUMN].to_pylist()))
    return MaterializeResult(metadata={**written, "dagster/row_count": len(table), "days": len(days),
                                       "spark_master": master})
