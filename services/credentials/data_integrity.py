"""Data Integrity proofs with the ``eddsa-rdfc-2022`` cryptosuite (W3C vc-di-eddsa).

Create (spec 3.3.1-3.3.6):
  proofConfig  = proof options + ``@context`` of the document, canonicalised with RDFC-1.0
  document     = the unsecured document, canonicalised with RDFC-1.0
  hashData     = SHA-256(canonical proofConfig) || SHA-256(canonical document)   (proof hash first)
  proofValue   = 'z' + base58btc(Ed25519 signature over hashData)

Verify recomputes the same bytes from the secured document minus ``proofValue``
and checks the signature against the resolved verification method. Every failure
is reported, never raised: the result says ``verified=False`` and why.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .did_key import Ed25519KeyPair, VerificationMethod, resolve_verification_method
from .document_loader import DEFAULT_LOADER, BundledContextLoader
from .errors import CanonicalizationError, CredentialError, ProofError
from .multibase import multibase_base58btc_decode, multibase_base58btc_encode
from .rdfc import canonicalize, compacted_form_problems
from .timestamps import format_timestamp, parse_timestamp, utc_now

PROOF_TYPE = "DataIntegrityProof"
CRYPTOSUITE = "eddsa-rdfc-2022"
# "z" + base58btc of 64 bytes is at most 89 characters; longer is refused before decoding (quadratic)
MAX_PROOF_VALUE_LENGTH = 89
ASSERTION_METHOD = "assertionMethod"
SIGNATURE_LENGTH = 64

VerificationMethodResolver = Callable[..., VerificationMethod]


@dataclass(frozen=True)
class ProofVerification:
    """Outcome of verifying one Data Integrity proof; truthy only when verified."""

    verified: bool
    errors: tuple[str, ...] = ()
    verification_method: VerificationMethod | None = None
    proof: Mapping | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return self.verified


def _timestamp(value: str | datetime | None) -> str:
    if value is None:
        return format_timestamp(utc_now())
    if isinstance(value, datetime):
        return format_timestamp(value)
    parse_timestamp(value, "created")
    return value


def proof_configuration(proof_options: Mapping, unsecured_document: Mapping) -> dict:
    """Spec 3.3.5: the proof options checked and given the document's ``@context``."""
    if proof_options.get("type") != PROOF_TYPE or proof_options.get("cryptosuite") != CRYPTOSUITE:
        raise ProofError(f"proof must be type {PROOF_TYPE!r} with cryptosuite {CRYPTOSUITE!r}")
    for name in ("created", "expires"):
        if name in proof_options:
            parse_timestamp(proof_options[name], f"proof {name}")
    if "@context" not in unsecured_document:
        raise ProofError("the document has no @context")
    config = {k: copy.deepcopy(v) for k, v in proof_options.items() if k != "proofValue"}
    config["@context"] = copy.deepcopy(unsecured_document["@context"])
    return config


def hash_data(canonical_proof_config: str, canonical_document: str) -> bytes:
    """Spec 3.3.4: SHA-256 of the proof configuration, then SHA-256 of the document (64 bytes)."""
    try:
        return (
            hashlib.sha256(canonical_proof_config.encode("utf-8")).digest()
            + hashlib.sha256(canonical_document.encode("utf-8")).digest()
        )
    except UnicodeEncodeError:
        # JSON escapes can carry lone surrogates ("\ud800"): valid Python text, but no UTF-8 bytes to hash
        raise CanonicalizationError("the document holds text that is not valid Unicode (a lone surrogate)") from None


def signing_input(
    unsecured_document: Mapping, proof_options: Mapping, *, loader: BundledContextLoader = DEFAULT_LOADER
) -> bytes:
    """The bytes an ``eddsa-rdfc-2022`` signature covers (the ``hashData``)."""
    config = proof_configuration(proof_options, unsecured_document)
    return hash_data(canonicalize(config, loader=loader), canonicalize(unsecured_document, loader=loader))


def create_proof(
    unsecured_document: Mapping,
    key_pair: Ed25519KeyPair,
    *,
    created: str | datetime | None = None,
    proof_purpose: str = ASSERTION_METHOD,
    verification_method: str | None = None,
    expires: str | datetime | None = None,
    domain: str | None = None,
    challenge: str | None = None,
    loader: BundledContextLoader = DEFAULT_LOADER,
) -> dict:
    """A ``DataIntegrityProof`` (with ``proofValue``) over ``unsecured_document``.

    ``created`` defaults to now (UTC, whole seconds); ``verification_method`` to the key's did:key method.
    Raises ``ContextNotAllowedError`` / ``CanonicalizationError`` / ``ProofError``.
    """
    if "proof" in unsecured_document:
        raise ProofError("the document already carries a proof (proof sets are not supported)")
    proof = {
        "type": PROOF_TYPE,
        "cryptosuite": CRYPTOSUITE,
        "created": _timestamp(created),
        "verificationMethod": verification_method or key_pair.verification_method_id,
        "proofPurpose": proof_purpose,
    }
    if expires is not None:
        proof["expires"] = format_timestamp(expires) if isinstance(expires, datetime) else expires
    if domain is not None:
        proof["domain"] = domain
    if challenge is not None:
        proof["challenge"] = challenge
    signature = key_pair.sign(signing_input(unsecured_document, proof, loader=loader))
    proof["proofValue"] = multibase_base58btc_encode(signature)
    return proof


def add_proof(unsecured_document: Mapping, key_pair: Ed25519KeyPair, **options) -> dict:
    """A copy of the document with ``proof`` added; ``options`` as for ``create_proof``."""
    secured = copy.deepcopy(dict(unsecured_document))
    secured["proof"] = create_proof(unsecured_document, key_pair, **options)
    return secured


def _context_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def _check_proof(proof, expected_proof_purpose: str, now: datetime | None, domain, challenge) -> list[str]:
    errors = compacted_form_problems(proof, "proof")
    if proof.get("type") != PROOF_TYPE:
        errors.append(f"proof type is {proof.get('type')!r}, expected {PROOF_TYPE!r}")
    if proof.get("cryptosuite") != CRYPTOSUITE:
        errors.append(f"cryptosuite is {proof.get('cryptosuite')!r}, expected {CRYPTOSUITE!r}")
    if proof.get("proofPurpose") != expected_proof_purpose:
        errors.append(f"proofPurpose is {proof.get('proofPurpose')!r}, expected {expected_proof_purpose!r}")
    if not isinstance(proof.get("verificationMethod"), str):
        errors.append("proof has no verificationMethod")
    for name in ("created", "expires"):
        if name in proof:
            try:
                moment = parse_timestamp(proof[name], f"proof {name}")
            except CredentialError as exc:
                errors.append(str(exc))
                continue
            if name == "expires" and moment < (now or utc_now()):
                errors.append(f"proof expired at {proof[name]}")
    if domain is not None and proof.get("domain") != domain:
        errors.append(f"proof domain {proof.get('domain')!r} does not match {domain!r}")
    if challenge is not None and proof.get("challenge") != challenge:
        errors.append("proof challenge does not match")
    return errors


def verify_proof(
    secured_document: Mapping,
    *,
    expected_proof_purpose: str = ASSERTION_METHOD,
    resolver: VerificationMethodResolver = resolve_verification_method,
    now: datetime | None = None,
    domain: str | None = None,
    challenge: str | None = None,
    loader: BundledContextLoader = DEFAULT_LOADER,
) -> ProofVerification:
    """Verify the ``eddsa-rdfc-2022`` proof of ``secured_document`` (spec 3.3.2).

    ``resolver(verification_method, proof_purpose=...)`` returns the ``VerificationMethod``;
    the default resolves did:key offline.
    """
    proof = secured_document.get("proof") if isinstance(secured_document, Mapping) else None
    if isinstance(proof, list) and len(proof) == 1:
        proof = proof[0]
    if isinstance(proof, list):
        return ProofVerification(False, ("proof sets and chains are not supported",))
    if not isinstance(proof, Mapping):
        return ProofVerification(False, ("document has no proof",))

    errors = _check_proof(proof, expected_proof_purpose, now, domain, challenge)
    proof_value = proof.get("proofValue")
    try:
        if isinstance(proof_value, str) and len(proof_value) > MAX_PROOF_VALUE_LENGTH:
            raise ProofError(f"it is {len(proof_value)} characters; an Ed25519 signature takes at most "
                             f"{MAX_PROOF_VALUE_LENGTH}")
        signature = multibase_base58btc_decode(proof_value)
        if len(signature) != SIGNATURE_LENGTH:
            errors.append(f"proofValue holds {len(signature)} bytes, an Ed25519 signature has 64")
    except CredentialError as exc:
        errors.append(f"proofValue: {exc}")
    if errors:
        return ProofVerification(False, tuple(errors), proof=proof)

    unsecured = {k: v for k, v in secured_document.items() if k != "proof"}
    proof_options = {k: v for k, v in proof.items() if k != "proofValue"}
    if "@context" in proof_options:
        # Data Integrity allows a proof @context that only starts the document's; then the contexts the document
        # adds are neither signed nor loaded (nor checked against the bundled ones), and a holder could append one
        # that redefines the claims' terms for every JSON-LD reader. Refused: this service signs the whole context.
        if _context_list(unsecured.get("@context")) != _context_list(proof_options["@context"]):
            problem = "the proof's @context is not the document's (contexts outside the signature are refused)"
            return ProofVerification(False, (problem,), proof=proof)

    try:
        method = resolver(proof["verificationMethod"], proof_purpose=expected_proof_purpose)
    except CredentialError as exc:
        return ProofVerification(False, (f"verification method: {exc}",), proof=proof)
    try:
        data = signing_input(unsecured, proof_options, loader=loader)
    except CredentialError as exc:
        return ProofVerification(False, (str(exc),), verification_method=method, proof=proof)
    if not method.verify(signature, data):
        return ProofVerification(False, ("signature does not verify",), verification_method=method, proof=proof)
    return ProofVerification(True, (), verification_method=method, proof=proof)
