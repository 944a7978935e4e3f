import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from services.credentials import (
    DidKeyError,
    Ed25519KeyPair,
    EncodingError,
    decode_public_key_multibase,
    decode_secret_key_multibase,
    did_from_public_key,
    encode_public_key_multibase,
    encode_secret_key_multibase,
    public_key_from_did,
    resolve_did_key,
    resolve_verification_method,
)
from services.credentials.multibase import (
    base58btc_decode,
    base58btc_encode,
    multibase_base58btc_decode,
    multibase_base64url_decode,
    multibase_base64url_encode,
    varint_decode,
    varint_encode,
)

from .helpers import read_json


@given(st.binary(max_size=80))
def test_base58btc_round_trip(data):
    assert base58btc_decode(base58btc_encode(data)) == data


@given(st.binary(max_size=80))
def test_base64url_round_trip(data):
    encoded = multibase_base64url_encode(data)
    assert encoded.startswith("u") and "=" not in encoded
    assert multibase_base64url_decode(encoded) == data


def test_base58btc_known_values():
    assert base58btc_encode(b"Hello World!") == "2NEpo7TZRRrLZSi2U"
    assert base58btc_encode(b"\0\0\x01") == "112"
    assert base58btc_decode("") == b""
    with pytest.raises(EncodingError):
        base58btc_decode("0OIl")
    with pytest.raises(EncodingError):
        multibase_base58btc_decode("f00")


@pytest.mark.parametrize(
    "value, encoded", [(0xED, b"\xed\x01"), (0x1300, b"\x80\x26"), (1, b"\x01"), (300, b"\xac\x02")]
)
def test_varint(value, encoded):
    assert varint_encode(value) == encoded
    assert varint_decode(encoded + b"rest") == (value, len(encoded))


def test_multikey_prefixes():
    key = Ed25519PrivateKey.generate()
    public = encode_public_key_multibase(key.public_key())
    secret = encode_secret_key_multibase(key)
    assert public.startswith("z6Mk")
    assert multibase_base58btc_decode(public)[:2] == b"\xed\x01"
    assert multibase_base58btc_decode(secret)[:2] == b"\x80\x26"
    assert len(decode_public_key_multibase(public)) == 32
    pair = Ed25519KeyPair.from_multikey(secret, public)
    assert pair.public_key_multibase == public
    assert decode_secret_key_multibase(pair.secret_key_multibase) == decode_secret_key_multibase(secret)


def test_vector_key_pair_round_trip(vectors):
    pair = read_json(vectors / "keyPair.json")
    seed = decode_secret_key_multibase(pair["privateKeyMultibase"])
    assert encode_secret_key_multibase(seed) == pair["privateKeyMultibase"]
    assert Ed25519KeyPair.from_secret_bytes(seed).public_key_multibase == pair["publicKeyMultibase"]


def test_mismatched_public_key_rejected():
    a, b = Ed25519KeyPair.generate(), Ed25519KeyPair.generate()
    with pytest.raises(DidKeyError, match="does not belong"):
        Ed25519KeyPair.from_multikey(a.secret_key_multibase, b.public_key_multibase)


def test_wrong_codec_rejected():
    pair = Ed25519KeyPair.generate()
    with pytest.raises(DidKeyError, match="multicodec"):
        decode_public_key_multibase(pair.secret_key_multibase)
    with pytest.raises(DidKeyError, match="multicodec"):
        decode_secret_key_multibase(pair.public_key_multibase)
    with pytest.raises(DidKeyError):
        decode_public_key_multibase(pair.public_key_multibase[:-3])


def test_did_and_resolution():
    pair = Ed25519KeyPair.generate()
    did = did_from_public_key(pair.public_key)
    assert did == pair.did and did.startswith("did:key:z6Mk")
    assert public_key_from_did(did) == decode_public_key_multibase(pair.public_key_multibase)

    document = resolve_did_key(did)
    assert document["id"] == did
    (method,) = document["verificationMethod"]
    assert method == {
        "id": pair.verification_method_id,
        "type": "Multikey",
        "controller": did,
        "publicKeyMultibase": pair.public_key_multibase,
    }
    assert document["assertionMethod"] == [pair.verification_method_id]

    resolved = resolve_verification_method(pair.verification_method_id, proof_purpose="assertionMethod")
    assert resolved == pair.verification_method
    assert resolved.verify(pair.sign(b"data"), b"data")
    assert not resolved.verify(pair.sign(b"data"), b"date")


@pytest.mark.parametrize(
    "bad",
    [
        "did:web:example.com#key-1",
        "did:key:z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2",  # no fragment
        "did:key:z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2#key-1",  # wrong fragment
    ],
)
def test_bad_verification_methods(bad):
    with pytest.raises(DidKeyError):
        resolve_verification_method(bad)


def test_repr_hides_secret():
    pair = Ed25519KeyPair.generate()
    assert pair.secret_key_multibase not in repr(pair)
    assert "secretKeyMultibase" not in pair.to_multikey()
    assert pair.to_multikey(include_secret=True)["secretKeyMultibase"] == pair.secret_key_multibase
