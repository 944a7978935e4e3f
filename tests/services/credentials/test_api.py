"""Credentials API over HTTP (ASGI in process): issue/verify/status round trips, auth, roles, tenancy, problem+json."""

import copy
import time

import pytest
from fastapi.testclient import TestClient

from services.common.app import ServiceContext
from services.credentials import (
    CREDENTIALS_EXAMPLES_V2_URL,
    CREDENTIALS_V2_URL,
    Ed25519KeyPair,
    StatusList,
    verify_credential,
)
from services.credentials.api import MAX_DEPTH, create_credentials_app, tenant_key_pair
from tests.services.problems import is_problem

BASE = "https://vc.platformq.test"
STATUS = "BitstringStatusListEntry"


@pytest.fixture
def ctx():  # tests/services/credentials/conftest.py serves the core's tests; the API's context lives here
    return ServiceContext("test", issuer_url="http://127.0.0.1:8000", rate=1000.0, burst=1000)


@pytest.fixture(scope="module")
def key_pair():
    return Ed25519KeyPair.generate()


@pytest.fixture
def setup(ctx, key_pair):
    app = create_credentials_app(ctx, issuer_key_pair=key_pair, base_url=BASE)
    keys = {
        "t1_engineer": ctx.keys.create("erin", "t1", ["engineer"]),
        "t1_viewer": ctx.keys.create("victor", "t1", ["viewer"]),
        "t1_auditor": ctx.keys.create("audrey", "t1", ["auditor"]),
        "t1_trader": ctx.keys.create("alice", "t1", ["trader"]),
        "t2_engineer": ctx.keys.create("bob", "t2", ["engineer"]),
    }
    return TestClient(app, raise_server_exceptions=False), keys


def h(keys, who):
    return {"X-API-Key": keys[who]}


def model_credential(**extra) -> dict:
    credential = {
        "@context": [CREDENTIALS_V2_URL, CREDENTIALS_EXAMPLES_V2_URL],
        "id": "urn:uuid:7f3c1a52-2f0e-4c55-9d8e-0d1b2c3d4e5f",
        "type": ["VerifiableCredential", "ModelCredential"],
        "validFrom": "2025-01-01T00:00:00Z",
        "credentialSubject": {"id": "urn:platformq:model:price_direction:7", "accuracy": "0.61"},
    }
    credential.update(extra)
    return credential


def issue(client, keys, who="t1_engineer", **extra):
    r = client.post("/credentials/issue", json={"credential": model_credential(**extra)}, headers=h(keys, who))
    assert r.status_code == 201, r.text
    return r.json()["verifiableCredential"]


def verify(client, keys, vc, who="t1_viewer"):
    r = client.post("/credentials/verify", json={"verifiableCredential": vc}, headers=h(keys, who))
    assert r.status_code == 200, r.text
    return r.json()


def set_status(client, keys, credential_id, *statuses, who="t1_engineer"):
    return client.post("/credentials/status", json={"credentialId": credential_id, "credentialStatus": [
        {"type": STATUS, "status": s} for s in statuses]}, headers=h(keys, who))


def test_issue_verify_round_trip(setup, key_pair):
    client, keys = setup
    vc = issue(client, keys)
    t1 = tenant_key_pair(key_pair, "t1")  # the tenant's own did:key, derived from the service's key
    assert vc["issuer"] == t1.did == client.app.state.issuer_for("t1").issuer.id != key_pair.did
    assert vc["proof"]["cryptosuite"] == "eddsa-rdfc-2022"
    assert vc["proof"]["verificationMethod"] == t1.verification_method_id
    entries = {e["statusPurpose"]: e for e in vc["credentialStatus"]}
    assert set(entries) == {"revocation", "suspension"} and all(e["type"] == STATUS for e in entries.values())
    assert entries["revocation"]["statusListCredential"] == f"{BASE}/status-lists/{t1.public_key_multibase}/revocation"
    assert entries["revocation"]["statusListIndex"] == entries["suspension"]["statusListIndex"]
    out = verify(client, keys, vc)
    assert out["verified"] is True and out["errors"] == [] and not out["revoked"] and not out["suspended"]
    assert out["issuer"] == t1.did and "status" in out["checks"]
    assert {(s["statusPurpose"], s["set"]) for s in out["status"]} == {("revocation", False), ("suspension", False)}
    # an independent verifier gets the same answer from the published status lists
    published = lambda url: client.get(url.removeprefix(BASE), headers=h(keys, "t1_viewer")).json()  # noqa: E731
    assert verify_credential(vc, fetch_status_list=published).verified
    # a credential without an id gets a urn:uuid (its handle for status changes); an issuer object works too
    anonymous = model_credential(issuer={"id": t1.did, "name": "platformQ"})
    del anonymous["id"]
    r = client.post("/credentials/issue", headers=h(keys, "t1_engineer"),
                    json={"credential": anonymous, "options": {"created": "2025-06-01T12:00:00Z"}})
    assert r.status_code == 201, r.text
    signed = r.json()["verifiableCredential"]
    assert signed["id"].startswith("urn:uuid:") and signed["proof"]["created"] == "2025-06-01T12:00:00Z"
    assert verify(client, keys, signed)["verified"]


def test_tampered_credential_is_not_verified(setup):
    client, keys = setup
    vc = issue(client, keys)
    tampered = [
        {**vc, "credentialSubject": {**vc["credentialSubject"], "accuracy": "0.99"}},
        {**vc, "validFrom": "2024-01-01T00:00:00Z"},
        {**vc, "credentialStatus": [{**e, "statusListIndex": "0"} for e in vc["credentialStatus"]]},
        {**vc, "proof": {**vc["proof"], "proofValue": "z" + "1" * 86}},
        {k: v for k, v in vc.items() if k != "proof"},
    ]
    for doc in tampered:
        out = verify(client, keys, doc)
        assert out["verified"] is False and out["errors"], doc
    # another key signing "as" this issuer is caught by the issuer binding
    from services.credentials import add_proof

    forged = add_proof({k: v for k, v in vc.items() if k != "proof"}, Ed25519KeyPair.generate())
    out = verify(client, keys, forged)
    assert out["verified"] is False and any("not controlled by the issuer" in e for e in out["errors"])
    # status lists elsewhere are never fetched: such a credential fails closed
    elsewhere = copy.deepcopy(vc)
    elsewhere["credentialStatus"][0]["statusListCredential"] = "https://elsewhere.example/list"
    out = verify(client, keys, elsewhere)
    assert out["verified"] is False and any("not published by this service" in e for e in out["errors"])


def test_revoke_is_permanent_and_fails_verification(setup):
    client, keys = setup
    vc = issue(client, keys)
    before = client.get("/status-lists/revocation", headers=h(keys, "t1_viewer")).json()
    r = set_status(client, keys, vc["id"], "revoked")
    assert r.status_code == 200 and r.json() == {"credentialId": vc["id"], "status": "revoked", "revoked": True,
                                                 "suspended": False}
    out = verify(client, keys, vc)
    assert out["verified"] is False and out["revoked"] is True
    assert any("revoked" in e for e in out["errors"])
    # the published list has the bit set, and is re-signed because it changed
    after = client.get("/status-lists/revocation", headers=h(keys, "t1_viewer")).json()
    index = int(vc["credentialStatus"][0]["statusListIndex"])
    assert StatusList.decode(after["credentialSubject"]["encodedList"], "revocation").get(index)
    assert not StatusList.decode(before["credentialSubject"]["encodedList"], "revocation").get(index)
    assert verify_credential(after, check_status_entries=False).verified
    assert set_status(client, keys, vc["id"], "revoked").status_code == 200  # idempotent
    assert "permanent" in is_problem(set_status(client, keys, vc["id"], "active"), 409)["detail"]
    assert verify(client, keys, vc)["revoked"] is True


def test_suspend_and_unsuspend(setup):
    client, keys = setup
    vc = issue(client, keys)
    assert set_status(client, keys, vc["id"], "suspended").json()["status"] == "suspended"
    out = verify(client, keys, vc)
    assert out["verified"] is False and out["suspended"] is True and out["revoked"] is False
    assert set_status(client, keys, vc["id"], "active").json() == {"credentialId": vc["id"], "status": "active",
                                                                    "revoked": False, "suspended": False}
    assert verify(client, keys, vc)["verified"] is True
    # entries apply in order, all or nothing
    assert set_status(client, keys, vc["id"], "suspended", "active").json()["status"] == "active"
    assert set_status(client, keys, vc["id"], "active", "suspended").json()["status"] == "suspended"
    is_problem(set_status(client, keys, vc["id"], "revoked", "active"), 409)
    assert verify(client, keys, vc)["revoked"] is False  # the refused request changed nothing


def test_status_list_is_signed_and_cached_until_it_changes(setup, key_pair):
    client, keys = setup
    first = client.get("/status-lists/suspension", headers=h(keys, "t1_auditor"))
    assert first.status_code == 200
    doc = first.json()
    t1 = tenant_key_pair(key_pair, "t1")
    assert doc["id"] == f"{BASE}/status-lists/{t1.public_key_multibase}/suspension" and doc["issuer"] == t1.did
    assert client.get(f"/status-lists/{t1.public_key_multibase}/suspension",  # the URL any verifier reads
                      headers=h(keys, "t1_auditor")).json() == doc
    assert "BitstringStatusListCredential" in doc["type"]
    assert verify_credential(doc, check_status_entries=False).verified
    again = client.get("/status-lists/suspension", headers=h(keys, "t1_auditor")).json()
    assert again["proof"] == doc["proof"]
    vc = issue(client, keys)
    assert client.get("/status-lists/suspension", headers=h(keys, "t1_auditor")).json()["proof"] == doc["proof"]
    set_status(client, keys, vc["id"], "suspended")
    changed = client.get("/status-lists/suspension", headers=h(keys, "t1_auditor")).json()
    assert changed["credentialSubject"]["encodedList"] != doc["credentialSubject"]["encodedList"]
    is_problem(client.get("/status-lists/expiry", headers=h(keys, "t1_auditor")), 422)


def test_authentication_and_roles(setup):
    client, keys = setup
    body = {"credential": model_credential()}
    is_problem(client.post("/credentials/issue", json=body), 401)
    is_problem(client.post("/credentials/issue", json=body, headers={"X-API-Key": "pq_wrong"}), 401)
    is_problem(client.get("/status-lists/revocation"), 401)
    for who in ("t1_viewer", "t1_auditor", "t1_trader"):
        assert "credentials:write" in is_problem(client.post("/credentials/issue", json=body, headers=h(keys, who)),
                                                 403)["detail"]
        is_problem(set_status(client, keys, "urn:x", "revoked", who=who), 403)
    vc = issue(client, keys)
    assert "credentials:read" in is_problem(client.post("/credentials/verify", json={"verifiableCredential": vc},
                                                        headers=h(keys, "t1_trader")), 403)["detail"]
    assert verify(client, keys, vc, who="t1_auditor")["verified"]
    token = client.post("/auth/token", json={"api_key": keys["t1_engineer"]}).json()["access_token"]
    r = client.post("/credentials/issue", json={"credential": model_credential(id="urn:uuid:jwt")},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201


def test_invalid_input_is_a_422_problem_and_spends_no_status_index(setup, key_pair):
    client, keys = setup
    registry = client.app.state.issuer_for("t1").registry
    he = h(keys, "t1_engineer")
    cases = [
        (model_credential(credentialStatus={"type": STATUS}), "assigned by the issuer"),
        (model_credential(issuer="did:example:someone-else"), "is not this issuer"),
        (model_credential(credentialSubject={}), "credentialSubject"),
        (model_credential(type=["ModelCredential"]), "VerifiableCredential"),
        (model_credential(**{"@context": [CREDENTIALS_V2_URL]}), "would be dropped"),  # undefined 'accuracy'
        (model_credential(**{"@context": [CREDENTIALS_V2_URL, "https://example.com/ctx"]}), "not bundled"),
        (model_credential(id="not a url"), "id must be a URL"),
        (model_credential(validUntil="tomorrow"), "dateTimeStamp"),
    ]
    for credential, message in cases:
        r = client.post("/credentials/issue", json={"credential": credential}, headers=he)
        assert message in is_problem(r, 422)["detail"], credential
    bad_bodies = [{"credential": model_credential(), "options": {"created": "yesterday"}},
                  {"credential": model_credential(), "options": {"challenge": "x"}},
                  {"credential": model_credential(), "extra": 1}, {"credential": "not an object"}, {}]
    for body in bad_bodies:
        is_problem(client.post("/credentials/issue", json=body, headers=he), 422)
    assert registry.allocated == frozenset()  # nothing rejected used up a status list index
    for body in ({"verifiableCredential": "x"}, {"verifiableCredential": [1]}, {}, {"credential": {}},
                 {"verifiableCredential": {}, "options": {"challenge": "x"}}):
        is_problem(client.post("/credentials/verify", json=body, headers=he), 422)
    r = client.post("/credentials/verify", content=b"{not json", headers={**he, "content-type": "application/json"})
    is_problem(r, 422)
    for body in ({"credentialId": "urn:x", "credentialStatus": []},
                 {"credentialId": "urn:x", "credentialStatus": [{"type": STATUS, "status": "deleted"}]},
                 {"credentialId": "urn:x", "credentialStatus": [{"type": "StatusList2021Entry", "status": "revoked"}]},
                 {"credentialId": "", "credentialStatus": [{"type": STATUS, "status": "revoked"}]}):
        is_problem(client.post("/credentials/status", json=body, headers=he), 422)
    is_problem(set_status(client, keys, "urn:never-issued", "revoked"), 404)


def test_repeatedly_rejected_signed_credentials_spend_no_status_index(setup):
    client, keys = setup
    registry = client.app.state.issuer_for("t1").registry
    signed = issue(client, keys, id="urn:uuid:00000000-0000-4000-8000-000000000001")
    assert len(registry.allocated) == 1
    for _ in range(5):  # resubmitting a credential that already carries a proof
        r = client.post("/credentials/issue", json={"credential": {**model_credential(), "proof": signed["proof"]}},
                        headers=h(keys, "t1_engineer"))
        assert "already carries a proof" in is_problem(r, 422)["detail"]
    assert len(registry.allocated) == 1


def test_documents_that_would_canonicalise_in_exponential_time_are_refused_fast(setup):
    """RDFC-1.0 'poison graphs': a few indistinguishable blank nodes make pyld try every permutation."""
    client, keys = setup
    vc = issue(client, keys)
    clique = [{"@id": f"_:b{i}", "knows": [{"@id": f"_:b{j}"} for j in range(8) if j != i]} for i in range(8)]
    twins = {"knows": [{"knows": [{"name": "a"}] * 8}] * 2}  # 11 s to canonicalise without the guard
    nested = {"name": "a"}
    for _ in range(MAX_DEPTH + 500):
        nested = {"knows": nested}
    poisons = [{"credentialSubject": {"knows": clique}}, {"credentialSubject": twins},
               {"credentialSubject": {"knows": {"@list": ["a"] * 500}}}, {"credentialSubject": nested},
               {"@context": [CREDENTIALS_V2_URL, {"knows": "@id"}]}]
    started = time.perf_counter()
    for change in poisons:
        r = client.post("/credentials/issue", json={"credential": model_credential(**change)},
                        headers=h(keys, "t1_engineer"))
        is_problem(r, 422)
        r = client.post("/credentials/verify", json={"verifiableCredential": {**vc, **change}},
                        headers=h(keys, "t1_viewer"))
        assert is_problem(r, 422)["type"].endswith("unsupported-document")
    assert time.perf_counter() - started < 5


def test_what_issue_hands_out_verify_does_not_refuse_as_too_large(setup):
    """The size limits applied to the unsigned credential on issue: one just under them was issued (a status
    index spent) and then every verify of it answered 422 (the status entries and proof added ~20 values)."""
    from services.credentials.api import MAX_VALUES, document_problem

    client, keys = setup

    def values(v):
        return 1 + (sum(map(values, v.values())) if isinstance(v, dict) else
                    sum(map(values, v)) if isinstance(v, list) else 0)

    def with_tags(n):
        base = model_credential()
        return {**base, "credentialSubject": {**base["credentialSubject"], "tags": [f"t{i}" for i in range(n)]}}

    n = MAX_VALUES - values(with_tags(0)) - 2  # 2: the issuer and id the service fills in
    assert document_problem(with_tags(n)) is None  # within the limits as sent
    r = client.post("/credentials/issue", json={"credential": with_tags(n)}, headers=h(keys, "t1_engineer"))
    if r.status_code == 201:  # if issued, it must verify
        assert verify(client, keys, r.json()["verifiableCredential"])["verified"] is True
    else:  # else refused before a status index is spent, saying why
        assert "JSON values" in is_problem(r, 422)["detail"]
    assert verify(client, keys, issue(client, keys, **{"credentialSubject": with_tags(n - 40)["credentialSubject"]})
                  )["verified"] is True


def test_duplicate_ids_conflict_within_a_tenant_only(setup):
    client, keys = setup
    vc = issue(client, keys)
    r = client.post("/credentials/issue", json={"credential": model_credential()}, headers=h(keys, "t1_engineer"))
    assert "already issued" in is_problem(r, 409)["detail"]
    theirs = issue(client, keys, who="t2_engineer")  # the same id in another tenant is another credential
    assert theirs["id"] == vc["id"] and theirs["credentialStatus"] != vc["credentialStatus"]
    # each tenant issues under its own did:key: a copy of another tenant's credential id is not its credential
    assert theirs["issuer"] != vc["issuer"] and verify(client, keys, theirs)["issuer"] == theirs["issuer"]
    r = client.post("/credentials/issue", headers=h(keys, "t2_engineer"),
                    json={"credential": model_credential(id="urn:uuid:0d9a", issuer=vc["issuer"])})
    assert "is not this issuer" in is_problem(r, 422)["detail"]  # nor can it issue under tenant 1's identifier
    set_status(client, keys, vc["id"], "revoked", who="t2_engineer")
    assert verify(client, keys, theirs)["revoked"] is True
    assert verify(client, keys, vc)["verified"] is True


def test_tenant_isolation_on_every_route(setup):
    """Tenant 2 probes every tenant-scoped route with tenant 1's credential id: always 404, nothing changes."""
    client, keys = setup
    vc = issue(client, keys)
    registry = client.app.state.issuer_for("t1").registry
    before = {p: lst.to_bytes() for p, lst in registry.lists.items()}
    probes = {
        ("POST", "/credentials/status"): [dict(url="/credentials/status", json={
            "credentialId": vc["id"], "credentialStatus": [{"type": STATUS, "status": s}]})
            for s in ("revoked", "suspended", "active")],
    }
    public = {("POST", "/credentials/issue"),  # issues in the caller's own tenant
              ("POST", "/credentials/verify"),  # anyone may verify
              ("GET", "/status-lists/{purpose}"),  # the caller's own tenant's lists
              ("GET", "/status-lists/{issuer_key}/{purpose}")}  # an issuer's published lists, for any verifier
    tenant_routes = {(m, r.path) for r in client.app.routes for m in getattr(r, "methods", ())
                     if r.path.startswith(("/credentials", "/status-lists")) and (m, r.path) not in public}
    assert tenant_routes == set(probes), "a new tenant-scoped route needs an isolation probe"
    for (method, _), attempts in probes.items():
        for kwargs in attempts:
            body = is_problem(client.request(method, **kwargs, headers=h(keys, "t2_engineer")), 404)
            assert body["detail"] == f"unknown credential {vc['id']!r}"
    assert {p: lst.to_bytes() for p, lst in registry.lists.items()} == before
    assert verify(client, keys, vc)["verified"] is True
    # verification itself is public: tenant 2 can check tenant 1's credential, and read its published lists
    assert verify(client, keys, vc, who="t2_engineer")["verified"] is True
    url = vc["credentialStatus"][0]["statusListCredential"].removeprefix(BASE)
    theirs = client.get(url, headers=h(keys, "t2_engineer")).json()
    assert theirs["issuer"] == vc["issuer"] != client.get("/status-lists/revocation",
                                                          headers=h(keys, "t2_engineer")).json()["issuer"]
    is_problem(client.get("/status-lists/z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK/revocation",
                          headers=h(keys, "t2_engineer")), 404)  # no issuer of this service has that key
    assert client.app.state.issued == {"t1": {vc["id"]: int(vc["credentialStatus"][0]["statusListIndex"])}}


def test_audit_records_issuance(setup):
    client, keys = setup
    client.post("/credentials/issue", json={"credential": model_credential()},
                headers={**h(keys, "t1_engineer"), "X-Request-ID": "vc-1"})
    records = client.get("/audit", headers=h(keys, "t1_auditor")).json()
    mine = [r for r in records if r["correlation_id"] == "vc-1"]
    assert mine and mine[0]["status"] == 201 and mine[0]["subject"] == "erin"


def test_a_signed_credential_rewritten_with_full_iris_is_not_verified(setup):
    """The same RDF with a full IRI as the key: the signature holds, so the JSON reader must refuse it."""
    client, keys = setup
    revoked = issue(client, keys)
    assert set_status(client, keys, revoked["id"], "revoked").status_code == 200
    expired = issue(client, keys, id="urn:uuid:00000000-0000-4000-8000-0000000000e1",
                    validUntil="2025-02-01T00:00:00Z")
    assert verify(client, keys, revoked)["revoked"] is True and verify(client, keys, expired)["verified"] is False
    cred = "https://www.w3.org/2018/credentials#"
    status_hidden = copy.deepcopy(revoked)
    status_hidden[cred + "credentialStatus"] = status_hidden.pop("credentialStatus")
    expiry_hidden = copy.deepcopy(expired)
    expiry_hidden[cred + "validUntil"] = {"@value": expiry_hidden.pop("validUntil"),
                                          "@type": "http://www.w3.org/2001/XMLSchema#dateTime"}
    language_added = copy.deepcopy(issue(client, keys, id="urn:uuid:00000000-0000-4000-8000-0000000000e2"))
    language_added["credentialSubject"]["@language"] = "en"
    for vc, key in ((status_hidden, "credentialStatus"), (expiry_hidden, "validUntil"),
                    (language_added, "@language")):
        out = verify(client, keys, vc)
        assert out["verified"] is False, key
        assert any(key in e and "compacted form" in e or "@language outside" in e for e in out["errors"]), out
    r = client.post("/credentials/issue", json={"credential": model_credential(**{cred + "validUntil": "x"})},
                    headers=h(keys, "t1_engineer"))
    assert "compacted form" in is_problem(r, 422)["detail"]


def test_numbers_json_cannot_carry_are_refused_before_a_status_index_is_spent(setup):
    client, keys = setup
    registry = client.app.state.issuer_for("t1").registry
    he = {**h(keys, "t1_engineer"), "content-type": "application/json"}
    body = '{"credential": {"@context": ["%s", "%s"], "type": ["VerifiableCredential"], ' \
           '"credentialSubject": {"id": "urn:x:1", "score": %s}}}'
    for number, message in (("NaN", "finite"), ("Infinity", "finite"), ("1e400", "finite"),
                            ("1" + "0" * 309, "beyond ±2^53"), ("1" + "0" * 21, "beyond ±2^53")):
        r = client.post("/credentials/issue", content=body % (CREDENTIALS_V2_URL, CREDENTIALS_EXAMPLES_V2_URL, number),
                        headers=he)
        assert message in is_problem(r, 422)["detail"], number
    assert registry.allocated == frozenset()
    vc = issue(client, keys)
    vc["credentialSubject"]["accuracy"] = 10**400
    out = verify(client, keys, vc)  # a 200 with the reason, not a 500
    assert out["verified"] is False and any("beyond ±2^53" in e for e in out["errors"])


def test_a_huge_proof_value_is_refused_without_decoding_it(setup):
    client, keys = setup
    vc = issue(client, keys)
    vc["proof"]["proofValue"] = "z" + "2" * 250_000  # base58 decoding is quadratic: ~8 s for this one
    started = time.perf_counter()
    out = verify(client, keys, vc)
    assert out["verified"] is False and any("proofValue" in e and "250001 characters" in e for e in out["errors"])
    vc["proof"]["verificationMethod"] = "did:key:z" + "6" * 250_000
    out = verify(client, keys, vc)
    assert out["verified"] is False
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("where", ["top", "subject", "proof"])
def test_a_context_that_is_not_bundled_is_a_422_on_issue_and_not_verified(setup, where):
    """A relative @context URL (pyld raises a plain ValueError for it) or any other unbundled one fails closed:
    a 422 on issue, verified:false with the reason on verify, never a 500 (review item 1)."""
    client, keys = setup
    registry = client.app.state.issuer_for("t1").registry
    for bad in ("relative-ctx", "x", "./ctx.jsonld", "https://elsewhere.example/ctx"):
        credential = model_credential()
        if where == "top":
            credential["@context"] = [CREDENTIALS_V2_URL, CREDENTIALS_EXAMPLES_V2_URL, bad]
        else:
            credential["credentialSubject"] = {**credential["credentialSubject"], "extra": {"@context": bad}}
        if where != "proof":
            r = client.post("/credentials/issue", json={"credential": credential}, headers=h(keys, "t1_engineer"))
            assert "not bundled" in is_problem(r, 422)["detail"], (bad, r.text)
        vc = issue(client, keys, id=f"urn:uuid:{where}-{len(registry.allocated)}")
        if where == "top":
            vc["@context"] = credential["@context"]
        elif where == "subject":
            vc["credentialSubject"] = credential["credentialSubject"]
        else:  # the proof's @context (the document's must start with it)
            vc["@context"] = vc["proof"]["@context"] = [CREDENTIALS_V2_URL, CREDENTIALS_EXAMPLES_V2_URL, bad]
        out = verify(client, keys, vc)
        assert out["verified"] is False and any("not bundled" in e for e in out["errors"]), (bad, out)


def test_a_huge_status_list_index_is_not_verified_not_a_500(setup):
    client, keys = setup
    vc = issue(client, keys)
    for index in ("9" * 5000, "9" * 11):
        bad = copy.deepcopy(vc)
        bad["credentialStatus"][0]["statusListIndex"] = index
        out = verify(client, keys, bad)
        assert out["verified"] is False and any("statusListIndex" in e for e in out["errors"]), out
        unsigned = {k: v for k, v in bad.items() if k != "proof"}
        out = verify(client, keys, unsigned)
        assert out["verified"] is False and any("statusListIndex" in e for e in out["errors"]), out


def test_a_status_entry_check_that_fails_unexpectedly_is_a_reason_not_a_500(setup, monkeypatch):
    import services.credentials.issuer as issuer_module

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    client, keys = setup
    vc = issue(client, keys)
    monkeypatch.setattr(issuer_module, "check_status", broken)
    out = verify(client, keys, vc)
    assert out["verified"] is False and any(e.startswith("status:") for e in out["errors"]), out


def test_a_credential_id_status_changes_cannot_name_is_refused_at_issue(setup):
    """/credentials/status takes ids of at most 2048 characters: a longer one issued could never be revoked
    (review item 3). Issue refuses it with a 422 and spends no status index; 2048 characters issue and revoke."""
    client, keys = setup
    registry = client.app.state.issuer_for("t1").registry
    too_long = "urn:platformq:dataset:" + "x" * (2049 - len("urn:platformq:dataset:"))
    r = client.post("/credentials/issue", json={"credential": model_credential(id=too_long)},
                    headers=h(keys, "t1_engineer"))
    assert "2048" in is_problem(r, 422)["detail"]
    assert registry.allocated == frozenset()
    longest = too_long[:-1]
    vc = issue(client, keys, id=longest)
    assert set_status(client, keys, longest, "revoked").status_code == 200
    assert verify(client, keys, vc)["revoked"] is True


def test_many_status_entries_are_not_verified_and_cost_no_list_fetch(setup):
    client, keys = setup
    vc = issue(client, keys)
    url = vc["credentialStatus"][0]["statusListCredential"]
    many = copy.deepcopy(vc)
    many["credentialStatus"] = [{"type": STATUS, "statusPurpose": "revocation", "statusListIndex": str(i),
                                 "statusListCredential": url} for i in range(300)]
    started = time.perf_counter()
    out = verify(client, keys, many)
    assert out["verified"] is False and any("at most one per statusPurpose" in e for e in out["errors"]), out
    assert out["status"] == [] and time.perf_counter() - started < 2  # 3.5 s when each entry verified its list
