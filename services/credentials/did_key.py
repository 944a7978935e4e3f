"""Ed25519 ``did:key`` identifiers and Multikey encodings.

- public key Multikey: ``'z' + base58btc(0xed 0x01 || 32-byte key)`` -> ``z6Mk...``
- secret key Multikey: ``'z' + base58btc(0x80 0x26 || 32-byte seed)`` (multicodec ed25519-priv, 0x1300)
- DID: ``did:key:<public key Multikey>``; its one verification method is ``<did>#<public key Multikey>``.

Resolution is pure: a did:key document is derived from the identifier itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import DidKeyError, EncodingError
from .multibase import multibase_base58btc_decode, multibase_base58btc_encode, multicodec_unwrap, multicodec_wrap

ED25519_PUB_MULTICODEC = 0xED
ED25519_PRIV_MULTICODEC = 0x1300
ED25519_KEY_LENGTH = 32
MAX_MULTIKEY_LENGTH = 64  # "z" + base58btc of a 2-byte multicodec and 32 key bytes is 48 or 49 characters
DID_KEY_PREFIX = "did:key:"
MULTIKEY_TYPE = "Multikey"
DID_CONTEXT_V1 = "https://www.w3.org/ns/did/v1"
MULTIKEY_CONTEXT_V1 = "https://w3id.org/security/multikey/v1"
VERIFICATION_RELATIONSHIPS = ("authentication", "assertionMethod", "capabilityInvocation", "capabilityDelegation")

_RAW = serialization.Encoding.Raw


def _public_bytes(public_key: bytes | Ed25519PublicKey) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(_RAW, serialization.PublicFormat.Raw)
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != ED25519_KEY_LENGTH:
        raise DidKeyError("an Ed25519 public key is 32 bytes")
    return bytes(public_key)


def _secret_bytes(secret_key: bytes | Ed25519PrivateKey) -> bytes:
    if isinstance(secret_key, Ed25519PrivateKey):
        return secret_key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    if not isinstance(secret_key, (bytes, bytearray)) or len(secret_key) != ED25519_KEY_LENGTH:
        raise DidKeyError("an Ed25519 secret key (seed) is 32 bytes")
    return bytes(secret_key)


def _decode_multikey(value: str, expected_codec: int, what: str) -> bytes:
    if isinstance(value, str) and len(value) > MAX_MULTIKEY_LENGTH:  # decoding base58 is quadratic
        raise DidKeyError(f"{what} Multikey is {len(value)} characters; an Ed25519 one is 48")
    try:
        codec, key = multicodec_unwrap(multibase_base58btc_decode(value))
    except EncodingError as exc:
        raise DidKeyError(f"invalid {what} Multikey {value!r}: {exc}") from None
    if codec != expected_codec:
        raise DidKeyError(f"{what} Multikey {value!r} has multicodec {codec:#x}, expected {expected_codec:#x}")
    if len(key) != ED25519_KEY_LENGTH:
        raise DidKeyError(f"{what} Multikey {value!r} holds {len(key)} bytes, expected 32")
    return key


def encode_public_key_multibase(public_key: bytes | Ed25519PublicKey) -> str:
    """``publicKeyMultibase`` of an Ed25519 public key (``z6Mk...``)."""
    return multibase_base58btc_encode(multicodec_wrap(ED25519_PUB_MULTICODEC, _public_bytes(public_key)))


def decode_public_key_multibase(value: str) -> bytes:
    """Raw 32-byte Ed25519 public key from a ``publicKeyMultibase`` value."""
    return _decode_multikey(value, ED25519_PUB_MULTICODEC, "public key")


def encode_secret_key_multibase(secret_key: bytes | Ed25519PrivateKey) -> str:
    """``secretKeyMultibase`` of an Ed25519 secret key (32-byte seed, multicodec 0x1300)."""
    return multibase_base58btc_encode(multicodec_wrap(ED25519_PRIV_MULTICODEC, _secret_bytes(secret_key)))


def decode_secret_key_multibase(value: str) -> bytes:
    """Raw 32-byte Ed25519 seed from a ``secretKeyMultibase`` value."""
    return _decode_multikey(value, ED25519_PRIV_MULTICODEC, "secret key")


def did_from_public_key(public_key: bytes | Ed25519PublicKey) -> str:
    return DID_KEY_PREFIX + encode_public_key_multibase(public_key)


def public_key_from_did(did: str) -> bytes:
    if not isinstance(did, str) or not did.startswith(DID_KEY_PREFIX):
        raise DidKeyError(f"not a did:key identifier: {did!r}")
    return decode_public_key_multibase(did[len(DID_KEY_PREFIX):])


@dataclass(frozen=True)
class VerificationMethod:
    """A resolved Multikey verification method."""

    id: str
    controller: str
    public_key_multibase: str
    type: str = MULTIKEY_TYPE

    @property
    def public_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(decode_public_key_multibase(self.public_key_multibase))

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.public_key.verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "controller": self.controller,
            "publicKeyMultibase": self.public_key_multibase,
        }


def resolve_did_key(did: str) -> dict:
    """The DID document of a did:key (Multikey representation); pure, no I/O."""
    if "#" in did:
        raise DidKeyError(f"a DID has no fragment: {did!r}")
    multikey = did[len(DID_KEY_PREFIX):] if did.startswith(DID_KEY_PREFIX) else None
    public_key_from_did(did)  # validates prefix, multicodec and length
    method = VerificationMethod(id=f"{did}#{multikey}", controller=did, public_key_multibase=multikey)
    document = {"@context": [DID_CONTEXT_V1, MULTIKEY_CONTEXT_V1], "id": did, "verificationMethod": [method.to_json()]}
    for relationship in VERIFICATION_RELATIONSHIPS:
        document[relationship] = [method.id]
    return document


def resolve_verification_method(verification_method: str, *, proof_purpose: str | None = None) -> VerificationMethod:
    """Resolve ``did:key:<mk>#<mk>`` to its verification method.

    With ``proof_purpose`` the method must also be listed under that verification
    relationship in the DID document (always true for did:key's four relationships).
    """
    if not isinstance(verification_method, str) or "#" not in verification_method:
        raise DidKeyError(f"verification method must be a DID URL with a fragment: {verification_method!r}")
    did, fragment = verification_method.split("#", 1)
    document = resolve_did_key(did)
    method = document["verificationMethod"][0]
    if method["id"] != verification_method:
        raise DidKeyError(f"{did} has no verification method #{fragment}")
    if proof_purpose is not None and verification_method not in document.get(proof_purpose, ()):
        raise DidKeyError(f"{verification_method} is not authorised for proof purpose {proof_purpose!r}")
    return VerificationMethod(id=method["id"], controller=did, public_key_multibase=method["publicKeyMultibase"])


class Ed25519KeyPair:
    """An Ed25519 signing key with its did:key identity. ``repr`` never shows the secret."""

    __slots__ = ("private_key", "public_key", "public_key_multibase", "did")

    def __init__(self, private_key: Ed25519PrivateKey):
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.public_key_multibase = encode_public_key_multibase(self.public_key)
        self.did = DID_KEY_PREFIX + self.public_key_multibase

    @classmethod
    def generate(cls) -> "Ed25519KeyPair":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_secret_bytes(cls, seed: bytes) -> "Ed25519KeyPair":
        return cls(Ed25519PrivateKey.from_private_bytes(_secret_bytes(seed)))

    @classmethod
    def from_multikey(cls, secret_key_multibase: str, public_key_multibase: str | None = None) -> "Ed25519KeyPair":
        """Load a key pair; when the public Multikey is given it must match the secret."""
        pair = cls.from_secret_bytes(decode_secret_key_multibase(secret_key_multibase))
        if public_key_multibase is not None and public_key_multibase != pair.public_key_multibase:
            raise DidKeyError("publicKeyMultibase does not belong to secretKeyMultibase")
        return pair

    @property
    def secret_key_multibase(self) -> str:
        return encode_secret_key_multibase(self.private_key)

    @property
    def verification_method_id(self) -> str:
        return f"{self.did}#{self.public_key_multibase}"

    @property
    def verification_method(self) -> VerificationMethod:
        return VerificationMethod(self.verification_method_id, self.did, self.public_key_multibase)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def to_multikey(self, *, include_secret: bool = False) -> dict:
        """Multikey JSON of the verification method, optionally with ``secretKeyMultibase``."""
        doc = {"@context": MULTIKEY_CONTEXT_V1, **self.verification_method.to_json()}
        if include_secret:
            doc["secretKeyMultibase"] = self.secret_key_multibase
        return doc

    def __repr__(self) -> str:
        return f"Ed25519KeyPair(did={self.did!r})"
