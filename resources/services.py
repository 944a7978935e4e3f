"""Dagster resources for the platform's HTTP services.

``ServiceClientResource`` is one client per service: timeouts, retries with
exponential backoff (honouring ``Retry-After``) on connection errors, 5xx and
429, no retry on other 4xx, and a circuit breaker that fails fast after
repeated failures. With no ``base_url`` it runs the service in process through
an ASGI transport (the embedded default); with one, it talks HTTP to a
deployed service (production).
"""

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr

SERVICES = ("trading", "derivatives", "governance", "credentials", "data", "models")
CREDENTIALS_LOCAL_PORT = 8100 + SERVICES.index("credentials")  # `platformq serve`'s default port for it
INTERNAL_TENANT = "platform"


class ServiceError(RuntimeError):
    def __init__(self, service: str, status: int, problem: dict | None, message: str):
        super().__init__(message)
        self.service = service
        self.status = status
        self.problem = problem or {}


class CircuitOpenError(ServiceError):
    pass


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures; half-open after ``reset_s``."""

    def __init__(self, threshold: int, reset_s: float, clock=time.monotonic):
        self.threshold, self.reset_s, self.clock = threshold, reset_s, clock
        self.failures = 0
        self.opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def before_call(self) -> None:
        if self.state == "open":
            raise CircuitOpenError("", 503, None, "circuit open: the service failed repeatedly; not calling it")

    def record(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.failures, self.opened_at = 0, None
            else:
                self.failures += 1
                if self.failures >= self.threshold or self.opened_at is not None:
                    self.opened_at = self.clock()


def gold_leaderboard(lake, tenant: str, date: str | None, limit: int) -> list[dict]:
    """A tenant's social leaderboard, read from gold.trader_leaderboard: its own traders only, ranked among
    themselves, on ``date`` or else the latest day that has rows of this tenant."""
    from pyiceberg.expressions import And, EqualTo

    table = "gold.trader_leaderboard"
    if not lake.table_exists(table):
        return []
    mine = EqualTo("tenant_id", tenant)
    if date is None:
        days = lake.read(table, row_filter=mine, columns=("partition_date",)).column("partition_date")
        if len(days) == 0:
            return []
        date = max(days.to_pylist()).isoformat()
    rows = lake.read(table, row_filter=And(mine, EqualTo("partition_date", date)),
                     columns=("account_id", "display_name", "tenant_id", "pnl", "traded_notional")).to_pylist()
    # Ranked here, within the tenant, as the model's rank() over its tenant does (equal PnL, one rank): a day
    # built while the model still ranked platform-wide holds ranks whose gaps reveal other tenants' traders.
    rows.sort(key=lambda r: (r["pnl"] is None, -(r["pnl"] or 0.0), r["account_id"]))
    for i, row in enumerate(rows):
        tied = i > 0 and rows[i - 1]["pnl"] == row["pnl"]
        row["pnl_rank"] = rows[i - 1]["pnl_rank"] if tied else i + 1
    return rows[:limit]


def build_local_app(service: str, home: str, lake_config: dict | None = None, keys=None, tokens=None,
                    rate: float = 10_000.0, burst: int = 10_000, journal_url: str | None = None,
                    credentials_store_url: str | None = None, credentials_public_url: str | None = None,
                    credentials_issuer_key_file: str | None = None,
                    governance_store_url: str | None = None,
                    derivatives_store_url: str | None = None, rate_limit_redis_url: str | None = None,
                    data_page_cache_bytes: int | None = None, settle_heap: bool = False,
                    trading_history: int | None = None, trading_snapshot_commands: int | None = None):
    """The service's FastAPI app with state under ``home``; ``keys``/``tokens`` share one identity across services;
    with ``rate_limit_redis_url`` each key's request budget is one bucket in Redis for every process. With
    ``settle_heap`` (a process that is a service: ``platformq serve``) the trading service freezes the heap at
    each cut of its command log (services.common.heap). ``trading_history``: how much closed history the exchange keeps
    in memory (services.trading.exchange.HISTORY by default); ``trading_snapshot_commands``: how often it saves a
    snapshot for starts to load (SNAPSHOT_COMMANDS by default)."""
    from resources.lake import LakeResource
    from services.common.app import ServiceContext

    state = Path(home) / "services"
    state.mkdir(parents=True, exist_ok=True)
    limiter = None
    if rate_limit_redis_url:
        from services.common.auth import RedisRateLimiter

        limiter = RedisRateLimiter(rate_limit_redis_url, rate, burst, prefix=f"platformq:ratelimit:{service}")
    ctx = ServiceContext(service, keys=keys, tokens=tokens, rate=rate, burst=burst,
                         audit_path=str(state / f"{service}-audit.jsonl"), limiter=limiter)
    if service == "trading":
        from services.trading.api import create_trading_app
        from services.trading.exchange import Exchange, SqlJournal
        from services.trading.simulation import SimulationConfig

        journal_url = journal_url or f"sqlite:///{state / 'trading.db'}"
        from services.common import heap

        exchange = Exchange.restore(list(SimulationConfig().instruments), SqlJournal(journal_url),
                                    on_cut=heap.settle if settle_heap else None,
                                    **({"history": trading_history} if trading_history else {}),
                                    **({"snapshot_commands": trading_snapshot_commands}
                                       if trading_snapshot_commands is not None else {}))
        lake = LakeResource(**lake_config) if lake_config else None
        app = create_trading_app(ctx, exchange,
                                 leaderboard=(lambda t, d, n: gold_leaderboard(lake, t, d, n)) if lake else None)
    elif service == "derivatives":
        from services.common.state_store import StateStore
        from services.derivatives.api import create_derivatives_app

        store = StateStore(derivatives_store_url or f"sqlite:///{state / 'derivatives.db'}", "derivatives")
        app = create_derivatives_app(ctx, store=store)
    elif service == "governance":
        from services.common.state_store import StateStore
        from services.governance.api import create_governance_app

        store = StateStore(governance_store_url or f"sqlite:///{state / 'governance.db'}", "governance")
        app = create_governance_app(ctx, store=store)
    elif service == "credentials":
        from services.credentials.api import LEGACY_BASE_URL, create_credentials_app
        from services.credentials.store import CredentialStore

        from resources.settings import load_settings

        store = CredentialStore(credentials_store_url or f"sqlite:///{state / 'credentials.db'}")
        # the address issued credentials' status-list URLs name (PLATFORMQ_CREDENTIALS_PUBLIC_URL); lists under the
        # local default and the old prefix (LEGACY_BASE_URL: every credential issued before pointed at it) resolve
        local_url = f"http://127.0.0.1:{CREDENTIALS_LOCAL_PORT}"
        public_url = credentials_public_url or load_settings().credentials_public_url or local_url
        # one issuer key for every process issuing into a shared store (PLATFORMQ_CREDENTIALS_ISSUER_KEY_FILE)
        key_file = credentials_issuer_key_file or load_settings().credentials_issuer_key_file or (
            state / "issuer-key.json")
        app = create_credentials_app(ctx, issuer_key_pair=issuer_key_pair(Path(key_file)), store=store,
                                     base_url=public_url, also_resolve=(LEGACY_BASE_URL, local_url))
    elif service == "data":
        from services.data_api.api import create_data_app

        from resources.erasure import LakeErasureDesk

        lake = LakeResource(**(lake_config or {}))
        from services.data_api.reader import DEFAULT_CACHE_BYTES

        cache_bytes = DEFAULT_CACHE_BYTES if data_page_cache_bytes is None else data_page_cache_bytes
        app = create_data_app(ctx, lake, erasure=LakeErasureDesk(lake), page_cache_bytes=cache_bytes)
    elif service == "models":
        from resources.feast import feast_resource
        from resources.mlflow import mlflow_resource
        from resources.settings import load_settings
        from services.models.api import create_models_app
        from services.models.scorer import ModelScorer, default_specs

        # MLflow's HTTP defaults wait up to 120 s a try, 7 tries, for an answer from the registry. Serving keeps
        # the champion it last saw when a lookup fails and asks again a TTL later, so it fails fast instead;
        # set the variables to choose otherwise.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        settings = load_settings()
        feast = feast_resource(settings)
        scorer = ModelScorer(mlflow_resource(settings), feast.online_features, default_specs(),
                             challenger_share=settings.ab_challenger_share, alias_ttl_s=settings.serving_alias_ttl_s,
                             assignments_path=str(state / "model-assignments.jsonl"))
        app = create_models_app(ctx, scorer)
    else:
        raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")
    return app, ctx


def issuer_key_pair(path: Path):
    """The platform's credential-issuer key, created once and kept (0600) so its did:key is stable; processes
    starting at once all sign with the first one written (see ``create_secret_file``)."""
    from services.common.auth import create_secret_file
    from services.credentials.did_key import Ed25519KeyPair

    create_secret_file(path, lambda: json.dumps(
        {"secretKeyMultibase": Ed25519KeyPair.generate().secret_key_multibase}).encode())
    return Ed25519KeyPair.from_multikey(json.loads(path.read_text())["secretKeyMultibase"])


def env_ref(value):
    """A resource field's value for a plain dict: an ``EnvVar`` becomes ``{"env": NAME}``."""
    from dagster import EnvVar

    return {"env": value.env_var_name} if isinstance(value, EnvVar) else value


def resolve_env_refs(config: dict | None) -> dict | None:
    """The values of ``{"env": NAME}`` references, read from this process's environment."""
    if config is None:
        return None
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"env"}:
            if value["env"] not in os.environ:
                raise ValueError(f"{key}: environment variable {value['env']} is not set in this process")
            value = os.environ[value["env"]]
        out[key] = value
    return out


class ServiceClientResource(ConfigurableResource):
    service: str
    base_url: str | None = None  # None: run the service in process (ASGI)
    api_key: str | None = None  # required with base_url
    home: str = ".platformq"  # state of in-process services
    lake: dict | None = None  # LakeResource config for the in-process data service ({"env": NAME}: a secret)
    session: str | None = None  # in-process trading only: a separate exchange (journal) per session
    # in-process only: {"url": ...} (or {"url": {"env": NAME}}), the service's state store (trading journal,
    # credentials, governance or derivatives store) instead of SQLite under home; a session's journal stays its own
    store: dict | None = None
    timeout_s: float = 10.0
    max_retries: int = 3
    backoff_s: float = 0.2
    # the longest a retry waits for a Retry-After (a service or gateway asking for hours must not park a step
    # for hours: it waits this long, then tries again or reports the failure)
    max_retry_after_s: float = 60.0
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0

    _client: Any = PrivateAttr(default=None)
    _key: str | None = PrivateAttr(default=None)
    _breaker: Any = PrivateAttr(default=None)

    def _http(self):
        if self._client is None:
            import httpx

            if self.base_url:
                if not self.api_key:
                    raise ValueError(f"{self.service}: api_key is required with base_url")
                self._client = httpx.Client(base_url=self.base_url, timeout=self.timeout_s)
                self._key = self.api_key
            else:
                from fastapi.testclient import TestClient

                store_url = (resolve_env_refs(self.store) or {}).get("url")
                journal = store_url if self.service == "trading" else None
                if self.session:
                    sessions = Path(self.home) / "services" / "trading-sessions"
                    sessions.mkdir(parents=True, exist_ok=True)
                    journal = f"sqlite:///{sessions / (self.session + '.db')}"
                stores = {f"{self.service}_store_url": store_url} if store_url and self.service in (
                    "credentials", "governance", "derivatives") else {}
                app, ctx = build_local_app(self.service, self.home, resolve_env_refs(self.lake),
                                           journal_url=journal, **stores)
                # in a Dagster run the run's own logs tell the story; per-request lines would drown them
                ctx.logger.setLevel(logging.WARNING)
                self._key = ctx.keys.create(f"dagster-{self.service}", INTERNAL_TENANT, ["admin"])
                self._client = TestClient(app, raise_server_exceptions=False)
            self._breaker = CircuitBreaker(self.breaker_threshold, self.breaker_reset_s)
        return self._client

    def teardown_after_execution(self, context) -> None:  # noqa: ARG002
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def for_session(self, session: str, fresh: bool = True) -> "ServiceClientResource":
        """A client of the in-process trading service for one session (e.g. one trading day).

        ``fresh`` discards what an earlier run of the same session left, so re-running a
        day starts from an empty book and the same balances. A deployed service (base_url)
        is shared: the session only names the flow, and nothing is discarded.
        """
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        client = type(self)(**{**fields, "session": session})
        if fresh and not self.base_url:
            journal = Path(self.home) / "services" / "trading-sessions" / f"{session}.db"
            # with its write-ahead log and shared-memory index (the journal runs in WAL mode): a new database
            # beside an old run's -wal/-shm is a "disk I/O error" on open
            for path in (journal, journal.with_name(journal.name + "-wal"), journal.with_name(journal.name + "-shm")):
                path.unlink(missing_ok=True)
        return client

    @property
    def breaker(self) -> CircuitBreaker:
        self._http()
        return self._breaker

    def request(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                idempotency_key: str | None = None) -> Any:
        """``idempotency_key``: sent as the ``Idempotency-Key`` header, for routes that honour it (the futures
        routes): the service answers a repeat with its first answer, so the request is retried like a GET."""
        import httpx

        client = self._http()
        # A POST (or PATCH) is not idempotent: it is sent again only when it surely did nothing (the connection
        # was never made; 429; a 503 problem of the service itself, which it answers when it undid the change).
        # After a timeout waiting for the answer, a 500, a gateway's 502/504, or a 503 that is not the service's
        # (a proxy's: the upstream reset, perhaps after applying it) it may have been applied: it fails instead of
        # applying orders, trades or deposits twice. With an idempotency key the service makes a repeat harmless.
        idempotent = method.upper() in IDEMPOTENT_METHODS or idempotency_key is not None
        headers = {"X-API-Key": self._key}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        attempt, failure = 0, None
        while True:
            try:
                self._breaker.before_call()
            except CircuitOpenError:
                if failure is not None:  # it opened on this call's own failures: they say why, not "circuit open"
                    raise failure from None
                raise CircuitOpenError(self.service, 503, None, f"{self.service}: circuit open: the service "
                                       f"failed repeatedly; not calling it for up to {self.breaker_reset_s:g} s") \
                    from None
            retry_after = None
            retryable = True
            try:
                extra = {"timeout": self.timeout_s} if self.base_url else {}
                response = client.request(method, path, json=json_body, params=params, headers=headers, **extra)
            except (httpx.TransportError, OSError) as exc:
                self._breaker.record(False)
                failure = ServiceError(self.service, 0, None, f"{self.service}: {method} {path} failed: {exc}")
                retryable = idempotent or isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            else:
                if response.status_code < 400:
                    self._breaker.record(True)
                    return response.json() if response.content else None
                problem = _problem(response)
                message = (f"{self.service}: {method} {path} -> {response.status_code} "
                           f"{problem.get('title', '')}: {problem.get('detail', '')}")
                failure = ServiceError(self.service, response.status_code, problem, message)
                if response.status_code not in (429,) and response.status_code < 500:
                    self._breaker.record(True)  # the service works; the request was wrong
                    raise failure
                if response.status_code != 429:  # a 429 is a service that works and asks to slow down
                    self._breaker.record(False)
                retry_after = response.headers.get("Retry-After")
                retryable = idempotent or response.status_code == 429 or (
                    response.status_code == 503 and _service_problem(problem))
            if attempt >= self.max_retries or not retryable:
                raise failure
            delay = self.backoff_s * (2 ** attempt)
            wait = _retry_after_s(retry_after)
            if wait is not None:
                delay = max(delay, min(wait, self.max_retry_after_s))
            time.sleep(delay)
            attempt += 1


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait: delay-seconds or an HTTP-date (RFC 9110 10.2.3); None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        import datetime as dt

        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _service_problem(problem: dict) -> bool:
    """Whether a problem document is one of the platform's services' own (services.common.problems), not a
    proxy's or a server's answer in their place."""
    from services.common.problems import TYPE_BASE

    return isinstance(problem.get("type"), str) and problem["type"].startswith(TYPE_BASE)


def _problem(response) -> dict:
    try:
        body = response.json()
        return body if isinstance(body, dict) else {}
    except ValueError:
        return {}


__all__ = ["CircuitBreaker", "CircuitOpenError", "SERVICES", "ServiceClientResource", "ServiceError",
           "build_local_app"]
