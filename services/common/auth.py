"""Authentication, roles and tenancy.

* API keys: random 256-bit tokens shown once; only their SHA-256 is stored.
* JWT bearer tokens: ES256 (ECDSA P-256), signed by the service's key; the
  public key is published as a JWKS and described by an OIDC discovery
  document, so any standard OIDC/JWT library can validate them.
* Roles map to permissions; every endpoint names the permission it needs.
* Every principal belongs to exactly one tenant, and every request is scoped to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
import time
from typing import Iterable

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
                          "credentials:read", "data:read"}),
}
ROLES = tuple(ROLE_PERMISSIONS)


@dataclasses.dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str
    roles: tuple[str, ...]
    key_id: str  # what rate limits and audit records are keyed by

    def can(self, permission: str) -> bool:
        return any("*" in ROLE_PERMISSIONS.get(r, ()) or permission in ROLE_PERMISSIONS.get(r, ())
                   for r in self.roles)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    """API keys by hash. Thread-safe; keys are never stored or logged in clear."""

    def __init__(self):
        self._keys: dict[str, Principal] = {}
        self._lock = threading.Lock()

    def create(self, subject: str, tenant: str, roles: Iterable[str]) -> str:
        roles = tuple(roles)
        unknown = [r for r in roles if r not in ROLE_PERMISSIONS]
        if unknown or not roles:
            raise ValueError(f"unknown or missing roles: {unknown or roles}")
        key = "pq_" + secrets.token_urlsafe(32)
        digest = hash_key(key)
        with self._lock:
            self._keys[digest] = Principal(subject, tenant, roles, key_id=digest[:16])
        return key

    def lookup(self, key: str) -> Principal | None:
        return self._keys.get(hash_key(key))

    def stored_hashes(self) -> list[str]:
        return list(self._keys)


class TokenIssuer:
    """Signs and verifies ES256 JWTs; publishes the JWKS."""

    def __init__(self, issuer: str, audience: str = "platformq", ttl_s: int = 900):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.ttl_s = ttl_s
        self._key = ec.generate_private_key(ec.SECP256R1())
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
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tenant", "roles"],
        }

    def issue(self, principal: Principal, now: float | None = None) -> str:
        import jwt

        now = int(now if now is not None else time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": principal.subject, "tenant": principal.tenant,
                  "roles": list(principal.roles), "iat": now, "nbf": now, "exp": now + self.ttl_s,
                  "jti": secrets.token_hex(8)}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})

    def verify(self, token: str) -> Principal:
        import jwt

        # "sub" is checked here, not by PyJWT, so that every malformed claim fails with the same kind of message
        claims = jwt.decode(token, self._key.public_key(), algorithms=["ES256"], audience=self.audience,
                            issuer=self.issuer, options={"require": ["exp", "iat", "sub", "tenant", "roles"],
                                                         "verify_sub": False})
        # Claims of another type than issue() writes are an invalid token (a 401), not a principal whose tenant
        # cannot key a dict (a 500), whose roles are a dict's keys, or who belongs to no tenant.
        for claim in ("sub", "tenant"):
            if not isinstance(claims[claim], str) or not claims[claim].strip():
                raise jwt.InvalidTokenError(f"the {claim!r} claim must be a non-empty string")
        if not isinstance(claims["roles"], list) or not all(isinstance(r, str) for r in claims["roles"]):
            raise jwt.InvalidTokenError("the 'roles' claim must be a list of strings")
        roles = tuple(r for r in claims["roles"] if r in ROLE_PERMISSIONS)
        # The tenant is part of the key: subjects are only unique within a tenant, and two tenants' "ann"
        # must not share (and exhaust) one rate-limit bucket or be mixed up in audit records.
        return Principal(claims["sub"], claims["tenant"], roles, key_id=f"jwt:{claims['tenant']}:{claims['sub']}")


class RateLimiter:
    """Token bucket per key: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> tuple[bool, float]:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return True, 0.0
            self._buckets[key] = (tokens, now)
            return False, (1 - tokens) / self.rate
