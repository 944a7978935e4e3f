"""The issuer's status store: revocations, suspensions and held status-list indexes outlive the service process."""

import random

import pytest
from fastapi.testclient import TestClient

from resources.services import build_local_app
from services.common.app import ServiceContext
from services.credentials import Ed25519KeyPair
from services.credentials.api import create_credentials_app
from services.credentials.store import CredentialStore
from tests.services.credentials.test_api import model_credential
from tests.services.problems import is_problem

STATUS = "BitstringStatusListEntry"


def app_on(store, key_pair):
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    app = create_credentials_app(ctx, issuer_key_pair=key_pair, store=store)
    return app, TestClient(app, raise_server_exceptions=False), {"X-API-Key": ctx.keys.create("erin", "t1", ["engineer"])}


def issue(client, key, credential_id):
    r = client.post("/credentials/issue", json={"credential": model_credential(id=credential_id)}, headers=key)
    assert r.status_code == 201, r.text
    return r.json()["verifiableCredential"]


def set_status(client, key, credential_id, status):
    return client.post("/credentials/status", json={"credentialId": credential_id, "credentialStatus": [
        {"type": STATUS, "status": status}]}, headers=key)


def verify(client, key, vc):
    r = client.post("/credentials/verify", json={"verifiableCredential": vc}, headers=key)
    assert r.status_code == 200, r.text
    return r.json()


class DrawsFirst(random.Random):
    """A status-list draw that yields ``index`` first, then random ones."""

    def __init__(self, index: int):
        super().__init__(1)
        self.first = index

    def randrange(self, n):
        first, self.first = self.first, None
        return first if first is not None else super().randrange(n)


def index_of(vc) -> int:
    return int(vc["credentialStatus"][0]["statusListIndex"])


def test_a_revocation_outlives_a_restart_of_the_served_app(tmp_path):
    """`platformq serve`'s credentials app (build_local_app): restarting it used to forget every status."""
    def served():
        app, ctx = build_local_app("credentials", str(tmp_path))
        return TestClient(app, raise_server_exceptions=False), {"X-API-Key": ctx.keys.create("erin", "t1", ["engineer"])}

    client, key = served()
    revoked = issue(client, key, "urn:uuid:00000000-0000-4000-8000-000000000001")
    suspended = issue(client, key, "urn:uuid:00000000-0000-4000-8000-000000000002")
    active = issue(client, key, "urn:uuid:00000000-0000-4000-8000-000000000003")
    assert set_status(client, key, revoked["id"], "revoked").status_code == 200
    assert set_status(client, key, suspended["id"], "suspended").status_code == 200

    client, key = served()  # a new process on the same home
    assert verify(client, key, revoked)["revoked"] is True and not verify(client, key, revoked)["verified"]
    out = verify(client, key, suspended)
    assert out["suspended"] is True and not out["verified"]
    assert verify(client, key, active)["verified"] is True
    # the tenant still owns its credentials: they can be reinstated, and revocation stays permanent
    assert set_status(client, key, suspended["id"], "active").json()["status"] == "active"
    assert verify(client, key, suspended)["verified"] is True
    assert "permanent" in is_problem(set_status(client, key, revoked["id"], "active"), 409)["detail"]
    # an id issued before the restart is still taken for this tenant
    r = client.post("/credentials/issue", json={"credential": model_credential(id=active["id"])}, headers=key)
    is_problem(r, 409)


def test_a_restarted_issuer_never_hands_out_a_held_index(tmp_path):
    key_pair = Ed25519KeyPair.generate()
    store = CredentialStore(f"sqlite:///{tmp_path / 'credentials.db'}")
    app, client, key = app_on(store, key_pair)
    first = issue(client, key, "urn:uuid:00000000-0000-4000-8000-00000000000a")
    assert set_status(client, key, first["id"], "revoked").status_code == 200

    app, client, key = app_on(store, key_pair)
    registry = app.state.issuer_for("t1").registry
    assert index_of(first) in registry.allocated

    registry._rng = DrawsFirst(index_of(first))  # the held index: the registry must skip it
    second = issue(client, key, "urn:uuid:00000000-0000-4000-8000-00000000000b")
    assert index_of(second) != index_of(first)
    assert verify(client, key, second)["verified"] is True  # not revoked along with the first
    assert {(s.credential_id, s.index, s.revoked) for s in store.load()} == {
        (first["id"], index_of(first), True), (second["id"], index_of(second), False)}


def test_two_processes_on_one_store_never_share_an_index(tmp_path):
    """Another process took the index this one drew (its lists in memory did not know): sign with another."""
    key_pair = Ed25519KeyPair.generate()
    url = f"sqlite:///{tmp_path / 'credentials.db'}"
    app_a, client_a, key_a = app_on(CredentialStore(url), key_pair)
    app_b, client_b, key_b = app_on(CredentialStore(url), key_pair)  # loaded before A issued
    a = issue(client_a, key_a, "urn:uuid:00000000-0000-4000-8000-0000000000a1")

    registry_b = app_b.state.issuer_for("t1").registry
    registry_b._rng = DrawsFirst(index_of(a))
    b = issue(client_b, key_b, "urn:uuid:00000000-0000-4000-8000-0000000000b1")
    assert index_of(b) != index_of(a)
    assert index_of(b) in registry_b.allocated and index_of(a) in registry_b.allocated
    assert sorted(s.index for s in CredentialStore(url).load()) == sorted([index_of(a), index_of(b)])


class BrokenStore(CredentialStore):
    broken = False

    def set_status(self, *args):
        if self.broken:
            raise ConnectionError("status store down")
        super().set_status(*args)

    def add(self, *args):
        if self.broken:
            raise ConnectionError("status store down")
        super().add(*args)


def test_a_change_the_store_does_not_take_is_not_made(tmp_path):
    store = BrokenStore(f"sqlite:///{tmp_path / 'credentials.db'}")
    app, client, key = app_on(store, Ed25519KeyPair.generate())
    vc = issue(client, key, "urn:uuid:00000000-0000-4000-8000-0000000000c1")
    held = set(app.state.issuer_for("t1").registry.allocated)
    store.broken = True
    problem = is_problem(set_status(client, key, vc["id"], "revoked"), 503)
    assert "nothing was changed" in problem["detail"] and "status store down" not in problem["detail"]
    assert verify(client, key, vc)["verified"] is True  # not revoked in memory either: memory never runs ahead
    r = client.post("/credentials/issue", json={"credential": model_credential(
        id="urn:uuid:00000000-0000-4000-8000-0000000000c2")}, headers=key)
    is_problem(r, 503)
    assert set(app.state.issuer_for("t1").registry.allocated) == held  # the index drawn for it was given back
    store.broken = False
    assert set_status(client, key, vc["id"], "revoked").status_code == 200
    assert [s.revoked for s in store.load()] == [True]


class LostReplyStore(CredentialStore):
    """The record commits and its answer is lost (the connection drops after COMMIT); ``unreadable``: the store
    cannot be read back either."""
    lose, unreadable = False, False

    def add(self, *args):
        super().add(*args)
        if self.lose:
            raise ConnectionError("server closed the connection unexpectedly")

    def get(self, *args):
        if self.unreadable:
            raise ConnectionError("status store down")
        return super().get(*args)


def test_an_issue_whose_record_committed_with_its_answer_lost_is_handed_out(tmp_path):
    store = LostReplyStore(f"sqlite:///{tmp_path / 'credentials.db'}")
    app, client, key = app_on(store, Ed25519KeyPair.generate())
    store.lose = True
    vc = issue(client, key, "urn:uuid:00000000-0000-4000-8000-0000000000e1")  # 201, not 503 then 409 for ever
    [stored] = store.load()
    assert stored.credential_id == vc["id"] and stored.index == int(vc["credentialStatus"][0]["statusListIndex"])
    assert stored.index in app.state.issuer_for("t1").registry.allocated
    assert verify(client, key, vc)["verified"] is True
    # unreadable as well: the answer says the outcome is unknown, not "nothing was changed"
    store.unreadable = True
    r = client.post("/credentials/issue", json={"credential": model_credential(
        id="urn:uuid:00000000-0000-4000-8000-0000000000e2")}, headers=key)
    problem = is_problem(r, 500)  # not the 503 on which clients resend: the outcome is unknown
    assert problem["type"].endswith("/status-store-unconfirmed") and "may have been recorded" in problem["detail"]


@pytest.mark.slow
def test_the_status_store_on_postgres():
    """The production store (Postgres, started by make test via infra/scripts/test-services.sh)."""
    from tests.integration.servers import PG_DSN, postgres_database

    key_pair = Ed25519KeyPair.generate()
    with postgres_database() as db:
        url = PG_DSN.format(db=db)
        store = CredentialStore(url)
        _, client, key = app_on(store, key_pair)
        vc = issue(client, key, "urn:uuid:00000000-0000-4000-8000-0000000000d1")
        assert set_status(client, key, vc["id"], "revoked").status_code == 200
        store.close()
        store = CredentialStore(url)
        _, client, key = app_on(store, key_pair)
        assert verify(client, key, vc)["revoked"] is True
        store.close()


class DrawsThese(random.Random):
    """A status-list draw that yields ``indexes`` in order, then random ones."""

    def __init__(self, indexes):
        super().__init__(2)
        self.queue = list(indexes)

    def randrange(self, n):
        return self.queue.pop(0) if self.queue else super().randrange(n)


def test_an_index_taken_by_another_process_refreshes_the_taken_indexes_from_the_store(tmp_path):
    """On IndexTaken the retry drew from this process's own view, which never learnt the other processes' indexes:
    as the list filled, five collisions in a row answered 503 (review item 5). The first collision reads the
    tenant's taken indexes from the store, so the retry draws a free one."""
    key_pair = Ed25519KeyPair.generate()
    url = f"sqlite:///{tmp_path / 'credentials.db'}"
    app_a, client_a, key_a = app_on(CredentialStore(url), key_pair)
    app_b, client_b, key_b = app_on(CredentialStore(url), key_pair)  # loaded before A issued
    taken = [index_of(issue(client_a, key_a, f"urn:uuid:00000000-0000-4000-8000-0000000001{i:02d}"))
             for i in range(8)]
    registry_b = app_b.state.issuer_for("t1").registry
    registry_b._rng = DrawsThese(taken)  # B's draws hit every index A holds, in turn
    b = issue(client_b, key_b, "urn:uuid:00000000-0000-4000-8000-0000000002b1")
    assert index_of(b) not in taken
    assert set(taken) <= registry_b.allocated
    assert verify(client_b, key_b, b)["verified"] is True


def test_issued_status_list_urls_use_the_configured_public_url_and_old_ones_still_verify(tmp_path, monkeypatch):
    """build_local_app (platformq serve, in-process services) never passed base_url: every credential pointed at
    http://127.0.0.1/status-lists/... (no port, no public address; review item 6). PLATFORMQ_CREDENTIALS_PUBLIC_URL
    names the address; credentials issued under the old prefix still resolve and verify."""
    from resources.settings import load_settings
    from services.credentials.api import LEGACY_BASE_URL

    def served(**kwargs):
        app, ctx = build_local_app("credentials", str(tmp_path), **kwargs)
        return TestClient(app, raise_server_exceptions=False), {"X-API-Key": ctx.keys.create("erin", "t1", ["engineer"])}

    client, key = served(credentials_public_url=LEGACY_BASE_URL)  # what every earlier start issued under
    old = issue(client, key, "urn:uuid:00000000-0000-4000-8000-0000000003a1")
    assert old["credentialStatus"][0]["statusListCredential"].startswith("http://127.0.0.1/status-lists/")

    monkeypatch.setenv("PLATFORMQ_CREDENTIALS_PUBLIC_URL", "https://vc.platformq.example/")
    load_settings.cache_clear()
    try:
        client, key = served()
    finally:
        load_settings.cache_clear()
    new = issue(client, key, "urn:uuid:00000000-0000-4000-8000-0000000003a2")
    urls = [e["statusListCredential"] for e in new["credentialStatus"]]
    assert all(u.startswith("https://vc.platformq.example/status-lists/z") for u in urls), urls
    assert verify(client, key, new)["verified"] is True
    assert verify(client, key, old)["verified"] is True  # the old prefix still resolves
    assert set_status(client, key, old["id"], "revoked").status_code == 200
    out = verify(client, key, old)
    assert out["revoked"] is True and out["verified"] is False
    assert verify(client, key, new)["verified"] is True

    client, key = served(credentials_public_url="https://creds.example:8443")  # the explicit argument wins
    assert issue(client, key, "urn:uuid:00000000-0000-4000-8000-0000000003a3")["credentialStatus"][0][
        "statusListCredential"].startswith("https://creds.example:8443/status-lists/")


def test_processes_sharing_a_store_sign_with_one_issuer_key(tmp_path):
    """Two processes (homes) issuing into one store: each made its own issuer key under its home, so each named
    its own status lists and one could not check the other's credentials. With one key file they are one issuer;
    a shared store without one is refused at load."""
    import pytest

    from resources.settings import Settings

    store = f"sqlite:///{tmp_path / 'shared-credentials.db'}"
    key_file = tmp_path / "secrets" / "issuer-key.json"

    def served(home):
        app, ctx = build_local_app("credentials", str(tmp_path / home), credentials_store_url=store,
                                   credentials_issuer_key_file=str(key_file))
        return TestClient(app, raise_server_exceptions=False), {"X-API-Key": ctx.keys.create("erin", "t1", ["engineer"])}

    (one, key1), (two, key2) = served("host-1"), served("host-2")
    vc = issue(one, key1, "urn:uuid:00000000-0000-4000-8000-0000000004a1")
    assert verify(two, key2, vc)["verified"] is True
    assert set_status(two, key2, vc["id"], "revoked").status_code == 200
    out = verify(one, key1, vc)
    assert out["revoked"] is True and out["verified"] is False
    with pytest.raises(ValueError, match="PLATFORMQ_CREDENTIALS_ISSUER_KEY_FILE"):
        Settings(credentials_store_url="postgresql+psycopg2://pq:pq@127.0.0.1:5432/services")
    assert Settings(credentials_store_url="postgresql+psycopg2://pq:pq@127.0.0.1:5432/services",
                    credentials_issuer_key_file=key_file).credentials_issuer_key_file == key_file


class UnreadableStore(CredentialStore):
    down = False

    def indexes_set(self, *args):
        if self.down:
            raise ConnectionError("status store down")
        return super().indexes_set(*args)


def test_a_verify_while_the_status_store_is_down_is_a_503_not_a_verdict(tmp_path):
    """The service's own store being unreachable says nothing about the credential: it answered 200
    `verified: false`, so a brief outage failed the blocking `credentials_verify` check of every release in it
    (and told any verifier a good credential was bad). It is a 503 clients resend, and the credential verifies
    once the store is back."""
    store = UnreadableStore(f"sqlite:///{tmp_path / 'credentials.db'}")
    app, client, key = app_on(store, Ed25519KeyPair.generate())
    vc = issue(client, key, "urn:uuid:00000000-0000-4000-8000-0000000000d1")
    store.down = True
    r = client.post("/credentials/verify", json={"verifiableCredential": vc}, headers=key)
    problem = is_problem(r, 503)
    assert problem["type"].endswith("status-store-unavailable") and "status store down" not in problem["detail"]
    store.down = False
    assert verify(client, key, vc)["verified"] is True
