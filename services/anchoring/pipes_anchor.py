"""Anchor one batch of credential hashes, run by Dagster Pipes inside ``.venv-chain``.

The chain libraries (web3, py-evm, vyper) cannot share the main environment
(pycryptodome pins clash), so the Dagster asset launches this script with that
environment's interpreter. Input (Pipes extras): ``hashes``, ``batch_id`` and
``out`` (where to write the proofs as JSON); the chain comes from the environment
(``services.anchoring.configured``: the private key is never in the extras, which
Pipes writes to a file). Reports the anchor as materialisation metadata and a check
that every proof verifies on chain.
"""

import os
import sys
import traceback

from dagster_pipes import open_dagster_pipes

from services.anchoring.anchoring import anchor_batch, verify
from services.anchoring.configured import ENV_RPC_URL, ChainConfig, ChainFailed, redact_rpc_url


def main() -> None:
    with open_dagster_pipes() as pipes:
        # Pipes sends Dagster a failure's message, stack, cause and context, and Python prints an uncaught one to
        # stderr (the run's compute log): web3, requests and urllib3 name the RPC URL (a provider's API key in
        # its path or query) in theirs. So the failure is reported redacted, raised outside the except block
        # (no cause or context chained to it); its traceback goes to stderr redacted too.
        failure = None
        try:
            _anchor(pipes)
        except Exception as exc:
            url = os.environ.get(ENV_RPC_URL)
            sys.stderr.write(redact_rpc_url("".join(traceback.format_exception(exc)), url))
            failure = ChainFailed(redact_rpc_url(f"{type(exc).__name__}: {exc}", url))
        if failure is not None:
            raise failure


def _anchor(pipes) -> None:
    import json

    extras = pipes.extras
    config = ChainConfig.from_env()
    chain = config.chain()
    registry = config.registry
    if registry is None:
        registry = chain.deploy_registry()
        if config.persistent:
            pipes.log.warning(f"no PLATFORMQ_CHAIN_REGISTRY: deployed a new anchor registry {registry} for this "
                              "run; deploy one with `platformq chain deploy-registry` and configure it")
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
        "chain": "json-rpc" if config.persistent else "in-process py-evm",
    })
    pipes.report_asset_check(check_name="anchored_proofs_verify", passed=not failed,
                             metadata={"proofs": len(results), "failed": len(failed),
                                       "reasons": "; ".join(sorted(set(failed))) or "none"})


if __name__ == "__main__":
    main()
