"""Silver and gold: the dbt project as partitioned Dagster assets.

Asset specs and checks are read from dbt's ``manifest.json`` (plain JSON), so
loading the code location does not import dbt or dagster-dbt (together ~1.4 s,
more than Dagster itself); execution goes through dagster-dbt's CLI resource.
Conventions follow dagster-dbt's: a model's key is ``[schema, name]`` and a
source's is ``[source_name, table]`` (so ``source('bronze', 'fills')`` is the
Python asset ``bronze/fills``), and every dbt test is an asset check on the
model it tests, blocking when its severity is ``error``.

Locally, a run stages the partition's inputs from Iceberg into a scratch
DuckDB, runs ``dbt build`` for the selected models, then replaces the same
partition of each built model's Iceberg table, so silver and gold are Iceberg
tables like bronze.
"""


import json
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Failure,
    MaterializeResult,
    RetryPolicy,
    TableColumn,
    TableSchema,
    multi_asset,
)

from pipelines.automation import derived_asset_condition
from pipelines.partitions import PARTITION_COLUMN, daily_partitions
from pipelines.pools import group_pool
from platformq_assets.quality.profiling import profile_metadata
from resources.dbt import DbtRunnerResource
from resources.erasure import erased_accounts, suppress
from resources.lake import LakeResource


class DbtManifest:
    """The parts of a dbt manifest the asset graph needs."""

    def __init__(self, manifest: dict):
        self.raw = manifest
        self.nodes = manifest["nodes"]
        self.sources = manifest["sources"]
        self.models = {uid: n for uid, n in self.nodes.items() if n["resource_type"] == "model"}
        self.tests = {uid: n for uid, n in self.nodes.items() if n["resource_type"] == "test"}

    @classmethod
    def load(cls, path: Path) -> "DbtManifest":
        return cls(json.loads(Path(path).read_text()))

    def topological(self, model_ids) -> list[str]:
        """Model ids ordered so every model comes after the models it reads."""
        from graphlib import TopologicalSorter

        wanted = set(model_ids)
        graph = {uid: [d for d in self.models[uid]["depends_on"]["nodes"] if d in wanted] for uid in sorted(wanted)}
        return list(TopologicalSorter(graph).static_order())

    def code_version(self, unique_id: str) -> str:
        """The model file's checksum and the SQL of the macros it calls (a changed ``tokenise`` or
        ``ticks_to_price`` changes what the model computes, and so its version)."""
        import hashlib

        node = self.nodes[unique_id]
        digest = hashlib.sha256(node["checksum"]["checksum"].encode())
        macros = self.raw.get("macros", {})
        used, todo = set(), list(node.get("depends_on", {}).get("macros", []))
        while todo:  # and the macros those call
            macro = todo.pop()
            if macro in used or not macro.startswith("macro.platformq."):  # dbt's own change with the pinned dbt
                continue
            used.add(macro)
            todo.extend(macros.get(macro, {}).get("depends_on", {}).get("macros", []))
        for macro in sorted(used):
            digest.update(macro.encode() + b"\0" + macros.get(macro, {}).get("macro_sql", "").encode())
        return digest.hexdigest()[:16]

    def key_for(self, unique_id: str) -> AssetKey:
        if unique_id in self.sources:
            source = self.sources[unique_id]
            return AssetKey([source["source_name"], source["name"]])
        node = self.nodes[unique_id]
        return AssetKey([node["schema"], node["name"]])

    def identifier_for(self, unique_id: str) -> str:
        return ".".join(self.key_for(unique_id).path)

    def model_specs(self) -> list[AssetSpec]:
        specs = []
        for uid, node in sorted(self.models.items()):
            columns = [TableColumn(name=name, description=col.get("description") or None)
                       for name, col in node.get("columns", {}).items()]
            layer = node["schema"]
            specs.append(AssetSpec(
                key=self.key_for(uid),
                deps=[self.key_for(dep) for dep in node["depends_on"]["nodes"]],
                description=node.get("description") or f"dbt model {node['name']}",
                group_name=layer,
                kinds={"dbt", "duckdb", "iceberg"},
                owners=["team:lake"],
                tags={"layer": layer},
                skippable=True,
                code_version=self.code_version(uid),
                automation_condition=derived_asset_condition(),
                metadata={
                    "dbt/unique_id": uid,
                    "dbt/path": node["original_file_path"],
                    **({"dagster/column_schema": TableSchema(columns=columns)} if columns else {}),
                },
            ))
        return specs

    def check_specs(self) -> list[tuple[str, AssetCheckSpec]]:
        out = []
        for uid, test in sorted(self.tests.items()):
            attached = test.get("attached_node")
            if attached not in self.models:
                continue
            severity = str(test["config"].get("severity", "error")).lower()
            out.append((uid, AssetCheckSpec(
                name=test["name"],
                asset=self.key_for(attached),
                description=f"dbt test {test['name']} (severity {severity})",
                blocking=severity == "error",
                metadata={"dbt/unique_id": uid, "dbt/severity": severity},
            )))
        return out


def build_dbt_assets(manifest_path: Path):
    manifest = DbtManifest.load(manifest_path)
    specs = manifest.model_specs()
    checks = manifest.check_specs()
    check_uid = {spec.key: uid for uid, spec in checks}
    model_uid = {manifest.key_for(uid): uid for uid in manifest.models}

    @multi_asset(
        name="dbt_lake",
        pool=group_pool("dbt"),  # the silver and gold models
        specs=specs,
        check_specs=[spec for _, spec in checks],
        partitions_def=daily_partitions,
        can_subset=True,
        description="dbt build of the silver and gold models for one trading day.",
        # bounded: a broken model is retried once in the run; the run itself is relaunched once more by the
        # instance's run retries (dagster.yaml run_retries), then it stays failed
        retry_policy=RetryPolicy(max_retries=1, delay=5),
        op_tags={"dagster-k8s/config": {"container_config": {"resources": {
            "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}}}},
    )
    def dbt_lake(context: AssetExecutionContext, dbt: DbtRunnerResource, lake: LakeResource):
        partition = context.partition_key
        selected = manifest.topological(model_uid[k] for k in context.selected_asset_keys)
        selected_checks = {check_uid[k] for k in context.selected_asset_check_keys if k in check_uid}
        # checks selected without their model (the UI's "Execute checks"): their tests run alone, on the model's
        # partition as the lake holds it. `dbt build` selects the tests of the selected models by itself; an
        # empty model selection was `--select ""`, every model of the project built and no check reported.
        checks_alone = sorted(uid for uid in selected_checks if manifest.tests[uid]["attached_node"] not in selected)
        names = ([manifest.models[uid]["name"] for uid in selected]
                 + [manifest.tests[uid]["name"] for uid in checks_alone])
        # inputs = everything the selection reads that it does not build itself
        inputs = {manifest.identifier_for(dep) for uid in selected
                  for dep in manifest.models[uid]["depends_on"]["nodes"] if dep not in selected}
        inputs |= {manifest.identifier_for(manifest.tests[uid]["attached_node"]) for uid in checks_alone}

        _require_pii_salt(manifest, selected, dbt.target)
        target_path = dbt.new_target_path()
        try:
            if dbt.stages_inputs:
                staged = dbt.stage_inputs(target_path, lake, inputs, PARTITION_COLUMN, partition)
                context.log.info(f"staged inputs for {partition}: {staged}")
            run = dbt.build(names, {"partition_date": partition}, target_path=target_path, log=context.log)

            failed = []
            schemas: dict[str, list[str] | None] = {}  # lake columns by table, looked up once per step
            # read after the build: the inputs were staged before an erasure that committed while dbt ran, and a
            # written-back model would bring the account back (the erasure's sweep erases what still slips through)
            erased = erased_accounts(lake) if dbt.stages_inputs else set()
            for uid in selected:
                result = run.results.get(uid, {"status": "not run"})
                key = manifest.key_for(uid)
                if result["status"] != "success":
                    failed.append(f"{manifest.identifier_for(uid)}: {result['status']} "
                                  f"{result.get('message') or ''}")
                    continue
                identifier = manifest.identifier_for(uid)
                metadata = {"dbt/unique_id": uid,
                            "dbt/execution_time_s": round(result.get("execution_time", 0.0), 3)}
                columns = None
                if dbt.stages_inputs:
                    table = run.read_model(*key.path)
                    if erased:
                        table = suppress({identifier: table}, erased)[0][identifier]
                    written = lake.replace_partition(identifier, table, PARTITION_COLUMN, partition)
                    metadata.update({"table": identifier, "snapshot_id": str(written["snapshot_id"]),
                                     "table_total_rows": written["total_rows"], **profile_metadata(table)})
                    columns = table.column_names
                lineage = _column_lineage(result, identifier, columns, lake, dbt.target, context.log, schemas)
                if lineage is not None:
                    metadata["dagster/column_lineage"] = lineage
                yield MaterializeResult(asset_key=key, metadata=metadata)

            for uid in sorted(selected_checks):
                result = run.results.get(uid)
                if result is None or result["status"] == "skipped":
                    continue  # its model failed: the step fails below
                spec_key = next(k for k, v in check_uid.items() if v == uid)
                status = result["status"]
                yield AssetCheckResult(
                    asset_key=spec_key.asset_key,
                    check_name=spec_key.name,
                    passed=status == "pass",
                    severity=AssetCheckSeverity.WARN if status == "warn" or manifest.tests[uid]["config"].get(
                        "severity", "error").lower() == "warn" else AssetCheckSeverity.ERROR,
                    metadata={"dbt/status": status, "failures": result.get("failures") or 0,
                              "message": result.get("message") or ""},
                )
            if failed:
                raise Failure(description="dbt models did not build:\n" + "\n".join(failed),
                              metadata={"dbt_target_path": str(run.target_path)})
        except BaseException:
            # the scratch database holds the staged inputs (identities and emails when silver.accounts is
            # built), which no erasure reaches: it goes; the compiled SQL and the logs stay for the diagnosis
            dbt.drop_scratch_data(target_path)
            raise
        run.cleanup()

    return dbt_lake


TOKENISE_MACRO = "macro.platformq.tokenise"


def _require_pii_salt(manifest: DbtManifest, model_ids, target: str, environ=None) -> None:
    """Production models that tokenise PII need the deployment's secret salt (PLATFORMQ_PII_SALT): without it
    dbt would fall back to the public ``pii_salt`` literal of dbt_project.yml, whose tokens anyone with the
    repository can reverse by hashing candidate emails. The salt travels in the environment, never in --vars
    (dbt's command line is logged)."""
    import os

    environ = os.environ if environ is None else environ
    if target != "production" or environ.get("PLATFORMQ_PII_SALT"):
        return
    tokenising = sorted(manifest.models[uid]["name"] for uid in model_ids
                        if TOKENISE_MACRO in manifest.models[uid]["depends_on"].get("macros", []))
    if tokenising:
        raise Failure(allow_retries=False, description=(
            f"PLATFORMQ_PII_SALT is not set: production models {', '.join(tokenising)} tokenise PII and would be "
            "salted with the public default of dbt_project.yml; set the deployment's secret salt"))


def _column_lineage(result: dict, identifier: str, columns: list[str] | None, lake: LakeResource, target: str, log,
                    schemas: dict[str, list[str] | None]):
    """The model's column lineage from its compiled SQL (None, with a warning, if it cannot be derived:
    lineage is metadata and never fails a build). ``schemas`` caches lake columns by table for the step:
    models are handled in dependency order and each is written before its lineage is derived, so a table
    is looked up only after the step's own write of it."""
    from platformq_assets.lake.column_lineage import DIALECTS, model_column_lineage

    sql = result.get("compiled_code")
    if not sql:
        return None

    def table_columns(schema: str, name: str) -> list[str] | None:
        relation = f"{schema}.{name}"
        if relation not in schemas:
            schemas[relation] = ([f.name for f in lake.load_table(relation).schema().fields]
                                 if lake.table_exists(relation) else None)
        return schemas[relation]

    try:
        columns = columns or table_columns(*identifier.split("."))
        if not columns:
            return None
        return model_column_lineage(sql, columns, DIALECTS.get(target, "duckdb"), table_columns)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        log.warning(f"column lineage of {identifier} could not be derived: {type(exc).__name__}: {exc}")
        return None


__all__ = ["DbtManifest", "build_dbt_assets"]
