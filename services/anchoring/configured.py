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
from urllib.parse import parse_qsl, quote, unquote, urlsplit

ENV_RPC_URL = "PLATFORMQ_CHAIN_RPC_URL"
ENV_PRIVATE_KEY = "PLATFORMQ_CHAIN_PRIVATE_KEY"
ENV_CHAIN_ID = "PLATFORMQ_CHAIN_ID"
ENV_REGISTRY = "PLATFORMQ_CHAIN_REGISTRY"
REDACTED = "<redacted>"


def redact_rpc_url(text: str, url: str | None) -> str:
    """``text`` (an error message) without the secret parts of the JSON-RPC URL ``url``.

    A provider's URL carries its API key in the path (``/v3/<key>``) or the query, and sometimes credentials in
    its userinfo; web3, requests and urllib3 put the whole URL, or its path and query (urllib3's ``url: /v3/...``),
    into their exception messages. The whole URL becomes ``scheme://host:port/<redacted>``; the path with its
    query, the path, the query, the fragment, the userinfo, the password and every path segment or query value of
    8 characters or more (plain and percent-encoded) become ``<redacted>``. The host and port stay: they say
    which node failed."""
    if not text or not url:
        return text
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a URL we can take apart (a bad port): hide it whole
        return text.replace(url, REDACTED)
    host = parts.hostname or ""
    whole = f"{parts.scheme}://{host}{port}/{REDACTED}" if parts.scheme and host else REDACTED
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    userinfo = parts.netloc.rpartition("@")[0]
    pieces = {parts.path + query + fragment, parts.path + query, parts.path, query, parts.query, fragment,
              parts.fragment, userinfo, parts.password or ""}
    pieces |= {segment for segment in parts.path.split("/") if len(segment) >= 8}
    pieces |= {value for _, value in parse_qsl(parts.query, keep_blank_values=True) if len(value) >= 8}
    # requests and urllib3 may show a piece percent-encoded or decoded
    pieces |= {variant for piece in list(pieces) for variant in (quote(piece, safe=""), quote(piece),
                                                                   unquote(piece))}
    # a piece like "/" or "/v3" hides nothing and would mangle every message
    secret = sorted((p for p in pieces if len(p.strip("/?#:@")) >= 4), key=len, reverse=True)
    for candidate in (url, url.rstrip("/")):
        text = text.replace(candidate, whole)
    for piece in secret:
        text = text.replace(piece, ("/" if piece.startswith("/") else "") + REDACTED)
    return text


class ChainFailed(RuntimeError):
    """A chain command's failure, its message redacted (``redact_rpc_url``) and nothing chained to it."""


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
