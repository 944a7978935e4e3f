import gzip
import random

import pytest

from services.credentials import (
    MIN_BITSTRING_LENGTH,
    REVOCATION,
    SUSPENSION,
    Ed25519KeyPair,
    StatusList,
    StatusListError,
    StatusRegistry,
    check_status,
    status_entry,
    status_list_credential,
)
from services.credentials.multibase import multibase_base64url_decode, multibase_base64url_encode

# The all-zero 16 KiB list from the Bitstring Status List v1.0 examples.
SPEC_EMPTY_LIST = "uH4sIAAAAAAAAA-3BMQEAAADCoPVPbQwfoAAAAAAAAAAAAAAAAAAAAIC3AYbSVKsAQAAA"


def test_spec_example_decodes_to_empty_list():
    status_list = StatusList.decode(SPEC_EMPTY_LIST, REVOCATION)
    assert status_list.length == MIN_BITSTRING_LENGTH == 131072
    assert not any(status_list.to_bytes())


def test_encoded_list_format():
    status_list = StatusList(REVOCATION)
    status_list.set(0)
    status_list.set(131071)
    encoded = status_list.encode()
    assert encoded.startswith("u") and "=" not in encoded and "+" not in encoded and "/" not in encoded
    raw = gzip.decompress(multibase_base64url_decode(encoded))
    assert len(raw) == 16384
    assert raw[0] == 0x80 and raw[-1] == 0x01, "index 0 is the left-most bit"
    assert encoded == status_list.encode(), "encoding is deterministic"
    decoded = StatusList.decode(encoded, REVOCATION)
    assert decoded.get(0) and decoded.get(131071) and not decoded.get(1)


def test_set_get_clear_and_bounds():
    status_list = StatusList(SUSPENSION)
    rng = random.Random(7)
    indexes = {rng.randrange(status_list.length) for _ in range(200)}
    for i in indexes:
        status_list.set(i)
    assert all(status_list.get(i) for i in indexes)
    assert sum(bin(b).count("1") for b in status_list.to_bytes()) == len(indexes)
    for i in indexes:
        status_list.clear(i)
    assert not any(status_list.to_bytes())
    for bad in (-1, MIN_BITSTRING_LENGTH, "3", True):
        with pytest.raises(StatusListError):
            status_list.get(bad)


def test_too_short_or_malformed_lists_rejected():
    with pytest.raises(StatusListError):
        StatusList(REVOCATION, length=1024)
    short = multibase_base64url_encode(gzip.compress(bytes(1024)))
    with pytest.raises(StatusListError, match="STATUS_LIST_LENGTH_ERROR"):
        StatusList.decode(short, REVOCATION)
    with pytest.raises(StatusListError):
        StatusList.decode("zabc", REVOCATION)
    with pytest.raises(StatusListError, match="GZIP"):
        StatusList.decode(multibase_base64url_encode(b"not gzip at all"), REVOCATION)
    bomb = multibase_base64url_encode(gzip.compress(bytes(64 * 1024 * 1024)))
    with pytest.raises(StatusListError, match="maximum"):
        StatusList.decode(bomb, REVOCATION)
    with pytest.raises(StatusListError, match="not supported"):
        StatusList("message")


def test_entry_shape():
    entry = status_entry("https://example.com/credentials/status/3", 94567, REVOCATION)
    assert entry == {
        "id": "https://example.com/credentials/status/3#94567",
        "type": "BitstringStatusListEntry",
        "statusPurpose": "revocation",
        "statusListIndex": "94567",
        "statusListCredential": "https://example.com/credentials/status/3",
    }


def test_status_list_credential_shape():
    status_list = StatusList(REVOCATION)
    credential = status_list_credential(
        "https://example.com/status/3", "did:example:issuer", status_list, valid_from="2024-01-01T00:00:00Z"
    )
    assert credential["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
    assert credential["credentialSubject"] == {
        "id": "https://example.com/status/3#list",
        "type": "BitstringStatusList",
        "statusPurpose": "revocation",
        "encodedList": status_list.encode(),
    }


@pytest.fixture(scope="module")
def registry():
    return StatusRegistry("https://status.example/lists/", Ed25519KeyPair.generate(), rng=random.Random(1))


def test_allocation_is_unique(registry):
    indexes = [registry.allocate() for _ in range(500)]
    assert len(set(indexes)) == 500
    assert all(0 <= i < MIN_BITSTRING_LENGTH for i in indexes)
    entries = registry.entries(indexes[0])
    assert [e["statusPurpose"] for e in entries] == [REVOCATION, SUSPENSION]
    assert entries[0]["statusListCredential"] == "https://status.example/lists/revocation"
    with pytest.raises(StatusListError, match="not allocated"):
        registry.entries(next(i for i in range(MIN_BITSTRING_LENGTH) if i not in registry.allocated))


def test_signed_status_list_credential_verifies_and_reflects_changes(registry):
    from services.credentials import verify_credential

    index = registry.allocate()
    registry.suspend(index)
    credential = registry.fetch(registry.list_url(SUSPENSION))
    assert verify_credential(credential), verify_credential(credential).errors
    assert StatusList.decode(credential["credentialSubject"]["encodedList"], SUSPENSION).get(index)
    registry.unsuspend(index)
    refreshed = registry.fetch(registry.list_url(SUSPENSION))
    assert not StatusList.decode(refreshed["credentialSubject"]["encodedList"], SUSPENSION).get(index)
    with pytest.raises(StatusListError):
        registry.fetch("https://status.example/lists/other")


def test_check_status_rejects_bad_entries(registry):
    index = registry.allocate()
    revocation, suspension = registry.entries(index)
    ok = lambda credential: []  # noqa: E731

    assert check_status(revocation, registry.fetch, ok).is_set is False
    registry.revoke(index)
    assert check_status(revocation, registry.fetch, ok).is_set is True

    with pytest.raises(StatusListError, match="decimal"):
        check_status({**revocation, "statusListIndex": 5}, registry.fetch, ok)
    with pytest.raises(StatusListError, match="RANGE_ERROR"):
        check_status({**revocation, "statusListIndex": str(MIN_BITSTRING_LENGTH)}, registry.fetch, ok)
    with pytest.raises(StatusListError, match="STATUS_VERIFICATION_ERROR"):
        # an entry claiming suspension but pointing at the revocation list
        check_status({**suspension, "statusListCredential": revocation["statusListCredential"]}, registry.fetch, ok)
    with pytest.raises(StatusListError, match="STATUS_VERIFICATION_ERROR"):
        check_status(revocation, registry.fetch, lambda credential: ["signature does not verify"])
    with pytest.raises(StatusListError, match="could not be retrieved"):
        check_status(revocation, lambda url: (_ for _ in ()).throw(OSError("down")), ok)
    with pytest.raises(StatusListError, match="issued by"):
        check_status(revocation, registry.fetch, ok, expected_issuer="did:example:someone-else")


def test_a_status_list_index_of_too_many_digits_is_refused_before_parsing(registry):
    """int() of more than 4300 digits raises a plain ValueError (a 500 on verify): more than 10 digits, far
    beyond any list, is a StatusListError before anything is parsed or fetched (review item 2)."""
    revocation, _ = registry.entries(registry.allocate())
    fetched = []

    def fetch(url):
        fetched.append(url)
        return registry.fetch(url)

    for index in ("9" * 5000, "1" * 11, "0" * 11 + "1"):
        with pytest.raises(StatusListError, match="at most 10 digits"):
            check_status({**revocation, "statusListIndex": index}, fetch, lambda credential: [])
    assert fetched == []
    assert check_status({**revocation, "statusListIndex": "0000000001"}, fetch, lambda c: []).index == 1
