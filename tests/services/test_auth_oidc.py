"""JWTs validate with a standard OIDC/JWT client, over real HTTP, from the discovery document."""

import httpx
import jwt
import pytest

from services.common.app import ServiceContext
from services.trading.api import create_trading_app
from services.trading.exchange import Exchange
from tests.services.serving import free_port, serve


def test_tokens_validate_through_discovery_and_jwks_over_http():
    port = free_port()
    ctx = ServiceContext("trading", issuer_url=f"http://127.0.0.1:{port}")
    key = ctx.keys.create("alice", "t1", ["trader"])
    with serve(create_trading_app(ctx, Exchange(["ACME"])), port) as base:
        discovery = httpx.get(f"{base}/.well-known/openid-configuration").json()
        assert discovery["issuer"] == base and "ES256" in discovery["id_token_signing_alg_values_supported"]
        token = httpx.post(discovery["token_endpoint"], json={"api_key": key}).json()["access_token"]
        signing_key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
        claims = jwt.decode(token, signing_key.key, algorithms=["ES256"], audience="platformq",
                            issuer=discovery["issuer"])
        assert claims["sub"] == "alice" and claims["tenant"] == "t1" and claims["roles"] == ["trader"]
        r = httpx.get(f"{base}/v1/instruments", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json() == ["ACME"] and r.headers["x-request-id"]


def test_tampered_or_foreign_tokens_are_rejected():
    ctx, other = ServiceContext("a"), ServiceContext("b")
    principal = ctx.keys.lookup(ctx.keys.create("alice", "t1", ["admin"]))
    token = ctx.tokens.issue(principal)
    assert ctx.tokens.verify(token).tenant == "t1"
    header, payload, signature = token.split(".")
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["tenant"] = "t2"
    forged = ".".join([header, base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(), signature])
    with pytest.raises(jwt.InvalidSignatureError):
        ctx.tokens.verify(forged)
    with pytest.raises(jwt.InvalidSignatureError):
        other.tokens.verify(token)  # signed by another service's key
    expired = ctx.tokens.issue(principal, now=0)
    with pytest.raises(jwt.ExpiredSignatureError):
        ctx.tokens.verify(expired)


def test_same_subject_in_two_tenants_has_two_rate_limit_buckets():
    from fastapi.testclient import TestClient

    ctx = ServiceContext("trading", rate=0.001, burst=3)  # three requests per bucket, practically no refill
    client = TestClient(create_trading_app(ctx, Exchange(["ACME"])), raise_server_exceptions=False)
    tokens = {tenant: client.post("/auth/token", json={"api_key": ctx.keys.create("ann", tenant, ["trader"])})
              .json()["access_token"] for tenant in ("t-a", "t-b")}
    assert ctx.tokens.verify(tokens["t-a"]).key_id != ctx.tokens.verify(tokens["t-b"]).key_id
    for _ in range(3):
        assert client.get("/v1/instruments", headers={"Authorization": f"Bearer {tokens['t-b']}"}).status_code == 200
    assert client.get("/v1/instruments", headers={"Authorization": f"Bearer {tokens['t-b']}"}).status_code == 429
    # t-b's "ann" used up her bucket; t-a's "ann" is another user and still has all of hers
    assert client.get("/v1/instruments", headers={"Authorization": f"Bearer {tokens['t-a']}"}).status_code == 200
