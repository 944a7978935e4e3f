"""Chain adapters: the real py-evm backend, custom chain ids, JSON-RPC transaction building."""

import pytest

from tests.services.anchoring.conftest import CHAIN_A_ID, CHAIN_B_ID

# An arbitrary, well-known test key (the first eth-tester account); funded only in-process.
TEST_KEY = "0x" + "00" * 31 + "01"


def test_backend_is_the_real_pyevm_backend(chain_a):
    from eth_tester import PyEVMBackend
    from eth_tester.backends.mock import MockBackend

    assert type(chain_a.tester.backend) is PyEVMBackend
    assert not isinstance(chain_a.tester.backend, MockBackend)


def test_two_chains_have_their_own_ids(chain_a, chain_b):
    assert (chain_a.chain_id, chain_b.chain_id) == (CHAIN_A_ID, CHAIN_B_ID)
    assert chain_a.w3.eth.chain_id == CHAIN_A_ID and chain_b.w3.eth.chain_id == CHAIN_B_ID
    assert chain_a.w3.net.version == str(CHAIN_A_ID)
    # The EVM itself (CHAINID opcode) sees the configured id, not only the RPC endpoint:
    # init code CHAINID PUSH0 MSTORE PUSH1 32 PUSH0 RETURN returns the chain id.
    for chain, expected in ((chain_a, CHAIN_A_ID), (chain_b, CHAIN_B_ID)):
        out = chain.w3.eth.call({"from": chain.account, "data": "0x465f5260205ff3"})
        assert int.from_bytes(out, "big") == expected


def test_transaction_signed_for_one_chain_is_refused_by_the_other(chain_a, chain_b, registry_a, fresh_root):
    tx = chain_a.prepare_anchor_transaction(registry_a, fresh_root, "replay")
    assert tx["chainId"] == CHAIN_A_ID
    signed = chain_a._signer.sign_transaction(tx)
    nonce_before = chain_b.w3.eth.get_transaction_count(chain_a.account)
    with pytest.raises(Exception, match="signed for chain 1337, this is chain 4242"):
        chain_b.w3.eth.send_raw_transaction(signed.raw_transaction)
    assert chain_b.w3.eth.get_transaction_count(chain_a.account) == nonce_before


def test_invalid_chain_ids_are_rejected():
    from services.anchoring.chain import InProcessEthereumChain

    for bad in (0, -1, 2**64, True, "1"):
        with pytest.raises(ValueError):
            InProcessEthereumChain(bad)


def test_block_and_transaction_lookups(chain_a, registry_a, fresh_root):
    receipt = chain_a.anchor_root(registry_a, fresh_root, "lookups")
    latest = chain_a.block()
    assert latest.number >= receipt.block_number
    assert chain_a.block(receipt.block_number).timestamp == receipt.timestamp
    tx = chain_a.get_transaction(receipt.tx_hash)
    assert tx.succeeded and tx.to == registry_a and tx.sender == chain_a.account
    assert tx.block_number == receipt.block_number
    assert chain_a.get_transaction("0x" + "ab" * 32) is None


def test_is_registry_is_false_for_other_code_and_accounts(chain_a, chain_b, registry_a):
    assert chain_a.is_registry(registry_a)
    assert not chain_a.is_registry(chain_a.account)  # an externally owned account: no code
    assert not chain_b.is_registry("0x" + "12" * 20)
    assert chain_a.get_anchor(chain_a.account, b"\x01" * 32) is None


# -- JsonRpcChain --------------------------------------------------------------
def test_json_rpc_chain_is_configured_without_touching_the_network():
    from services.anchoring.chain import JsonRpcChain

    chain = JsonRpcChain(
        "https://rpc.example.invalid:8545/v3/SECRET-API-KEY",
        TEST_KEY,
        expected_chain_id=11155111,
        request_timeout_s=7,
    )
    assert chain.account == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
    assert chain.w3.provider.endpoint_uri == "https://rpc.example.invalid:8545/v3/SECRET-API-KEY"
    assert chain.w3.provider.get_request_kwargs()["timeout"] == 7
    assert "SECRET" not in repr(chain) and TEST_KEY[-8:] not in repr(chain)
    assert "rpc.example.invalid:8545" in repr(chain)
    for bad_url in ("ftp://host", "localhost:8545", "http://"):
        with pytest.raises(ValueError):
            JsonRpcChain(bad_url, TEST_KEY)


def _json_rpc_chain_over(chain, private_key, **kwargs):
    """A JsonRpcChain whose HTTP transport is replaced by the in-process chain's provider.

    Everything above the transport (chain id check, nonce, fees, gas, signing,
    raw send, receipt polling, reverts) is the JsonRpcChain code path.
    """
    from services.anchoring.chain import JsonRpcChain

    rpc = JsonRpcChain("http://127.0.0.1:1", private_key, poll_latency_s=0.01, **kwargs)
    rpc.w3.provider = chain.provider
    # eth-tester reports reverts with its own exception class, a real node with web3's
    rpc.revert_errors = chain.revert_errors
    return rpc


def test_json_rpc_chain_builds_signs_and_sends_against_an_evm(chain_b):
    key = chain_b.backend.account_keys[3].to_bytes()
    rpc = _json_rpc_chain_over(chain_b, key, expected_chain_id=CHAIN_B_ID)
    assert rpc.chain_id == CHAIN_B_ID

    registry = rpc.deploy_registry()
    assert rpc.is_registry(registry) and rpc.registry_owner(registry) == rpc.account

    root = b"\x42" * 32
    tx = rpc.prepare_anchor_transaction(registry, root, "rpc-batch")
    latest = rpc.w3.eth.get_block("latest")
    assert tx["chainId"] == CHAIN_B_ID
    assert tx["from"] == rpc.account and tx["to"] == registry
    assert tx["nonce"] == rpc.w3.eth.get_transaction_count(rpc.account)
    assert tx["maxFeePerGas"] == 2 * latest["baseFeePerGas"] + tx["maxPriorityFeePerGas"]
    assert "gasPrice" not in tx  # EIP-1559 transaction
    estimate = rpc.w3.eth.estimate_gas({"from": rpc.account, "to": registry, "data": tx["data"]})
    assert estimate < tx["gas"] <= int(estimate * 1.25)

    receipt = rpc.anchor_root(registry, root, "rpc-batch")
    assert rpc.get_anchor(registry, root).batch_id == "rpc-batch"
    assert chain_b.get_anchor(registry, root).timestamp == receipt.timestamp  # same chain, seen by both


def test_json_rpc_chain_refuses_a_node_on_another_chain(chain_a):
    from services.anchoring.chain import ChainIdMismatch

    rpc = _json_rpc_chain_over(chain_a, chain_a.backend.account_keys[4].to_bytes(), expected_chain_id=1)
    with pytest.raises(ChainIdMismatch, match="node reports chain id 1337, adapter expects 1"):
        rpc.deploy_registry()
    assert chain_a.w3.eth.get_transaction_count(rpc.account) == 0  # nothing was sent


def test_json_rpc_chain_reports_reverts_and_fee_cap(chain_a, registry_a, fresh_root):
    from services.anchoring.chain import AnchorRejected, ChainError

    stranger = _json_rpc_chain_over(chain_a, chain_a.backend.account_keys[5].to_bytes())
    with pytest.raises(AnchorRejected, match="not owner"):
        stranger.anchor_root(registry_a, fresh_root, "nope")

    capped = _json_rpc_chain_over(chain_a, chain_a.backend.account_keys[0].to_bytes(), max_fee_per_gas_cap=1)
    with pytest.raises(ChainError, match="exceeds the configured cap"):
        capped.anchor_root(registry_a, fresh_root, "too-expensive")
    assert chain_a.get_anchor(registry_a, fresh_root) is None
