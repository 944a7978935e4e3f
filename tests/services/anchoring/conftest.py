"""Shared in-process chains for the anchoring tests.

The chain libraries (web3, eth-tester, py-evm) live in a separate venv (.venv-chain:
make test runs this folder there); the chain fixtures fail where they are missing,
they do not skip.
"""

import hashlib
import itertools

import pytest

CHAIN_A_ID = 1337
CHAIN_B_ID = 4242

_counter = itertools.count()


def _require_chain_libraries():
    """The chain libraries live in .venv-chain (make test runs this folder there): missing is a failure."""
    import importlib

    for module in ("web3", "eth_tester", "eth"):
        importlib.import_module(module)


@pytest.fixture(scope="session")
def chain_a():
    _require_chain_libraries()
    from services.anchoring.chain import InProcessEthereumChain

    return InProcessEthereumChain(CHAIN_A_ID)


@pytest.fixture(scope="session")
def chain_b():
    _require_chain_libraries()
    from services.anchoring.chain import InProcessEthereumChain

    return InProcessEthereumChain(CHAIN_B_ID)


@pytest.fixture(scope="session")
def registry_a(chain_a):
    return chain_a.deploy_registry()


@pytest.fixture(scope="session")
def registry_b(chain_b):
    return chain_b.deploy_registry()


@pytest.fixture
def fresh_root():
    """A 32-byte root no other test anchors (the session chains are shared)."""
    return hashlib.sha256(f"anchoring-test-root-{next(_counter)}".encode()).digest()
