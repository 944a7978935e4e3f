"""Blockchain anchoring of credential hashes: RFC 6962 Merkle batches, an on-chain registry, proofs.

Pure domain code (no Dagster, no HTTP server). ``merkle`` and ``anchoring``
need only the standard library; ``chain`` (web3, eth-tester, py-evm) is
imported on first use of its names, so the rest works without those libraries.
"""

from services.anchoring.anchoring import (
    AnchoredBatch,
    CredentialProof,
    Verification,
    anchor_batch,
    build_tree,
    normalize_credential_hash,
    verify,
    verify_inclusion_only,
)
from services.anchoring.merkle import MerkleTree, leaf_hash, merkle_root, node_hash, verify_inclusion

_CHAIN_NAMES = {
    "AnchorReceipt",
    "AnchorRecord",
    "AnchorRejected",
    "BlockInfo",
    "ChainAdapter",
    "ChainError",
    "ChainIdMismatch",
    "InProcessEthereumChain",
    "JsonRpcChain",
    "TransactionInfo",
    "Web3ChainAdapter",
}


def __getattr__(name: str):
    if name in _CHAIN_NAMES:
        from services.anchoring import chain

        return getattr(chain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnchorReceipt",
    "AnchorRecord",
    "AnchorRejected",
    "AnchoredBatch",
    "BlockInfo",
    "ChainAdapter",
    "ChainError",
    "ChainIdMismatch",
    "CredentialProof",
    "InProcessEthereumChain",
    "JsonRpcChain",
    "MerkleTree",
    "TransactionInfo",
    "Verification",
    "Web3ChainAdapter",
    "anchor_batch",
    "build_tree",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "normalize_credential_hash",
    "verify",
    "verify_inclusion",
    "verify_inclusion_only",
]
