"""Trust: a W3C verifiable credential for every dataset release, anchored on a chain.

``trust/dataset_credentials`` issues, through the credentials service, one VC per
gold table and trading day (subject: asset key, partition, Iceberg snapshot, row
count, upstream lineage) and verifies it back. ``trust/credential_anchors``
batches the day's credential hashes into an RFC 6962 Merkle tree and anchors the
root on a chain, through Dagster Pipes in the chain environment (``.venv-chain``).
"""

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MaterializeResult,
    PipesSubprocessClient,
    asset,
)

from pipelines.partitions import PARTITION_COLUMN, daily_partitions
from pipelines.pools import table_pool
from platformq_assets.trust.chain import PROJECT_ROOT
from resources.lake import LakeResource
from resources.services import ServiceClientResource

DATASETS = [AssetKey(["gold", "ohlcv_bars"]), AssetKey(["gold", "positions_pnl"]), AssetKey(["gold", "trader_leaderboard"])]
CREDENTIALS_KEY = AssetKey(["trust", "dataset_credentials"])
ANCHORS_KEY = AssetKey(["trust", "credential_anchors"])


def credential_hash(credential: dict) -> str:
    """SHA-256 of the credential's canonical JSON (sorted keys, no spaces): what gets anchored."""
    return hashlib.sha256(json.dumps(credential, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def release_credential(asset_key: AssetKey, partition: str, snapshot_id: int | None, rows: int,
                       lineage: list[str]) -> dict:
    return {
        "@context": ["https://www.w3.org/ns/credentials/v2", "https://www.w3.org/ns/credentials/examples/v2"],
        "type": ["VerifiableCredential", "DatasetReleaseCredential"],
        "credentialSubject": {
            "id": f"urn:platformq:dataset:{asset_key.to_user_string()}:{partition}",
            "assetKey": asset_key.to_user_string(),
            "partition": partition,
            "snapshotId": str(snapshot_id),
            "rowCount": rows,
            "lineage": lineage,
        },
    }


@asset(
    key=CREDENTIALS_KEY,
    pool=table_pool("trust.dataset_credentials"),
    deps=DATASETS,
    partitions_def=daily_partitions,
    group_name="trust",
    kinds={"python", "iceberg"},
    owners=["team:trust"],
    check_specs=[AssetCheckSpec("credentials_verify", asset=CREDENTIALS_KEY, blocking=True,
                                description="Every issued credential verifies through the credentials service.")],
    description="One W3C verifiable credential (eddsa-rdfc-2022, did:key issuer) per gold dataset release.",
)
def dataset_credentials(context: AssetExecutionContext, lake: LakeResource, credentials: ServiceClientResource):
    import pyarrow as pa
    from pyiceberg.expressions import EqualTo

    from platformq_assets.lake.transform import DbtManifest
    from resources.dbt import ensure_manifest
    from resources.settings import load_settings

    partition = context.partition_key
    manifest = DbtManifest.load(ensure_manifest(load_settings().dbt_project_dir))
    upstream = {spec.key: sorted(d.asset_key.to_user_string() for d in spec.deps) for spec in manifest.model_specs()}
    rows = []
    verified = 0
    for key in DATASETS:
        identifier = ".".join(key.path)
        # the rows counted are read at the snapshot the credential names: a commit between two loads of the table
        # (an erasure, a rebuilt day) would make it claim a count its snapshot does not hold
        snapshot = lake.describe(identifier)["snapshot_id"]
        data = lake.read(identifier, row_filter=EqualTo(PARTITION_COLUMN, partition), columns=(PARTITION_COLUMN,),
                         snapshot_id=snapshot) if snapshot is not None else lake.read_partition(
            identifier, PARTITION_COLUMN, partition)
        lineage = upstream.get(key, [])
        issued = credentials.request("POST", "/credentials/issue", json_body={
            "credential": release_credential(key, partition, snapshot, data.num_rows, lineage), "options": {}})
        vc = issued["verifiableCredential"]
        check = credentials.request("POST", "/credentials/verify", json_body={"verifiableCredential": vc})
        verified += bool(check.get("verified"))
        rows.append({"asset_key": key.to_user_string(), "snapshot_id": str(snapshot), "row_count": data.num_rows,
                     "credential_id": vc.get("id", ""), "issuer": vc["issuer"] if isinstance(vc["issuer"], str)
                     else vc["issuer"].get("id"), "credential_json": json.dumps(vc, sort_keys=True),
                     "credential_sha256": credential_hash(vc), "verified": bool(check.get("verified")),
                     PARTITION_COLUMN: dt.date.fromisoformat(partition)})
    table = pa.Table.from_pylist(rows)
    written = lake.replace_partition("trust.dataset_credentials", table, PARTITION_COLUMN, partition)
    yield MaterializeResult(metadata={"credentials": len(rows), "issuer": rows[0]["issuer"],
                                      "snapshot_id": str(written["snapshot_id"])})
    yield AssetCheckResult(check_name="credentials_verify", passed=verified == len(rows),
                           metadata={"issued": len(rows), "verified": verified})


@asset(
    key=ANCHORS_KEY,
    pool=table_pool("trust.credential_anchors"),
    deps=[CREDENTIALS_KEY],
    partitions_def=daily_partitions,
    group_name="trust",
    kinds={"python", "iceberg", "ethereum"},
    owners=["team:trust"],
    check_specs=[AssetCheckSpec("anchored_proofs_verify", asset=ANCHORS_KEY, blocking=True,
                                description="Every credential's Merkle inclusion proof verifies against the "
                                "root anchored on chain.")],
    description="The day's credential hashes in an RFC 6962 Merkle tree, its root anchored on a chain (via Pipes).",
)
def credential_anchors(context: AssetExecutionContext, lake: LakeResource):
    import pyarrow as pa

    from platformq_assets.trust.chain import chain_env, require_chain_python
    from resources.settings import load_settings

    settings = load_settings()
    try:
        python = require_chain_python()
    except RuntimeError as exc:
        raise Failure(str(exc)) from exc
    partition = context.partition_key
    issued = lake.read_partition("trust.dataset_credentials", PARTITION_COLUMN, partition)
    hashes = sorted(set(issued.column("credential_sha256").to_pylist()))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "proofs.json"
        # the chain (and its private key) goes in the child's environment; Pipes writes the extras to a file
        extras = {"hashes": hashes, "batch_id": f"credentials-{partition}", "out": str(out)}
        invocation = PipesSubprocessClient(cwd=str(PROJECT_ROOT)).run(
            context=context, command=[str(python), "-m", "services.anchoring.pipes_anchor"], extras=extras,
            env=chain_env(settings))
        proofs = json.loads(out.read_text())
    table = pa.Table.from_pylist([{**{k: v for k, v in p.items() if k != "audit_path"},
                                   "audit_path": json.dumps(p["audit_path"]),
                                   PARTITION_COLUMN: dt.date.fromisoformat(partition)} for p in proofs])
    lake.replace_partition("trust.credential_anchors", table, PARTITION_COLUMN, partition)
    yield from invocation.get_results()


__all__ = ["credential_anchors", "dataset_credentials"]
