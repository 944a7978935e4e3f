"""API keys an admin manages over HTTP (/auth/keys on every service): create, list, revoke; revocation ends
the key and every token minted from it; keys persist, as hashes only, in a 0600 file."""

import io
import json
import logging
import os
import stat

import httpx
import pytest

from services.common.app import ServiceContext
from services.common.auth import ApiKeyStore, Principal, SqlApiKeyStore
from services.trading.api import create_trading_app
from services.trading.exchange import Exchange
from tests.services.problems import is_problem
from tests.services.serving import free_port, serve

PROBLEMS = "https://platformq.dev/problems/"


@pytest.fixture(params=["file", "sqlite", "postgres"])
def key_store(request, tmp_path):
    """Each persistent key store: the 0600 file, and the SQL store on SQLite and on the local Postgres."""
    if request.param == "file":
        yield ApiKeyStore(tmp_path / "api-keys.json")
    elif request.param == "sqlite":
        yield SqlApiKeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    else:
        from tests.integration.servers import PG_DSN, postgres_database

        with postgres_database() as db:
            store = SqlApiKeyStore(PG_DSN.format(db=db))
            yield store
            store._engine.dispose()


@pytest.fixture
def service(tmp_path, key_store):
    """The trading app on a real loopback port, with a persistent key store: (base url, ctx, t1 admin key)."""
    port = free_port()
    ctx = ServiceContext("trading", issuer_url=f"http://127.0.0.1:{port}", rate=1000.0, burst=1000,
                         keys=key_store, audit_path=str(tmp_path / "audit.jsonl"))
    admin = ctx.keys.create("root", "t1", ["admin"])
    with serve(create_trading_app(ctx, Exchange(["ACME"])), port) as base:
        yield base, ctx, admin


def key_header(key: str) -> dict:
    return {"X-API-Key": key}


def create(base: str, admin: str, subject: str = "ci", roles=("viewer",)) -> dict:
    r = httpx.post(f"{base}/auth/keys", json={"subject": subject, "roles": list(roles)}, headers=key_header(admin))
    assert r.status_code == 201, r.text
    return r.json()


def test_a_created_key_works_and_is_listed_without_its_secret(service):
    base, ctx, admin = service
    r = httpx.post(f"{base}/auth/keys", json={"subject": "ci", "roles": ["viewer"]}, headers=key_header(admin))
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    created = r.json()
    assert created["api_key"].startswith("pq_") and created["key_id"]
    assert (created["subject"], created["tenant"], created["roles"], created["revoked_at"]) == ("ci", "t1", ["viewer"],
                                                                                                None)
    assert httpx.get(f"{base}/v1/instruments", headers=key_header(created["api_key"])).json() == ["ACME"]
    # a viewer key reads, and cannot do what a viewer may not
    assert httpx.post(f"{base}/v1/accounts", json={"account_id": "a1"},
                      headers=key_header(created["api_key"])).status_code == 403

    listing = httpx.get(f"{base}/auth/keys", headers=key_header(admin))
    assert listing.status_code == 200
    entries = {e["key_id"]: e for e in listing.json()}
    assert set(entries) == {ctx.keys.lookup(admin).key_id, created["key_id"]}
    assert entries[created["key_id"]] == {k: v for k, v in created.items() if k != "api_key"}
    for secret in (created["api_key"], admin, *ctx.keys.stored_hashes()):
        assert secret not in listing.text


def test_revoking_a_key_ends_it_and_every_token_minted_from_it(service):
    base, ctx, admin = service
    created = create(base, admin)
    key = created["api_key"]
    token = httpx.post(f"{base}/auth/token", json={"api_key": key}).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{base}/v1/instruments", headers=bearer).status_code == 200

    r = httpx.delete(f"{base}/auth/keys/{created['key_id']}", headers=key_header(admin))
    assert r.status_code == 200 and r.json()["revoked_at"] and r.json()["key_id"] == created["key_id"]
    assert "api_key" not in r.json()

    body = is_problem(httpx.get(f"{base}/v1/instruments", headers=key_header(key)), 401)
    assert body["type"] == PROBLEMS + "invalid-api-key"
    body = is_problem(httpx.post(f"{base}/auth/token", json={"api_key": key}), 401)
    assert body["type"] == PROBLEMS + "invalid-api-key"
    r = httpx.get(f"{base}/v1/instruments", headers=bearer)  # minted before the revocation
    body = is_problem(r, 401)
    assert body["type"] == PROBLEMS + "invalid-token" and "revoked" in body["detail"]
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    # revoking again is harmless and keeps the first revocation time; the listing shows the key as revoked
    again = httpx.delete(f"{base}/auth/keys/{created['key_id']}", headers=key_header(admin))
    assert again.status_code == 200 and again.json() == r_json_of(base, admin, created["key_id"])
    # the admin's own key and tokens are untouched
    admin_token = httpx.post(f"{base}/auth/token", json={"api_key": admin}).json()["access_token"]
    assert httpx.get(f"{base}/auth/keys", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200


def r_json_of(base: str, admin: str, key_id: str) -> dict:
    return next(e for e in httpx.get(f"{base}/auth/keys", headers=key_header(admin)).json() if e["key_id"] == key_id)


def test_a_token_tied_to_no_key_still_works_and_one_naming_an_unknown_key_does_not(service):
    base, ctx, _ = service
    free = ctx.tokens.issue(Principal("svc", "t1", ("viewer",), key_id="svc"))
    assert httpx.get(f"{base}/v1/instruments", headers={"Authorization": f"Bearer {free}"}).status_code == 200
    ghost = ctx.tokens.issue(Principal("svc", "t1", ("viewer",), key_id="svc", api_key_id="0123456789abcdef"))
    body = is_problem(httpx.get(f"{base}/v1/instruments", headers={"Authorization": f"Bearer {ghost}"}), 401)
    assert body["type"] == PROBLEMS + "invalid-token"


def test_another_tenants_admin_can_neither_list_nor_revoke_the_keys(service):
    base, ctx, admin = service
    victim = create(base, admin)
    other_admin = ctx.keys.create("mallory", "t2", ["admin"])
    listing = httpx.get(f"{base}/auth/keys", headers=key_header(other_admin)).json()
    assert [e["tenant"] for e in listing] == ["t2"] and victim["key_id"] not in json.dumps(listing)

    foreign = httpx.delete(f"{base}/auth/keys/{victim['key_id']}", headers=key_header(other_admin))
    unknown = httpx.delete(f"{base}/auth/keys/0123456789abcdef", headers=key_header(other_admin))
    foreign_body, unknown_body = is_problem(foreign, 404), is_problem(unknown, 404)
    assert foreign_body["type"] == unknown_body["type"] == PROBLEMS + "unknown-api-key"
    assert set(foreign_body) == set(unknown_body)
    assert httpx.get(f"{base}/v1/instruments", headers=key_header(victim["api_key"])).status_code == 200
    # a key created by t2's admin belongs to t2, whatever it asks for
    made = httpx.post(f"{base}/auth/keys", json={"subject": "x", "roles": ["admin"], "tenant": "t1"},
                      headers=key_header(other_admin))
    assert made.status_code == 422
    made = create(base, other_admin, "x", ["admin"])
    assert made["tenant"] == "t2" and made["key_id"] not in json.dumps(
        httpx.get(f"{base}/auth/keys", headers=key_header(admin)).json())


@pytest.mark.parametrize("role", ["engineer", "trader", "viewer", "auditor"])
def test_only_admins_manage_keys(service, role):
    base, ctx, admin = service
    victim = create(base, admin)
    key = ctx.keys.create("someone", "t1", [role])
    for r in (httpx.post(f"{base}/auth/keys", json={"subject": "x", "roles": ["admin"]}, headers=key_header(key)),
              httpx.post(f"{base}/auth/keys", json={"roles": ["nope"]}, headers=key_header(key)),
              httpx.get(f"{base}/auth/keys", headers=key_header(key)),
              httpx.delete(f"{base}/auth/keys/{victim['key_id']}", headers=key_header(key))):
        assert is_problem(r, 403)["type"] == PROBLEMS + "missing-permission"
    assert is_problem(httpx.get(f"{base}/auth/keys"), 401)["type"] == PROBLEMS + "missing-credentials"
    assert [e["revoked_at"] for e in ctx.keys.list("t1") if e["key_id"] == victim["key_id"]] == [None]


@pytest.mark.parametrize("body", [
    {"subject": "ci", "roles": ["superuser"]},
    {"subject": "ci", "roles": ["viewer", "root"]},
    {"subject": "ci", "roles": []},
    {"subject": "ci", "roles": "viewer"},
    {"roles": ["viewer"]},
    {"subject": "", "roles": ["viewer"]},
    {"subject": "two words", "roles": ["viewer"]},
    {"subject": "bootstrap-admin", "roles": ["admin"]},
    {"subject": "ci", "roles": ["viewer"], "tenant": "t2"},
], ids=["unknown-role", "one-unknown-role", "no-role", "roles-not-a-list", "no-subject", "empty-subject",
        "spaces", "reserved-subject", "tenant-given"])
def test_invalid_key_requests_are_422_problems(service, body):
    base, ctx, admin = service
    before = ctx.keys.list("t1")
    r = httpx.post(f"{base}/auth/keys", json=body, headers=key_header(admin))
    problem = is_problem(r, 422)
    assert problem["type"] == PROBLEMS + "validation-error" and problem["errors"]
    assert ctx.keys.list("t1") == before


def test_the_clear_key_is_in_no_log_line_and_no_audit_record(service, tmp_path):
    base, ctx, admin = service
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    # the logger is process-wide by name: another test's library (a logging config, a level) must not mute it here
    level, disabled = ctx.logger.level, ctx.logger.disabled
    ctx.logger.setLevel(logging.INFO)
    ctx.logger.disabled = False
    ctx.logger.addHandler(handler)
    try:
        created = create(base, admin)
        httpx.post(f"{base}/auth/token", json={"api_key": created["api_key"]})
        httpx.get(f"{base}/auth/keys", headers=key_header(admin))
        httpx.delete(f"{base}/auth/keys/{created['key_id']}", headers=key_header(admin))
        httpx.post(f"{base}/auth/keys", json={"subject": "ci", "roles": ["nope"]}, headers=key_header(admin))
    finally:
        ctx.logger.removeHandler(handler)
        ctx.logger.setLevel(level)
        ctx.logger.disabled = disabled
    audit_file = (tmp_path / "audit.jsonl").read_text()
    records = [json.loads(line) for line in audit_file.splitlines()]
    assert [(r["method"], r["status"], r["tenant"], r["subject"])
            for r in records if r["path"].startswith("/auth/keys")] == [
        ("POST", 201, "t1", "root"), ("DELETE", 200, "t1", "root"), ("POST", 422, "t1", "root")]
    memory = json.dumps([vars(r) for r in ctx.audit.recent("t1", 100)])
    for secret in (created["api_key"], admin, *ctx.keys.stored_hashes()):
        assert secret not in lines.getvalue() and secret not in audit_file and secret not in memory
    assert lines.getvalue()  # the requests were logged


def test_a_store_on_the_same_path_sees_created_and_revoked_keys(tmp_path):
    path = tmp_path / "state" / "api-keys.json"  # the folder is created with the file
    store = ApiKeyStore(path)
    kept = store.create("alice", "t1", ["trader", "viewer"])
    gone = store.create("bob", "t1", ["viewer"])
    other = store.create("carol", "t2", ["admin"])
    gone_id = store.lookup(gone).key_id
    with pytest.raises(KeyError):
        store.revoke("t2", gone_id)  # carol's tenant has no such key
    assert store.lookup(gone) is not None
    revoked = store.revoke("t1", gone_id)
    assert store.revoke("t1", gone_id) == revoked  # idempotent: the first revocation time stays
    assert store.lookup(gone) is None

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    for key in (kept, gone, other):
        assert key not in text and key[3:] not in text
    assert sorted(os.listdir(path.parent)) == ["api-keys.json", "api-keys.json.lock"]  # no temporary file left

    again = ApiKeyStore(path)
    assert again.lookup(kept) == store.lookup(kept)
    assert again.lookup(kept).roles == ("trader", "viewer") and again.lookup(other).tenant == "t2"
    assert again.lookup(gone) is None
    assert again.list("t1") == store.list("t1") and len(again.list("t1")) == 2
    assert [e["revoked_at"] for e in again.list("t1")] == [None, revoked["revoked_at"]]
    assert all("hash" not in e for e in again.list("t1"))
    assert sorted(again.stored_hashes()) == sorted(store.stored_hashes())
    # a change made through the second store persists too, still 0600
    again.revoke("t2", again.lookup(other).key_id)
    assert ApiKeyStore(path).lookup(other) is None and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_stores_sharing_a_file_see_each_others_changes_at_the_next_request(tmp_path):
    path = tmp_path / "api-keys.json"
    first, second = ApiKeyStore(path), ApiKeyStore(path)  # e.g. two API workers
    key = second.create("alice", "t1", ["viewer"])
    assert first.lookup(key).subject == "alice"  # created elsewhere: valid here without a restart
    first.revoke("t1", first.lookup(key).key_id)
    assert second.lookup(key) is None and not second.is_active(second.list("t1")[0]["key_id"])  # revoked elsewhere
    other = first.create("bob", "t1", ["viewer"])
    assert [e["subject"] for e in second.list("t1")] == ["alice", "bob"] and second.lookup(other) is not None


def test_two_processes_creating_keys_at_once_on_one_file_lose_none(tmp_path):
    """Each change is made under the file's lock on the records as they are then: no process overwrites
    another's keys (it used to: each wrote its own view of the file)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    path = tmp_path / "api-keys.json"
    script = ("import sys\nfrom services.common.auth import ApiKeyStore\nstore = ApiKeyStore(sys.argv[1])\n"
              "for i in range(40):\n    print(store.create(f'{sys.argv[2]}-{i}', 't1', ['viewer']), flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), name], cwd=root, stdout=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    keys = [line for proc in procs for line in proc.communicate(timeout=120)[0].split()]
    assert [proc.returncode for proc in procs] == [0, 0] and len(keys) == 80
    store = ApiKeyStore(path)
    assert len(store.list("t1")) == 80 and all(store.lookup(key) is not None for key in keys)


def test_an_in_memory_store_writes_nothing_and_a_damaged_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ApiKeyStore()
    key = store.create("alice", "t1", ["viewer"])
    store.revoke("t1", store.lookup(key).key_id)
    assert store.lookup(key) is None and os.listdir(tmp_path) == []
    damaged = tmp_path / "api-keys.json"
    damaged.write_text('{"version": 1, "keys": [{"key_id": "x"}]}')
    with pytest.raises(ValueError, match="api-keys.json"):
        ApiKeyStore(damaged)


def test_sql_stores_on_one_database_share_every_change(tmp_path):
    """Two service processes on two hosts (no shared file system), one database: a key created or revoked through
    one counts through the other at its next request; hashes only in the table."""
    from tests.integration.servers import PG_DSN, postgres_database

    with postgres_database() as db:
        url = PG_DSN.format(db=db)
        first, second = SqlApiKeyStore(url), SqlApiKeyStore(url)
        key = second.create("alice", "t1", ["viewer", "trader"])
        assert first.lookup(key).subject == "alice" and first.lookup(key).roles == ("viewer", "trader")
        key_id = first.lookup(key).key_id
        with pytest.raises(KeyError):
            first.revoke("t2", key_id)  # another tenant's key is an unknown one
        revoked = first.revoke("t1", key_id)
        assert second.lookup(key) is None and not second.is_active(key_id)
        assert second.revoke("t1", key_id) == revoked  # the first revocation time stays
        other = first.create("bob", "t1", ["viewer"])
        assert [e["subject"] for e in second.list("t1")] == ["alice", "bob"] and second.lookup(other) is not None
        assert second.list("t2") == []
        import sqlalchemy as sa

        with first._engine.connect() as conn:
            stored = json.dumps([list(r) for r in conn.execute(sa.text("select * from api_keys"))])
        assert key not in stored and other not in stored and key[3:] not in stored
        for store in (first, second):
            store._engine.dispose()


def test_two_processes_creating_keys_at_once_in_one_database_lose_none(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.integration.servers import PG_DSN, postgres_database

    root = Path(__file__).resolve().parents[2]
    script = ("import sys\nfrom services.common.auth import SqlApiKeyStore\nstore = SqlApiKeyStore(sys.argv[1])\n"
              "for i in range(40):\n    print(store.create(f'{sys.argv[2]}-{i}', 't1', ['viewer']), flush=True)\n")
    with postgres_database() as db:
        url = PG_DSN.format(db=db)
        SqlApiKeyStore(url)._engine.dispose()  # the table exists before both start
        procs = [subprocess.Popen([sys.executable, "-c", script, url, name], cwd=root, stdout=subprocess.PIPE,
                                  text=True) for name in ("a", "b")]
        keys = [line for proc in procs for line in proc.communicate(timeout=120)[0].split()]
        assert [proc.returncode for proc in procs] == [0, 0] and len(keys) == 80
        store = SqlApiKeyStore(url)
        assert len(store.list("t1")) == 80 and all(store.lookup(key) is not None for key in keys)
        store._engine.dispose()


def test_a_key_and_the_tokens_minted_from_it_share_one_rate_limit(tmp_path):
    """Requests with the key counted in the key's bucket and requests with a token minted from it in the
    subject's: alternating the two doubled the key's rate."""
    port = free_port()
    ctx = ServiceContext("trading", issuer_url=f"http://127.0.0.1:{port}", rate=0.001, burst=4,
                         keys=ApiKeyStore(tmp_path / "api-keys.json"), audit_path=str(tmp_path / "audit.jsonl"))
    key = ctx.keys.create("ann", "t1", ["viewer"])
    other = ctx.keys.create("bob", "t1", ["viewer"])
    with serve(create_trading_app(ctx, Exchange(["ACME"])), port) as base:
        token = httpx.post(f"{base}/auth/token", json={"api_key": key}).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        codes = [httpx.get(f"{base}/v1/instruments", headers=headers).status_code
                 for headers in (key_header(key), bearer, key_header(key), bearer, key_header(key), bearer)]
        assert codes == [200, 200, 200, 200, 429, 429]
        assert httpx.get(f"{base}/v1/instruments", headers=key_header(other)).status_code == 200  # its own bucket
