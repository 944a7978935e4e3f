"""Anchor batches of credential hashes on a chain and verify per-credential proofs.

A batch of credential hashes (hex SHA-256 digests) becomes the leaves of an
RFC 6962 Merkle tree, in the order given; the root is anchored once in an
AnchorRegistry. Each credential gets a self-contained proof: its leaf, index,
tree size and audit path, plus where the root was anchored (chain id, registry
address, transaction, batch id).

``verify`` accepts a proof only if all of these hold on the chain it is given:
the audit path leads from the leaf to the root; the chain's id is the proof's
(so a proof never verifies against another chain, even one where the same
registry address and root exist); the code at the address is our registry; the
registry holds the root under the proof's batch id; and the proof's
transaction is the successful call to that registry, mined in the block the
registry recorded.

The chain is anything implementing ``services.anchoring.chain.ChainAdapter``;
this module itself needs no web3.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from services.anchoring.merkle import MerkleTree, leaf_hash, verify_inclusion

if TYPE_CHECKING:
    from services.anchoring.chain import ChainAdapter

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class CredentialProof:
    """Everything needed to check one credential against its anchored batch.

    Hashes (``leaf``, ``root``, ``audit_path``) are 64 lowercase hex digits;
    ``contract_address`` and ``tx_hash`` use Ethereum's 0x forms.
    """

    leaf: str
    index: int
    tree_size: int
    audit_path: tuple[str, ...]
    root: str
    chain_id: int
    contract_address: str
    tx_hash: str
    batch_id: str

    def to_dict(self) -> dict:
        data = asdict(self)
        data["audit_path"] = list(self.audit_path)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CredentialProof:
        fields = {name: data[name] for name in cls.__dataclass_fields__}
        fields["audit_path"] = tuple(fields["audit_path"])
        return cls(**fields)


@dataclass(frozen=True)
class AnchoredBatch:
    batch_id: str
    root: str
    tree_size: int
    chain_id: int
    contract_address: str
    tx_hash: str
    block_number: int
    anchored_at: int  # block timestamp recorded by the registry
    proofs: tuple[CredentialProof, ...]
    resumed: bool = False  # the registry already held this batch's root under this batch id (a retry)

    def proof_for(self, credential_hash: str) -> CredentialProof:
        wanted = normalize_credential_hash(credential_hash)
        for proof in self.proofs:
            if proof.leaf == wanted:
                return proof
        raise KeyError(f"{credential_hash} is not in batch {self.batch_id}")


@dataclass(frozen=True)
class Verification:
    valid: bool
    reason: str  # "ok", or why the proof was refused
    anchored_at: int | None = None
    block_number: int | None = None

    def __bool__(self) -> bool:
        return self.valid


def normalize_credential_hash(value: str) -> str:
    """A credential hash as 64 lowercase hex digits; raises TypeError/ValueError otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"credential hash must be a hex string, got {type(value).__name__}")
    lowered = value.strip().lower()
    if not _HEX64.fullmatch(lowered):
        raise ValueError(f"credential hash must be 64 hex digits (a SHA-256 digest), got {value!r}")
    return lowered


def build_tree(credential_hashes: Iterable[str]) -> tuple[list[str], MerkleTree]:
    """Validate a batch and build its tree; leaves are the raw 32-byte digests."""
    leaves = [normalize_credential_hash(h) for h in credential_hashes]
    if not leaves:
        raise ValueError("a batch needs at least one credential hash")
    seen: set[str] = set()
    duplicates = sorted({h for h in leaves if h in seen or seen.add(h)})
    if duplicates:
        raise ValueError(f"credential hashes appear more than once in the batch: {duplicates[:3]}")
    return leaves, MerkleTree(bytes.fromhex(h) for h in leaves)


def anchor_batch(
    credential_hashes: Iterable[str], chain: ChainAdapter, contract_address: str, batch_id: str
) -> AnchoredBatch:
    """Anchor one batch's Merkle root and return a proof for every credential, in input order.

    Idempotent per (root, batch id): when the registry already holds this root under this batch
    id (a retried run that anchored before it failed), the existing anchor is reused instead of
    being refused as "already anchored" forever. The same root under another batch id is still
    refused by the registry. An address whose code is not the AnchorRegistry's (an account, another
    contract, a typo) is refused before anything is sent: an account would take the transaction and its gas.
    """
    from services.anchoring.chain import ChainError

    leaves, tree = build_tree(credential_hashes)
    if not chain.is_registry(contract_address):
        raise ChainError(f"{contract_address} is not an anchor registry on chain {chain.chain_id} (its code is not "
                         "AnchorRegistry's): check PLATFORMQ_CHAIN_REGISTRY")
    existing = chain.find_anchor_receipt(contract_address, tree.root)
    resumed = existing is not None and existing.batch_id == batch_id
    receipt = existing if resumed else chain.anchor_root(contract_address, tree.root, batch_id)
    chain_id = chain.chain_id
    root = tree.root.hex()
    proofs = tuple(
        CredentialProof(
            leaf=leaf,
            index=i,
            tree_size=tree.size,
            audit_path=tuple(p.hex() for p in tree.inclusion_proof(i)),
            root=root,
            chain_id=chain_id,
            contract_address=receipt.contract_address,
            tx_hash=receipt.tx_hash,
            batch_id=batch_id,
        )
        for i, leaf in enumerate(leaves)
    )
    return AnchoredBatch(
        batch_id=batch_id,
        root=root,
        tree_size=tree.size,
        chain_id=chain_id,
        contract_address=receipt.contract_address,
        tx_hash=receipt.tx_hash,
        block_number=receipt.block_number,
        anchored_at=receipt.timestamp,
        proofs=proofs,
        resumed=resumed,
    )


def verify_inclusion_only(proof: CredentialProof) -> bool:
    """The Merkle half of ``verify``: does the audit path lead from the leaf to the root?"""
    try:
        leaf = bytes.fromhex(normalize_credential_hash(proof.leaf))
        path = [_hash_bytes(p) for p in proof.audit_path]
        root = _hash_bytes(proof.root)
    except (ValueError, TypeError):
        return False
    return verify_inclusion(leaf_hash(leaf), proof.index, proof.tree_size, path, root)


def verify(proof: CredentialProof, chain: ChainAdapter, *, contract_address: str | None = None) -> Verification:
    """Check ``proof`` against ``chain``; see the module docstring for what is checked.

    ``contract_address``, when given, is the registry the caller trusts on this
    chain; a proof naming any other address is refused.
    """
    if not verify_inclusion_only(proof):
        return Verification(False, "inclusion proof does not lead from the leaf to the root")
    if not (
        isinstance(proof.tx_hash, str)
        and _TX_HASH.fullmatch(proof.tx_hash)
        and isinstance(proof.contract_address, str)
        and _ADDRESS.fullmatch(proof.contract_address)
        and isinstance(proof.chain_id, int)
        and isinstance(proof.batch_id, str)
    ):
        return Verification(False, "malformed proof: chain id, registry address, transaction hash or batch id")
    if contract_address is not None and proof.contract_address.lower() != contract_address.lower():
        return Verification(False, f"proof names registry {proof.contract_address}, trusted is {contract_address}")
    if proof.chain_id != chain.chain_id:
        return Verification(False, f"proof is for chain {proof.chain_id}, this chain is {chain.chain_id}")
    if not chain.is_registry(proof.contract_address):
        return Verification(False, f"no AnchorRegistry at {proof.contract_address} on chain {chain.chain_id}")
    record = chain.get_anchor(proof.contract_address, bytes.fromhex(proof.root))
    if record is None:
        return Verification(False, f"root is not anchored in registry {proof.contract_address}")
    if record.batch_id != proof.batch_id:
        return Verification(False, f"root is anchored as batch {record.batch_id!r}, not {proof.batch_id!r}")
    tx = chain.get_transaction(proof.tx_hash)
    if tx is None:
        return Verification(False, f"transaction {proof.tx_hash} is unknown on chain {chain.chain_id}")
    if (
        not tx.succeeded
        or tx.to is None
        or tx.to.lower() != proof.contract_address.lower()
        or tx.block_number != record.block_number
    ):
        return Verification(False, f"transaction {proof.tx_hash} is not the one that anchored the root")
    return Verification(True, "ok", anchored_at=record.timestamp, block_number=record.block_number)


def _hash_bytes(value: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ValueError("expected 64 lowercase hex digits")
    return bytes.fromhex(value)
