"""The AnchorRegistry contract: reproducible build, deploy, anchor, read, reverts."""

import hashlib
import json

import pytest

from services.anchoring.artifact import ARTIFACT_PATH, load_artifact, source_text


def test_artifact_is_a_reproducible_build():
    import vyper
    from services.anchoring.artifact import compile_registry

    committed = load_artifact()
    assert vyper.__version__ == committed.compiler_version, (
        f"artifact was built with vyper {committed.compiler_version}; "
        f"vyper {vyper.__version__} is installed, so bytecode is not comparable"
    )
    rebuilt = compile_registry()
    assert rebuilt.bytecode == committed.bytecode  # byte for byte
    assert rebuilt.bytecode_runtime == committed.bytecode_runtime
    assert rebuilt.abi == committed.abi
    assert rebuilt.source_sha256 == committed.source_sha256


def test_artifact_matches_committed_source():
    committed = load_artifact()
    assert committed.source_sha256 == hashlib.sha256(source_text().encode("utf-8")).hexdigest()
    raw = json.loads(ARTIFACT_PATH.read_text())
    assert raw["compiler"]["name"] == "vyper" and raw["compiler"]["version"] == committed.compiler_version
    names = {(e["type"], e.get("name")) for e in committed.abi}
    assert {("function", "anchor"), ("function", "anchored_at"), ("function", "owner"), ("event", "Anchored")} <= names


def test_changed_source_changes_bytecode():
    from services.anchoring.artifact import compile_registry

    # The metadata trailer carries a hash of the source: a comment edit is detected.
    edited = compile_registry(source_text() + "\n# edited\n")
    assert edited.bytecode != load_artifact().bytecode


def test_deploy_anchor_and_read(chain_a, registry_a, fresh_root):
    assert chain_a.is_registry(registry_a)
    assert chain_a.registry_owner(registry_a) == chain_a.account
    assert chain_a.get_anchor(registry_a, fresh_root) is None

    receipt = chain_a.anchor_root(registry_a, fresh_root, "batch-2025-01-01")
    block = chain_a.block(receipt.block_number)
    assert receipt.timestamp == block.timestamp > 0
    assert receipt.tx_hash.startswith("0x") and len(receipt.tx_hash) == 66

    record = chain_a.get_anchor(registry_a, fresh_root)
    assert record.batch_id == "batch-2025-01-01"
    assert record.timestamp == receipt.timestamp
    assert record.block_number == receipt.block_number

    registry = chain_a.w3.eth.contract(address=registry_a, abi=load_artifact().abi)
    assert registry.functions.anchored_at(fresh_root).call() == receipt.timestamp
    assert registry.functions.anchored_at(b"\x55" * 32).call() == 0

    # the event is in the receipt, with the indexed root and owner
    logs = registry.events.Anchored().process_receipt(chain_a.w3.eth.get_transaction_receipt(receipt.tx_hash))
    assert len(logs) == 1
    args = logs[0]["args"]
    assert bytes(args["root"]) == fresh_root
    assert args["owner"] == chain_a.account
    assert args["batch_id"] == "batch-2025-01-01"
    assert args["timestamp"] == receipt.timestamp
    # and it can be found by its indexed root, as an indexer would
    found = registry.events.Anchored().get_logs(from_block=0, argument_filters={"root": fresh_root})
    assert [bytes(e["args"]["root"]) for e in found] == [fresh_root]


def test_non_owner_anchor_reverts(chain_a, registry_a, fresh_root):
    from services.anchoring.chain import AnchorRejected

    stranger = chain_a.with_account(1)
    assert stranger.account != chain_a.account
    with pytest.raises(AnchorRejected, match="not owner"):
        stranger.anchor_root(registry_a, fresh_root, "intruder")
    assert chain_a.get_anchor(registry_a, fresh_root) is None


def test_non_owner_transaction_sent_anyway_reverts_on_chain(chain_a, registry_a, fresh_root):
    # Skip the adapter's pre-flight gas estimate: the EVM itself must refuse.
    stranger = chain_a.with_account(2)
    registry = chain_a.w3.eth.contract(address=registry_a, abi=load_artifact().abi)
    tx = registry.functions.anchor(fresh_root, "intruder").build_transaction(
        {
            "chainId": chain_a.chain_id,
            "from": stranger.account,
            "nonce": chain_a.w3.eth.get_transaction_count(stranger.account),
            "gas": 200_000,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    signed = stranger._signer.sign_transaction(tx)
    tx_hash = chain_a.w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = chain_a.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 0
    assert chain_a.get_anchor(registry_a, fresh_root) is None


def test_reanchoring_the_same_root_reverts(chain_a, registry_a, fresh_root):
    from services.anchoring.chain import AnchorRejected

    first = chain_a.anchor_root(registry_a, fresh_root, "first")
    with pytest.raises(AnchorRejected, match="already anchored"):
        chain_a.anchor_root(registry_a, fresh_root, "second")
    record = chain_a.get_anchor(registry_a, fresh_root)
    assert (record.batch_id, record.timestamp) == ("first", first.timestamp)


def test_empty_root_and_bad_batch_ids_are_refused(chain_a, registry_a, fresh_root):
    from services.anchoring.chain import AnchorRejected

    with pytest.raises(AnchorRejected, match="empty root"):
        chain_a.anchor_root(registry_a, b"\x00" * 32, "empty")
    with pytest.raises(ValueError):
        chain_a.anchor_root(registry_a, fresh_root, "x" * 65)
    with pytest.raises(ValueError):
        chain_a.anchor_root(registry_a, fresh_root, "")
    with pytest.raises(ValueError):
        chain_a.anchor_root(registry_a, fresh_root[:31], "short root")
    # 64 bytes exactly is the contract's limit and is accepted
    assert chain_a.anchor_root(registry_a, fresh_root, "b" * 64).batch_id == "b" * 64


def test_each_deploy_is_independent(chain_a, fresh_root):
    first, second = chain_a.deploy_registry(), chain_a.deploy_registry()
    assert first != second
    chain_a.anchor_root(first, fresh_root, "only-in-first")
    assert chain_a.get_anchor(first, fresh_root) is not None
    assert chain_a.get_anchor(second, fresh_root) is None
