"""trust/credential_anchors on a persistent chain: a real Ethereum JSON-RPC node (Hardhat Network on 127.0.0.1),
the production path (PLATFORMQ_CHAIN_*), from `platformq chain deploy-registry` through the Dagster asset (Pipes
in .venv-chain) to `platformq chain verify`, which checks a day's credentials from the lake alone."""

import datetime as dt
import json

import pyarrow as pa
import pytest
from click.testing import CliRunner
from dagster import AssetKey, DagsterInstance, materialize

from pipelines.partitions import PARTITION_COLUMN
from tests.chain_node import hardhat_node

pytestmark = pytest.mark.slow
DAY = "2026-11-27"
CHAIN_ID = 31337


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with hardhat_node(CHAIN_ID, log_dir=tmp_path_factory.mktemp("chain-node")) as running:
        yield running


@pytest.fixture
def on_node(platform_home, node, monkeypatch):
    from resources.settings import load_settings

    monkeypatch.setenv("PLATFORMQ_CHAIN_RPC_URL", node.url)
    monkeypatch.setenv("PLATFORMQ_CHAIN_ID", str(CHAIN_ID))
    monkeypatch.setenv("PLATFORMQ_CHAIN_PRIVATE_KEY", node.keys[0])
    load_settings.cache_clear()
    yield node
    load_settings.cache_clear()


def _cli(*args):
    from platformq_assets.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _release_credentials(lake, day: str, tamper: bool = False):
    from platformq_assets.trust.credentials import credential_hash, release_credential

    rows = []
    for i, name in enumerate(["ohlcv_bars", "positions_pnl", "trader_leaderboard"]):
        vc = release_credential(AssetKey(["gold", name]), day, 1000 + i, 10 * (i + 1), [])
        sha = credential_hash(vc)
        if tamper and i == 1:
            vc["credentialSubject"]["rowCount"] += 1  # edited after it was anchored
        rows.append({"asset_key": f"gold/{name}", "credential_json": json.dumps(vc, sort_keys=True),
                     "credential_sha256": sha, PARTITION_COLUMN: dt.date.fromisoformat(day)})
    lake.replace_partition("trust.dataset_credentials", pa.Table.from_pylist(rows), PARTITION_COLUMN, day)
    return rows


def _anchor(lake, day):
    from platformq_assets.trust.credentials import credential_anchors

    return materialize([credential_anchors], partition_key=day, resources={"lake": lake},
                       instance=DagsterInstance.get(), raise_on_error=False)


def test_anchors_on_a_json_rpc_chain_and_verifies_later_from_the_lake(on_node, lake, monkeypatch):
    from resources.settings import load_settings

    deployed = _cli("chain", "deploy-registry")
    assert deployed.exit_code == 0, deployed.output
    registry = deployed.output.strip().splitlines()[-1].removeprefix("PLATFORMQ_CHAIN_REGISTRY=")
    assert int(on_node.rpc("eth_getCode", registry, "latest"), 16) != 0
    monkeypatch.setenv("PLATFORMQ_CHAIN_REGISTRY", registry)
    load_settings.cache_clear()

    # Pipes writes a run's extras to a context file: the key must not be among them
    from dagster import PipesSubprocessClient

    sent_extras, run = [], PipesSubprocessClient.run

    def recording_run(self, *args, **kwargs):
        sent_extras.append(kwargs.get("extras"))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(PipesSubprocessClient, "run", recording_run)
    released = _release_credentials(lake, DAY)
    result = _anchor(lake, DAY)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "anchored_proofs_verify" and check.passed
    meta = {k: v.value for k, v in result.get_asset_materialization_events()[-1].materialization.metadata.items()}
    assert meta["chain"] == "json-rpc" and meta["chain_id"] == CHAIN_ID and meta["contract_address"] == registry
    assert meta["resumed_existing_anchor"] is False
    mined = on_node.rpc("eth_getTransactionReceipt", meta["tx_hash"])
    assert int(mined["status"], 16) == 1 and mined["to"].lower() == registry.lower()
    anchors = lake.read("trust.credential_anchors").to_pylist()
    assert {a["leaf"] for a in anchors} == {r["credential_sha256"] for r in released}

    # the key reached the chain process in its environment only: not in the extras, nothing of it in the events
    key = on_node.keys[0].removeprefix("0x")
    assert sent_extras and sent_extras[0]["batch_id"] == f"credentials-{DAY}"
    assert not any(key in json.dumps(extras) for extras in sent_extras)
    from dagster._serdes import serialize_value

    records = DagsterInstance.get().all_logs(result.run_id)
    assert records and not any(key in serialize_value(r) for r in records)

    # a re-run of the day (a retry) finds its anchor instead of sending another transaction
    payer = on_node.rpc("eth_accounts")[0]  # the node's account #0 is keys[0]'s
    assert payer.lower() == mined["from"].lower()
    nonce = on_node.rpc("eth_getTransactionCount", payer, "latest")
    again = _anchor(lake, DAY)
    assert again.success
    meta2 = {k: v.value for k, v in again.get_asset_materialization_events()[-1].materialization.metadata.items()}
    assert meta2["resumed_existing_anchor"] is True and meta2["tx_hash"] == meta["tx_hash"]
    assert on_node.rpc("eth_getTransactionCount", payer, "latest") == nonce
    assert lake.read("trust.credential_anchors").num_rows == 3

    # later, from another process, with no key at all: the lake's credentials against the chain
    monkeypatch.delenv("PLATFORMQ_CHAIN_PRIVATE_KEY")
    load_settings.cache_clear()
    audit = _cli("chain", "verify", "--day", DAY)
    assert audit.exit_code == 0, audit.output
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in audit.output.splitlines() if "gold/" in line]
    assert sorted(r[0] for r in rows) == ["gold/ohlcv_bars", "gold/positions_pnl", "gold/trader_leaderboard"]
    assert all(r[2] == "ok" and r[3] == str(int(mined["blockNumber"], 16)) for r in rows), audit.output
    assert f"registry trusted: {registry}" in audit.output

    # a credential edited in the lake after anchoring no longer matches
    _release_credentials(lake, DAY, tamper=True)
    tampered = _cli("chain", "verify", "--day", DAY)
    assert tampered.exit_code == 1
    assert "gold/positions_pnl: the credential's JSON does not hash to an anchored leaf" in tampered.output
    assert "1 of 3 credentials did not verify; 1 anchored leaves match no credential" in tampered.output
    original = next(r["credential_sha256"] for r in released if r["asset_key"] == "gold/positions_pnl")
    assert f"anchored leaf {original[:16]} matches no credential" in tampered.output

    # a release removed from the lake: its anchored leaf is reported, the others still verify
    lake.replace_partition("trust.dataset_credentials", pa.Table.from_pylist(released[:2]), PARTITION_COLUMN, DAY)
    removed = _cli("chain", "verify", "--day", DAY)
    assert removed.exit_code == 1 and "0 of 2 credentials did not verify; 1 anchored leaves" in removed.output

    # another day's partitions holding this day's anchors and credentials (a backfill that wrote the wrong
    # partition): every proof verifies on the chain, but none of it is about that day
    other = "2026-11-28"
    moved = lake.read_partition("trust.credential_anchors", PARTITION_COLUMN, DAY).to_pylist()
    lake.replace_partition("trust.credential_anchors", pa.Table.from_pylist(
        [{**r, PARTITION_COLUMN: dt.date.fromisoformat(other)} for r in moved]), PARTITION_COLUMN, other)
    lake.replace_partition("trust.dataset_credentials", pa.Table.from_pylist(
        [{**r, PARTITION_COLUMN: dt.date.fromisoformat(other)} for r in released]), PARTITION_COLUMN, other)
    misplaced = _cli("chain", "verify", "--day", other)
    assert misplaced.exit_code == 1, misplaced.output
    assert f"gold/ohlcv_bars: the credential is about '{DAY}', not {other}" in misplaced.output
    assert f"is in batch 'credentials-{DAY}', not credentials-{other}" in misplaced.output


def test_a_wrong_registry_fails_the_run_with_the_reason_and_sends_nothing(on_node, lake, monkeypatch):
    from resources.settings import load_settings

    not_a_registry = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # the node's account #1: no code
    monkeypatch.setenv("PLATFORMQ_CHAIN_REGISTRY", not_a_registry)
    load_settings.cache_clear()
    _release_credentials(lake, "2026-11-26")
    block = on_node.rpc("eth_blockNumber")
    result = _anchor(lake, "2026-11-26")
    assert not result.success
    # the chain process's reason is in the run's log, as Pipes reports it (an engine event before the failure)
    closed = [r.dagster_event for r in DagsterInstance.get().all_logs(result.run_id)
              if r.dagster_event is not None and "pipes closed with exception" in (r.dagster_event.message or "")]
    assert closed and f"{not_a_registry} is not an anchor registry" in closed[0].engine_event_data.error.message
    assert on_node.rpc("eth_blockNumber") == block  # nothing mined


def test_the_chain_commands_without_a_json_rpc_chain_say_why(platform_home, lake):
    done = _cli("chain", "deploy-registry")
    assert done.exit_code == 1 and "PLATFORMQ_CHAIN_RPC_URL is not set" in done.output
    nothing = _cli("chain", "verify", "--day", DAY)
    assert nothing.exit_code == 1 and f"no credential anchors for {DAY}" in nothing.output
