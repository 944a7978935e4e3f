"""The W3C vc-di-eddsa test vectors (eddsa-rdfc-2022), reproduced byte for byte."""

import hashlib
import json

import pytest

from services.credentials import (
    add_proof,
    canonicalize,
    create_proof,
    hash_data,
    proof_configuration,
    signing_input,
    verify_credential,
    verify_proof,
)
from services.credentials.multibase import base58btc_decode

from .helpers import read_json, read_text

CREATED = "2023-02-24T23:36:38Z"


@pytest.fixture(scope="module")
def suite(vectors):
    return vectors / "eddsa-rdfc-2022"


@pytest.fixture(scope="module")
def unsigned(vectors):
    return read_json(vectors / "unsigned.json")


@pytest.fixture(scope="module")
def proof_options(suite):
    options = read_json(suite / "proofConfigDataInt.json")
    options.pop("@context")
    return options


def test_key_pair_matches_vector(vectors, vector_key):
    pair = read_json(vectors / "keyPair.json")
    assert vector_key.public_key_multibase == pair["publicKeyMultibase"]
    assert vector_key.secret_key_multibase == pair["privateKeyMultibase"]
    assert vector_key.verification_method_id == f"did:key:{pair['publicKeyMultibase']}#{pair['publicKeyMultibase']}"


def test_proof_configuration_matches_vector(suite, unsigned, proof_options, vector_key):
    assert proof_options["verificationMethod"] == vector_key.verification_method_id
    assert proof_configuration(proof_options, unsigned) == read_json(suite / "proofConfigDataInt.json")


def test_canonical_proof_configuration(suite, unsigned, proof_options):
    canonical = canonicalize(proof_configuration(proof_options, unsigned))
    assert canonical == read_text(suite / "proofCanonDataInt.txt")


def test_canonical_document(suite, unsigned):
    assert canonicalize(unsigned) == read_text(suite / "canonDocDataInt.txt")


def test_hashes(suite):
    proof_hash = hashlib.sha256(read_text(suite / "proofCanonDataInt.txt").encode()).hexdigest()
    doc_hash = hashlib.sha256(read_text(suite / "canonDocDataInt.txt").encode()).hexdigest()
    assert proof_hash == read_text(suite / "proofHashDataInt.txt").strip()
    assert doc_hash == read_text(suite / "docHashDataInt.txt").strip()
    combined = hash_data(read_text(suite / "proofCanonDataInt.txt"), read_text(suite / "canonDocDataInt.txt"))
    assert combined.hex() == read_text(suite / "combinedHashDataInt.txt").strip()


def test_signing_input_is_combined_hash(suite, unsigned, proof_options):
    assert signing_input(unsigned, proof_options).hex() == read_text(suite / "combinedHashDataInt.txt").strip()


def test_signature_and_proof_value(suite, unsigned, vector_key):
    proof = create_proof(unsigned, vector_key, created=CREATED)
    assert proof["proofValue"] == read_text(suite / "sigBTC58DataInt.txt").strip()
    assert base58btc_decode(proof["proofValue"][1:]).hex() == read_text(suite / "sigHexDataInt.txt").strip()
    combined = bytes.fromhex(read_text(suite / "combinedHashDataInt.txt").strip())
    assert vector_key.sign(combined).hex() == read_text(suite / "sigHexDataInt.txt").strip()


def test_signed_document_byte_for_byte(suite, unsigned, vector_key):
    signed = add_proof(unsigned, vector_key, created=CREATED)
    expected_text = read_text(suite / "signedDataInt.json")
    assert signed == json.loads(expected_text)
    # same keys in the same order, so the serialisation matches the file too
    assert json.dumps(signed, indent=2) == expected_text.rstrip("\n")
    assert unsigned == read_json(suite.parent / "unsigned.json"), "add_proof must not mutate its input"


def test_vector_verifies(signed_vector):
    result = verify_proof(signed_vector)
    assert result.verified, result.errors
    assert result.verification_method.controller == "did:key:z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2"


def test_vector_verifies_as_credential(signed_vector):
    # the W3C example's issuer is an https URL while its key is a did:key: no issuer binding to check
    assert verify_credential(signed_vector, check_issuer_binding=False)
    bound = verify_credential(signed_vector)
    assert not bound and any("not controlled by the issuer" in e for e in bound.errors)
