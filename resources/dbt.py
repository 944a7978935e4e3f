"""dbt runs for the lake, through dagster-dbt's CLI resource.

Locally each invocation gets its own folder and DuckDB scratch file: Dagster
stages the partition's input rows from Iceberg into it, dbt builds the models
and runs their tests, and the caller writes each built model back to Iceberg.
On Trino (production) dbt reads and writes the Iceberg tables itself.
dagster-dbt and dbt are imported only when a run starts.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from dagster import ConfigurableResource

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from resources.lake import LakeResource
    from resources.settings import Settings


def dbt_executable() -> str:
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def ensure_manifest(project_dir: Path, target: str = "local") -> Path:
    """Path of the parsed manifest; parses the project once if it was never parsed."""
    import subprocess

    manifest = project_dir / "target" / "manifest.json"
    if not manifest.exists():
        subprocess.run(
            [dbt_executable(), "parse", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
             "--target", target, "--quiet"],
            check=True,
        )
    return manifest


class DbtRun:
    """What one dbt invocation did: per-node results and the scratch database."""

    def __init__(self, target_path: Path, results: dict, logs: list[str]):
        self.target_path = target_path
        self.results = results  # unique_id -> run_results entry
        self.logs = logs

    @property
    def duckdb_path(self) -> Path:
        return self.target_path / "lake.duckdb"

    def read_model(self, schema: str, name: str) -> "pa.Table":
        import duckdb

        con = duckdb.connect(str(self.duckdb_path), read_only=True)
        try:
            return con.sql(f'select * from "{schema}"."{name}"').to_arrow_table()
        finally:
            con.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.target_path, ignore_errors=True)


class DbtRunnerResource(ConfigurableResource):
    project_dir: str
    target: str = "local"  # "local" (dbt-duckdb) or "production" (dbt-trino)
    runs_dir: str

    @property
    def stages_inputs(self) -> bool:
        return self.target == "local"

    def manifest_path(self) -> Path:
        return ensure_manifest(Path(self.project_dir), self.target)

    def stage_inputs(self, target_path: Path, lake: "LakeResource", inputs: Iterable[str],
                     partition_column: str, partition_value: str) -> dict[str, int]:
        """Copy one partition of each input table from Iceberg into the scratch DuckDB."""
        import duckdb

        target_path.mkdir(parents=True, exist_ok=True)
        counts = {}
        con = duckdb.connect(str(target_path / "lake.duckdb"))
        try:
            for identifier in sorted(set(inputs)):
                schema, name = identifier.split(".")
                if not lake.table_exists(identifier):
                    raise RuntimeError(
                        f"dbt input {identifier} does not exist in the lake yet: materialise it first"
                    )
                data = lake.read_partition(identifier, partition_column, partition_value)
                con.execute(f'create schema if not exists "{schema}"')
                con.register("staged", data)
                con.execute(f'create or replace table "{schema}"."{name}" as select * from staged')
                con.unregister("staged")
                counts[identifier] = data.num_rows
        finally:
            con.close()
        return counts

    def build(self, select: list[str], dbt_vars: dict, target_path: Path | None = None, log=None) -> DbtRun:
        from dagster_dbt import DbtCliResource

        target_path = target_path or self.new_target_path()
        # --quiet: only errors reach the console; per-node results come from run_results.json
        cli = DbtCliResource(project_dir=self.project_dir, profiles_dir=self.project_dir, target=self.target,
                             dbt_executable=dbt_executable(), global_config_flags=["--quiet"])
        invocation = cli.cli(
            ["build", "--select", " ".join(select), "--vars", json.dumps(dbt_vars)],
            target_path=target_path,
            raise_on_error=False,
            manifest=self.manifest_path(),
        )
        logs = []
        for event in invocation.stream_raw_events():
            info = event.raw_event.get("info", {})
            if info.get("level") in ("info", "warn", "error") and info.get("msg"):
                logs.append(info["msg"])
                if log is not None:
                    (log.warning if info["level"] != "info" else log.debug)(info["msg"])
        invocation.wait()
        results_file = target_path / "run_results.json"
        if not results_file.exists():
            raise RuntimeError("dbt produced no run_results.json:\n" + "\n".join(logs[-20:]))
        results = {r["unique_id"]: r for r in json.loads(results_file.read_text())["results"]}
        return DbtRun(target_path, results, logs)

    def new_target_path(self) -> Path:
        return Path(self.runs_dir) / uuid.uuid4().hex

    @staticmethod
    def drop_scratch_data(target_path: Path) -> None:
        """Delete a run's scratch database (its staged copy of the lake's inputs: identities, emails), keeping
        the compiled SQL and logs of a failed run for diagnosis."""
        for name in ("lake.duckdb", "lake.duckdb.wal"):
            (Path(target_path) / name).unlink(missing_ok=True)


def dbt_resource(settings: "Settings") -> DbtRunnerResource:
    return DbtRunnerResource(
        project_dir=str(settings.dbt_project_dir),
        # the dbt target follows the SQL engine: dbt-duckdb ("local") or dbt-trino ("production")
        target="local" if settings.effective_sql_engine == "duckdb" else "production",
        runs_dir=str(settings.home / "dbt-runs"),
    )
