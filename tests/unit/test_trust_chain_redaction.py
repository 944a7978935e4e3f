"""ChainCommandError (what `platformq chain` prints and the assets raise) never carries the JSON-RPC URL's
secret parts, whatever the chain environment's last stderr line says."""

import subprocess
from types import SimpleNamespace

import pytest

from platformq_assets.trust import chain

URL = "https://user:pw-secret@mainnet.example.io/v3/SECRET-INFURA-KEY-123?apikey=QUERYSECRET"


def test_chain_command_error_redacts_the_rpc_url(monkeypatch, tmp_path):
    settings = SimpleNamespace(chain_id=1, chain_rpc_url=URL, chain_private_key=None, chain_registry=None)
    stderr = ("Traceback (most recent call last):\n  ...\nrequests.exceptions.ConnectionError: "
              f"Max retries exceeded with url: /v3/SECRET-INFURA-KEY-123?apikey=QUERYSECRET; endpoint {URL}\n")
    monkeypatch.setattr(chain, "require_chain_python", lambda: tmp_path / "python")
    monkeypatch.setattr(chain.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, stdout="", stderr=stderr))
    with pytest.raises(chain.ChainCommandError) as caught:
        chain.run_chain_command(settings, "verify", [])
    message = str(caught.value)
    for secret in ("SECRET-INFURA-KEY-123", "QUERYSECRET", "pw-secret"):
        assert secret not in message
    assert "mainnet.example.io" in message and "<redacted>" in message
