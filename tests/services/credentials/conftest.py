import socket
from pathlib import Path

import pytest

from .helpers import read_json

VECTORS = Path("/work/shared/testdata/vc-di-eddsa")


class NetworkAccess(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args, **kwargs):
        raise NetworkAccess(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.fail(f"W3C vc-di-eddsa test vectors not found at {VECTORS} (../shared/testdata)")
    return VECTORS


@pytest.fixture(scope="session")
def vector_key(vectors):
    from services.credentials import Ed25519KeyPair

    pair = read_json(vectors / "keyPair.json")
    return Ed25519KeyPair.from_multikey(pair["privateKeyMultibase"], pair["publicKeyMultibase"])


@pytest.fixture(scope="session")
def signed_vector(vectors):
    return read_json(vectors / "eddsa-rdfc-2022" / "signedDataInt.json")
