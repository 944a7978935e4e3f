"""``platformq erasure``: record erasure requests, list them, carry them out."""

import getpass

import click


def _lake():
    from resources import lake_resource
    from resources.settings import load_settings

    return lake_resource(load_settings())


@click.group()
def erasure() -> None:
    """Erasure requests: remove a trading account (a data subject) from the lake and the feature store."""


@erasure.command()
@click.argument("tenant")
@click.argument("account_id", type=click.IntRange(min=0))
@click.option("--reason", required=True, help="Why (kept with the request; e.g. the ticket of the data subject's "
                                              "request).")
@click.option("--by", "requested_by", default=None, help="Who asks (default: the current user).")
def request(tenant: str, account_id: int, reason: str, requested_by: str | None) -> None:
    """Record a request to erase ACCOUNT_ID of TENANT (carried out by `platformq erasure process` or the nightly
    lake_maintenance job; an account that is not the tenant's is rejected then)."""
    from resources.erasure import request_erasure

    try:
        row = request_erasure(_lake(), tenant, account_id, reason, requested_by or getpass.getuser())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(f"request {row['request_id']}: erase account {account_id} of {tenant} (pending)")


@erasure.command("list")
def list_cmd() -> None:
    """Every request and its outcome."""
    from platformq_assets.cli import format_table
    from resources.erasure import list_requests

    rows = [(r["request_id"][:8], r["tenant_id"], r["account_id"], r["status"], r["detail"] or "",
             r["requested_at"].isoformat(timespec="seconds")) for r in list_requests(_lake())]
    click.echo(format_table(["request", "tenant", "account", "status", "detail", "requested_at"], rows))


@erasure.command()
def process() -> None:
    """Carry out pending requests now (materialises governance/erasure_log through Dagster)."""
    from pipelines.pools import cli_run_tags
    from platformq_assets.cli import QUIET, _definitions, _instance

    job = _definitions().resolve_job_def("lake_maintenance")
    result = job.get_subset(asset_selection={_erasure_key()}).execute_in_process(
        instance=_instance(), run_config=QUIET, tags=cli_run_tags(), raise_on_error=False)
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        click.echo(f"requests {meta['requests'].value}: completed {meta['completed'].value}, rejected "
                   f"{meta['rejected'].value}; rows deleted {meta['rows_deleted'].value}, pseudonymised "
                   f"{meta['rows_pseudonymised'].value}; snapshots expired {meta['snapshots_expired'].value}, "
                   f"files deleted {meta['files_deleted'].value}")
    failed = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    for event in result.get_asset_materialization_events():  # the lake is done; the feature store was not
        meta = event.materialization.metadata
        for name, what in (("online_error", "feature store (the requests stay in progress)"),
                           ("residue_feature_error", "feature store residue sweep")):
            if name in meta and meta[name].value not in (None, "none"):
                failed.append(f"{what}: {meta[name].value}")
    if not result.success or failed:
        raise click.ClickException(f"erasure failed ({', '.join(failed) or 'see the run in the UI'}): run "
                                   f"{result.run_id}")


def _erasure_key():
    from platformq_assets.lake.maintenance import ERASURE_KEY

    return ERASURE_KEY
