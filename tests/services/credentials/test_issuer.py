import copy
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.credentials import (
    CREDENTIALS_EXAMPLES_V2_URL,
    CREDENTIALS_V2_URL,
    CredentialError,
    Ed25519KeyPair,
    InvalidCredentialError,
    Issuer,
    StatusListError,
    StatusRegistry,
    bench,
    issue_credential,
    validate_credential,
    verify_credential,
)
from services.credentials.status_list import StatusList

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def model_credential(**extra) -> dict:
    credential = {
        "@context": [CREDENTIALS_V2_URL, CREDENTIALS_EXAMPLES_V2_URL],
        "id": "urn:uuid:7f3c1a52-2f0e-4c55-9d8e-0d1b2c3d4e5f",
        "type": ["VerifiableCredential", "ModelCredential"],
        "validFrom": "2025-01-01T00:00:00Z",
        "validUntil": "2026-01-01T00:00:00Z",
        "credentialSubject": {"id": "urn:platformq:model:price_direction:7", "accuracy": "0.61"},
    }
    credential.update(extra)
    return credential


@pytest.fixture(scope="module")
def key():
    return Ed25519KeyPair.generate()


def test_issue_verify_round_trip_with_fresh_key(key):
    signed = Issuer(key).issue(model_credential(), created=NOW)
    assert signed["issuer"] == key.did
    assert signed["proof"]["verificationMethod"] == key.verification_method_id
    assert signed["proof"]["created"] == "2025-06-01T12:00:00Z"
    result = verify_credential(signed, now=NOW)
    assert result.verified, result.errors
    assert result.proof.verification_method.controller == key.did


def test_issue_defaults_created_to_now(key):
    signed = issue_credential(model_credential(issuer=key.did), key)
    created = datetime.fromisoformat(signed["proof"]["created"].replace("Z", "+00:00"))
    assert abs(datetime.now(timezone.utc) - created) < timedelta(minutes=1)


def test_issuer_object_form(key):
    signed = issue_credential(model_credential(issuer={"id": key.did, "name": "platformQ"}), key)
    assert verify_credential(signed, now=NOW)


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"@context": [CREDENTIALS_EXAMPLES_V2_URL, CREDENTIALS_V2_URL]}, "@context must start"),
        ({"@context": ["https://www.w3.org/2018/credentials/v1"]}, "@context must start"),
        ({"type": ["ModelCredential"]}, "VerifiableCredential"),
        ({"issuer": "not a url"}, "issuer"),
        ({"issuer": {"name": "no id"}}, "issuer"),
        ({"credentialSubject": {}}, "credentialSubject"),
        ({"credentialSubject": None}, "credentialSubject"),
        ({"validFrom": "2025-01-01"}, "dateTimeStamp"),
        ({"validFrom": "2025-01-01T00:00:00"}, "dateTimeStamp"),
        ({"validFrom": "2025-01-01T00:00:00Z\n"}, "dateTimeStamp"),
        ({"validFrom": "２０２５-01-01T00:00:00Z"}, "dateTimeStamp"),  # full-width digits are not XML Schema's
        ({"credentialSubject": {"id": "urn:x", "@vocab": "urn:v#"}}, "compacted form"),
        ({"validUntil": "2024-01-01T00:00:00Z"}, "before validFrom"),
        ({"id": "no-scheme"}, "id must be a URL"),
    ],
)
def test_invalid_credentials_are_refused(key, change, problem):
    credential = model_credential(issuer=key.did)
    credential.update(change)
    with pytest.raises(InvalidCredentialError, match=problem):
        issue_credential(credential, key)


def test_missing_fields_listed_together():
    with pytest.raises(InvalidCredentialError) as info:
        validate_credential({"@context": [CREDENTIALS_V2_URL]})
    assert len(info.value.problems) == 3  # type, issuer, credentialSubject


def test_issuer_refuses_foreign_issuer(key):
    with pytest.raises(InvalidCredentialError, match="not this issuer"):
        Issuer(key).issue(model_credential(issuer="did:example:someone-else"))


def test_validity_window(key):
    signed = Issuer(key).issue(model_credential(), created=NOW)
    assert verify_credential(signed, now=NOW)
    early = verify_credential(signed, now=datetime(2024, 12, 31, tzinfo=timezone.utc))
    late = verify_credential(signed, now=datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc))
    assert not early and any("not yet valid" in e for e in early.errors)
    assert not late and any("expired" in e for e in late.errors)


def test_issuer_binding(key):
    other = Ed25519KeyPair.generate()
    # signed by `other` but claiming `key` as issuer: the signature is fine, the binding is not
    forged = issue_credential(model_credential(issuer=key.did), other)
    result = verify_credential(forged, now=NOW)
    assert result.proof.verified and not result.verified
    assert any("not controlled by the issuer" in e for e in result.errors)


def test_tampered_credential_fails(key):
    signed = Issuer(key).issue(model_credential(), created=NOW)
    for mutate in (
        lambda d: d["credentialSubject"].update(accuracy="0.99"),
        lambda d: d.update(validUntil="2030-01-01T00:00:00Z"),
        lambda d: d["proof"].update(created="2025-06-01T12:00:01Z"),
    ):
        forged = copy.deepcopy(signed)
        mutate(forged)
        result = verify_credential(forged, now=NOW)
        assert not result.verified and "proof: signature does not verify" in result.errors


@pytest.fixture
def issuer_with_status(key):
    registry = StatusRegistry("https://status.example/platformq", key, rng=random.Random(3), clock=lambda: NOW)
    return Issuer(key, status_registry=registry), registry


def test_status_revoke_suspend_unsuspend_round_trip(issuer_with_status):
    issuer, registry = issuer_with_status
    signed = issuer.issue(model_credential(), created=NOW)
    purposes = [e["statusPurpose"] for e in signed["credentialStatus"]]
    assert purposes == ["revocation", "suspension"]

    def verify():
        return verify_credential(signed, now=NOW, fetch_status_list=registry.fetch)

    fresh = verify()
    assert fresh.verified, fresh.errors
    assert len(fresh.status) == 2 and not fresh.revoked and not fresh.suspended

    registry.suspend(signed)
    suspended = verify()
    assert not suspended.verified and suspended.suspended and not suspended.revoked
    assert any("suspended" in e for e in suspended.errors)

    registry.unsuspend(signed)
    assert verify().verified

    registry.revoke(signed)
    revoked = verify()
    assert not revoked.verified and revoked.revoked
    assert any("revoked" in e for e in revoked.errors)

    registry.unsuspend(signed)  # unsuspending does not undo a revocation
    assert not verify().verified


def test_an_issue_that_fails_after_allocation_releases_its_index(issuer_with_status):
    issuer, registry = issuer_with_status
    for _ in range(3):
        with pytest.raises(CredentialError, match="already carries a proof"):
            issuer.issue({**model_credential(), "proof": {"type": "DataIntegrityProof"}}, created=NOW)
    assert registry.allocated == frozenset()
    revoked = issuer.issue(model_credential(), created=NOW)
    registry.revoke(revoked)
    with pytest.raises(StatusListError, match="cannot be released"):  # a used index is never handed out again
        registry.release(registry._index_of(revoked, "revocation"))


def test_status_only_affects_its_own_index(issuer_with_status):
    issuer, registry = issuer_with_status
    first = issuer.issue(model_credential(), created=NOW)
    second = issuer.issue(model_credential(), created=NOW)
    registry.revoke(first)
    assert not verify_credential(first, now=NOW, fetch_status_list=registry.fetch)
    assert verify_credential(second, now=NOW, fetch_status_list=registry.fetch)


def test_status_fails_closed(issuer_with_status, key):
    issuer, registry = issuer_with_status
    signed = issuer.issue(model_credential(), created=NOW)

    no_fetcher = verify_credential(signed, now=NOW)
    assert not no_fetcher and any("no status list fetcher" in e for e in no_fetcher.errors)
    assert verify_credential(signed, now=NOW, check_status_entries=False)

    def forged_list(url):
        # someone serves a list with the bit cleared but signed by another key
        list_credential = registry.fetch(url)
        purpose = list_credential["credentialSubject"]["statusPurpose"]
        list_credential["credentialSubject"]["encodedList"] = StatusList(purpose).encode()
        return list_credential

    registry.revoke(signed)
    result = verify_credential(signed, now=NOW, fetch_status_list=forged_list)
    assert not result.verified
    assert any("STATUS_VERIFICATION_ERROR" in e for e in result.errors)

    other_registry = StatusRegistry("https://status.example/platformq", Ed25519KeyPair.generate(), clock=lambda: NOW)
    foreign = verify_credential(signed, now=NOW, fetch_status_list=other_registry.fetch)
    assert not foreign.verified


def test_bench_smoke():
    issued, verified = bench(n=5)
    assert issued > 0 and verified > 0


@settings(max_examples=25, deadline=None)
@given(claim=st.text(max_size=40), subject=st.from_regex(r"urn:example:[a-z0-9]{1,12}", fullmatch=True))
def test_any_claim_round_trips_and_is_bound(key, claim, subject):
    credential = model_credential(issuer=key.did, credentialSubject={"id": subject, "claim": claim})
    signed = issue_credential(credential, key, created=NOW)
    assert verify_credential(signed, now=NOW)
    forged = copy.deepcopy(signed)
    forged["credentialSubject"]["claim"] = claim + "!"
    assert not verify_credential(forged, now=NOW)


def test_a_status_list_signed_after_verification_began_is_judged_when_it_arrived(key):
    """The service signs its status list lazily (validFrom = signing time, whole seconds): a list signed
    in the second after the verifier read its clock is not 'not yet valid'."""
    import time

    from services.credentials.timestamps import utc_now

    registry = StatusRegistry("https://status.example/platformq", key, rng=random.Random(5))  # real clock
    unsigned = model_credential()
    unsigned.pop("validUntil", None)  # the model credential's window is in the past of today's clock
    signed = Issuer(key, status_registry=registry).issue(unsigned)
    started = utc_now()

    def fetch_in_the_next_second(url):
        while utc_now().replace(microsecond=0) <= started.replace(microsecond=0):
            time.sleep(0.01)
        return registry.fetch(url)  # signed now: validFrom is later than the verifier's clock reading

    result = verify_credential(signed, fetch_status_list=fetch_in_the_next_second)
    assert result.verified, result.errors
    # a caller that pins the time still gets the strict answer for that instant
    pinned = verify_credential(signed, now=started, fetch_status_list=fetch_in_the_next_second)
    assert not pinned.verified and any("not yet valid" in e for e in pinned.errors)


def test_at_most_one_status_entry_per_purpose(issuer_with_status, key):
    """Each status entry re-fetched and re-verified its list: 300 entries cost 300 verifications. More than one
    entry for a statusPurpose is refused on issue and not verified, without fetching anything (review item 4)."""
    issuer, registry = issuer_with_status
    signed = issuer.issue(model_credential(), created=NOW)
    revocation = signed["credentialStatus"][0]
    many = {**model_credential(issuer=key.did), "credentialStatus": [
        {**revocation, "statusListIndex": str(i)} for i in range(300)]}
    with pytest.raises(InvalidCredentialError, match="at most one per statusPurpose"):
        issue_credential(many, key, created=NOW)
    fetched = []

    def fetch(url):
        fetched.append(url)
        return registry.fetch(url)

    forged = {**signed, "credentialStatus": signed["credentialStatus"] + [revocation]}
    for credential in (forged, {k: v for k, v in many.items()}):
        result = verify_credential(credential, now=NOW, fetch_status_list=fetch)
        assert not result.verified and any("at most one per statusPurpose" in e for e in result.errors)
    assert fetched == []


def test_a_status_list_is_fetched_and_verified_once_per_verification(key, monkeypatch):
    """Entries of several purposes on one list (a list may carry several purposes) fetch and verify it once."""
    import services.credentials.issuer as issuer_module
    from services.credentials import add_proof, status_entry, status_list_credential

    url = "https://status.example/platformq/both"
    bits = StatusList("revocation")
    bits.set(5)
    unsigned = status_list_credential(url, key.did, bits, valid_from=NOW)
    unsigned["credentialSubject"]["statusPurpose"] = ["revocation", "suspension"]
    list_credential = add_proof(unsigned, key, created=NOW)
    credential = issue_credential({**model_credential(issuer=key.did), "credentialStatus": [
        status_entry(url, 5, "revocation"), status_entry(url, 6, "suspension")]}, key, created=NOW)
    fetched, proofs = [], []
    verify_proof = issuer_module.verify_proof
    monkeypatch.setattr(issuer_module, "verify_proof", lambda *a, **k: proofs.append(1) or verify_proof(*a, **k))

    def fetch(u):
        fetched.append(u)
        return copy.deepcopy(list_credential)

    result = verify_credential(credential, now=NOW, fetch_status_list=fetch)
    assert result.revoked and not result.suspended and len(result.status) == 2, result.errors
    assert fetched == [url] and len(proofs) == 2  # the credential's proof, then the list's once
