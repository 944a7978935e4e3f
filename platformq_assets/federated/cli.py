"""``platformq participants``: the federated-learning participant registry (tenants)."""

import click


def _lake():
    from resources import lake_resource
    from resources.settings import load_settings

    return lake_resource(load_settings())


@click.group()
def participants() -> None:
    """Tenants taking part in federated rounds: enrol, consent, suspend, list."""


@participants.command()
@click.argument("tenants", nargs=-1)
@click.option("--all", "all_tenants", is_flag=True, help="Every tenant found in silver.accounts.")
@click.option("--consent/--no-consent", default=None,
              help="Whether the tenant consents to its data being used for training. Default: a new participant "
                   "consents; an existing one keeps its recorded consent (a withdrawal stays withdrawn).")
def enrol(tenants: tuple[str, ...], all_tenants: bool, consent: bool | None) -> None:
    """Enrol TENANTS (or re-enrol suspended ones, named; spent ε and recorded consent are kept). --all never lifts
    a suspension: it is what is run again when a new tenant appears."""
    from platformq_assets.federated import participants as registry

    lake = _lake()
    named = list(tenants)
    chosen = named + (registry.known_tenants(lake) if all_tenants else [])
    if not chosen:
        raise click.UsageError("--all found no tenant in the lake's accounts (build a day first: platformq "
                               "backfill)" if all_tenants else "name at least one tenant, or pass --all")
    known = set(registry.known_tenants(lake))
    chosen = list(dict.fromkeys(chosen))
    unknown = [tenant for tenant in chosen if known and tenant not in known]
    if unknown:  # checked before any is enrolled: a typo must not leave the others half done
        raise click.BadParameter(f"{', '.join(unknown)}: not a tenant of the platform "
                                 f"(known: {', '.join(sorted(known))})")
    current = {row["tenant_id"]: row for row in registry.list_participants(lake)}
    for tenant in chosen:
        row = current.get(tenant)
        if tenant not in named and row is not None and row["status"] == registry.SUSPENDED:
            click.echo(f"{tenant}: still suspended ({row['suspended_reason'] or 'no reason'}); name it to enrol it again")
            continue
        row = registry.enrol(lake, tenant, consent=consent)
        click.echo(f"{tenant}: {row['status']}, consent={'yes' if row['consent'] else 'no'}, "
                   f"ε spent {row['epsilon_spent']:.3f}")


@participants.command()
@click.argument("tenant")
@click.option("--reason", required=True, help="Why (kept in the registry).")
def suspend(tenant: str, reason: str) -> None:
    """Suspend TENANT: its node is never sampled until it is enrolled again."""
    from platformq_assets.federated import participants as registry

    try:
        registry.suspend(_lake(), tenant, reason)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0])) from exc
    click.echo(f"{tenant}: suspended ({reason})")


@participants.command()
@click.argument("tenant")
@click.option("--grant/--withdraw", default=True, help="Grant or withdraw consent.")
def consent(tenant: str, grant: bool) -> None:
    """Grant or withdraw TENANT's consent (without consent its data is never exported)."""
    from platformq_assets.federated import participants as registry

    try:
        registry.set_consent(_lake(), tenant, grant)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0])) from exc
    click.echo(f"{tenant}: consent {'granted' if grant else 'withdrawn'}")


@participants.command("list")
def list_participants() -> None:
    """Every participant: status, consent, last seen, rounds joined, ε spent."""
    from platformq_assets.cli import format_table
    from platformq_assets.federated import participants as registry

    rows = registry.list_participants(_lake())
    if not rows:
        click.echo("No participants yet: `platformq participants enrol --all`.")
        return
    fmt = lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if v else "never"  # noqa: E731
    click.echo(format_table(
        ["tenant", "status", "consent", "enrolled", "last seen", "rounds", "ε spent", "reason"],
        [(r["tenant_id"], r["status"], "yes" if r["consent"] else "no", fmt(r["enrolled_at"]), fmt(r["last_seen"]),
          r["rounds_joined"] or 0, f"{r['epsilon_spent'] or 0.0:.3f}", r["suspended_reason"] or "") for r in rows]))
