"""Typed platform settings: the one place that reads the environment.

``PLATFORMQ_PROFILE`` picks ``local`` (embedded defaults under ``.platformq/``)
or ``production`` (every backend named explicitly). Production has no
defaults for connection settings: a missing variable fails validation with
its name, so a misconfigured process can never quietly fall back to local
storage. Nothing else in the code base reads ``os.environ`` at import time;
callers use :func:`load_settings` at definitions-build or run time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Settings production must name explicitly (env var = PLATFORMQ_ + upper-case name).
PRODUCTION_REQUIRED = (
    "catalog_uri",
    "warehouse",
    "s3_endpoint",
    "s3_access_key",
    "s3_secret_key",
    "object_store_bucket",
    "mlflow_tracking_uri",
    "feast_registry_uri",
    "feast_redis_url",
    "ray_address",
    "spark_master",
    "pii_salt",
)


class Settings(BaseSettings):
    # env_ignore_empty: a variable named with no value (a config map's `PLATFORMQ_CATALOG_NAME: ""`) is unset, for
    # every setting: it gave a catalog named '' (an empty lake beside the real one), a Trino user '', or failed
    # the load (a port, a list)
    model_config = SettingsConfigDict(env_prefix="PLATFORMQ_", extra="ignore", frozen=True, env_ignore_empty=True)

    profile: Literal["local", "production"] = "local"
    home: Path = Field(default=PROJECT_ROOT / ".platformq", description="local state folder")
    landing_dir: Path = Field(default=PROJECT_ROOT / "data" / "landing")

    @field_validator("home", "landing_dir", "dbt_project_dir", "lava_python", "lava_workdir", "audit_dir",
                     "credentials_issuer_key_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value, info):
        # a variable named with no value (a config map's `PLATFORMQ_AUDIT_DIR: ""`) means unset, as for the other
        # settings: Path("") is the current folder, where nothing the setting names is
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    @field_validator("home", "landing_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:  # file:// URIs (warehouse, MLflow artifacts) need absolute paths
        return path.expanduser().absolute()

    # Each source is a folder data/landing/<source>/ feeding the table bronze.<source>.
    landing_sources: tuple[str, ...] = ("partner_quotes", "kyc_events")
    dbt_project_dir: Path = PROJECT_ROOT / "dbt"

    # Iceberg catalog
    catalog_name: str = "platformq"
    catalog_uri: str | None = None  # sqlite:///... locally, postgresql+psycopg2://... in production (psycopg2 is the driver installed)
    catalog_type: Literal["sql", "rest"] = "sql"
    warehouse: str | None = None  # file:///... locally, s3://bucket/prefix in production

    # S3 / MinIO (production object store and Iceberg warehouse)
    s3_endpoint: str | None = None  # e.g. http://minio:9000
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    object_store_bucket: str | None = None

    # SQL engine for queries and dbt: DuckDB (in process, over Iceberg partitions) or
    # Trino (Iceberg connector). Local default duckdb; production default trino,
    # which then needs PLATFORMQ_TRINO_HOST.
    sql_engine: Literal["duckdb", "trino"] | None = None
    trino_host: str | None = None
    trino_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    trino_user: str = "platformq"
    trino_catalog: str = "iceberg"
    trino_http_scheme: Literal["http", "https"] = "http"

    # Platform services (trading, derivatives, governance, credentials, data). Locally they run
    # in process; production either names each service's URL plus an API key, or opts in to
    # in-process services explicitly (PLATFORMQ_SERVICES_IN_PROCESS=true).
    services_in_process: bool | None = None
    service_urls: dict[str, str] = Field(default_factory=dict)
    services_api_key: str | None = None
    # `platformq serve`: the ES256 key its JWTs are signed with (PKCS#8 PEM, created on first start; default
    # <home>/jwt-signing-key.pem) and the issuer URL they name (default http://127.0.0.1:<port>). Processes
    # behind one address share both, so a token minted by one verifies at every other and across restarts.
    services_jwt_key_file: str | None = None
    services_token_issuer: str | None = None
    # `platformq serve`'s API keys (hashes only): <home>/api-keys.json, or a database every host reaches (a
    # SQLAlchemy URL; Postgres in production) when the service processes do not share a file system.
    api_key_store_url: str | None = None
    # `platformq serve`'s per-key rate limits (--rate/--burst): a bucket per process, or one per key for every
    # process in this Redis (redis://…) when several sit behind one address.
    rate_limit_redis_url: str | None = None
    # The exchange's durable journal (SQLAlchemy URL): SQLite under home locally, Postgres in production.
    trading_journal_url: str | None = None
    # How much closed history the exchange keeps in memory: each account's last N orders (older open ones too) and
    # fills, each instrument's last N trades; older history stays in the journal and the lake. At least the API's
    # largest page (1,000), so every page is whole.
    trading_history: Annotated[int, Field(ge=1000, le=10_000_000)] = 1000
    # A snapshot of the exchange's state is saved beside the journal every this many commands (0: never), and a
    # start loads the newest and replays only the commands after it.
    trading_snapshot_commands: Annotated[int, Field(ge=0, le=100_000_000)] = 100_000
    # The credential issuer's status store (each credential's status-list index, revocation, suspension).
    credentials_store_url: str | None = None
    # The issuer's Ed25519 key (a mounted secret, JSON {"secretKeyMultibase": ...}, created at first start when the
    # file is missing): every process issuing into one shared store must sign with one key, or each names its own
    # status lists and a credential's status is unreadable by the others. Default <home>/services/issuer-key.json.
    credentials_issuer_key_file: Path | None = None
    # The address verifiers reach the credentials service at (https://vc.example.com): issued credentials'
    # status-list URLs are <it>/status-lists/<issuer key>/<purpose>. Default http://127.0.0.1:8103 (`platformq
    # serve`'s credentials port); credentials issued under that or the old http://127.0.0.1 prefix still verify.
    credentials_public_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")] | None = None
    # The governance service's DAOs, proposals, votes and treasury (SQLite under home locally).
    governance_store_url: str | None = None
    # The derivatives service's futures markets: contracts, accounts, trades, settlements (SQLite under home locally).
    derivatives_store_url: str | None = None
    # The data API keeps the rows of recent reads (one snapshot never changes), so the next pages of a read are
    # slices of them rather than scans of the whole table: at most this many MiB per process (0: no cache).
    data_api_cache_mb: Annotated[int, Field(ge=0, le=1_000_000)] = 256

    # Chain for anchoring credential batches: an in-process py-evm chain by default, or a
    # JSON-RPC endpoint with a funded key and (optionally) an already deployed registry.
    chain_id: Annotated[int, Field(ge=1)] = 1337
    chain_rpc_url: str | None = None
    chain_private_key: str | None = None
    chain_registry: str | None = None

    # How a run executes its steps: all in one process (local default), one process per step,
    # or one Kubernetes pod per step (dagster-k8s k8s_job_executor; production default).
    executor: Literal["in_process", "multiprocess", "k8s"] | None = None

    # Airflow (optional): existing DAGs shown as external assets, observed from their runs.
    airflow_url: str | None = None
    airflow_username: str | None = None
    airflow_password: str | None = None
    airflow_token: str | None = None
    airflow_dags: tuple[str, ...] = ()

    # OpenLineage: events go to <home>/openlineage/events.jsonl unless a backend (Marquez) is named.
    openlineage_url: str | None = None
    openlineage_api_key: str | None = None

    # Failed runs are posted here (JSON) by the run-failure sensor, besides ops.run_failures.
    alert_webhook_url: str | None = None

    # Salt of the PII tokens silver.accounts carries (dbt's tokenise macro reads PLATFORMQ_PII_SALT from
    # the environment). Locally unset: dbt_project.yml's public salt, fit for simulated data only. A
    # deployment's secret: with the public salt anyone holding the repository reverses a token by hashing
    # candidate e-mail addresses.
    pii_salt: str | None = None

    # ML platform. Locally: MLflow on SQLite with artifacts under home, Feast with a SQLite
    # registry and online store, Ray started in process, Spark local[2]. Production names a
    # tracking server, a Postgres registry + Redis online store, a Ray cluster and a Spark master.
    mlflow_tracking_uri: str | None = None  # http://mlflow:5000 in production
    mlflow_artifact_location: str | None = None  # only for experiments this platform creates locally
    feast_registry_uri: str | None = None  # postgresql+psycopg2://... (SQL registry) in production
    feast_redis_url: str | None = None  # redis://host:6379/0 in production (Feast's "host:port,db=0" is derived)
    # where point-in-time joins run: Feast's file store over the Parquet exports, or its Spark store
    # on PLATFORMQ_SPARK_MASTER (s3:// exports are read as s3a://: the cluster needs hadoop-aws)
    feast_offline_store: Literal["file", "spark"] = "file"
    # ray://head:10001 or head:6379 in production; unset (local profile) or "local" (an explicit
    # production choice) starts a single-node Ray inside the step process.
    ray_address: str | None = None
    ray_num_cpus: Annotated[int, Field(ge=1)] = 2
    spark_master: str | None = None  # spark://master:7077 in production; local[2] locally
    # more Spark settings, JSON ({"spark.kubernetes.container.image": "…", "spark.executor.memory": "4g"}): a
    # k8s:// master needs its image and namespace; they win over the defaults. Shown in the UI: no secrets.
    spark_conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("spark_conf")
    @classmethod
    def _spark_keys(cls, conf: dict[str, str]) -> dict[str, str]:
        wrong = sorted(key for key in conf if not key.startswith("spark."))
        if wrong:
            raise ValueError(f"Spark settings are named spark.*: {wrong}")
        return conf
    # a step's Spark jobs are cancelled (clean failure) after this; at most a week (inf or anything past
    # threading.TIMEOUT_MAX made the deadline's timer fail in its thread: no deadline at all)
    spark_job_timeout_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 1800.0
    # Promotion gate: the challenger must beat the champion by this much on the holdout.
    # ROC AUC bounds: NaN made the champion comparison pass any challenger (`x < champion + nan` is never true)
    promotion_min_improvement: Annotated[float, Field(ge=-1, le=1)] = 0.0  # < 0: a slightly worse one passes
    promotion_min_metric: Annotated[float, Field(ge=0, le=1)] = 0.5
    # Real-time serving: share of entities routed to the challenger per model (A/B), and how long
    # the serving API trusts its view of the aliases before asking the registry again.
    ab_challenger_share: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default_factory=dict)
    serving_alias_ttl_s: Annotated[float, Field(ge=0)] = 2.0

    # Federated learning: the simulation engine locally, a SuperLink's control API in production.
    flower_superlink: str | None = None  # 127.0.0.1:9093 (control API) for `flwr run`
    federated_strategy: Literal["fedavg", "fedprox", "scaffold"] = "fedprox"
    federated_rounds: Annotated[int, Field(ge=1)] = 10
    federated_min_participants: Annotated[int, Field(ge=1)] = 2  # a round with fewer accepted updates is skipped
    federated_round_timeout: Annotated[float, Field(gt=0)] = 300.0  # seconds a round waits for participants' replies
    federated_max_update_norm: Annotated[float, Field(gt=0)] = 100.0  # ‖w_i − w_t‖ above this (or NaN/inf) is rejected
    # Opacus DP-SGD on every tenant ("client"). Off by default: on the rare-event order-anomaly task
    # DP-SGD at ε ≤ 8 collapses to the majority class (per-sample clipping cancels the class weights).
    federated_dp: Literal["none", "client"] = "none"
    federated_dp_epsilon: Annotated[float, Field(gt=0)] = 2.0  # ε one run is calibrated to (per tenant)
    federated_dp_delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    federated_epsilon_budget: Annotated[float, Field(ge=0)] = 8.0  # lifetime ε per tenant; a spent budget stops the tenant
    federated_baseline_tolerance: Annotated[float, Field(ge=0)] = 0.05  # allowed gap to the centralised baseline (check)

    # Neuromorphic side environment (Python 3.10 + lava-dl), created by `make setup`.
    lava_python: Path = Field(default=PROJECT_ROOT / ".venv-lava" / "bin" / "python")
    # How the lava-side scripts run: a subprocess with lava_python (local default) or a pod per
    # script through dagster-k8s's PipesK8sClient (production default), in its own image.
    lava_runner: Literal["subprocess", "k8s"] | None = None
    lava_image: str = "platformq/lava:latest"  # built from infra/lava.Dockerfile
    lava_namespace: str = "platformq"
    # Where spike trains, networks and scores are handed over (files). Defaults to home/neuromorphic;
    # with the k8s runner it must be a volume both the step pod and the lava pod mount at this path.
    lava_workdir: Path | None = None
    lava_workdir_claim: str | None = None  # PVC (ReadWriteMany) mounted at lava_workdir in the lava pod
    # Lava run configuration: the fixed-point Loihi 2 CPU simulation, or Loihi 2 hardware
    # (needs lava-loihi and an INRC system; configured, never run here).
    lava_backend: Literal["loihi2_sim", "loihi2_hw"] = "loihi2_sim"
    lava_loihi_partition: str | None = None  # SLURM partition for loihi2_hw, e.g. oheogulch

    # Where the services write their audit trails (<service>-audit.jsonl), read into governance.audit_log.
    # Defaults to home/services (services in process or on this machine); in production, a volume the services
    # and the user-code pods both mount.
    audit_dir: Path | None = None

    # Venue simulation
    sim_seed: Annotated[int, Field(ge=0)] = 7
    sim_scale: Annotated[float, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _production_is_explicit(self) -> "Settings":
        if self.profile == "production":
            missing = [f"PLATFORMQ_{name.upper()}" for name in PRODUCTION_REQUIRED if getattr(self, name) in (None, "")]
            if self.effective_sql_engine == "trino" and not self.trino_host:
                missing.append("PLATFORMQ_TRINO_HOST")
            if not self.effective_services_in_process and not (self.service_urls and self.services_api_key):
                missing.append("PLATFORMQ_SERVICE_URLS and PLATFORMQ_SERVICES_API_KEY "
                               "(or PLATFORMQ_SERVICES_IN_PROCESS=true)")
            # MLflow on a database (no tracking server) stores each new experiment's artifacts under the process's
            # ./mlruns unless told otherwise: in production, a step pod's disk, gone with the pod while the registry
            # still points at the models. A tracking server keeps (or proxies) them where it was started to.
            tracking = (self.mlflow_tracking_uri or "").split(":", 1)[0].split("+", 1)[0].lower()
            if tracking in ("sqlite", "postgresql", "mysql", "mssql") and not self.mlflow_artifact_location:
                missing.append("PLATFORMQ_MLFLOW_ARTIFACT_LOCATION (s3://bucket/prefix: the MLflow tracking URI is a "
                               "database, which keeps no artifacts)")
            if self.chain_rpc_url and not self.chain_private_key:
                missing.append("PLATFORMQ_CHAIN_PRIVATE_KEY")
            if self.chain_rpc_url and not self.chain_registry:
                missing.append("PLATFORMQ_CHAIN_REGISTRY (deploy one with `platformq chain deploy-registry`)")
            if missing:
                raise ValueError(
                    "production profile needs these settings (no fallback to local): " + ", ".join(missing)
                )
        if bool(self.airflow_url) != bool(self.airflow_dags):  # one without the other turned Airflow off, silently
            given, needed = (("PLATFORMQ_AIRFLOW_URL", "PLATFORMQ_AIRFLOW_DAGS (a JSON list of DAG ids)")
                             if self.airflow_url else ("PLATFORMQ_AIRFLOW_DAGS", "PLATFORMQ_AIRFLOW_URL"))
            raise ValueError(f"{given} is set without {needed}: the Airflow DAGs need both")
        if (self.credentials_store_url and not self.credentials_store_url.startswith("sqlite")
                and not self.credentials_issuer_key_file):
            raise ValueError("PLATFORMQ_CREDENTIALS_ISSUER_KEY_FILE is required with a shared credentials store "
                             "(PLATFORMQ_CREDENTIALS_STORE_URL): every process issuing into it must sign with the "
                             "same issuer key")
        return self

    # -- derived locations (local profile) -----------------------------
    @property
    def is_local(self) -> bool:
        return self.profile == "local"

    @property
    def effective_services_in_process(self) -> bool:
        return self.services_in_process if self.services_in_process is not None else self.is_local

    @property
    def effective_executor(self) -> str:
        return self.executor or ("in_process" if self.is_local else "k8s")

    @property
    def effective_lava_runner(self) -> str:
        return self.lava_runner or ("subprocess" if self.is_local else "k8s")

    @property
    def effective_lava_workdir(self) -> Path:
        return self.lava_workdir or self.home / "neuromorphic"

    @property
    def effective_audit_dir(self) -> Path:
        return self.audit_dir or self.home / "services"

    @property
    def effective_sql_engine(self) -> str:
        return self.sql_engine or ("duckdb" if self.is_local else "trino")

    @property
    def effective_catalog_uri(self) -> str:
        if self.catalog_uri:
            return self.catalog_uri
        return f"sqlite:///{self.home / 'catalog.db'}"

    @property
    def effective_warehouse(self) -> str:
        if self.warehouse:
            return self.warehouse
        return (self.home / "warehouse").as_uri()

    @property
    def object_store_root(self) -> Path:
        return self.home / "objects"

    @property
    def effective_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def effective_mlflow_artifact_location(self) -> str | None:
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        return (self.home / "mlartifacts").as_uri() if self.is_local else None

    @property
    def effective_spark_master(self) -> str:
        return self.spark_master or "local[2]"

    @property
    def feature_repo_dir(self) -> Path:
        return PROJECT_ROOT / "features"

    @property
    def duckdb_path(self) -> Path:
        return self.home / "dbt.duckdb"


class SettingsError(ValueError):
    """Missing or invalid ``PLATFORMQ_*`` settings: the variables and what is wrong, never their values."""


@functools.lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Read and validate the environment once per process.

    Raises :class:`SettingsError`, not pydantic's ValidationError: that one quotes every value read (API keys,
    passwords in URLs) and would put them in a terminal, a log or the UI's code-location error.
    """
    import re

    from pydantic import ValidationError
    from pydantic_settings import SettingsError as SourceError

    try:
        return Settings()
    except SourceError as exc:  # a list or map setting that is not JSON: pydantic-settings names the field only
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"PLATFORMQ_{field.group(1).upper()}" if field else "a PLATFORMQ_* list or map"
        raise SettingsError(f"invalid platformQ settings: {name}: not valid JSON (lists and maps are JSON, "
                            'e.g. ["a", "b"] or {"key": "value"})') from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            field = ".".join(str(part) for part in error["loc"])
            problems.append((f"PLATFORMQ_{field.upper()}: " if field else "") + error["msg"].removeprefix("Value error, "))
        raise SettingsError("invalid platformQ settings: " + "; ".join(problems)) from None
