"""Lone surrogates ("\\ud800": valid JSON, no UTF-8 bytes) in a credential: refused or not verified, never a 500."""

import json

import pytest
from fastapi.testclient import TestClient

from services.common.app import ServiceContext
from services.credentials import verify_credential
from services.credentials.api import create_credentials_app
from tests.services.credentials.test_api import h, issue, model_credential
from tests.services.problems import is_problem

# where the surrogate goes: a subject value, a key, a type, the issuer (echoed back by verify)
PLACES = ['"0.61"', '"accuracy"', '"ModelCredential"', '"did:key:']


@pytest.fixture
def setup():
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    keys = {"t1_engineer": ctx.keys.create("erin", "t1", ["engineer"]),
            "t1_viewer": ctx.keys.create("victor", "t1", ["viewer"])}
    return TestClient(create_credentials_app(ctx), raise_server_exceptions=False), keys


def with_surrogate(body: dict, place: str) -> bytes:
    text = json.dumps(body)
    assert place in text
    return text.replace(place, place[0] + "\\ud800" + place[1:], 1).encode()


@pytest.mark.parametrize("place", PLACES)
def test_issue_answers_a_422_problem_and_spends_no_index(setup, place):
    client, keys = setup
    registry = client.app.state.issuer_for("t1").registry
    credential = model_credential()
    if place == '"did:key:':
        credential["issuer"] = client.app.state.issuer_for("t1").issuer.id
    r = client.post("/credentials/issue", content=with_surrogate({"credential": credential}, place),
                    headers={**h(keys, "t1_engineer"), "content-type": "application/json"})
    assert "not valid Unicode" in is_problem(r, 422)["detail"]
    assert registry.allocated == frozenset()


@pytest.mark.parametrize("place", PLACES)
def test_verify_answers_not_verified_with_the_reason(setup, place):
    client, keys = setup
    vc = issue(client, keys)
    r = client.post("/credentials/verify", content=with_surrogate({"verifiableCredential": vc}, place),
                    headers={**h(keys, "t1_viewer"), "content-type": "application/json"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["verified"] is False and any("not valid Unicode" in e for e in out["errors"])


def test_the_core_reports_an_unhashable_document_instead_of_raising(setup):
    client, keys = setup
    vc = issue(client, keys)
    vc["credentialSubject"]["accuracy"] = "\ud800"
    result = verify_credential(vc, check_status_entries=False)
    assert not result.verified and any("not valid Unicode" in e for e in result.errors)
