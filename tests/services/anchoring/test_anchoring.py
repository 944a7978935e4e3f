"""Batch anchoring end to end: per-credential proofs verify on their chain, never elsewhere."""

import dataclasses
import json

import pytest

from services.anchoring.anchoring import (
    CredentialProof,
    anchor_batch,
    build_tree,
    normalize_credential_hash,
    verify,
    verify_inclusion_only,
)
from tests.services.anchoring.helpers import credential_hashes


@pytest.fixture(scope="module")
def batch_a(chain_a, registry_a):
    return anchor_batch(credential_hashes(13, "a"), chain_a, registry_a, "batch-a")


def test_every_credential_gets_a_proof_that_verifies(chain_a, registry_a, batch_a):
    hashes = credential_hashes(13, "a")
    assert [p.leaf for p in batch_a.proofs] == hashes
    assert batch_a.tree_size == 13 and batch_a.chain_id == chain_a.chain_id
    for i, proof in enumerate(batch_a.proofs):
        assert (proof.index, proof.tree_size, proof.root) == (i, 13, batch_a.root)
        assert proof.chain_id == chain_a.chain_id
        assert proof.contract_address == registry_a
        assert proof.tx_hash == batch_a.tx_hash and proof.batch_id == "batch-a"
        result = verify(proof, chain_a)
        assert result, result.reason
        assert result.anchored_at == batch_a.anchored_at
        assert result.block_number == batch_a.block_number
    assert verify(batch_a.proof_for(hashes[4].upper()), chain_a, contract_address=registry_a)
    with pytest.raises(KeyError):
        batch_a.proof_for(credential_hashes(1, "not in batch")[0])


def test_proof_never_verifies_on_another_chain(chain_a, chain_b, registry_a, registry_b):
    # The hardest case: the same batch anchored on both chains, in registries that have
    # the same address (same deployer, same nonce) -- only the chain id tells them apart.
    hashes = credential_hashes(6, "both chains")
    on_a = anchor_batch(hashes, chain_a, registry_a, "twin")
    on_b = anchor_batch(hashes, chain_b, registry_b, "twin")
    assert registry_a == registry_b and on_a.root == on_b.root

    for pa, pb in zip(on_a.proofs, on_b.proofs):
        assert verify(pa, chain_a) and verify(pb, chain_b)
        wrong = verify(pa, chain_b)
        assert not wrong and "chain 1337, this chain is 4242" in wrong.reason
        assert not verify(pb, chain_a)
        # relabelling the proof with the other chain's id does not help either:
        # the transaction it names was never mined there
        relabelled = dataclasses.replace(pa, chain_id=chain_b.chain_id)
        assert not verify(relabelled, chain_b)


def test_proof_for_a_batch_anchored_only_elsewhere_fails(chain_a, chain_b, batch_a):
    proof = dataclasses.replace(batch_a.proofs[0], chain_id=chain_b.chain_id)
    result = verify(proof, chain_b)
    assert not result and "not anchored" in result.reason


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("leaf", "00" * 32, "inclusion"),
        ("leaf", "not hex", "inclusion"),
        ("index", 5, "inclusion"),
        ("index", 13, "inclusion"),
        ("tree_size", 4, "inclusion"),
        ("tree_size", 3, "inclusion"),
        ("tree_size", 200, "inclusion"),
        ("root", "11" * 32, "inclusion"),
        ("audit_path", (), "inclusion"),
        ("batch_id", "batch-b", "anchored as batch"),
        ("tx_hash", "0x" + "ab" * 32, "unknown"),
        ("tx_hash", "0x1234", "malformed"),
        ("contract_address", "0x" + "12" * 20, "no AnchorRegistry"),
        ("contract_address", "not an address", "malformed"),
        ("chain_id", 1, "this chain is 1337"),
    ],
)
def test_tampered_proof_fails(chain_a, batch_a, field, value, reason):
    proof = batch_a.proofs[3]
    assert verify(proof, chain_a)
    tampered = dataclasses.replace(proof, **{field: value})
    result = verify(tampered, chain_a)
    assert not result
    assert reason in result.reason


def test_tree_size_is_only_as_strong_as_rfc6962_makes_it(chain_a, batch_a):
    # The anchored root commits to the leaves, not to the tree size (RFC 9162 binds
    # the size through a signed tree head; the registry stores only the root). A size
    # giving the leaf the same path shape still verifies -- membership stays sound,
    # only the claimed size is unauthenticated. Index 3 has the same shape in 12, 13, 16.
    proof = batch_a.proofs[3]
    assert verify(dataclasses.replace(proof, tree_size=12), chain_a)
    assert not verify(dataclasses.replace(proof, tree_size=4), chain_a)


def test_flipped_audit_path_element_fails(chain_a, batch_a):
    proof = batch_a.proofs[7]
    for j in range(len(proof.audit_path)):
        path = list(proof.audit_path)
        path[j] = ("0" if path[j][0] != "0" else "1") + path[j][1:]
        result = verify(dataclasses.replace(proof, audit_path=tuple(path)), chain_a)
        assert not result and "inclusion" in result.reason


def test_proof_of_another_anchored_transaction_fails(chain_a, registry_a, batch_a):
    other = anchor_batch(credential_hashes(2, "other"), chain_a, registry_a, "other-batch")
    forged = dataclasses.replace(batch_a.proofs[0], tx_hash=other.tx_hash)
    result = verify(forged, chain_a)
    assert not result and "not the one that anchored" in result.reason


def test_trusted_registry_is_enforced(chain_a, registry_a, batch_a):
    rogue = chain_a.deploy_registry()
    assert verify(batch_a.proofs[0], chain_a, contract_address=registry_a)
    result = verify(batch_a.proofs[0], chain_a, contract_address=rogue)
    assert not result and "trusted is" in result.reason


def test_proof_round_trips_through_json(chain_a, batch_a):
    proof = batch_a.proofs[11]
    text = json.dumps(proof.to_dict())
    again = CredentialProof.from_dict(json.loads(text))
    assert again == proof
    assert set(proof.to_dict()) == {
        "leaf",
        "index",
        "tree_size",
        "audit_path",
        "root",
        "chain_id",
        "contract_address",
        "tx_hash",
        "batch_id",
    }
    assert verify(again, chain_a)


def test_single_credential_batch(chain_b, registry_b):
    batch = anchor_batch(credential_hashes(1, "single"), chain_b, registry_b, "single")
    (proof,) = batch.proofs
    assert proof.audit_path == () and proof.root == batch.root
    assert verify(proof, chain_b)


def test_batch_input_is_validated():
    with pytest.raises(ValueError, match="at least one"):
        build_tree([])
    with pytest.raises(ValueError, match="more than once"):
        build_tree(credential_hashes(2, "dup") * 2)
    with pytest.raises(ValueError, match="64 hex digits"):
        build_tree(["abc"])
    with pytest.raises(TypeError):
        normalize_credential_hash(b"\x00" * 32)
    assert normalize_credential_hash(" " + "AB" * 32 + "\n") == "ab" * 32


def test_inclusion_only_check_needs_no_chain(batch_a):
    assert all(verify_inclusion_only(p) for p in batch_a.proofs)
    assert not verify_inclusion_only(dataclasses.replace(batch_a.proofs[0], index=1))


def test_rejected_anchor_leaves_no_batch(chain_a, registry_a, batch_a):
    from services.anchoring.chain import AnchorRejected

    with pytest.raises(AnchorRejected, match="already anchored"):
        anchor_batch(credential_hashes(13, "a"), chain_a, registry_a, "batch-a-again")


def test_retried_batch_reuses_its_anchor_on_a_persistent_chain(chain_b):
    """A retry of trust/credential_anchors (same hashes, same batch id, a JSON-RPC registry that kept the
    first run's anchor) used to fail forever with "already anchored"; it reuses the anchor instead."""
    from services.anchoring.chain import AnchorRejected
    from tests.services.anchoring.test_chain import _json_rpc_chain_over

    rpc = _json_rpc_chain_over(chain_b, chain_b.backend.account_keys[5].to_bytes(), expected_chain_id=chain_b.chain_id)
    registry = rpc.deploy_registry()
    hashes = credential_hashes(5, "retry")
    first = anchor_batch(hashes, rpc, registry, "credentials-2024-01-04")
    block_after_first = rpc.w3.eth.block_number

    again = anchor_batch(hashes, rpc, registry, "credentials-2024-01-04")
    assert again.resumed and not first.resumed
    assert rpc.w3.eth.block_number == block_after_first  # nothing was sent: anchored once
    assert (again.root, again.tx_hash, again.block_number, again.anchored_at) == (
        first.root, first.tx_hash, first.block_number, first.anchored_at)
    assert again.proofs == first.proofs
    assert all(verify(p, rpc, contract_address=registry) for p in again.proofs)
    # the same root under another batch id is still refused, and a changed batch anchors anew
    with pytest.raises(AnchorRejected, match="already anchored"):
        anchor_batch(hashes, rpc, registry, "credentials-2024-01-05")
    other = anchor_batch(credential_hashes(4, "retry"), rpc, registry, "credentials-2024-01-04")
    assert not other.resumed and other.root != first.root and verify(other.proofs[0], rpc)
