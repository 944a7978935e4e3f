"""The Feast feature repository: entities, feature views, an on-demand view, a service per model.

Offline sources are Parquet exports of the lake's feature tables (one file per daily
partition under ``offline_root``: a local folder, or an ``s3://`` prefix in production), so
Feast's point-in-time joins read exactly what the Iceberg ``features.*`` tables hold.
The objects are built by a function (not at import) because their paths come from settings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from features.compute import ACCOUNT_FEATURES, INSTRUMENT_FEATURES

PROJECT = "platformq"
INSTRUMENT_VIEW = "instrument_intervals"
ACCOUNT_VIEW = "account_activity"
DERIVED_VIEW = "instrument_derived"
# Every view carries the second its features became known: training sets and online reads can
# then prove no value from after their event time was used (it is never a model input).
AS_OF = "as_of_epoch"
# One feature service per model; the model version records which one it was trained on.
SERVICES = {
    "price_direction": "price_direction_v1",
    "account_anomaly": "account_anomaly_v1",
}
# Features a model consumes, in order (view:feature as Feast names them, and plain column names).
MODEL_FEATURES = {
    "price_direction": [*(f"{INSTRUMENT_VIEW}:{f}" for f in INSTRUMENT_FEATURES),
                        f"{DERIVED_VIEW}:risk_adjusted_return", f"{DERIVED_VIEW}:volume_ratio"],
    "account_anomaly": [f"{ACCOUNT_VIEW}:{f}" for f in ACCOUNT_FEATURES],
}
ENTITY_KEYS = {"price_direction": "instrument", "account_anomaly": "account_id"}
# Each join key's Feast value type (the entities below use it; the model service reads it without Feast).
JOIN_KEY_TYPES = {"instrument": "STRING", "account_id": "INT64"}
# Views whose rows carry their tenant (a tenant_id field): a model served from one sees only the caller's
# tenant's entities.
TENANT_VIEWS = {ACCOUNT_VIEW}
LABELS = {"price_direction": "label_up", "account_anomaly": "label_anomalous"}
TABLES = {"price_direction": "features.instrument_intervals", "account_anomaly": "features.account_activity"}
VIEW_FOR_TABLE = {"features.instrument_intervals": INSTRUMENT_VIEW, "features.account_activity": ACCOUNT_VIEW}


def feature_columns(model: str) -> list[str]:
    return [ref.split(":", 1)[1] for ref in MODEL_FEATURES[model]]


def tenant_scoped(model: str) -> bool:
    """Whether the model's feature service returns ``tenant_id`` with every row (read from a tenant view)."""
    return any(ref.split(":", 1)[0] in TENANT_VIEWS for ref in MODEL_FEATURES[model])


def derived_features(columns: dict) -> dict:
    """On-demand transformation over columns (dict of lists): the same code for training sets,
    batch scoring and online requests (Feast runs it in "python" mode: no pandas per request)."""
    risk, ratio = [], []
    for ret_1, vol_6, volume_1, volume_6 in zip(columns["ret_1"], columns["vol_6"], columns["volume_1"],
                                                columns["volume_6"]):
        risk.append(ret_1 / vol_6 if _number(ret_1) and _number(vol_6) and vol_6 > 0 else 0.0)
        ratio.append(volume_1 * 6.0 / volume_6 if _number(volume_1) and _number(volume_6) and volume_6 > 0 else 0.0)
    return {"risk_adjusted_return": risk, "volume_ratio": ratio}


def _number(value) -> bool:
    return value is not None and value == value  # not None, not NaN


def feature_objects(offline_root: str, s3_endpoint: str | None = None, offline_store: str = "file") -> list:
    """``offline_store``: "file" (Feast's file/dask store reads the Parquet exports) or "spark" (Feast's
    Spark offline store runs the point-in-time joins on the Spark cluster over the same files)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, String

    root = offline_root.rstrip("/")
    instrument = Entity(name="instrument", join_keys=["instrument"], value_type=ValueType[JOIN_KEY_TYPES["instrument"]],
                        description="A listed instrument on the platformQ venue.")
    account = Entity(name="account", join_keys=["account_id"], value_type=ValueType[JOIN_KEY_TYPES["account_id"]],
                     description="A trading account (belongs to one tenant).")
    if offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        spark_root = root.replace("s3://", "s3a://", 1)
        instrument_source = SparkSource(name="instrument_intervals_source", path=f"{spark_root}/instrument_intervals",
                                        file_format="parquet", timestamp_field="event_ts")
        account_source = SparkSource(name="account_activity_source", path=f"{spark_root}/account_activity",
                                     file_format="parquet", timestamp_field="event_ts")
    else:
        instrument_source = FileSource(name="instrument_intervals_source", path=f"{root}/instrument_intervals",
                                       timestamp_field="event_ts", s3_endpoint_override=s3_endpoint)
        account_source = FileSource(name="account_activity_source", path=f"{root}/account_activity",
                                    timestamp_field="event_ts", s3_endpoint_override=s3_endpoint)
    instrument_view = FeatureView(
        name=INSTRUMENT_VIEW, entities=[instrument], ttl=dt.timedelta(minutes=30), online=True,
        schema=[Field(name=f, dtype=Float64) for f in [*INSTRUMENT_FEATURES, "close", AS_OF]],
        source=instrument_source, tags={"owner": "ml-platform", "table": "features.instrument_intervals"},
        description="Returns, volatility, volume and range per instrument over 5-minute intervals "
                    "(windows of 1, 3, 6 and 12 intervals).",
    )
    account_view = FeatureView(
        name=ACCOUNT_VIEW, entities=[account], ttl=dt.timedelta(hours=2), online=True,
        schema=[Field(name=f, dtype=Float64) for f in [*ACCOUNT_FEATURES, AS_OF]] + [Field(name="tenant_id", dtype=String)],
        source=account_source, tags={"owner": "ml-platform", "table": "features.account_activity"},
        description="Order, cancel, fill and counterparty activity per account over 15-minute windows.",
    )

    @on_demand_feature_view(
        sources=[instrument_view],
        schema=[Field(name="risk_adjusted_return", dtype=Float64), Field(name="volume_ratio", dtype=Float64)],
        mode="python", description="Return per unit of volatility and volume against its 30-minute average.",
    )
    def instrument_derived(columns):
        # Feast stores and re-executes this body from source: it must import what it uses.
        from features.repo import derived_features

        return derived_features(columns)

    services = [
        FeatureService(name=SERVICES["price_direction"], features=[instrument_view[[*INSTRUMENT_FEATURES, AS_OF]], instrument_derived],
                       description="Features of the price_direction model."),
        FeatureService(name=SERVICES["account_anomaly"], features=[account_view[[*ACCOUNT_FEATURES, AS_OF, "tenant_id"]]],
                       description="Features of the account_anomaly model."),
    ]
    return [instrument, account, instrument_source, account_source, instrument_view, account_view,
            instrument_derived, *services]


# Bookkeeping Feast writes into its protos when an object is built or applied (a data source's meta, nested in
# every view that reads it, holds the second it was created): not part of any definition.
_BOOKKEEPING_FIELDS = {"meta", "created_timestamp", "last_updated_timestamp"}


def definitions_fingerprint(objects: list) -> str:
    """A stable hash of the repository's definitions: changes when a definition changes, and only then (Feast's
    creation times are left out: with them every build of the same objects had a new fingerprint)."""
    specs = []
    for obj in objects:
        proto = obj.to_proto()
        spec = getattr(proto, "spec", proto)
        _without_bookkeeping(spec)
        specs.append((type(obj).__name__, obj.name, spec.SerializeToString(deterministic=True).hex()))
    return hashlib.sha256(json.dumps(sorted(specs)).encode()).hexdigest()[:16]


def _without_bookkeeping(message) -> None:
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        if field.name in _BOOKKEEPING_FIELDS:
            message.ClearField(field.name)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                values = value.values() if field.message_type.fields_by_name["value"].message_type else []
            elif field.is_repeated:
                values = value
            else:
                values = [value]
            for item in values:
                _without_bookkeeping(item)
