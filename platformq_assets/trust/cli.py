"""``platformq chain``: the anchor registry on a persistent (JSON-RPC) chain, and auditing a day's anchors."""

import datetime as dt
import json

import click


def _settings():
    from resources.settings import load_settings

    return load_settings()


def _run(command: str, payload=None):
    from platformq_assets.trust.chain import ChainCommandError, run_chain_command

    try:
        return run_chain_command(_settings(), command, payload)
    except (ChainCommandError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def chain() -> None:
    """The chain credential batches are anchored on (PLATFORMQ_CHAIN_*)."""


@chain.command("deploy-registry")
def deploy_registry() -> None:
    """Deploy an AnchorRegistry on the JSON-RPC chain, owned by PLATFORMQ_CHAIN_PRIVATE_KEY's account; set the
    printed address as PLATFORMQ_CHAIN_REGISTRY (the production profile requires one)."""
    deployed = _run("deploy")
    click.echo(f"deployed an AnchorRegistry on chain {deployed['chain_id']} at {deployed['contract_address']} "
               f"(owner {deployed['owner']})")
    click.echo(f"PLATFORMQ_CHAIN_REGISTRY={deployed['contract_address']}")


def day_audit(lake, day: dt.date) -> tuple[list[dict], list[dict]]:
    """The day's anchored proofs, and for each released credential whether its stored JSON still hashes to an
    anchored leaf (a credential edited after anchoring no longer does)."""
    from pyiceberg.exceptions import NoSuchTableError

    from pipelines.partitions import PARTITION_COLUMN
    from platformq_assets.trust.credentials import credential_hash

    try:
        anchors = lake.read_partition("trust.credential_anchors", PARTITION_COLUMN, day).to_pylist()
    except NoSuchTableError:
        return [], []
    # the day's partitions must hold the day's anchors and credentials: a proof of another batch, or a credential
    # about another day (a backfill that wrote the wrong partition, an edited lake) verifies nothing about this day
    batch = f"credentials-{day.isoformat()}"
    proofs = [{**{k: v for k, v in row.items() if k != PARTITION_COLUMN}, "audit_path": json.loads(row["audit_path"]),
               "of_the_day": row.get("batch_id") == batch} for row in anchors]
    leaves = {p["leaf"] for p in proofs if p["of_the_day"]}
    credentials = []
    for row in lake.read_partition("trust.dataset_credentials", PARTITION_COLUMN, day).to_pylist():
        document = json.loads(row["credential_json"])
        recomputed = credential_hash(document)
        subject = document.get("credentialSubject") if isinstance(document, dict) else None
        about = subject.get("partition") if isinstance(subject, dict) else None
        credentials.append({"asset_key": row["asset_key"], "leaf": recomputed, "about": about,
                            "matches": recomputed == row["credential_sha256"] and recomputed in leaves
                            and about == day.isoformat()})
    return proofs, credentials


@chain.command()
@click.option("--day", "day", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="The trading day whose credential anchors to check.")
def verify(day: dt.datetime) -> None:
    """Check a day's released dataset credentials against the chain, from the lake alone: each credential's JSON
    hashes to a leaf of the anchored tree, and each leaf's proof verifies on the chain (root anchored in the
    registry under the day's batch, by the transaction the proof names). Exit status 1 when any fails."""
    from platformq_assets.cli import format_table
    from resources import lake_resource

    settings = _settings()
    proofs, credentials = day_audit(lake_resource(settings), day.date())
    if not proofs:
        raise click.ClickException(f"no credential anchors for {day.date()} in trust.credential_anchors")
    results = {r["leaf"]: r for r in _run("verify", proofs)}
    rows, failures = [], []
    for credential in credentials:
        result = results.get(credential["leaf"])
        ok = credential["matches"] and result is not None and result["valid"]
        if not ok:
            failures.append(f"{credential['asset_key']}: " + (
                f"the credential is about {credential['about']!r}, not {day.date()}"
                if credential["about"] != day.date().isoformat() else
                "the credential's JSON does not hash to an anchored leaf of the day's batch (changed after "
                "anchoring?)" if not credential["matches"] else result["reason"] if result is not None else "no proof"))
        rows.append((credential["asset_key"], credential["leaf"][:16], "ok" if ok else "FAILED",
                     result["block_number"] if result and result["valid"] else ""))
    for proof in proofs:
        if not proof["of_the_day"]:
            failures.append(f"anchor of leaf {proof['leaf'][:16]} is in batch {proof.get('batch_id')!r}, not "
                            f"credentials-{day.date()}")
    # an anchored leaf no stored credential hashes to: a release removed from the lake or changed after anchoring
    orphans = sorted({p["leaf"] for p in proofs if p["of_the_day"]} - {c["leaf"] for c in credentials if c["matches"]})
    click.echo(format_table(["asset", "leaf", "result", "block"], rows))
    for line in failures:
        click.echo(line)
    for leaf in orphans:
        click.echo(f"anchored leaf {leaf[:16]} matches no credential in trust.dataset_credentials (removed, or "
                   "changed after anchoring)")
    trusted = settings.chain_registry or "none configured: each proof's own registry, if it runs AnchorRegistry"
    click.echo(f"chain {settings.chain_id}, registry trusted: {trusted}")
    if failures or orphans:
        raise click.ClickException(f"{len(failures)} of {len(rows)} credentials did not verify; {len(orphans)} "
                                   "anchored leaves match no credential")
