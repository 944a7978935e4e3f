"""Feast as a Dagster resource, configured from the settings (no feature_store.yaml to drift).

Local: SQL registry on SQLite and a SQLite online store under ``<home>/feast`` (which, like Redis,
keeps an entity's newer row when an older day is materialised after it); offline
sources are Parquet exports under ``<home>/feast/offline``. Production: the SQL registry on
Postgres, Redis as the online store, offline exports under ``s3://<bucket>/feast/offline``.
``feast`` is imported only inside methods (10 s import).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


class FeastResource(ConfigurableResource):
    project: str = "platformq"
    registry_uri: str  # sqlite:///... or postgresql+psycopg2://...
    online_store: str = "sqlite"  # "sqlite" or "redis"
    online_path: str | None = None  # sqlite file
    redis_url: str | None = None  # redis://host:port/db
    offline_root: str  # folder or s3://bucket/prefix
    repo_path: str = "."
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    offline_store: str = "file"  # "file" (Parquet through Feast's file store) or "spark"
    spark_conf: dict[str, str] = {}

    _store: Any = PrivateAttr(default=None)
    _services: dict = PrivateAttr(default_factory=dict)

    def repo_config(self):
        from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
        from feast.infra.registry.sql import SqlRegistryConfig
        from feast.repo_config import RepoConfig

        if self.online_store == "redis":
            from feast.infra.online_stores.redis import RedisOnlineStoreConfig

            online = RedisOnlineStoreConfig(connection_string=redis_connection_string(self.redis_url or ""))
        else:
            # Feast's SQLite store, made to keep an entity's newer row as Redis does (features/sqlite_online.py)
            from features.sqlite_online import NewerWinsSqliteOnlineStoreConfig

            online = NewerWinsSqliteOnlineStoreConfig(path=self.online_path)
        if self.offline_store == "spark":
            from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStoreConfig

            offline = SparkOfflineStoreConfig(spark_conf=self.spark_session_conf())
        else:
            offline = DaskOfflineStoreConfig()
        return RepoConfig(
            project=self.project, provider="local",
            registry=SqlRegistryConfig(registry_type="sql", path=self.registry_uri, cache_ttl_seconds=5),
            online_store=online, offline_store=offline, entity_key_serialization_version=3,
        )

    def spark_session_conf(self) -> dict[str, str]:
        """The Spark offline store's session settings: the configured ones, and with an S3 endpoint the S3A
        connector's (endpoint, path-style addressing, keys, ``s3://`` served by S3A) so Spark reads the exports
        where this resource wrote them, with its keys (not AWS's endpoint and default credential chain). Built when
        the store is, so the keys never sit in the resource's config that the UI shows."""
        conf = dict(self.spark_conf)
        if self.s3_endpoint:
            conf.update({"spark.hadoop.fs.s3a.endpoint": self.s3_endpoint,
                         "spark.hadoop.fs.s3a.path.style.access": "true",
                         "spark.hadoop.fs.s3a.endpoint.region": self.s3_region,
                         "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem"})
            if self.s3_access_key:
                conf["spark.hadoop.fs.s3a.access.key"] = self.s3_access_key
                conf["spark.hadoop.fs.s3a.secret.key"] = self.s3_secret_key or ""
        return conf

    def store(self):
        if self._store is None:
            import os

            from feast import FeatureStore

            if self.s3_endpoint:  # Feast's file source reads s3:// through fsspec/s3fs
                os.environ.setdefault("AWS_ACCESS_KEY_ID", self.s3_access_key or "")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", self.s3_secret_key or "")
                os.environ.setdefault("AWS_DEFAULT_REGION", self.s3_region)
                os.environ.setdefault("FEAST_S3_ENDPOINT_URL", self.s3_endpoint)
            if self.online_path:
                os.makedirs(os.path.dirname(self.online_path), exist_ok=True)
            self._store = FeatureStore(config=self.repo_config(), repo_path=self.repo_path)
        return self._store

    def objects(self) -> list:
        from features.repo import feature_objects

        return feature_objects(self.offline_root, self.s3_endpoint, self.offline_store)

    def apply(self) -> dict:
        """Apply the repository; return its fingerprint and what changed."""
        from features.repo import definitions_fingerprint

        store = self.store()
        objects = self.objects()
        before = {fv.name for fv in store.list_feature_views()} | {s.name for s in store.list_feature_services()}
        store.apply(objects)
        store.refresh_registry()
        after = {fv.name for fv in store.list_feature_views()} | {s.name for s in store.list_feature_services()}
        return {"fingerprint": definitions_fingerprint(objects), "objects": sorted(o.name for o in objects),
                "added": sorted(after - before)}

    # -- offline exports (what FileSources read) ---------------------------
    def _filesystem(self):
        import pyarrow.fs as pafs

        if self.offline_root.startswith("s3://"):
            return pafs.S3FileSystem(endpoint_override=self.s3_endpoint, access_key=self.s3_access_key,
                                     secret_key=self.s3_secret_key, region=self.s3_region,
                                     scheme="https" if (self.s3_endpoint or "").startswith("https") else "http"), \
                self.offline_root[len("s3://"):]
        return pafs.LocalFileSystem(), self.offline_root

    def export_partition(self, view: str, partition: str, table: "pa.Table") -> str:
        """Replace one partition's Parquet file (write to a temporary name, then move)."""
        import uuid

        import pyarrow.parquet as pq

        fs, root = self._filesystem()
        folder = f"{root.rstrip('/')}/{view}"
        fs.create_dir(folder, recursive=True)
        final = f"{folder}/partition_date={partition}.parquet"
        if len(table) == 0:
            try:
                fs.delete_file(final)
            except (FileNotFoundError, OSError):
                pass
            return final
        # a temporary name of this writer's own: two writers of one day (the features step, an erasure) shared
        # one, truncating each other's file and moving a mix (or nothing) into place
        tmp = f"{folder}/.partition_date={partition}.parquet.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table, tmp, filesystem=fs)
            fs.move(tmp, final)
        except BaseException:
            try:
                fs.delete_file(tmp)
            except (FileNotFoundError, OSError):
                pass
            raise
        return final

    # -- erasure ---------------------------------------------------------------
    def erase_entities(self, view: str, join_key: str, values: set[int]) -> dict:
        """Remove entities from a view's offline exports and from the online store (an erasure request).

        Feast has no per-entity delete: the offline Parquet exports are rewritten without the entities'
        rows, and the online rows are deleted by key (SQLite: the view's table; Redis: the entity's hash,
        which holds every view of that entity)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        ids = pa.array(sorted(values), pa.int64())
        fs, root = self._filesystem()
        offline_rows = 0
        import pyarrow.fs as pafs

        folder = f"{root.rstrip('/')}/{view}"
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        for info in infos:
            name = info.base_name
            if info.type != pafs.FileType.File or not (name.startswith("partition_date=") and name.endswith(".parquet")):
                continue
            # the keys first: every night's residue sweep looks at every export, and most name no erased account
            keys = pq.read_table(info.path, filesystem=fs, columns=[join_key]).column(join_key)
            if not pc.any(pc.fill_null(pc.is_in(keys, value_set=ids), False)).as_py():
                continue
            table = pq.read_table(info.path, filesystem=fs)
            hit = pc.fill_null(pc.is_in(table.column(join_key), value_set=ids), False)
            hits = int(pc.sum(hit).as_py() or 0)
            if hits:
                partition = name.removeprefix("partition_date=").removesuffix(".parquet")
                self.export_partition(view, partition, table.filter(pc.invert(hit)))
                offline_rows += hits
        return {"offline_rows": offline_rows, "online_entities": self._erase_online(view, join_key, values)}

    def _erase_online(self, view: str, join_key: str, values: set[int]) -> int:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        keys = [EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=int(v))]) for v in sorted(values)]
        config = self.repo_config()
        version = config.entity_key_serialization_version
        if self.online_store == "redis":
            from feast.infra.online_stores.helpers import _redis_key

            client = self.store()._get_provider().online_store._get_client(config.online_store)
            return int(client.delete(*[_redis_key(self.project, k, version) for k in keys]) or 0)
        import os
        import sqlite3

        if not self.online_path or not os.path.exists(self.online_path):
            return 0
        table = f"{self.project}_{view}"  # Feast's SQLite table name for an unversioned view
        with sqlite3.connect(self.online_path) as conn:
            if not conn.execute("select 1 from sqlite_master where type = 'table' and name = ?", (table,)).fetchone():
                return 0
            removed = 0
            for key in keys:
                cursor = conn.execute(f'delete from "{table}" where entity_key = ?',
                                      (serialize_entity_key(key, entity_key_serialization_version=version),))
                removed += cursor.rowcount > 0
        return removed

    # -- materialisation and online reads ---------------------------------
    def _forget_listings(self) -> None:
        """fsspec keeps one s3fs instance per process with a cached directory listing: a partition
        exported since would be missing (or a replaced one stale). Start each read from S3 itself."""
        if self.offline_root.startswith("s3://"):
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()

    def materialize(self, start: dt.datetime, end: dt.datetime, views: list[str] | None = None) -> None:
        self._forget_listings()
        self.store().materialize(start_date=start, end_date=end, feature_views=views)

    def feature_service(self, service: str, max_age_s: float = 5.0):
        """The service definition, re-read from the registry at most every ``max_age_s`` seconds
        (a registry read costs ~1 ms: too much for every online request)."""
        import time

        cached = self._services.get(service)
        now = time.monotonic()
        if cached is None or now - cached[0] > max_age_s:
            cached = (now, self.store().get_feature_service(service))
            self._services[service] = cached
        return cached[1]

    def online_features(self, service: str, entity_rows: list[dict]) -> dict:
        return self.store().get_online_features(features=self.feature_service(service),
                                                entity_rows=entity_rows).to_dict()

    def historical_features(self, service: str, entity_df):
        self._forget_listings()
        store = self.store()
        return store.get_historical_features(entity_df=entity_df, features=store.get_feature_service(service)).to_df()


REDIS_URL_FORM = "PLATFORMQ_FEAST_REDIS_URL must look like redis://[[username]:password@]host:port/db"
# Seconds a Redis call may wait to connect or for an answer (redis-py waits for ever by default): a Redis that
# takes connections and never answers fails materialisations and erasures, and the serving service's reads
# (503 feature-store-unavailable), instead of hanging them. One attempt (retry=null): redis-py's default retries
# each timed-out call three times with backoff, and a read of a silent Redis took 12 timeouts (a minute) to fail;
# a step fails and is retried by its run, a serving request answers 503 and the client retries.
REDIS_TIMEOUT_S = 5


def redis_connection_string(url: str) -> str:
    """redis://[[username]:password@]host:port/db -> Feast's "host:port,db=N[,username=...][,password=...]".

    The URL's username (a Redis ACL user, Redis 6+) and password are percent-decoded (``p%40ss`` is ``p@ss``).
    Without the username Redis would check the password against its ``default`` user: an ACL user's password
    was refused (WRONGPASS) although the URL named the user. Feast splits its string on commas and reads each
    value with ``json.loads`` when it parses: a username or password with a comma, or one that JSON would turn
    into something else (``null``, ``true``, ``1e3``, ``"x"``), cannot reach Redis intact and is refused.
    No error here shows the URL or the password (the settings never print secret values).
    """
    from urllib.parse import unquote, urlparse

    try:
        parsed = urlparse(url)
        host, port, db = parsed.hostname, parsed.port or 6379, int((parsed.path or "/0").lstrip("/") or "0")
    except ValueError:
        raise ValueError(REDIS_URL_FORM) from None  # urllib's message (and the chained error) may quote the URL
    if parsed.scheme not in ("redis", "rediss") or not host:
        raise ValueError(REDIS_URL_FORM)
    parts = [f"{host}:{port}", f"db={db}"]
    if parsed.username:
        username = unquote(parsed.username)
        if "," in username or not _survives_json(username):
            raise ValueError("the username in PLATFORMQ_FEAST_REDIS_URL contains a comma or parses as JSON (a "
                             "keyword, a list, a quoted string or a number), which Feast's connection string cannot "
                             "carry to Redis unchanged: choose another Redis user name")
        parts.append(f"username={username}")
    if parsed.password:
        password = unquote(parsed.password)
        if "," in password:
            raise ValueError("the password in PLATFORMQ_FEAST_REDIS_URL contains a comma, which Feast's Redis "
                             "connection string cannot carry: choose a Redis password without ','")
        if not _survives_json(password):
            raise ValueError("the password in PLATFORMQ_FEAST_REDIS_URL parses as JSON (a keyword, a list, a quoted "
                             "string or a number spelled unusually), which Feast's connection string would change on "
                             "its way to Redis: choose another Redis password")
        parts.append(f"password={password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    parts += [f"socket_timeout={REDIS_TIMEOUT_S}", f"socket_connect_timeout={REDIS_TIMEOUT_S}", "retry=null"]
    return ",".join(parts)


def _survives_json(value: str) -> bool:
    """Whether Feast's ``json.loads`` of a connection-string value leaves what redis-py sends unchanged: not JSON
    at all, or a number that redis-py writes back the same way (``12345``)."""
    import json

    try:
        parsed = json.loads(value)
    except ValueError:
        return True
    return isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and repr(parsed) == value


def feast_resource(settings, env_refs: bool = False) -> FeastResource:
    from resources import setting

    spark = {}
    if settings.feast_offline_store == "spark":
        from resources.compute import spark_resource

        spark = spark_resource(settings).spark_config
    if settings.is_local:
        home = settings.home / "feast"
        return FeastResource(registry_uri=f"sqlite:///{home / 'registry.db'}", online_store="sqlite",
                             online_path=str(home / "online.db"), offline_root=str(home / "offline"),
                             repo_path=str(settings.feature_repo_dir), offline_store=settings.feast_offline_store,
                             spark_conf=spark)
    return FeastResource(registry_uri=setting(settings, "feast_registry_uri", env_refs), online_store="redis",
                         redis_url=setting(settings, "feast_redis_url", env_refs),
                         offline_root=f"s3://{settings.object_store_bucket}/feast/offline",
                         repo_path=str(settings.feature_repo_dir), s3_endpoint=settings.s3_endpoint,
                         s3_access_key=setting(settings, "s3_access_key", env_refs),
                         s3_secret_key=setting(settings, "s3_secret_key", env_refs),
                         s3_region=settings.s3_region, offline_store=settings.feast_offline_store, spark_conf=spark)
