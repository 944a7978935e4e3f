"""The issuer key file (resources.services.issuer_key_pair): never readable by others, and one key however many
processes start at once."""

import json
import os
import stat

import pytest

from resources.services import issuer_key_pair
from services.common.auth import signing_key
from services.credentials import Ed25519KeyPair


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)  # what a plain open() would leave group- and world-readable
    yield
    os.umask(old)


def test_the_key_file_is_created_0600_not_tightened_afterwards(tmp_path, monkeypatch, loose_umask):
    path = tmp_path / "issuer-key.json"
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)  # a chmod after writing would hide a window
    pair = issuer_key_pair(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["secretKeyMultibase"] == pair.secret_key_multibase
    assert issuer_key_pair(path).did == pair.did
    assert [p.name for p in path.parent.iterdir()] == ["issuer-key.json"]  # no temporary file left behind


def test_two_processes_starting_at_once_sign_with_one_key(tmp_path, monkeypatch):
    """The first creator generates its key, and before it writes, a second creator generates and writes its own:
    both must end up with the one on disk."""
    path = tmp_path / "issuer-key.json"
    generate, second = Ed25519KeyPair.generate, {}

    def racing_generate():
        if "racing" not in second:
            second["racing"] = True
            second["pair"] = issuer_key_pair(path)  # the other process, between our check and our write
        return generate()

    monkeypatch.setattr(Ed25519KeyPair, "generate", staticmethod(racing_generate))
    first = issuer_key_pair(path)
    on_disk = json.loads(path.read_text())["secretKeyMultibase"]
    assert first.secret_key_multibase == second["pair"].secret_key_multibase == on_disk


def test_the_jwt_signing_key_keeps_using_the_shared_creation(tmp_path, loose_umask):
    path = tmp_path / "keys" / "jwt-signing-key.pem"
    key = signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing_key(path).private_numbers() == key.private_numbers()
    path.write_text("not a key")
    with pytest.raises(ValueError, match="cannot read the JWT signing key"):
        signing_key(path)
