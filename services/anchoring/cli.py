"""What ``platformq chain`` runs inside ``.venv-chain`` (the chain from the environment, see ``configured``).

    python -m services.anchoring.cli deploy    deploy an AnchorRegistry on the JSON-RPC chain; prints JSON
    python -m services.anchoring.cli verify    proofs (a JSON list on stdin) against the chain; prints JSON

Errors go to stderr with exit status 1; the main environment turns them into the command's message.
"""

import json
import os
import sys

from services.anchoring.configured import ENV_RPC_URL, ChainConfig, redact_rpc_url


def deploy(config: ChainConfig) -> dict:
    if not config.persistent:
        raise ValueError("PLATFORMQ_CHAIN_RPC_URL is not set: a registry on the in-process chain would vanish with "
                         "this process; configure the JSON-RPC chain to deploy to")
    chain = config.chain()
    address = chain.deploy_registry()
    return {"contract_address": address, "chain_id": chain.chain_id, "owner": chain.registry_owner(address)}


def verify_proofs(config: ChainConfig, proofs: list[dict]) -> list[dict]:
    from services.anchoring.anchoring import CredentialProof, verify

    if not config.persistent:
        raise ValueError("PLATFORMQ_CHAIN_RPC_URL is not set: proofs anchored on the in-process chain were checked "
                         "in their run; only a persistent (JSON-RPC) chain can be asked again")
    chain = config.chain(sign=False)
    out = []
    for raw in proofs:
        result = verify(CredentialProof.from_dict(raw), chain, contract_address=config.registry)
        out.append({"leaf": raw["leaf"], "valid": result.valid, "reason": result.reason,
                    "block_number": result.block_number, "anchored_at": result.anchored_at})
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("deploy", "verify"):
        print("usage: python -m services.anchoring.cli deploy|verify", file=sys.stderr)
        return 2
    try:
        config = ChainConfig.from_env()
        result = deploy(config) if argv[0] == "deploy" else verify_proofs(config, json.load(sys.stdin))
    except Exception as exc:  # one line for the operator, not a traceback through web3
        # web3/requests/urllib3 name the RPC URL (a provider's API key in its path or query): shown without it
        print(redact_rpc_url(f"{type(exc).__name__}: {exc}", os.environ.get(ENV_RPC_URL)), file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
