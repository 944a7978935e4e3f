"""Anchor one batch of credential hashes, run by Dagster Pipes inside ``.venv-chain``.

The chain libraries (web3, py-evm, vyper) cannot share the main environment
(pycryptodome pins clash), so the Dagster asset launches this script with that
environment's interpreter. Input (Pipes extras): ``hashes``, ``batch_id``,
``chain_id``, ``out`` (where to write the proofs as JSON) and optionally
``rpc_url``/``private_key``/``registry`` for a real chain. Reports the anchor as
materialisation metadata and a check that every proof verifies on chain.
"""

import json

from dagster_pipes import open_dagster_pipes

from services.anchoring.anchoring import anchor_batch, verify
from services.anchoring.chain import InProcessEthereumChain, JsonRpcChain


def main() -> None:
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        if extras.get("rpc_url"):
            chain = JsonRpcChain(extras["rpc_url"], extras["private_key"], expected_chain_id=extras["chain_id"])
            registry = extras.get("registry") or chain.deploy_registry()
        else:
            chain = InProcessEthereumChain(chain_id=extras["chain_id"])
            registry = chain.deploy_registry()
        batch = anchor_batch(extras["hashes"], chain, registry, extras["batch_id"])
        results = [verify(p, chain, contract_address=registry) for p in batch.proofs]
        failed = [r.reason for r in results if not r.valid]
        with open(extras["out"], "w") as handle:
            json.dump([p.to_dict() for p in batch.proofs], handle)
        pipes.log.info(f"anchored {batch.tree_size} credential hashes on chain {batch.chain_id}: root {batch.root}")
        pipes.report_asset_materialization(metadata={
            "merkle_root": batch.root, "tree_size": batch.tree_size, "chain_id": batch.chain_id,
            "contract_address": batch.contract_address, "tx_hash": batch.tx_hash,
            "block_number": batch.block_number, "resumed_existing_anchor": batch.resumed,
            "chain": "in-process py-evm" if not extras.get("rpc_url") else "json-rpc",
        })
        pipes.report_asset_check(check_name="anchored_proofs_verify", passed=not failed,
                                 metadata={"proofs": len(results), "failed": len(failed),
                                           "reasons": "; ".join(sorted(set(failed))) or "none"})


if __name__ == "__main__":
    main()
