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


def mint(ctx, **claims):
    """A token signed with the service's own key, with ``claims`` in place of those it issues."""
    import secrets
    import time

    now = int(time.time())
    body = {"iss": ctx.tokens.issuer, "aud": ctx.tokens.audience, "sub": "alice", "tenant": "t1", "roles": ["trader"],
            "iat": now, "nbf": now, "exp": now + 900, "jti": secrets.token_hex(8), **claims}
    return jwt.encode(body, ctx.tokens._key, algorithm="ES256", headers={"kid": ctx.tokens.kid})


MALFORMED_CLAIMS = [("tenant", ["t1"]), ("tenant", 7), ("tenant", ""), ("tenant", " "), ("tenant", {"t1": 1}),
                    ("tenant", True), ("sub", ["alice"]), ("sub", 7), ("sub", ""), ("roles", "trader"),
                    ("roles", 7), ("roles", {"admin": 1}), ("roles", ["trader", 5]), ("roles", [["admin"]])]


@pytest.mark.parametrize(("claim", "value"), MALFORMED_CLAIMS, ids=[f"{c}={v!r}" for c, v in MALFORMED_CLAIMS])
def test_a_signed_token_with_a_claim_of_the_wrong_type_is_a_401_problem(claim, value):
    """A token the service signed itself, but whose sub, tenant or roles is not what it issues (a string, a
    string, a list of strings), is an invalid token: a 401 problem like any other, never a 500 (the tenant
    keys dicts and audit records), never a role read from a dict's keys, never a principal with no tenant."""
    from fastapi.testclient import TestClient

    from tests.services.problems import is_problem

    ctx = ServiceContext("trading", rate=1000.0, burst=1000)
    client = TestClient(create_trading_app(ctx, Exchange(["ACME"])), raise_server_exceptions=False)
    token = mint(ctx, **{claim: value})
    assert ctx.tokens.verify(mint(ctx)).tenant == "t1"  # the same token with good claims is valid
    with pytest.raises(jwt.InvalidTokenError, match=claim):
        ctx.tokens.verify(token)
    headers = {"Authorization": f"Bearer {token}"}
    for response in (client.get("/v1/instruments", headers=headers),
                     client.post("/v1/accounts", json={"account_id": "a1"}, headers=headers)):
        body = is_problem(response, 401)
        assert body["title"] == "Unauthorized"
        assert body["type"] == "https://platformq.dev/problems/invalid-token"
        assert body["detail"].startswith("invalid bearer token: ") and claim in body["detail"]
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert ctx.audit.recent("t1", 10) == []  # nothing was done in any tenant's name


def test_issuers_sharing_a_key_file_verify_each_others_tokens(tmp_path):
    """Several workers (or a restart) on one key file: one signing key, so a token minted by one verifies at the
    others. A process's own key made every token minted elsewhere, or before a restart, a 401."""
    import os
    import stat
    import subprocess
    import sys

    from services.common.auth import Principal, TokenIssuer

    path = tmp_path / "keys" / "jwt-signing-key.pem"
    first = TokenIssuer("http://127.0.0.1:8100", key_path=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and b"PRIVATE KEY" in path.read_bytes()
    token = first.issue(Principal("ann", "t1", ("viewer",), key_id="ann"))
    # another process (a second worker, the service after a restart) reading the same file
    script = ("import sys; from services.common.auth import TokenIssuer; "
              "print(TokenIssuer('http://127.0.0.1:8100', key_path=sys.argv[1]).verify(sys.argv[2]).tenant)")
    other = subprocess.run([sys.executable, "-c", script, str(path), token], capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert other.returncode == 0 and other.stdout.strip() == "t1", other.stderr
    assert TokenIssuer("http://127.0.0.1:8100", key_path=path).jwks() == first.jwks()
    with pytest.raises(jwt.InvalidSignatureError):  # a process without the file is still another key
        TokenIssuer("http://127.0.0.1:8100").verify(token)


def test_issuers_starting_at_once_agree_on_one_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from services.common.auth import TokenIssuer

    path = tmp_path / "jwt-signing-key.pem"
    with ThreadPoolExecutor(8) as pool:
        issuers = list(pool.map(lambda _: TokenIssuer("http://x", key_path=path), range(16)))
    assert len({issuer.kid for issuer in issuers}) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["jwt-signing-key.pem"]  # no temporary file left


@pytest.mark.parametrize("content", [b"", b"not a key", b"RSA"])
def test_a_damaged_or_foreign_key_file_is_an_error_not_replaced(tmp_path, content):
    from services.common.auth import TokenIssuer

    path = tmp_path / "jwt-signing-key.pem"
    if content == b"RSA":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        content = rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(content)
    with pytest.raises(ValueError, match="JWT signing key"):
        TokenIssuer("http://x", key_path=path)
    assert path.read_bytes() == content


def test_tokens_tolerate_a_small_clock_skew_between_hosts():
    """Hosts sharing a signing key (PLATFORMQ_SERVICES_JWT_KEY_FILE) have clocks a few seconds apart: a token
    minted where the clock runs ahead carries an iat/nbf in the verifier's future, and was refused ("not yet
    valid") by the other hosts until their clocks caught up, so a client minting a token behind a load balancer
    got 401s at random. A leeway of CLOCK_SKEW_S applies to iat, nbf and exp; beyond it tokens are refused."""
    import time

    from services.common.auth import CLOCK_SKEW_S

    ctx = ServiceContext("a")
    principal = ctx.keys.lookup(ctx.keys.create("alice", "t1", ["viewer"]))
    now = time.time()
    assert ctx.tokens.verify(ctx.tokens.issue(principal, now=now + 5)).tenant == "t1"  # minted 5 s "ahead"
    expired_just_now = ctx.tokens.issue(principal, now=now - ctx.tokens.ttl_s - 5)
    assert ctx.tokens.verify(expired_just_now).subject == "alice"  # by a clock 5 s behind, it has not expired
    with pytest.raises(jwt.ImmatureSignatureError):
        ctx.tokens.verify(ctx.tokens.issue(principal, now=now + CLOCK_SKEW_S + 10))
    with pytest.raises(jwt.ExpiredSignatureError):
        ctx.tokens.verify(ctx.tokens.issue(principal, now=now - ctx.tokens.ttl_s - CLOCK_SKEW_S - 10))
