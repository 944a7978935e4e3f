"""``platformq models``: the registry from the command line (list, history, promote, rollback)."""

import click


def _mlflow():
    from resources.mlflow import mlflow_resource
    from resources.settings import load_settings

    return mlflow_resource(load_settings())


@click.group()
def models() -> None:
    """Registered models: aliases, stages, promotion and rollback."""


@models.command("list")
def list_models() -> None:
    """Every registered model with its champion, challenger and previous champion."""
    from resources.mlflow import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION

    registry = _mlflow()
    found = registry.client().search_registered_models()
    if not found:
        click.echo("No registered models yet: run `make demo` (or materialise ml/<model>).")
        return
    for model in found:
        aliases = {alias: registry.version_for(model.name, alias) for alias in (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)}
        text = ", ".join(f"{alias}=v{v.version}" for alias, v in aliases.items() if v is not None) or "no aliases"
        click.echo(f"{model.name}: {text}")


@models.command()
@click.argument("name")
def history(name: str) -> None:
    """What happened to NAME's versions: registrations, stage moves, promotions, rollbacks."""
    try:
        events = _mlflow().history(name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for event in events:
        click.echo(f"{event['at']}  {event['event']:<16} v{event.get('version')}  {event.get('reason', '')}")


@models.command()
@click.argument("name")
@click.option("--version", "version", required=True, help="Version to make champion.")
@click.option("--reason", required=True, help="Recorded on the version and in the model's history.")
def promote(name: str, version: str, reason: str) -> None:
    """Make VERSION of NAME the champion by hand (the gate normally does this)."""
    try:
        result = _mlflow().promote(name, version, reason=f"manual: {reason}")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: champion is v{result['champion']}" + (f" (was v{result['previous']})" if result.get("previous") else ""))


@models.command()
@click.argument("name")
@click.option("--reason", default="manual rollback", show_default=True)
def rollback(name: str, reason: str) -> None:
    """Give NAME's champion alias back to the previous champion."""
    try:
        result = _mlflow().rollback(name, reason=reason)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # unknown model name: MLflow raises RESOURCE_DOES_NOT_EXIST
        raise click.ClickException(f"cannot roll back {name!r}: {str(exc).splitlines()[0]}") from None
    archived = f"v{result['replaced']} archived" if result["replaced"] is not None else "none was champion"
    click.echo(f"{name}: champion is v{result['champion']} again ({archived})")
