"""The service skeleton every platformQ API is built on.

``create_service_app(name, ...)`` returns a FastAPI app with: problem+json errors
for every failure, API-key and JWT authentication, per-endpoint permissions
(``Depends(ctx.require("orders:write"))``, checked before a malformed body's errors
are shown), tenant scoping, per-key rate limits, a request body limit (413 before a
larger body is read), a correlation id on every request and in every JSON log line,
an audit record for every state-changing request, ``/health``, Prometheus ``/metrics``, the JWKS
and OIDC discovery documents, and ``/auth/keys`` to create, list and revoke the
caller's tenant's API keys (admins only).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import threading
import time
import uuid
from typing import Annotated, Iterable, Literal

from fastapi import Depends, FastAPI, Path, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.auth import KEYS_ADMIN, ROLES, ApiKeyStore, Principal, RateLimiter, TokenIssuer
from services.common.problems import REQUIRES, Problem, install_problem_handlers, problem_response

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# The largest request body a service reads. The largest legitimate one, a trading batch of MAX_BATCH commands,
# is under half of it (tests/services/test_body_limit.py checks that).
MAX_BODY_BYTES = 2 * 1024 * 1024
# How require() reads credentials; the validation error handler reads them the same way (ServiceContext.authorize).
_BEARER = HTTPBearer(auto_error=False)
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for key in ("correlation_id", "service", "method", "path", "status", "duration_ms", "tenant", "subject"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


@dataclasses.dataclass
class AuditRecord:
    ts: str
    correlation_id: str
    tenant: str | None
    subject: str | None
    method: str
    path: str
    status: int


class AuditLog:
    """Append-only audit trail: every record in an optional JSON-lines file, and in memory each tenant's
    latest ``keep`` records, which is what ``GET /audit`` serves. Memory stays bounded however long the
    service runs; the file is the whole trail."""

    def __init__(self, path: str | None = None, keep: int = 1000):
        self.keep = keep
        self._recent: dict[str, collections.deque[AuditRecord]] = {}
        self._path = path
        self._handle = None  # kept open, line-buffered: one open() per request costs more than the write
        self._identity: tuple[int, int] | None = None  # (device, inode) of the open file
        self._reopen_failed = False  # logged once until a reopen succeeds
        self._lock = threading.Lock()

    def _current_handle(self):
        """The open file, reopened when the path no longer names it (logging's WatchedFileHandler semantics).

        A rotation renames the file away (logrotate's default) or deletes it; writing on to the open handle
        would put every later record in the renamed file, which the ingester never reads, or in a deleted
        inode. One stat per record (a microsecond) notices; the caller holds the lock."""
        if self._handle is not None:
            try:
                st = os.stat(self._path)
                moved = (st.st_dev, st.st_ino) != self._identity
            except FileNotFoundError:
                moved = True
            if not moved:
                return self._handle
            try:
                handle = open(self._path, "a", buffering=1)  # noqa: SIM115 (lives with the service)
            except OSError as exc:
                # the new file cannot be made (its folder gone, a rotation that created it with an owner this
                # process cannot write as): the records go on into the old file, where they are not lost,
                # rather than failing requests whose change is already applied
                if not self._reopen_failed:
                    logging.getLogger("platformq.audit").error(
                        "audit file %s could not be reopened after a rotation (%s); writing on to the old file",
                        self._path, exc)
                    self._reopen_failed = True
                return self._handle
            try:
                self._handle.close()
            except OSError:
                pass
        else:
            handle = open(self._path, "a", buffering=1)  # noqa: SIM115 (lives with the service)
        self._reopen_failed = False
        st = os.fstat(handle.fileno())
        self._handle, self._identity = handle, (st.st_dev, st.st_ino)
        return handle

    def append(self, record: AuditRecord) -> None:
        with self._lock:
            if record.tenant is not None:  # unauthenticated requests have no tenant to show them to
                self._recent.setdefault(record.tenant, collections.deque(maxlen=self.keep)).append(record)
            if self._path:
                self._current_handle().write(json.dumps(vars(record)) + "\n")  # its fields, flat (asdict deep-copies)

    def recent(self, tenant: str, limit: int) -> list[AuditRecord]:
        """The tenant's latest ``limit`` records (at most ``keep``), oldest first."""
        with self._lock:
            records = list(self._recent.get(tenant, ()))
        return records[-limit:] if limit > 0 else []


class ServiceContext:
    """Auth, limits, audit and logging of one service (or several sharing one identity)."""

    def __init__(self, name: str, issuer_url: str = "http://127.0.0.1", keys: ApiKeyStore | None = None,
                 tokens: TokenIssuer | None = None, rate: float = 50.0, burst: int = 100,
                 audit_path: str | None = None, max_body_bytes: int = MAX_BODY_BYTES, limiter=None):
        self.name = name
        self.max_body_bytes = max_body_bytes  # a larger request body is answered 413, unread
        self.keys = keys or ApiKeyStore()
        self.tokens = tokens or TokenIssuer(issuer_url)
        self.limiter = limiter or RateLimiter(rate, burst)
        # a key store or limiter that waits on the network (a database, Redis) runs off the event loop
        self.blocking_auth = bool(getattr(self.keys, "blocking", False) or getattr(self.limiter, "blocking", False))
        self.audit = AuditLog(audit_path)
        self.logger = logging.getLogger(f"platformq.{name}")
        if not self.logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(JsonFormatter())
            self.logger.addHandler(handler)
            self.logger.propagate = False
        if self.logger.level == logging.NOTSET:  # a logger someone else gave a handler first must still log INFO
            self.logger.setLevel(logging.INFO)
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry)

    def authenticate(self, request: Request, bearer: HTTPAuthorizationCredentials | None,
                     api_key: str | None) -> Principal:
        principal = None
        if bearer is not None:
            try:
                principal = self.tokens.verify(bearer.credentials)
            except Exception as exc:  # any JWT problem is a 401, with the reason
                raise Problem(401, "Unauthorized", f"invalid bearer token: {exc}", "invalid-token",
                              headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
            # a token minted from an API key lives only as long as the key (a token naming no key is not
            # tied to one); a key this store does not know counts as revoked
            if principal.api_key_id is not None and not self.keys.is_active(principal.api_key_id):
                raise Problem(401, "Unauthorized", "invalid bearer token: its API key has been revoked",
                              "invalid-token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        elif api_key:
            principal = self.keys.lookup(api_key)
            if principal is None:
                raise Problem(401, "Unauthorized", "unknown API key", "invalid-api-key",
                              headers={"WWW-Authenticate": "ApiKey"})
        if principal is None:
            raise Problem(401, "Unauthorized", "send an X-API-Key header or a Bearer token", "missing-credentials",
                          headers={"WWW-Authenticate": "Bearer"})
        allowed, retry_after = self.limiter.allow(principal.rate_key)
        if not allowed:
            raise Problem(429, "Too Many Requests", "rate limit exceeded for this key", "rate-limited",
                          # rounded up: a client that waits exactly Retry-After seconds must find a token
                          headers={"Retry-After": str(max(1, math.ceil(retry_after)))})
        request.state.principal = principal
        return principal

    async def _authenticate(self, request: Request, bearer, api_key) -> Principal:
        if self.blocking_auth:
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(self.authenticate, request, bearer, api_key)
        return self.authenticate(request, bearer, api_key)

    @staticmethod
    def check(principal: Principal, permission: str) -> None:
        if not principal.can(permission):
            raise Problem(403, "Forbidden", f"this endpoint needs the '{permission}' permission", "missing-permission")

    def require(self, permission: str):
        """Dependency: an authenticated principal holding ``permission``."""

        # async: with the file store and in-process buckets pure CPU work (a hash lookup or one signature check),
        # so it runs on the event loop instead of costing a thread-pool hop on every request; a store or limiter
        # that waits on the network goes to the thread pool, never blocking the loop
        async def dependency(request: Request, bearer: HTTPAuthorizationCredentials | None = Depends(_BEARER),
                             api_key: str | None = Depends(_API_KEY)) -> Principal:
            principal = await self._authenticate(request, bearer, api_key)
            self.check(principal, permission)
            return principal

        # FastAPI parses a JSON body before it runs dependencies: the validation error handler finds this mark on
        # the route's dependencies and authorizes the request before it shows the body's errors
        setattr(dependency, REQUIRES, (self, permission))
        return dependency

    async def authorize(self, request: Request, permissions: Iterable[str]) -> Principal:
        """What ``require`` checks, for a request refused before its dependencies ran (a malformed body): the
        credentials, the rate limit, the permissions. A request whose dependency did run has its principal
        already, and is not counted against the rate limit again."""
        principal = getattr(request.state, "principal", None)
        if principal is None:
            principal = await self._authenticate(request, await _BEARER(request), await _API_KEY(request))
        for permission in permissions:
            self.check(principal, permission)
        return principal


class ProblemOut(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    correlation_id: str | None = None


def _problem_doc(description: str) -> dict:
    return {"description": description, "model": ProblemOut,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemOut"}}}}


ERROR_RESPONSES = {
    400: _problem_doc("Bad request"),
    401: _problem_doc("Missing or invalid credentials"),
    403: _problem_doc("The caller lacks the permission this endpoint needs"),
    404: _problem_doc("Not found (or belongs to another tenant)"),
    409: _problem_doc("Conflicts with the current state"),
    413: _problem_doc("The request body is larger than the service's limit (2 MiB unless configured otherwise)"),
    422: _problem_doc("The request does not validate"),
    429: _problem_doc("Rate limit exceeded"),
    503: _problem_doc("A dependency is not available"),
}


class TokenRequest(BaseModel):
    api_key: str = Field(min_length=1, max_length=200)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


BOOTSTRAP_SUBJECT = "bootstrap-admin"  # `platformq serve` revokes this subject's old keys at each start


def _not_reserved(subject: str) -> str:
    if subject == BOOTSTRAP_SUBJECT:
        raise ValueError(f"the subject {BOOTSTRAP_SUBJECT!r} is reserved for `platformq serve`")
    return subject


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:+/-]*$",
                                  description="who or what uses the key (a user, a service)",
                                  examples=["ci-pipeline"]),
                       AfterValidator(_not_reserved)]
    roles: list[Literal[ROLES]] = Field(min_length=1, max_length=len(ROLES), examples=[["viewer"]],
                                        description="the key's roles; it belongs to the caller's tenant")


class ApiKeyOut(BaseModel):
    """An API key as an admin may see it: never the key, never its hash."""

    key_id: str
    subject: str
    tenant: str
    roles: list[str]
    created_at: str
    revoked_at: str | None = None


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="the key itself: shown this once, kept nowhere (send it as X-API-Key)")


class _BodyTooLarge(StarletteHTTPException):
    """Raised by receive() once a streamed body passes the limit. FastAPI re-raises an HTTPException met while it
    reads the body (any other error there becomes a 400), so the problem handlers answer it."""

    def __init__(self, limit: int):
        super().__init__(413, _too_large_detail(limit), headers={"Connection": "close"})


def _too_large_detail(limit: int) -> str:
    return f"the request body is larger than this service's limit of {limit} bytes"


class BodyLimitMiddleware:
    """413 for a request body over ``ctx.max_body_bytes``, before anything parses it (or authenticates it: FastAPI
    reads and parses a JSON body before it runs the auth dependency).

    A Content-Length over the limit is answered at once, no byte read; one within it is all the server delivers,
    so the request passes untouched. A body without one (chunked) is counted as it is received, and reading
    stops at the first chunk past the limit. The 413 closes the connection: the rest of the body is never read.
    A plain ASGI middleware, like ``ObserveMiddleware``, and inside it: the 413 is logged, counted and audited.
    """

    def __init__(self, app, ctx: "ServiceContext"):
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.ctx.max_body_bytes
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":  # (servers refuse both) then the length is not what bounds the body
                declared = None
                break
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                response = problem_response(Request(scope), 413, "Payload Too Large", _too_large_detail(limit),
                                            "payload-too-large", headers={"Connection": "close"})
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server delivers no more than Content-Length
            return

        received = 0
        started = False

        async def receive_within_limit():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def send_tracking(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive_within_limit, send_tracking)
        except _BodyTooLarge as exc:  # read where no problem handler catches it
            if started:
                raise
            response = problem_response(Request(scope), 413, "Payload Too Large", exc.detail, "payload-too-large",
                                        headers=exc.headers)
            await response(scope, receive, send)


class ObserveMiddleware:
    """Correlation ids, JSON request logs, Prometheus metrics and audit records.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs a large
    share of a small endpoint's time.
    """

    def __init__(self, app, ctx: "ServiceContext"):
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = self.ctx
        correlation_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                correlation_id = value.decode("latin-1")
                break
        if not correlation_id or len(correlation_id) > 128 or not correlation_id.isprintable():
            correlation_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["correlation_id"] = correlation_id
        status = 500
        started = time.perf_counter()
        recorded = False

        def record() -> None:
            """The request's log line, metrics and audit record, once: before the response's last byte is sent
            (a client holding its answer finds them written), or when the app ends without a response."""
            nonlocal recorded
            if recorded:
                return
            recorded = True
            elapsed = time.perf_counter() - started
            method = scope["method"]
            route_path = getattr(scope.get("route"), "path", "unmatched")
            ctx.requests.labels(method, route_path, str(status)).inc()
            ctx.latency.labels(method, route_path).observe(elapsed)
            principal = state.get("principal")
            if ctx.logger.isEnabledFor(logging.INFO):
                ctx.logger.info("request", extra={
                    "correlation_id": correlation_id, "service": ctx.name, "method": method, "path": scope["path"],
                    "status": status, "duration_ms": round(elapsed * 1000, 2),
                    "tenant": principal.tenant if principal else None,
                    "subject": principal.subject if principal else None})
            if method in STATE_CHANGING:
                ctx.audit.append(AuditRecord(
                    ts=dt.datetime.now(dt.timezone.utc).isoformat(), correlation_id=correlation_id,
                    tenant=principal.tenant if principal else None,
                    subject=principal.subject if principal else None,
                    method=method, path=scope["path"], status=status))

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", correlation_id.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            record()


def create_service_app(ctx: ServiceContext, title: str, description: str = "", version: str = "1.0.0") -> FastAPI:
    app = FastAPI(title=title, description=description, version=version, responses=ERROR_RESPONSES)
    app.state.ctx = ctx
    app.state.logger = ctx.logger
    install_problem_handlers(app)

    app.add_middleware(BodyLimitMiddleware, ctx=ctx)  # added first: inside ObserveMiddleware, which sees its 413s
    app.add_middleware(ObserveMiddleware, ctx=ctx)

    @app.get("/health", tags=["ops"])
    def health() -> dict:
        return {"status": "ok", "service": ctx.name}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/.well-known/jwks.json", tags=["auth"])
    def jwks() -> dict:
        return ctx.tokens.jwks()

    @app.get("/.well-known/openid-configuration", tags=["auth"])
    def discovery() -> dict:
        return ctx.tokens.discovery()

    @app.post("/auth/token", tags=["auth"], response_model=TokenResponse)
    def token(body: TokenRequest, request: Request, response: Response) -> TokenResponse:
        principal = ctx.keys.lookup(body.api_key)
        if principal is None:
            raise Problem(401, "Unauthorized", "unknown API key", "invalid-api-key")
        request.state.principal = principal  # the audit record names who minted it (never the key)
        # a credential: no cache may keep it (RFC 6749 section 5.1; Pragma for HTTP/1.0 caches)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return TokenResponse(access_token=ctx.tokens.issue(principal), expires_in=ctx.tokens.ttl_s)

    # API keys of the caller's tenant. The audit middleware records these calls like any other (method, path,
    # status, who); the clear key exists only in the one response that creates it.
    @app.post("/auth/keys", tags=["auth"], status_code=201, response_model=ApiKeyCreated)
    def create_key(body: ApiKeyIn, response: Response,
                   principal: Principal = Depends(ctx.require(KEYS_ADMIN))) -> ApiKeyCreated:
        key, record = ctx.keys.create_with_record(body.subject, principal.tenant, body.roles)
        response.headers["Cache-Control"] = "no-store"  # a secret: no cache may keep this answer
        return ApiKeyCreated(**record, api_key=key)

    @app.get("/auth/keys", tags=["auth"], response_model=list[ApiKeyOut])
    def list_keys(principal: Principal = Depends(ctx.require(KEYS_ADMIN))) -> list[ApiKeyOut]:
        return [ApiKeyOut(**record) for record in ctx.keys.list(principal.tenant)]

    @app.delete("/auth/keys/{key_id}", tags=["auth"], response_model=ApiKeyOut)
    def revoke_key(key_id: Annotated[str, Path(max_length=64, description="the key_id that created or listed it")],
                   principal: Principal = Depends(ctx.require(KEYS_ADMIN))) -> ApiKeyOut:
        """Revoke the key: it, and every token minted from it, stops working at once. Revoking a revoked key
        answers the same record again."""
        try:
            return ApiKeyOut(**ctx.keys.revoke(principal.tenant, key_id))
        except KeyError:  # another tenant's key is as unknown as one that never existed
            raise Problem(404, "Not Found", f"unknown API key {key_id!r}", "unknown-api-key") from None

    @app.get("/audit", tags=["ops"])
    def audit(principal: Principal = Depends(ctx.require("audit:read")), limit: int = 100) -> list[dict]:
        limit = max(1, min(limit, ctx.audit.keep))
        return [dataclasses.asdict(r) for r in ctx.audit.recent(principal.tenant, limit)]

    return app
