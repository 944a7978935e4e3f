"""JsonRpcChain against a real Ethereum node over HTTP (Hardhat Network on 127.0.0.1), not an in-process provider:
the node's own JSON-RPC answers, error shapes, nonces and receipts, and a chain that outlives the adapter."""

import dataclasses

import pytest

from services.anchoring.anchoring import anchor_batch, verify
from tests.chain_node import hardhat_node
from tests.services.anchoring.helpers import credential_hashes

NODE_CHAIN_ID = 31337


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with hardhat_node(NODE_CHAIN_ID, log_dir=tmp_path_factory.mktemp("chain-node")) as running:
        yield running


def _chain(node, key_index=0, **kwargs):
    from services.anchoring.chain import JsonRpcChain

    kwargs.setdefault("expected_chain_id", node.chain_id)
    return JsonRpcChain(node.url, node.keys[key_index], poll_latency_s=0.05, **kwargs)


@pytest.fixture(scope="module")
def registry(node):
    return _chain(node).deploy_registry()


def test_anchors_and_a_later_process_verifies_against_the_node(node, registry):
    owner = _chain(node)
    assert owner.is_registry(registry) and owner.registry_owner(registry) == owner.account
    hashes = credential_hashes(9, "json-rpc")
    batch = anchor_batch(hashes, owner, registry, "credentials-2026-11-27")
    assert not batch.resumed and batch.chain_id == NODE_CHAIN_ID and batch.tree_size == 9
    mined = node.rpc("eth_getTransactionReceipt", batch.tx_hash)
    assert int(mined["status"], 16) == 1 and mined["to"].lower() == registry.lower()

    # a verifier that knows only the proofs (e.g. read back from the lake) and the node's URL, no key of the owner
    reader = _chain(node, key_index=2)
    for proof in batch.proofs:
        result = verify(proof, reader, contract_address=registry)
        assert result, result.reason
        assert result.block_number == int(mined["blockNumber"], 16)
    tampered = dataclasses.replace(batch.proofs[0], leaf=credential_hashes(1, "forged")[0])
    assert not verify(tampered, reader, contract_address=registry)
    receipt = reader.find_anchor_receipt(registry, bytes.fromhex(batch.root))
    assert receipt.tx_hash == batch.tx_hash and receipt.batch_id == "credentials-2026-11-27"


def test_a_retry_reuses_the_anchor_and_sends_nothing(node, registry):
    owner = _chain(node)
    hashes = credential_hashes(4, "retry over http")
    first = anchor_batch(hashes, owner, registry, "credentials-2026-11-28")
    nonce = int(node.rpc("eth_getTransactionCount", owner.account, "latest"), 16)
    again = anchor_batch(hashes, _chain(node), registry, "credentials-2026-11-28")
    assert again.resumed and again.tx_hash == first.tx_hash and again.proofs == first.proofs
    assert int(node.rpc("eth_getTransactionCount", owner.account, "latest"), 16) == nonce


def test_the_nodes_revert_is_a_clear_rejection_and_costs_nothing(node, registry):
    from services.anchoring.chain import AnchorRejected

    stranger = _chain(node, key_index=1)
    balance = node.rpc("eth_getBalance", stranger.account, "latest")
    with pytest.raises(AnchorRejected, match="not owner"):
        stranger.anchor_root(registry, b"\x17" * 32, "not-mine")
    assert node.rpc("eth_getBalance", stranger.account, "latest") == balance  # refused before signing
    assert stranger.get_anchor(registry, b"\x17" * 32) is None

    owner = _chain(node)
    owner.anchor_root(registry, b"\x18" * 32, "once")
    with pytest.raises(AnchorRejected, match="already anchored"):
        owner.anchor_root(registry, b"\x18" * 32, "twice")


def test_a_node_on_another_chain_is_refused_before_anything_is_signed(node):
    from services.anchoring.chain import ChainIdMismatch

    wrong = _chain(node, key_index=1, expected_chain_id=1)
    nonce = node.rpc("eth_getTransactionCount", wrong.account, "latest")
    with pytest.raises(ChainIdMismatch, match=f"node reports chain id {NODE_CHAIN_ID}, adapter expects 1"):
        wrong.deploy_registry()
    assert node.rpc("eth_getTransactionCount", wrong.account, "latest") == nonce


def test_an_unreachable_node_is_an_error_not_a_hang():
    from services.anchoring.chain import JsonRpcChain
    from tests.ports import free_port

    chain = JsonRpcChain(f"http://127.0.0.1:{free_port()}", "0x" + "11" * 32, request_timeout_s=2)
    with pytest.raises(Exception) as raised:
        chain.deploy_registry()
    assert "connect" in str(raised.value).lower()


def test_an_address_that_is_not_a_registry_is_refused_before_anything_is_sent(node, registry):
    """A wrong PLATFORMQ_CHAIN_REGISTRY (an account, another contract) used to take the transaction and its gas
    (an account runs no code, so nothing reverts) and fail afterwards for want of an Anchored event."""
    from services.anchoring.chain import ChainError

    owner = _chain(node)
    not_a_registry = _chain(node, key_index=2).account
    nonce = node.rpc("eth_getTransactionCount", owner.account, "latest")
    with pytest.raises(ChainError, match=f"{not_a_registry} is not an anchor registry"):
        anchor_batch(credential_hashes(3, "wrong registry"), owner, not_a_registry, "credentials-2026-11-29")
    assert node.rpc("eth_getTransactionCount", owner.account, "latest") == nonce


def test_a_run_whose_receipt_was_lost_is_not_followed_by_a_second_transaction(node, registry):
    """The first run's transaction was sent and its receipt never seen (a fee spike keeps it in the mempool): the
    re-run found no anchor and sent another with the next nonce, which reverted ("already anchored", its gas
    spent) once the first was mined, and each re-run queued one more behind a stuck one. It is refused until the
    first is mined; the run after that finds the anchor and sends nothing."""
    from services.anchoring.chain import TransactionsPending

    owner = _chain(node, receipt_timeout_s=1)
    hashes = credential_hashes(5, "lost receipt")
    node.rpc("evm_setAutomine", False)
    try:
        with pytest.raises(Exception, match="not in the chain after"):  # web3's TimeExhausted: no receipt
            anchor_batch(hashes, owner, registry, "credentials-2026-11-30")
        sent = int(node.rpc("eth_getTransactionCount", owner.account, "pending"), 16)
        with pytest.raises(TransactionsPending, match="not mined yet"):
            anchor_batch(hashes, _chain(node, receipt_timeout_s=1), registry, "credentials-2026-11-30")
        assert int(node.rpc("eth_getTransactionCount", owner.account, "pending"), 16) == sent  # nothing sent
    finally:
        node.rpc("evm_setAutomine", True)
        node.rpc("evm_mine")
    again = anchor_batch(hashes, _chain(node), registry, "credentials-2026-11-30")
    assert again.resumed
    assert int(node.rpc("eth_getTransactionCount", owner.account, "latest"), 16) == sent
