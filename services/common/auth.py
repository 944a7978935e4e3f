"""Authentication, roles and tenancy.

* API keys: random 256-bit tokens shown once; only their SHA-256 is stored (in memory, or in a
  0600 JSON file written atomically). A key can be revoked; tokens minted from it then stop working.
* JWT bearer tokens: ES256 (ECDSA P-256), signed by the service's key; the
  public key is published as a JWKS and described by an OIDC discovery
  document, so any standard OIDC/JWT library can validate them. With a key file
  the signing key is shared by every process that reads it and outlives restarts
  (a token minted by one worker verifies at the others).
* Roles map to permissions; every endpoint names the permission it needs.
* Every principal belongs to exactly one tenant, and every request is scoped to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
from typing import Callable, Iterable

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"*"}),
    "engineer": frozenset({"read", "market:read", "orders:read", "accounts:read", "data:read", "derivatives:read",
                           "derivatives:write", "governance:read", "credentials:read", "credentials:write",
                           "models:predict"}),
    "trader": frozenset({"read", "market:read", "orders:read", "orders:write", "accounts:read", "accounts:write",
                         "derivatives:read", "derivatives:write", "governance:read", "governance:write",
                         "data:read", "models:predict"}),
    "viewer": frozenset({"read", "market:read", "orders:read", "accounts:read", "data:read", "derivatives:read",
                         "governance:read", "credentials:read", "models:predict"}),
    "auditor": frozenset({"read", "audit:read", "market:read", "orders:read", "accounts:read", "governance:read",
                          "credentials:read", "data:read", "erasure:read"}),
}
ROLES = tuple(ROLE_PERMISSIONS)
# Creating, listing and revoking a tenant's API keys. No role lists it: only "admin" ("*") holds it. The same
# holds for "erasure:write" (filing an erasure request for one of the tenant's accounts, in the data API) and for
# "governance:proxy" (below).
KEYS_ADMIN = "keys:admin"
# Acting in the governance service for any account of the caller's tenant's DAO: delegating its votes, proposing,
# voting and cancelling as it. Without it a "governance:write" caller acts only as the account named like its own
# subject. No role lists it: only "admin" ("*") holds it (the Dagster governance asset votes for every holder).
GOVERNANCE_PROXY = "governance:proxy"


@dataclasses.dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str
    roles: tuple[str, ...]
    key_id: str  # what audit records are keyed by (rate limits: rate_key)
    # the API key this principal authenticated with, directly or through a token minted from it (None for a
    # token that names no key): revoking that key ends the principal's access
    api_key_id: str | None = None

    @property
    def rate_key(self) -> str:
        """The rate-limit bucket: the API key, whether it is sent as is or as a token minted from it (a key used
        both ways had two buckets, twice its rate); a token naming no key has its subject's."""
        return self.api_key_id or self.key_id

    def can(self, permission: str) -> bool:
        return any("*" in ROLE_PERMISSIONS.get(r, ()) or permission in ROLE_PERMISSIONS.get(r, ())
                   for r in self.roles)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class ApiKeyRecord:
    """What is kept of an API key: its hash, never the key."""

    key_id: str
    hash: str
    subject: str
    tenant: str
    roles: tuple[str, ...]
    created_at: str  # ISO 8601, UTC
    revoked_at: str | None = None

    def public(self) -> dict:
        """The record without its hash: what an admin may list."""
        return {"key_id": self.key_id, "subject": self.subject, "tenant": self.tenant, "roles": list(self.roles),
                "created_at": self.created_at, "revoked_at": self.revoked_at}

    def principal(self) -> Principal:
        return Principal(self.subject, self.tenant, self.roles, key_id=self.key_id, api_key_id=self.key_id)


def _new_key(subject: str, tenant: str, roles: Iterable[str]) -> tuple[str, ApiKeyRecord]:
    """A new random key and its record, after checking what describes it."""
    roles = tuple(dict.fromkeys(roles))
    unknown = [r for r in roles if r not in ROLE_PERMISSIONS]
    if unknown or not roles:
        raise ValueError(f"unknown or missing roles: {unknown or roles}")
    for name, value in (("subject", subject), ("tenant", tenant)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"the {name} must be a non-empty string")
    key = "pq_" + secrets.token_urlsafe(32)
    digest = hash_key(key)
    return key, ApiKeyRecord(key_id=digest[:16], hash=digest, subject=subject, tenant=tenant, roles=roles,
                             created_at=_now())


class ApiKeyStore:
    """API keys by hash. Thread-safe; keys are never stored or logged in clear.

    With ``path`` the records persist as JSON (mode 0600, replaced atomically on every change); without it
    they live in memory only. Revoked keys stay listed, with ``revoked_at``. Several processes may share
    one file (several API workers on one host): a change is made under an exclusive lock on
    ``<path>.lock`` and on the file as it is then, and every read first reloads the file if it changed,
    so a key created or revoked by one process counts in the others at their next request.
    """

    FORMAT_VERSION = 1

    def __init__(self, path: str | os.PathLike | None = None):
        self._path = os.fspath(path) if path is not None else None
        self._records: dict[str, ApiKeyRecord] = {}  # by key_id, in creation order
        self._active: dict[str, Principal] = {}  # by hash: the lookup of every request
        self._lock = threading.RLock()
        self._seen: tuple | None = None  # the file's identity when last read (inode, size, times)
        self._refresh()

    def _refresh(self) -> None:
        """Reload the records if the file changed since it was last read (another process wrote it)."""
        if self._path is None:
            return
        with self._lock:
            seen = self._identity()
            if seen == self._seen:  # (None twice: no file then and now, so no records either)
                return
            records = self._load(self._path) if seen is not None else []
            self._records = {r.key_id: r for r in records}
            self._active = {r.hash: r.principal() for r in records if r.revoked_at is None}
            self._seen = seen

    def _identity(self) -> tuple | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    @contextlib.contextmanager
    def _changing(self):
        """Held while a change is made: this process's lock, then the file's (other processes), on fresh records."""
        with self._lock:
            if self._path is None:
                yield
                return
            import fcntl

            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
            fd = os.open(self._path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._refresh()
                yield
            finally:
                os.close(fd)  # releases the lock

    def create(self, subject: str, tenant: str, roles: Iterable[str]) -> str:
        """A new key for ``subject`` in ``tenant``: the clear key, returned this once and kept nowhere."""
        return self.create_with_record(subject, tenant, roles)[0]

    def create_with_record(self, subject: str, tenant: str, roles: Iterable[str]) -> tuple[str, dict]:
        """``create``, also returning the new key's public record (its ``key_id`` among others)."""
        key, record = _new_key(subject, tenant, roles)
        digest = record.hash
        with self._changing():
            if record.key_id in self._records:  # 2**-64 per pair of keys; never silently shadow one
                raise RuntimeError("API key id collision; create the key again")
            self._save({**self._records, record.key_id: record})
            self._records[record.key_id] = record
            self._active[digest] = record.principal()
        return key, record.public()

    def lookup(self, key: str) -> Principal | None:
        """The principal of an active key; None for an unknown or revoked one."""
        self._refresh()
        return self._active.get(hash_key(key))

    def is_active(self, key_id: str) -> bool:
        """Whether ``key_id`` names a key of this store that is not revoked."""
        self._refresh()
        record = self._records.get(key_id)
        return record is not None and record.revoked_at is None

    def list(self, tenant: str) -> list[dict]:
        """The tenant's keys, revoked ones included, oldest first; no hashes, no secrets."""
        self._refresh()
        with self._lock:
            return [r.public() for r in self._records.values() if r.tenant == tenant]

    def revoke(self, tenant: str, key_id: str) -> dict:
        """Revoke the tenant's key ``key_id``, returning its record. Revoking a revoked key changes nothing
        (the first ``revoked_at`` stays). KeyError if the tenant has no such key: another tenant's key is
        treated exactly like an unknown one."""
        with self._changing():
            record = self._records.get(key_id)
            if record is None or record.tenant != tenant:
                raise KeyError(key_id)
            if record.revoked_at is None:
                revoked = dataclasses.replace(record, revoked_at=_now())
                self._save({**self._records, key_id: revoked})
                self._records[key_id] = record = revoked
                self._active.pop(record.hash, None)
            return record.public()

    def stored_hashes(self) -> list[str]:
        self._refresh()
        with self._lock:
            return [r.hash for r in self._records.values()]

    def _save(self, records: dict[str, ApiKeyRecord]) -> None:
        """Write ``records`` to the file, atomically: a crash leaves the old file or the new one, never half."""
        if self._path is None:
            return
        directory = os.path.dirname(os.path.abspath(self._path))  # created by _changing, for the lock file
        document = {"version": self.FORMAT_VERSION,
                    "keys": [{**dataclasses.asdict(r), "roles": list(r.roles)} for r in records.values()]}
        fd, tmp = tempfile.mkstemp(prefix=".api-keys-", suffix=".tmp", dir=directory)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                json.dump(document, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
            self._seen = self._identity()  # our own write (other writers wait for the lock we hold)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows it
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @classmethod
    def _load(cls, path: str) -> list[ApiKeyRecord]:
        """The records in ``path``; a file that is not what ``_save`` writes is an error, never an empty store
        (starting with no keys, or with half of them, would hide the problem)."""
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            if not isinstance(document, dict) or document.get("version") != cls.FORMAT_VERSION:
                raise ValueError(f"expected a version {cls.FORMAT_VERSION} document")
            records = []
            for entry in document["keys"]:
                record = ApiKeyRecord(**{**entry, "roles": tuple(entry["roles"])})
                well_formed = (
                    all(isinstance(v, str) and v for v in (record.key_id, record.hash, record.subject,
                                                           record.tenant, record.created_at))
                    and len(record.hash) == 64 and isinstance(entry["roles"], list)
                    and all(isinstance(r, str) for r in record.roles)
                    and isinstance(record.revoked_at, (str, type(None))))
                if not well_formed:
                    raise ValueError(f"malformed record {record.key_id!r}")
                records.append(record)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read the API key store {path}: {exc}") from exc
        if len({r.key_id for r in records}) != len(records):
            raise ValueError(f"cannot read the API key store {path}: duplicate key ids")
        return records


class SqlApiKeyStore:
    """API keys by hash in a SQL database (a SQLAlchemy URL; Postgres in production): one store for every service
    process on every host, where the file store needs a shared file system. The same interface as
    ``ApiKeyStore``. Every request looks its key up in the database, so a key created or revoked anywhere counts
    everywhere at the next request; a revocation is one conditional UPDATE (the first ``revoked_at`` stays)."""

    blocking = True  # a lookup waits on the network: the services authenticate off the event loop

    def __init__(self, url: str):
        import sqlalchemy as sa

        self._engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        meta = sa.MetaData()
        self._table = sa.Table(
            "api_keys", meta,
            sa.Column("key_id", sa.String(16), primary_key=True),
            sa.Column("hash", sa.String(64), nullable=False, unique=True),
            sa.Column("subject", sa.Text, nullable=False),
            sa.Column("tenant", sa.Text, nullable=False, index=True),
            sa.Column("roles", sa.Text, nullable=False),  # a JSON list
            sa.Column("created_at", sa.String(40), nullable=False),
            sa.Column("revoked_at", sa.String(40)),
        )
        meta.create_all(self._engine)

    @staticmethod
    def _record(row) -> ApiKeyRecord:
        return ApiKeyRecord(key_id=row.key_id, hash=row.hash, subject=row.subject, tenant=row.tenant,
                            roles=tuple(json.loads(row.roles)), created_at=row.created_at, revoked_at=row.revoked_at)

    def create(self, subject: str, tenant: str, roles: Iterable[str]) -> str:
        return self.create_with_record(subject, tenant, roles)[0]

    def create_with_record(self, subject: str, tenant: str, roles: Iterable[str]) -> tuple[str, dict]:
        import sqlalchemy as sa

        key, record = _new_key(subject, tenant, roles)
        values = {**dataclasses.asdict(record), "roles": json.dumps(list(record.roles))}
        try:
            with self._engine.begin() as conn:
                conn.execute(self._table.insert().values(**values))
        except sa.exc.IntegrityError:  # 2**-64 per pair of keys; never silently shadow one
            raise RuntimeError("API key id collision; create the key again") from None
        return key, record.public()

    def _select(self, *where):
        import sqlalchemy as sa

        with self._engine.connect() as conn:
            return conn.execute(sa.select(self._table).where(*where)).all()

    def lookup(self, key: str) -> Principal | None:
        t = self._table
        rows = self._select(t.c.hash == hash_key(key), t.c.revoked_at.is_(None))
        return self._record(rows[0]).principal() if rows else None

    def is_active(self, key_id: str) -> bool:
        t = self._table
        return bool(self._select(t.c.key_id == key_id, t.c.revoked_at.is_(None)))

    def list(self, tenant: str) -> list[dict]:
        rows = sorted(self._select(self._table.c.tenant == tenant), key=lambda r: (r.created_at, r.key_id))
        return [self._record(r).public() for r in rows]

    def revoke(self, tenant: str, key_id: str) -> dict:
        import sqlalchemy as sa

        t = self._table
        mine = (t.c.key_id == key_id, t.c.tenant == tenant)
        with self._engine.begin() as conn:
            conn.execute(sa.update(t).where(*mine, t.c.revoked_at.is_(None)).values(revoked_at=_now()))
            row = conn.execute(sa.select(t).where(*mine)).first()
        if row is None:  # another tenant's key is treated exactly like an unknown one
            raise KeyError(key_id)
        return self._record(row).public()

    def stored_hashes(self) -> list[str]:
        import sqlalchemy as sa

        with self._engine.connect() as conn:
            return list(conn.execute(sa.select(self._table.c.hash)).scalars())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


# How far apart the clocks of the hosts sharing a signing key may be: a token minted where the clock runs ahead
# names an iat/nbf in the verifier's future, and one verified where it runs behind looks unexpired a little longer.
# Applied to iat, nbf and exp (RFC 7519 4.1.4-4.1.6 allow "some small leeway").
CLOCK_SKEW_S = 60


class TokenIssuer:
    """Signs and verifies ES256 JWTs; publishes the JWKS.

    ``key_path``: the signing key as a PKCS#8 PEM file (mode 0600), created on first use and read by every
    later issuer, so processes sharing the file (several workers, a restart) sign and verify with one key.
    Without it the key lives in this object only: its tokens die with the process and no other verifies them.
    """

    def __init__(self, issuer: str, audience: str = "platformq", ttl_s: int = 900,
                 key_path: str | os.PathLike | None = None):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.ttl_s = ttl_s
        self._key = signing_key(key_path) if key_path is not None else ec.generate_private_key(ec.SECP256R1())
        self.kid = hashlib.sha256(self._public_jwk_material()).hexdigest()[:16]

    def _public_jwk_material(self) -> bytes:
        numbers = self._key.public_key().public_numbers()
        return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    def jwks(self) -> dict:
        import base64

        def b64(n: int) -> str:
            return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y), "use": "sig",
                          "alg": "ES256", "kid": self.kid}]}

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "token_endpoint": f"{self.issuer}/auth/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tenant", "roles", "key"],
        }

    def issue(self, principal: Principal, now: float | None = None) -> str:
        import jwt

        now = int(now if now is not None else time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": principal.subject, "tenant": principal.tenant,
                  "roles": list(principal.roles), "iat": now, "nbf": now, "exp": now + self.ttl_s,
                  "jti": secrets.token_hex(8)}
        if principal.api_key_id is not None:  # so that revoking the key ends the token too
            claims["key"] = principal.api_key_id
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})

    def verify(self, token: str) -> Principal:
        import jwt

        # "sub" is checked here, not by PyJWT, so that every malformed claim fails with the same kind of message
        claims = jwt.decode(token, self._key.public_key(), algorithms=["ES256"], audience=self.audience,
                            issuer=self.issuer, leeway=CLOCK_SKEW_S,
                            options={"require": ["exp", "iat", "sub", "tenant", "roles"], "verify_sub": False})
        # Claims of another type than issue() writes are an invalid token (a 401), not a principal whose tenant
        # cannot key a dict (a 500), whose roles are a dict's keys, or who belongs to no tenant.
        for claim in ("sub", "tenant"):
            if not isinstance(claims[claim], str) or not claims[claim].strip():
                raise jwt.InvalidTokenError(f"the {claim!r} claim must be a non-empty string")
        if not isinstance(claims["roles"], list) or not all(isinstance(r, str) for r in claims["roles"]):
            raise jwt.InvalidTokenError("the 'roles' claim must be a list of strings")
        api_key_id = claims.get("key")
        if api_key_id is not None and (not isinstance(api_key_id, str) or not api_key_id.strip()):
            raise jwt.InvalidTokenError("the 'key' claim must be a non-empty string")
        roles = tuple(r for r in claims["roles"] if r in ROLE_PERMISSIONS)
        # The tenant is part of the key: subjects are only unique within a tenant, and two tenants' "ann"
        # must not share (and exhaust) one rate-limit bucket or be mixed up in audit records.
        return Principal(claims["sub"], claims["tenant"], roles, key_id=f"jwt:{claims['tenant']}:{claims['sub']}",
                         api_key_id=api_key_id)


def create_secret_file(path: str | os.PathLike, generate: Callable[[], bytes]) -> None:
    """Create ``path`` holding ``generate()`` unless it exists. The bytes go to a temporary file created 0600
    (never readable by others, not even briefly) that is linked into place: creation is atomic and first-wins,
    so processes starting at once all end up with the one that got there first; each caller then reads ``path``
    (a loser's secret is discarded, never used)."""
    path = os.fspath(path)
    if os.path.exists(path):
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    secret = generate()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", suffix=".tmp", dir=directory)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def signing_key(path: str | os.PathLike):
    """The ES256 key in ``path``; created (P-256, PKCS#8 PEM, mode 0600, first-wins: see
    :func:`create_secret_file`) when there is none. A file that is not a P-256 private key is an error, never
    silently replaced (every token minted with it would die)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = os.fspath(path)
    create_secret_file(path, lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    try:
        with open(path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read the JWT signing key {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError(f"the JWT signing key {path} is not an ECDSA P-256 private key (ES256 needs one)")
    return key


class RateLimiter:
    """Token bucket per key: ``rate`` requests per second, bursts up to ``burst``.

    A bucket that has refilled to ``burst`` is the same as none, so such buckets are dropped whenever the table
    has doubled since the last sweep: a process that sees many keys (rotated keys, one-off tokens) keeps those
    in use, not every key it ever saw."""

    MIN_SWEEP = 1024

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._sweep_at = self.MIN_SWEEP

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float | None = None) -> tuple[bool, float]:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._buckets) >= self._sweep_at:
                self._sweep(now)
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return True, 0.0
            self._buckets[key] = (tokens, now)
            return False, (1 - tokens) / self.rate

    def _sweep(self, now: float) -> None:
        full = [k for k, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        self._sweep_at = max(self.MIN_SWEEP, 2 * len(self._buckets))


# One token bucket in Redis, changed atomically: refill by the time elapsed on Redis's clock (one clock for every
# host), take a token if there is one, keep the bucket as long as a refill from empty takes.
_BUCKET_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RedisRateLimiter:
    """The token bucket of ``RateLimiter``, kept in Redis so that every process and host behind one address draws
    on one bucket per key (with a bucket per process, N processes let a key through N times as often).

    When Redis cannot be reached the limit falls back to this process's own bucket (logged once per outage):
    requests go on, limited per process as without Redis, rather than failing or going unlimited. After a failure
    Redis is asked again only ``RETRY_S`` later: a Redis that does not answer costs one request its socket
    timeout, not every request."""

    blocking = True  # one round trip per request: the services authenticate off the event loop
    RETRY_S = 5.0

    def __init__(self, url: str, rate: float, burst: int, prefix: str = "platformq:ratelimit"):
        import redis

        self.rate, self.burst, self.prefix = rate, burst, prefix
        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._client.register_script(_BUCKET_SCRIPT)
        self._local = RateLimiter(rate, burst)
        self._degraded = False
        self._retry_at = 0.0  # time.monotonic() before which a degraded limiter does not ask Redis
        self._degraded_lock = threading.Lock()  # one warning per change of state, however many threads see it

    def _degrade(self, degraded: bool) -> bool:
        """Record the state; True when it changed (the caller then logs it)."""
        with self._degraded_lock:
            changed, self._degraded = self._degraded != degraded, degraded
        return changed

    def allow(self, key: str, now: float | None = None) -> tuple[bool, float]:
        import logging

        import redis

        if self._degraded and time.monotonic() < self._retry_at:
            return self._local.allow(key, now)
        try:
            allowed, wait = self._script(keys=[f"{self.prefix}:{key}"], args=[repr(self.rate), self.burst])
        except redis.RedisError as exc:
            self._retry_at = time.monotonic() + self.RETRY_S
            if self._degrade(True):
                logging.getLogger("platformq.ratelimit").warning(
                    "rate limits fall back to this process's buckets: Redis is unreachable (%s)", type(exc).__name__)
            return self._local.allow(key, now)
        if self._degraded and self._degrade(False):
            logging.getLogger("platformq.ratelimit").warning("rate limits are shared through Redis again")
        return bool(int(allowed)), float(wait)
