"""Several credentials processes on one status store: the store, not a process's start-time memory, decides."""

from services.credentials import Ed25519KeyPair, StatusList
from services.credentials.store import CredentialStore
from tests.services.credentials.test_store import app_on, issue, set_status, verify
from tests.services.problems import is_problem

X = "urn:uuid:00000000-0000-4000-8000-0000000000e1"
Y = "urn:uuid:00000000-0000-4000-8000-0000000000e2"


def processes(tmp_path):
    key_pair = Ed25519KeyPair.generate()
    url = f"sqlite:///{tmp_path / 'credentials.db'}"
    return url, lambda: app_on(CredentialStore(url), key_pair)


def test_a_stale_process_can_neither_hide_nor_undo_a_revocation(tmp_path):
    url, start = processes(tmp_path)
    _, client_a, key_a = start()
    x = issue(client_a, key_a, X)
    _, client_b, key_b = start()  # loads X as active
    assert set_status(client_a, key_a, X, "revoked").status_code == 200

    out = verify(client_b, key_b, x)
    assert out["revoked"] is True and out["verified"] is False
    r = set_status(client_b, key_b, X, "suspended")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert is_problem(set_status(client_b, key_b, X, "active"), 409)["detail"].endswith("permanent")
    assert [(s.revoked, s.suspended) for s in CredentialStore(url).load()] == [(True, True)]

    _, client_c, key_c = start()  # a restart after B's writes
    assert verify(client_c, key_c, x)["revoked"] is True
    is_problem(set_status(client_c, key_c, X, "active"), 409)


def test_the_store_keeps_a_revocation_whatever_a_stale_writer_sends(tmp_path):
    store = CredentialStore(f"sqlite:///{tmp_path / 'credentials.db'}")
    store.add("t1", X, 7)
    store.set_status("t1", X, True, False)
    store.set_status("t1", X, False, True)  # computed from a view older than the revocation
    stored = store.get("t1", X)
    assert (stored.index, stored.revoked, stored.suspended) == (7, True, True)
    store.set_status("t1", X, False, False)
    assert store.get("t1", X).revoked is True and store.get("t1", Y) is None


def test_a_suspension_lifted_by_another_process_is_lifted_everywhere(tmp_path):
    _, start = processes(tmp_path)
    _, client_a, key_a = start()
    x = issue(client_a, key_a, X)
    assert set_status(client_a, key_a, X, "suspended").status_code == 200
    assert verify(client_a, key_a, x)["suspended"] is True
    _, client_b, key_b = start()
    assert set_status(client_b, key_b, X, "active").json()["status"] == "active"
    out = verify(client_a, key_a, x)
    assert out["suspended"] is False and out["verified"] is True
    bits = client_a.get("/status-lists/suspension", headers=key_a).json()["credentialSubject"]["encodedList"]
    assert not StatusList.decode(bits, "suspension").get(int(x["credentialStatus"][0]["statusListIndex"]))


def test_a_credential_another_process_issued_is_known(tmp_path):
    _, start = processes(tmp_path)
    _, client_a, key_a = start()
    _, client_b, key_b = start()  # before A issued anything: B knows neither the tenant nor the credential
    y = issue(client_a, key_a, Y)
    lists_url = y["credentialStatus"][0]["statusListCredential"]
    path = lists_url.removeprefix("http://127.0.0.1")
    assert client_b.get(path, headers=key_b).status_code == 200
    assert verify(client_b, key_b, y)["verified"] is True
    r = set_status(client_b, key_b, Y, "revoked")
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert verify(client_a, key_a, y)["revoked"] is True


def test_a_store_that_cannot_be_read_serves_no_list(tmp_path, monkeypatch):
    """A list that may miss another process's revocation fails closed rather than being served from memory."""
    _, start = processes(tmp_path)
    _, client, key = start()
    x = issue(client, key, X)

    def down(*args):
        raise ConnectionError("status store down")

    with monkeypatch.context() as patch:
        patch.setattr(CredentialStore, "indexes_set", down)
        problem = is_problem(client.get("/status-lists/revocation", headers=key), 503)
        assert "status store down" not in problem["detail"]
        # no verdict either: a 503 clients resend (it was `verified: false`, a good credential called bad)
        problem = is_problem(client.post("/credentials/verify", json={"verifiableCredential": x}, headers=key), 503)
        assert problem["type"].endswith("status-store-unavailable")
    assert verify(client, key, x)["verified"] is True
