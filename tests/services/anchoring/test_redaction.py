"""The JSON-RPC URL (a provider's API key in its path or query, credentials in its userinfo) never reaches error
output: not the CLI's stderr line (which the main environment turns into ChainCommandError), not the exception
or the stderr that the Pipes script hands to Dagster."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.anchoring.anchoring import build_tree
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
SECRETS = ("SECRET-INFURA-KEY-123", "QUERYSECRET", "pa55w0rd", "s3cr3t-user")


def _url(port: int) -> str:
    return f"http://s3cr3t-user:pa55w0rd@127.0.0.1:{port}/v3/SECRET-INFURA-KEY-123?apikey=QUERYSECRET"


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def _proof() -> dict:
    """A proof whose Merkle half holds, so verifying it asks the chain."""
    leaves, tree = build_tree(["ab" * 32])
    return {"leaf": leaves[0], "index": 0, "tree_size": 1, "audit_path": [], "root": tree.root.hex(),
            "chain_id": 1337, "contract_address": "0x" + "12" * 20, "tx_hash": "0x" + "34" * 32, "batch_id": "b"}


@pytest.mark.parametrize("text", [
    "Max retries exceeded with url: /v3/SECRET-INFURA-KEY-123?apikey=QUERYSECRET (Caused by ...)",  # urllib3
    "Max retries exceeded with url: /v3/SECRET-INFURA-KEY-123 (Caused by ...)",
    "Could not connect to {url}",
    "invalid URL {url}/",
    "auth failed for s3cr3t-user:pa55w0rd",
    "key SECRET-INFURA-KEY-123 refused; apikey=QUERYSECRET",
    "quoted: /v3/SECRET-INFURA-KEY-123%3Fapikey%3DQUERYSECRET",
])
def test_redaction_removes_path_query_and_userinfo(text):
    from services.anchoring.configured import redact_rpc_url

    url = _url(8545)
    out = redact_rpc_url(text.format(url=url), url)
    _assert_clean(out)
    assert "<redacted>" in out


def test_redaction_keeps_host_and_port_and_leaves_unrelated_text_alone():
    from services.anchoring.configured import redact_rpc_url

    url = _url(8545)
    assert redact_rpc_url(f"cannot reach {url}", url) == "cannot reach http://127.0.0.1:8545/<redacted>"
    plain = "http://127.0.0.1:8545/"
    assert redact_rpc_url("a/b/c ? x=1", plain) == "a/b/c ? x=1"  # a bare path hides nothing
    assert redact_rpc_url("ValueError: bad", None) == "ValueError: bad"


def test_cli_error_line_does_not_show_the_rpc_url(monkeypatch, capsys):
    from services.anchoring import cli

    monkeypatch.setenv("PLATFORMQ_CHAIN_RPC_URL", _url(free_port()))
    monkeypatch.delenv("PLATFORMQ_CHAIN_PRIVATE_KEY", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps([_proof()])))
    assert cli.main(["verify"]) == 1
    err = capsys.readouterr().err
    assert "ConnectionError" in err and "127.0.0.1" in err and "<redacted>" in err  # still says what failed
    _assert_clean(err)


def test_pipes_failure_shows_dagster_no_rpc_url(tmp_path):
    """The exception the Pipes script reports (its message, cause and context) and what it writes to stderr."""
    from dagster_pipes import encode_param

    context, messages = tmp_path / "context.json", tmp_path / "messages.jsonl"
    context.write_text(json.dumps({
        "asset_keys": ["trust/credential_anchors"], "code_version_by_asset_key": None,
        "provenance_by_asset_key": None, "partition_key": None, "partition_key_range": None,
        "partition_time_window": None, "run_id": "r1", "job_name": None, "retry_number": 0,
        "extras": {"hashes": ["ab" * 32], "batch_id": "b", "out": str(tmp_path / "proofs.json")}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLATFORMQ_CHAIN_RPC_URL": _url(free_port()),
           "PLATFORMQ_CHAIN_PRIVATE_KEY": "0x" + "11" * 32, "PLATFORMQ_CHAIN_ID": "1337",
           "PLATFORMQ_CHAIN_REGISTRY": "0x" + "12" * 20,
           "DAGSTER_PIPES_CONTEXT": encode_param({"path": str(context)}),
           "DAGSTER_PIPES_MESSAGES": encode_param({"path": str(messages)})}
    done = subprocess.run([sys.executable, "-m", "services.anchoring.pipes_anchor"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    sent = [json.loads(line) for line in messages.read_text().splitlines()]
    closed = [m for m in sent if m["method"] == "closed"]
    assert closed and closed[0]["params"]["exception"] is not None  # the run still fails, with a reason
    assert "ConnectionError" in closed[0]["params"]["exception"]["message"]
    _assert_clean(messages.read_text())
    _assert_clean(done.stderr + done.stdout)
