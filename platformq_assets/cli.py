"""``platformq``: the command line for people who run the platform.

    platformq tables                 every lake table: rows, snapshot, last update
    platformq query "SQL"            DuckDB over the lake (Trino in production)
    platformq ingest-landing         one landing-zone pass (same job the sensor launches)
    platformq backfill --start --end materialise the daily graph for a date range
    platformq demo                   what `make demo` runs
    platformq models list|history|promote|rollback NAME   the model registry
    platformq participants enrol|consent|suspend|list      federated-learning participants (tenants)
    platformq chain deploy-registry|verify --day D          the credential anchors' chain

Runs go to the Dagster instance in ``$DAGSTER_HOME`` (``.platformq/`` by
default), so they show up in the UI next to scheduled and sensor runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import sys
import time
from pathlib import Path

import click

from pipelines.pools import cli_run_tags
from resources.services import SERVICES

# In-process runs log to the console at WARNING: the CLI prints its own summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _settings():
    from resources.settings import load_settings

    return load_settings()


def _instance():
    from dagster import DagsterInstance

    settings = _settings()
    if not os.environ.get("DAGSTER_HOME") and not settings.is_local:
        # a local SQLite instance would hide the runs and bypass the table pools
        raise click.ClickException("the production profile needs DAGSTER_HOME: the folder with the "
                                   "dagster.yaml of the production (Postgres) instance")
    if settings.is_local:
        # the embedded instance: the project's dagster.yaml (run queue, one slot per table pool), also in a
        # DAGSTER_HOME given without one (Dagster would run on its defaults: no pools, and warn)
        home = Path(os.environ.get("DAGSTER_HOME") or settings.home)
        home.mkdir(parents=True, exist_ok=True)
        config = home / "dagster.yaml"
        if not config.exists():
            project_config = Path(__file__).resolve().parent.parent / "dagster.yaml"
            config.write_text(project_config.read_text() if project_config.exists() else "")
        os.environ["DAGSTER_HOME"] = str(home)
    from pipelines.pools import free_abandoned_slots

    instance = DagsterInstance.get()
    _refuse_runs_the_daemon_would_fail(instance)
    for run_id in free_abandoned_slots(instance):
        click.echo(f"Run {run_id} died without finishing: marked failed, its pool slots released.", err=True)
    return instance


def _refuse_runs_the_daemon_would_fail(instance) -> None:
    """The CLI executes its runs in its own process: no run worker the daemon can see. Under a run launcher
    whose workers run monitoring checks (K8sRunLauncher: a Kubernetes Job per run), the daemon finds no Job for
    such a run and fails it within a poll or two while it is still writing: a false alert, automation taking
    the partition for free and starting it again, the run's pool slots freed under its steps. Refused with
    the queued way instead; an instance without monitoring, or whose launcher checks no worker (the local
    and compose instances' DefaultRunLauncher), runs in process as before."""
    if not instance.run_monitoring_enabled:
        return
    try:
        checked = instance.run_launcher.supports_check_run_worker_health
        name = type(instance.run_launcher).__name__
    except Exception:  # a launcher that cannot start here (in-cluster config outside the cluster): judge its name
        data = instance.get_ref().run_launcher_data
        name = data.class_name if data is not None else "DefaultRunLauncher"
        checked = name != "DefaultRunLauncher"
    if checked:
        raise click.ClickException(
            f"this instance launches runs with {name} and its run monitoring is on: the daemon would fail a run "
            "the CLI executes in process (it has no run worker to check) while it runs. Queue the runs instead: "
            "`dagster job backfill -w workspace.yaml -j lake_daily --from D --to D --noprompt`, "
            "`dagster job launch -w workspace.yaml -j <job>`, or the UI (the sensors and schedules run the rest)")


def _definitions():
    # (Dagster's warnings for the preview/beta/superseded APIs used on purpose are silenced where
    # each is used; any other warning shows.)
    from platformq_assets.definitions import build_definitions

    return build_definitions(_settings())


def format_table(columns: list[str], rows: list[tuple], max_width: int = 40) -> str:
    """Plain aligned text table (no dependency, readable in any terminal or log)."""

    def cell(value) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, float):
            text = f"{value:.6g}"
        elif isinstance(value, dt.datetime):
            text = value.strftime("%Y-%m-%d %H:%M:%S")
            if value.utcoffset() is not None:  # an instant says its zone (a wall time, timestamp, has none)
                text += " UTC" if not value.utcoffset() else value.strftime(" %z")
        else:
            text = str(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    body = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |", line]
    for r in body:
        out.append("| " + " | ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) + " |")
    out.append(line)
    return "\n".join(out)


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


class _Cli(click.Group):
    def invoke(self, ctx):
        from resources.settings import SettingsError

        try:
            return super().invoke(ctx)
        except SettingsError as exc:  # names the variables, never their values: an error line, not a traceback
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Cli)
def main() -> None:
    """platformQ: the lake, the venue and the pipelines, from the shell."""


@main.command()
@click.option("--storage", is_flag=True, help="Show how each table is stored instead: data files and bytes, small "
                                             "files, partitions the next compaction rewrites, snapshots.")
def tables(storage: bool) -> None:
    """List every lake table with row count, snapshot id and last update."""
    from resources import lake_resource

    lake = lake_resource(_settings())
    identifiers = lake.list_tables()
    if not identifiers:
        click.echo("The lake is empty: run `make demo` (or `platformq demo`) first.")
        return
    if storage:
        from resources.lake_maintenance import storage_report

        reports = [storage_report(lake, identifier) for identifier in identifiers]
        click.echo(format_table(
            ["table", "data_files", "MiB", "small_files", "partitions_to_compact", "snapshots", "oldest_snapshot (UTC)"],
            [(r["table"], r["data_files"], round(r["data_bytes"] / 2**20, 2), r["small_files"],
              r["partitions_to_compact"], r["snapshots"], r["oldest_snapshot"]) for r in reports]))
        return
    rows = []
    for identifier in identifiers:
        info = lake.describe(identifier)
        rows.append((identifier, info["rows"], info["snapshot_id"], info["snapshots"], info["last_updated"]))
    click.echo(format_table(["table", "rows", "snapshot_id", "snapshots", "last_updated (UTC)"], rows))


@main.command()
@click.argument("sql")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0), help="Rows to print.")
def query(sql: str, limit: int) -> None:
    """Run SQL over the lake; name tables as layer.table (e.g. gold.ohlcv_bars)."""
    from resources import lake_resource, query_resource

    settings = _settings()
    try:
        result = query_resource(settings).query(sql, lake_resource(settings))
    except Exception as exc:  # show the engine's message, not a traceback
        raise click.ClickException(f"query failed: {exc}") from None
    rows = list(zip(*[result.column(i).to_pylist() for i in range(result.num_columns)]))
    click.echo(format_table(result.column_names, rows[:limit]))
    click.echo(f"{result.num_rows} row(s)" + (f", first {limit} shown" if result.num_rows > limit else ""))


def run_landing_pass(instance=None, defs=None) -> dict:
    """Ingest every landing file the ledger does not hold yet, through the landing job."""
    from platformq_assets.lake.landing import ingested_hashes
    from resources import lake_resource
    from resources.landing_zone import LandingZoneResource

    settings = _settings()
    lake = lake_resource(settings)
    zone = LandingZoneResource(root=str(settings.landing_dir), sources=list(settings.landing_sources))
    done = ingested_hashes(lake)
    misnamed: list[str] = []
    unreadable: list[str] = []  # as the sensor does: one such file must not stop the others; the next pass retries it
    pending = []
    for landing_file in zone.list_files(misnamed):
        try:
            sha256 = landing_file.sha256()
        except OSError as exc:  # its mode (another user's upload), or removed since the listing
            unreadable.append(f"{landing_file.relpath} ({type(exc).__name__}: {exc.strerror or exc})")
            continue
        if (landing_file.source, sha256) not in done:
            pending.append(landing_file.relpath)
    if not pending:
        return {"files": 0, "success": True, "misnamed": misnamed, "unreadable": unreadable}
    defs = defs or _definitions()
    job = defs.resolve_job_def("ingest_landing")
    result = job.execute_in_process(
        run_config={**QUIET, "ops": {"landing_ingest": {"config": {"files": pending}}}},
        instance=instance or _instance(),
        tags=cli_run_tags(),
        raise_on_error=False,
    )
    checks = result.get_asset_check_evaluations()
    return {"files": len(pending), "success": result.success, "run_id": result.run_id, "misnamed": misnamed,
            "unreadable": unreadable, "checks_passed": sum(c.passed for c in checks), "checks_failed": sum(not c.passed for c in checks)}


@main.command("ingest-landing")
def ingest_landing() -> None:
    """Ingest pending landing-zone files once (no daemon needed)."""
    report = run_landing_pass()
    for name in report["misnamed"]:
        click.echo(f"left in place: {name} (its name is not UTF-8: rename it)", err=True)
    for name in report["unreadable"]:
        click.echo(f"not read, left for the next pass: {name}", err=True)
    if not report["files"]:
        click.echo("No new landing files." if not report["unreadable"] else "No other new landing files.")
    else:
        click.echo(f"Ingested {report['files']} file(s) in run {report['run_id']}: "
                   f"checks passed {report['checks_passed']}, failed {report['checks_failed']}")
    if not report["success"]:
        raise click.ClickException("landing ingestion failed: see the run in the UI")
    if report["unreadable"]:
        raise click.ClickException(f"{len(report['unreadable'])} landing file(s) could not be read (named above); "
                                   "the other files were ingested")


def materialise_days(days: list[str], instance=None, defs=None, run_config: dict | None = None,
                     on_report=None) -> list[dict]:
    """Run the daily medallion job for each partition, in process (each report also given to ``on_report`` as
    soon as its day is done)."""
    defs = defs or _definitions()
    instance = instance or _instance()
    job = defs.resolve_job_def("lake_daily")
    reports = []
    for day in days:
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=day, instance=instance, run_config={**QUIET, **(run_config or {})},
                                        tags=cli_run_tags(), raise_on_error=False)
        checks = result.get_asset_check_evaluations()
        reports.append({
            "partition": day, "success": result.success, "run_id": result.run_id,
            "seconds": round(time.perf_counter() - started, 1),
            "materializations": len(result.get_asset_materialization_events()),
            "checks_passed": sum(c.passed for c in checks),
            "checks_failed": [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed],
        })
        if on_report is not None:
            on_report(reports[-1])
    return reports


def run_unpartitioned_job(defs, instance, job_name: str) -> dict:
    """One run of a job of unpartitioned assets, as its sensor or schedule would start it (the services'
    audit trail, ``governance_audit``; the nightly ``lake_maintenance``)."""
    started = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, run_config=QUIET, tags=cli_run_tags(), raise_on_error=False)
    checks = result.get_asset_check_evaluations()
    return {"step": job_name, "partition": "-", "success": result.success, "run_id": result.run_id,
            "seconds": round(time.perf_counter() - started, 1),
            "materializations": len(result.get_asset_materialization_events()),
            "checks_passed": sum(c.passed for c in checks),
            "checks_failed": [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed]}


def _date_range(start: dt.date, end: dt.date) -> list[str]:
    if end < start:
        raise click.BadParameter(f"end {end} is before start {start}")
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _finite(ctx, param, value: float) -> float:
    if not math.isfinite(value):  # click's FloatRange lets NaN through (every comparison with it is false)
        raise click.BadParameter(f"{value} is not a finite number", ctx=ctx, param=param)
    return value


def _trading_days(start: dt.date, end: dt.date) -> list[str]:
    """The daily partitions from START to END, refused up front when any day has no partition.

    Checked before anything runs: a range that ran past the last complete day (today, UTC, is
    not one yet) used to materialise every valid day and then die with a traceback.
    """
    from pipelines.partitions import LAKE_START_DATE, daily_partitions

    if end < start:
        raise click.BadParameter(f"end {end} is before start {start}")
    if start < LAKE_START_DATE:
        raise click.BadParameter(f"{start} is before the lake's first trading day, {LAKE_START_DATE}")
    last = daily_partitions.get_last_partition_key()
    if last is None or end > dt.date.fromisoformat(last):
        raise click.BadParameter(f"{end} is not a complete trading day yet: the last one is {last} (UTC)")
    return _date_range(start, end)


def _echo_reports(reports: list[dict], echo=click.echo) -> None:
    for r in reports:
        status = "ok" if r["success"] else "FAILED"
        failed = f", failed checks: {', '.join(r['checks_failed'])}" if r["checks_failed"] else ""
        echo(f"  {r['partition']}: {status} in {r['seconds']}s, {r['materializations']} tables, "
             f"{r['checks_passed']} checks passed{failed}")


def _echo_step(r: dict, echo=click.echo) -> None:
    failed = f", failed checks: {', '.join(r['checks_failed'])}" if r["checks_failed"] else ""
    if r.get("skipped"):
        echo(f"  {r['step']} [{r['partition']}]: {r['note']}")
        return
    status = "ok" if r["success"] else ("gated (a challenger did not pass promotion)" if r.get("gated") else "FAILED")
    note = f" ({r['note']})" if r.get("note") else ""
    took = f" in {r['seconds']}s" if r.get("seconds") is not None else ""
    echo(f"  {r['step']} [{r['partition']}]: {status}{took}, {r['materializations']} assets, "
         f"{r['checks_passed']} checks passed{failed}{note}")


@contextlib.contextmanager
def library_output_to(path: Path | None):
    """While the block runs, everything written to this process's stdout and stderr, and to its children's (Ray
    workers, Spark's JVM), goes to ``path``: the libraries' progress bars, banners and INFO lines. Yields an
    ``echo`` that still reaches the terminal (and is copied to the file). ``path`` None: nothing is moved."""
    if path is None:
        yield click.echo
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log = open(path, "ab", buffering=0)  # noqa: SIM115 (closed below, after the descriptors are restored)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)

    def echo(message: str = "") -> None:
        data = f"{message}\n".encode()
        os.write(saved_out, data)
        log.write(data)

    try:
        yield echo
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        log.close()


@main.command()
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True)
def backfill(start, end) -> None:
    """Run the lake_daily job for every day from START to END (inclusive): venue, bronze, silver, gold and the
    day's markets, trust and governance assets."""
    reports = materialise_days(_trading_days(start.date(), end.date()), on_report=lambda r: _echo_reports([r]))
    if not all(r["success"] for r in reports):
        raise click.ClickException("some partitions failed: see the runs in the UI")


@main.command()
@click.option("--days", default=3, show_default=True, type=click.IntRange(min=1),
              help="Trading days to simulate (ending yesterday).")
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              callback=_finite, help="Multiplies the venue's order arrival rates.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day (default: yesterday, UTC).")
@click.option("--trials", default=6, show_default=True, type=click.IntRange(min=1),
              help="Ray Tune trials per model in the training run (its AutoML budget across the model families).")
@click.option("--verbose", is_flag=True, help="Show the libraries' own output (Ray, Spark, MLflow, Feast, Flower) "
                                               "here instead of in the demo's log file.")
def demo(days: int, scale: float, end, trials: int, verbose: bool) -> None:
    """Set up sample landing files, build the whole graph for a few days, print a summary."""
    from platformq_assets.demo_data import seed_landing_zone
    from resources import lake_resource

    settings = _settings()
    end_day = end.date() if end else dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    try:
        start_day = end_day - dt.timedelta(days=days - 1)
    except OverflowError:  # --days reaching past year 1: refused below as before the lake's first day
        start_day = dt.date.min
    day_list = _trading_days(start_day, end_day)
    started = time.perf_counter()
    click.echo(f"platformQ demo: {days} trading day(s) {day_list[0]} .. {day_list[-1]} (scale {scale}), "
               f"profile {settings.profile}")
    instance = _instance()  # before anything is written: an instance whose daemon would fail our runs refuses
    written = seed_landing_zone(settings.landing_dir)
    click.echo(f"landing zone: {len(written)} sample file(s) under {settings.landing_dir}")
    log_path = None if verbose else (
        settings.home / "logs" / f"demo-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.log")
    if log_path is not None:
        click.echo(f"the libraries' own output (Ray, Spark, MLflow, Feast, Flower): {log_path}")

    with library_output_to(log_path) as echo:
        defs = _definitions()
        reports = materialise_days(day_list, instance, defs,
                                   run_config={"ops": {"venue_session": {"config": {"scale": scale}}}},
                                   on_report=lambda r: _echo_reports([r], echo))
        landing = run_landing_pass(instance, defs)
        for name in landing["misnamed"]:
            echo(f"  landing: left in place: {name} (its name is not UTF-8: rename it)")
        for name in landing["unreadable"]:
            echo(f"  landing: not read, left for the next pass: {name}")
        if landing["files"]:
            echo(f"  landing: {landing['files']} file(s) ingested, checks passed {landing['checks_passed']}, "
                 f"failed {landing['checks_failed']}")
        else:
            echo("  landing: nothing new (already ingested)")

        from platformq_assets.ml.runs import build_federated, build_ml, build_neuromorphic

        def report(r: dict) -> None:
            _echo_step(r, echo)

        ml_reports = (build_ml(day_list, defs, instance, trials=trials, on_report=report)
                      + build_federated(defs, instance, on_report=report)
                      + build_neuromorphic(day_list, defs, instance, on_report=report))
        for job in ("governance_audit", "lake_maintenance"):
            ml_reports.append(run_unpartitioned_job(defs, instance, job))
            report(ml_reports[-1])

    lake = lake_resource(settings)
    rows = [(t, lake.describe(t)["rows"]) for t in lake.list_tables()]
    click.echo(format_table(["table", "rows"], rows))
    passed = sum(r["checks_passed"] for r in reports + ml_reports) + landing.get("checks_passed", 0)
    failed = sum(len(r["checks_failed"]) for r in reports + ml_reports) + landing.get("checks_failed", 0)
    click.echo(f"checks: {passed} passed, {failed} failed; {time.perf_counter() - started:.0f}s in all")
    click.echo("Next: `make ui` and open http://127.0.0.1:3000 (Assets -> Global asset lineage), or try\n"
               "  platformq query \"select * from gold.trader_leaderboard order by pnl desc limit 5\"")
    ok = (all(r["success"] for r in reports) and all(r["success"] or r.get("gated") for r in ml_reports)
          and landing["success"])
    if not ok:
        if log_path is not None:
            click.echo(f"Something failed: the runs are in the UI (Runs), the libraries' output in {log_path}")
        sys.exit(1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: loopback by default; 0.0.0.0 (or ::) for every interface, as behind a "
                   "load balancer or in a pod.")
@click.option("--port", default=8100, show_default=True, type=click.IntRange(min=1, max=65535 - (len(SERVICES) - 1)),
              help=f"First port: {', '.join(SERVICES)} take consecutive ports.")
@click.option("--only", multiple=True, help="Serve only these services (repeatable).")
@click.option("--tenant", default="t-acme", show_default=True, help="Tenant of the bootstrap admin API key.")
@click.option("--rate", default=50.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              callback=_finite, help="Requests per second each API key may make (token bucket refill).")
@click.option("--burst", default=200, show_default=True, type=click.IntRange(min=1),
              help="Requests an API key may make at once before --rate applies.")
def serve(host: str, port: int, only: tuple[str, ...], tenant: str, rate: float, burst: int) -> None:
    """Start the platform's HTTP services with uvicorn on --host, 127.0.0.1 by default (OpenAPI docs at /docs)."""
    import asyncio
    import socket

    import uvicorn

    from resources import lake_resource
    from resources.services import build_local_app
    from services.common import heap
    from services.common.app import BOOTSTRAP_SUBJECT
    from services.common.auth import ApiKeyStore, SqlApiKeyStore, TokenIssuer
    from services.common.state_store import StateStoreError
    from services.trading.exchange import JournalRulesError

    settings = _settings()
    names = [s for s in SERVICES if not only or s in only]
    unknown = set(only) - set(SERVICES)
    if unknown:
        raise click.BadParameter(f"unknown services {sorted(unknown)}; choose from {list(SERVICES)}")
    # one identity for every service: a key or token works on all of them; keys survive restarts
    try:
        keys = (SqlApiKeyStore(settings.api_key_store_url) if settings.api_key_store_url
                else ApiKeyStore(settings.home / "api-keys.json"))
    except ValueError as exc:  # a damaged file: say so, rather than start with no keys
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # the database of PLATFORMQ_API_KEY_STORE_URL is unreachable
        raise click.ClickException(f"the API key store cannot be reached: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0]}") from None
    try:
        tokens = TokenIssuer(settings.services_token_issuer or f"http://127.0.0.1:{port}",
                             key_path=settings.services_jwt_key_file or settings.home / "jwt-signing-key.pem")
    except ValueError as exc:  # a damaged key file: say so, rather than replace it (every token would die)
        raise click.ClickException(str(exc)) from exc
    lake = lake_resource(settings)
    lake_config = {k: getattr(lake, k) for k in ("catalog_name", "catalog_type", "catalog_uri", "warehouse",
                                                  "s3_endpoint", "s3_access_key", "s3_secret_key", "s3_region")}
    # every port is bound before anything changes: a serve that cannot start (a port in use, say by a serve
    # already running) must not rotate the bootstrap key the running one handed out
    sockets = []
    for offset, name in enumerate(SERVICES):
        if name in names:
            # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
            # without it a keep-alive client waited ~40 ms per response (Nagle on the server's second write
            # against the client's delayed ACK). Accepted connections inherit TCP_NODELAY from this socket too.
            family = socket.AF_INET6 if ":" in host else socket.AF_INET  # an IPv6 literal such as ::
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind((host, port + offset))
                sock.listen(2048)  # listening now: no other process can bind it meanwhile, even with SO_REUSEADDR
            except OSError as exc:  # also an address that is not this host's (socket.gaierror is an OSError)
                sock.close()
                for _, _, bound in sockets:
                    bound.close()
                raise click.ClickException(f"{name} cannot listen on {host}:{port + offset}: {exc.strerror}; "
                                           "nothing was started or changed") from None
            sockets.append((name, port + offset, sock))
    servers = []
    for name, service_port, sock in sockets:
        try:
            app, _ = build_local_app(name, str(settings.home), lake_config, keys=keys, tokens=tokens, rate=rate,
                                     burst=burst, journal_url=settings.trading_journal_url,
                                     trading_history=settings.trading_history,
                                     trading_snapshot_commands=settings.trading_snapshot_commands,
                                     credentials_store_url=settings.credentials_store_url,
                                     governance_store_url=settings.governance_store_url,
                                     derivatives_store_url=settings.derivatives_store_url,
                                     rate_limit_redis_url=settings.rate_limit_redis_url,
                                     data_page_cache_bytes=settings.data_api_cache_mb * 2**20,
                                     settle_heap=True)
        except (JournalRulesError, StateStoreError) as exc:  # a journal or state written by another version
            raise click.ClickException(f"{name}: {exc}") from None
        servers.append((name, service_port, sock, uvicorn.Server(uvicorn.Config(
            app, host=host, port=service_port, log_level="warning", access_log=False))))
    admin_key, bootstrap = keys.create_with_record(BOOTSTRAP_SUBJECT, tenant, ["admin"])
    for record in keys.list(tenant):  # each start's bootstrap key replaces the last one's
        if (record["subject"] == BOOTSTRAP_SUBJECT and record["revoked_at"] is None
                and record["key_id"] != bootstrap["key_id"]):
            keys.revoke(tenant, record["key_id"])
    # Everything alive now (modules, restored state) lives as long as the process: freeze it, so Python's
    # full collections stop walking it (~40 ms each with the modules alone; growing with a venue's history)
    heap.settle()
    # a wildcard address is reached on loopback from here; an IPv6 literal goes in brackets in a URL
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    for name, p, _, _ in servers:
        click.echo(f"{name:<12} http://{shown}:{p}  (docs: http://{shown}:{p}/docs)")
    click.echo(f"admin API key for tenant {tenant} (shown once; send it as X-API-Key): {admin_key}")

    async def run_all():
        await asyncio.gather(*(server.serve(sockets=[sock]) for _, _, sock, server in servers))

    asyncio.run(run_all())


def _register_groups() -> None:
    from platformq_assets.federated.cli import participants
    from platformq_assets.lake.cli import erasure
    from platformq_assets.ml.cli import models
    from platformq_assets.trust.cli import chain

    main.add_command(chain)
    main.add_command(erasure)
    main.add_command(models)
    main.add_command(participants)


_register_groups()


if __name__ == "__main__":  # pragma: no cover
    main()
