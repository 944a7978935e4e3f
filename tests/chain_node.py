"""A real Ethereum JSON-RPC node on loopback for the anchoring tests: Hardhat Network (``hardhat node``, npm),
pinned in the Makefile, which installs it for ``make test`` (``.test-chain``, linked to a cache, with
``infra/test-chain/hardhat.config.js``). Standard library only: the main and the chain environment both use it.
"""

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
NODE_HOME = ROOT / ".test-chain"
HARDHAT = NODE_HOME / "node_modules" / ".bin" / "hardhat"
# Hardhat Network's funded accounts (10000 ETH each) from its public test mnemonic ("test test ... junk")
TEST_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)


@dataclass(frozen=True)
class ChainNode:
    url: str
    chain_id: int
    keys: tuple[str, ...] = TEST_KEYS

    def rpc(self, method: str, *params):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            reply = json.load(answer)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


@contextlib.contextmanager
def hardhat_node(chain_id: int = 31337, log_dir: Path | None = None):
    """Start ``hardhat node`` on a free loopback port (every transaction mined at once), wait until it answers,
    yield a :class:`ChainNode`, stop it."""
    if not HARDHAT.exists():
        raise RuntimeError(f"the JSON-RPC test node is missing ({HARDHAT}): `make test` installs it "
                           "(target .make/test-chain)")
    port = free_port()
    log = (log_dir / "hardhat-node.log").open("w") if log_dir is not None else subprocess.DEVNULL
    env = {**os.environ, "PLATFORMQ_TEST_CHAIN_ID": str(chain_id), "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"}
    process = subprocess.Popen(
        [str(HARDHAT), "node", "--hostname", "127.0.0.1", "--port", str(port)], cwd=NODE_HOME, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    node = ChainNode(f"http://127.0.0.1:{port}", chain_id)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"hardhat node exited with {process.returncode} before answering")
            try:
                if int(node.rpc("eth_chainId"), 16) == chain_id:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("hardhat node did not answer within 60 s")
            time.sleep(0.25)
        yield node
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log is not subprocess.DEVNULL:
            log.close()
