"""The chain the platform is configured for, read from the environment of a process in ``.venv-chain``.

The Dagster asset and the ``platformq chain`` commands (main environment) start this environment's processes
with ``PLATFORMQ_CHAIN_RPC_URL``, ``PLATFORMQ_CHAIN_PRIVATE_KEY``, ``PLATFORMQ_CHAIN_ID`` and
``PLATFORMQ_CHAIN_REGISTRY`` set from the platform's settings (an empty value means unset). The private key
travels only in the environment, never in a file or in Pipes' context.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_RPC_URL = "PLATFORMQ_CHAIN_RPC_URL"
ENV_PRIVATE_KEY = "PLATFORMQ_CHAIN_PRIVATE_KEY"
ENV_CHAIN_ID = "PLATFORMQ_CHAIN_ID"
ENV_REGISTRY = "PLATFORMQ_CHAIN_REGISTRY"


@dataclass(frozen=True)
class ChainConfig:
    chain_id: int
    rpc_url: str | None
    private_key: str | None
    registry: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ChainConfig":
        raw_id = environ.get(ENV_CHAIN_ID) or "1337"
        try:
            chain_id = int(raw_id)
        except ValueError:
            raise ValueError(f"{ENV_CHAIN_ID} must be an integer, got {raw_id!r}") from None
        rpc_url = environ.get(ENV_RPC_URL) or None
        return cls(chain_id, rpc_url, environ.get(ENV_PRIVATE_KEY) or None, environ.get(ENV_REGISTRY) or None)

    @property
    def persistent(self) -> bool:
        return self.rpc_url is not None

    def chain(self, *, sign: bool = True):
        """The configured ChainAdapter: a JSON-RPC node, or a fresh in-process py-evm chain.

        ``sign=False`` is for reading only (verifying proofs): no key is needed, a throwaway one stands in."""
        from services.anchoring.chain import InProcessEthereumChain, JsonRpcChain

        if not self.rpc_url:
            return InProcessEthereumChain(chain_id=self.chain_id)
        key = self.private_key
        if key is None:
            if sign:
                raise ValueError(f"{ENV_RPC_URL} is set but {ENV_PRIVATE_KEY} is not: anchoring on a JSON-RPC "
                                 "chain needs the key of the account that pays for it")
            import secrets

            key = "0x" + secrets.token_hex(32)
        return JsonRpcChain(self.rpc_url, key, expected_chain_id=self.chain_id)
