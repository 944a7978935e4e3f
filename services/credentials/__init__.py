"""W3C Verifiable Credentials for platformQ: pure domain code (no Dagster, no HTTP, no network).

- ``did_key``: Ed25519 did:key and Multikey encodings.
- ``data_integrity``: Data Integrity proofs, cryptosuite ``eddsa-rdfc-2022``.
- ``issuer``: VC Data Model 2.0 issuance and verification.
- ``status_list``: Bitstring Status List v1.0 (revocation, suspension).
- ``rdfc`` / ``document_loader``: RDFC-1.0 canonicalisation with bundled JSON-LD contexts only.
"""

from .benchmark import bench
from .data_integrity import (
    ASSERTION_METHOD,
    CRYPTOSUITE,
    PROOF_TYPE,
    ProofVerification,
    add_proof,
    create_proof,
    hash_data,
    proof_configuration,
    signing_input,
    verify_proof,
)
from .did_key import (
    Ed25519KeyPair,
    VerificationMethod,
    decode_public_key_multibase,
    decode_secret_key_multibase,
    did_from_public_key,
    encode_public_key_multibase,
    encode_secret_key_multibase,
    public_key_from_did,
    resolve_did_key,
    resolve_verification_method,
)
from .document_loader import (
    BUNDLED_CONTEXTS,
    CREDENTIALS_EXAMPLES_V2_URL,
    CREDENTIALS_V2_URL,
    BundledContextLoader,
    install_document_loader,
)
from .errors import (
    CanonicalizationError,
    ContextNotAllowedError,
    CredentialError,
    DidKeyError,
    EncodingError,
    InvalidCredentialError,
    ProofError,
    StatusListError,
)
from .issuer import (
    CredentialVerification,
    Issuer,
    credential_problems,
    issue_credential,
    issuer_id,
    validate_credential,
    verify_credential,
)
from .rdfc import canonicalize
from .status_list import (
    MIN_BITSTRING_LENGTH,
    REVOCATION,
    SUSPENSION,
    StatusCheck,
    StatusList,
    StatusRegistry,
    check_status,
    status_entry,
    status_list_credential,
)

__all__ = [
    "ASSERTION_METHOD",
    "BUNDLED_CONTEXTS",
    "BundledContextLoader",
    "CREDENTIALS_EXAMPLES_V2_URL",
    "CREDENTIALS_V2_URL",
    "CRYPTOSUITE",
    "CanonicalizationError",
    "ContextNotAllowedError",
    "CredentialError",
    "CredentialVerification",
    "DidKeyError",
    "Ed25519KeyPair",
    "EncodingError",
    "InvalidCredentialError",
    "Issuer",
    "MIN_BITSTRING_LENGTH",
    "PROOF_TYPE",
    "ProofError",
    "ProofVerification",
    "REVOCATION",
    "SUSPENSION",
    "StatusCheck",
    "StatusList",
    "StatusListError",
    "StatusRegistry",
    "VerificationMethod",
    "add_proof",
    "bench",
    "canonicalize",
    "check_status",
    "create_proof",
    "credential_problems",
    "decode_public_key_multibase",
    "decode_secret_key_multibase",
    "did_from_public_key",
    "encode_public_key_multibase",
    "encode_secret_key_multibase",
    "hash_data",
    "install_document_loader",
    "issue_credential",
    "issuer_id",
    "proof_configuration",
    "public_key_from_did",
    "resolve_did_key",
    "resolve_verification_method",
    "signing_input",
    "status_entry",
    "status_list_credential",
    "validate_credential",
    "verify_credential",
    "verify_proof",
]
