"""Any change to a signed credential breaks verification; unknown contexts fail closed, offline."""

import copy

import pytest

from services.credentials import (
    ContextNotAllowedError,
    CanonicalizationError,
    Ed25519KeyPair,
    add_proof,
    canonicalize,
    issue_credential,
    verify_proof,
)
from services.credentials.multibase import base58btc_decode, base58btc_encode


def tampered(document, mutate):
    copy_ = copy.deepcopy(document)
    mutate(copy_)
    return copy_


def _flip_proof_value_byte(doc):
    signature = bytearray(base58btc_decode(doc["proof"]["proofValue"][1:]))
    signature[10] ^= 0x01
    doc["proof"]["proofValue"] = "z" + base58btc_encode(bytes(signature))


TAMPERS = {
    "subject value": lambda d: d["credentialSubject"].update(alumniOf="The School of Forgeries"),
    "subject id": lambda d: d["credentialSubject"].update(id="did:example:mallory"),
    "issuer": lambda d: d.update(issuer="https://vc.example/issuers/9999"),
    "validFrom": lambda d: d.update(validFrom="2020-01-01T00:00:00Z"),
    "type": lambda d: d["type"].append("ExtraCredential"),
    "added claim": lambda d: d["credentialSubject"].update(degree="PhD"),
    "proof created": lambda d: d["proof"].update(created="2023-02-24T23:36:39Z"),
    "proof value byte": _flip_proof_value_byte,
    "proof value truncated": lambda d: d["proof"].update(proofValue=d["proof"]["proofValue"][:-2]),
    "proof value not base58btc": lambda d: d["proof"].update(proofValue="u" + d["proof"]["proofValue"][1:]),
    "cryptosuite": lambda d: d["proof"].update(cryptosuite="eddsa-jcs-2022"),
    "proof type": lambda d: d["proof"].update(type="Ed25519Signature2020"),
    "proof purpose": lambda d: d["proof"].update(proofPurpose="authentication"),
    "verification method": lambda d: d["proof"].update(
        verificationMethod=Ed25519KeyPair.generate().verification_method_id
    ),
    "extra proof option": lambda d: d["proof"].update(domain="example.org"),
    "context dropped": lambda d: d.update({"@context": ["https://www.w3.org/ns/credentials/v2"]}),
    "proof removed": lambda d: d.pop("proof"),
    # JSON-LD keywords that expansion keeps but RDF drops: refused, not silently unsigned
    "subject @index": lambda d: d["credentialSubject"].update({"@index": "anything"}),
    "top-level @index": lambda d: d.update({"@index": "anything"}),
    "value @direction": lambda d: d["credentialSubject"].update(
        alumniOf={"@value": d["credentialSubject"]["alumniOf"], "@direction": "rtl"}),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampered_vector_fails(signed_vector, name):
    assert verify_proof(signed_vector).verified
    result = verify_proof(tampered(signed_vector, TAMPERS[name]))
    assert not result.verified and not result
    assert result.errors


def test_tamper_errors_say_why(signed_vector):
    assert verify_proof(tampered(signed_vector, TAMPERS["subject value"])).errors == ("signature does not verify",)
    assert "cryptosuite" in verify_proof(tampered(signed_vector, TAMPERS["cryptosuite"])).errors[0]
    assert "proofPurpose" in verify_proof(tampered(signed_vector, TAMPERS["proof purpose"])).errors[0]


def test_proof_context_must_prefix_document_context(signed_vector):
    doc = tampered(signed_vector, lambda d: d["proof"].update({"@context": ["https://www.w3.org/ns/credentials/v2"]}))
    doc["@context"] = ["https://www.w3.org/ns/credentials/examples/v2", "https://www.w3.org/ns/credentials/v2"]
    result = verify_proof(doc)
    assert not result.verified and "@context" in result.errors[0]


UNKNOWN = "https://evil.example/contexts/v1"


def test_unknown_context_fails_closed_without_network(no_network):
    doc = {"@context": ["https://www.w3.org/ns/credentials/v2", UNKNOWN], "type": ["VerifiableCredential"]}
    with pytest.raises(ContextNotAllowedError) as info:
        canonicalize(doc)
    assert info.value.url == UNKNOWN
    assert UNKNOWN in str(info.value) and "not bundled" in str(info.value)


def test_unknown_context_refused_at_issuance_and_verification(signed_vector):
    key = Ed25519KeyPair.generate()
    credential = {
        "@context": ["https://www.w3.org/ns/credentials/v2", UNKNOWN],
        "type": ["VerifiableCredential"],
        "issuer": key.did,
        "credentialSubject": {"id": "did:example:1"},
    }
    with pytest.raises(ContextNotAllowedError):
        issue_credential(credential, key)
    doc = tampered(signed_vector, lambda d: d["@context"].append(UNKNOWN))
    result = verify_proof(doc)
    assert not result.verified and UNKNOWN in result.errors[0]


def test_inline_context_cannot_reach_out():
    doc = {"@context": [{"@import": UNKNOWN}], "@id": "urn:x", "urn:p": "v"}
    with pytest.raises(ContextNotAllowedError):
        canonicalize(doc)


@pytest.mark.parametrize(
    "subject, message",
    [
        ({"id": "did:example:1", "undefinedTerm": "x"}, "dropped"),
        ({"id": "not-an-iri", "name": "x"}, "relative @id"),
        ({"id": "did:example:1", "type": "UndefinedType"}, "not defined"),
    ],
)
def test_data_outside_the_rdf_is_refused(subject, message):
    # without the examples @vocab these would silently fall out of the signed RDF
    key = Ed25519KeyPair.generate()
    credential = {
        "@context": ["https://www.w3.org/ns/credentials/v2"],
        "type": ["VerifiableCredential"],
        "issuer": key.did,
        "credentialSubject": subject,
    }
    with pytest.raises(CanonicalizationError, match=message):
        add_proof(credential, key)


def test_an_expired_proof_renamed_to_its_full_iri_is_still_expired():
    key = Ed25519KeyPair.generate()
    credential = {"@context": ["https://www.w3.org/ns/credentials/v2", "https://www.w3.org/ns/credentials/examples/v2"],
                  "type": ["VerifiableCredential"], "issuer": key.did, "credentialSubject": {"id": "urn:x:1"}}
    signed = add_proof(credential, key, expires="2020-06-01T00:00:00Z")
    assert any("proof expired" in e for e in verify_proof(signed).errors)
    renamed = tampered(signed, lambda d: d["proof"].update(
        {"https://w3id.org/security#expiration": {"@value": d["proof"].pop("expires"),
                                                   "@type": "http://www.w3.org/2001/XMLSchema#dateTime"}}))
    result = verify_proof(renamed)
    assert not result.verified and any("security#expiration" in e and "compacted form" in e for e in result.errors)


def test_a_context_appended_outside_the_proofs_context_is_refused(signed_vector):
    """A proof @context that only started the document's let a holder append any context (unbundled, relative),
    neither loaded nor signed, redefining the claims' terms for every JSON-LD reader, and still verify."""
    doc = tampered(signed_vector, lambda d: d["proof"].update({"@context": list(d["@context"])}))
    doc["@context"] = [*doc["@context"], UNKNOWN, "relative-ctx.jsonld"]
    result = verify_proof(doc)
    assert not result.verified and "@context" in result.errors[0]
    same = tampered(signed_vector, lambda d: d["proof"].update({"@context": list(d["@context"])}))
    assert verify_proof(same).verified  # the document's own context, named in the proof too, is what was signed


def _with_number(value):
    from services.credentials.issuer import credential_problems

    key = Ed25519KeyPair.generate()
    credential = {"@context": ["https://www.w3.org/ns/credentials/v2", "https://www.w3.org/ns/credentials/examples/v2"],
                  "type": ["VerifiableCredential"], "issuer": key.did,
                  "credentialSubject": {"id": "urn:x:1", "amount": value}}
    return credential, key, credential_problems(credential)


@pytest.mark.parametrize("value, other", [(0.1, 0.10000000000000002), (0.3, 0.30000000000000004)])
def test_a_float_is_signed_exactly_or_refused(value, other):
    """JSON-LD signs a double as 16 significant digits: a neighbouring float verified alike."""
    credential, key, problems = _with_number(value)
    assert problems == []
    signed = add_proof(credential, key)
    assert verify_proof(signed).verified
    _, _, refused = _with_number(other)
    assert refused and "16 significant digits" in refused[0]
    from services.credentials.issuer import verify_credential

    changed = tampered(signed, lambda d: d["credentialSubject"].update(amount=other))
    assert not verify_credential(changed).verified


@pytest.mark.parametrize("value", [2**53 + 1, 10**21, -(10**21) - 1])
def test_an_integer_beyond_2_53_is_refused(value):
    """1e21 and 1e21 + 1 (and any integer up to the next double) shared one signature: a holder could change an
    amount in wei. Past 2^53 a number is sent as a string (I-JSON)."""
    _, _, problems = _with_number(value)
    assert problems and "send it as a string" in problems[0]
    assert _with_number(2**53)[2] == [] and _with_number(str(10**21))[2] == []
