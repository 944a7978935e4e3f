"""OpenLineage sensor: every step that materialises assets becomes an OpenLineage run (START, then
COMPLETE or FAIL), every asset check evaluation a COMPLETE run of the check's own job.

* job: namespace ``platformq``, name = the Dagster step (``silver__trades``); the Dagster run is the
  parent run facet, so Marquez groups a run's steps under it;
* datasets: named after the Iceberg tables (``bronze.orders``) in the warehouse's namespace; outputs
  are the assets the step materialised (planned ones for START and FAIL), inputs their parents in
  the asset graph; outputs carry the schema facet (from ``dagster/column_schema``) and column lineage
  where the asset reports ``dagster/column_lineage``;
* checks: the checked table is the input, with a ``dataQualityAssertions`` facet.

Runs are read once they finish (any storage: per-run logs, no global event-log cursor needed); the
cursor keeps the last run update time seen and the runs finished at that instant, so a restart
neither repeats nor skips a run.
"""

import datetime as dt
import json
import uuid

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterRunStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from resources.lineage import PRODUCER, OpenLineageResource

STEP_EVENTS = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE,
               DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.ASSET_MATERIALIZATION}
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
BATCH = 50  # runs per evaluation


def dataset_name(key: AssetKey) -> str:
    return ".".join(key.path)


def _time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat()


def _run_id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "platformq:" + ":".join(parts)))


class LineageBuilder:
    def __init__(self, instance, repository_def, lineage: OpenLineageResource):
        self.instance = instance
        self.lineage = lineage
        self.graph = repository_def.asset_graph
        self.step_assets: dict[str, set[AssetKey]] = {}
        for assets_def in repository_def.assets_defs_by_key.values():
            if assets_def.is_executable:
                self.step_assets.setdefault(assets_def.node_def.name, set()).update(assets_def.keys)

    def run_events(self, run) -> list:
        """OpenLineage events for one finished run, in the order its steps and checks happened."""
        entries = self.instance.all_logs(run.run_id, of_type=STEP_EVENTS)
        materialisations = [e for e in entries if e.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION]
        events = []
        for entry in entries:
            kind = entry.dagster_event.event_type
            if kind == DagsterEventType.ASSET_CHECK_EVALUATION:
                events.append(self.check_event(run, entry))
            elif kind != DagsterEventType.ASSET_MATERIALIZATION:
                event = self.step_event(run, entry, materialisations)
                if event is not None:
                    events.append(event)
        return events

    def _parents(self, keys: set[AssetKey]) -> list[AssetKey]:
        parents = set()
        for key in keys:
            if self.graph.has(key):
                parents |= set(self.graph.get(key).parent_keys)
        return sorted(parents - keys, key=lambda k: k.to_user_string())

    def _output(self, key: AssetKey, metadata: dict | None):
        from openlineage.client.event_v2 import OutputDataset
        from openlineage.client.generated import column_lineage_dataset, schema_dataset

        facets = {}
        metadata = metadata or {}
        schema = metadata.get("dagster/column_schema")
        if schema is not None:
            columns = schema.value.columns
            facets["schema"] = schema_dataset.SchemaDatasetFacet(
                fields=[schema_dataset.SchemaDatasetFacetFields(name=c.name, type=c.type, description=c.description)
                        for c in columns], producer=PRODUCER)
        lineage = metadata.get("dagster/column_lineage")
        if lineage is not None:
            fields = {}
            for column, deps in lineage.value.deps_by_column.items():
                fields[column] = column_lineage_dataset.Fields(inputFields=[
                    column_lineage_dataset.InputField(namespace=self.lineage.dataset_namespace,
                                                      name=dataset_name(d.asset_key), field=d.column_name)
                    for d in deps])
            facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(fields=fields, producer=PRODUCER)
        return OutputDataset(namespace=self.lineage.dataset_namespace, name=dataset_name(key), facets=facets)

    def step_event(self, run, entry, materialisations):
        from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
        from openlineage.client.generated import error_message_run, job_type_job, parent_run

        event = entry.dagster_event
        step = event.step_key
        if step is None:
            return None
        if event.event_type == DagsterEventType.STEP_SUCCESS:
            materialised = {e.dagster_event.asset_key: e.asset_materialization.metadata for e in materialisations
                            if e.dagster_event.step_key == step}
            state = RunState.COMPLETE
        else:
            materialised = {key: None for key in self.step_assets.get(step.split("[")[0], set())}
            state = RunState.START if event.event_type == DagsterEventType.STEP_START else RunState.FAIL
        if not materialised:
            return None  # an op that builds no asset (a check-only step, a plain op)
        keys = set(materialised)
        run_facets = {"parent": parent_run.ParentRunFacet(
            run=parent_run.Run(runId=entry.run_id), job=parent_run.Job(namespace=self.lineage.namespace,
                                                                      name=run.job_name), producer=PRODUCER)}
        if state == RunState.FAIL and event.event_specific_data and event.event_specific_data.error:
            error = event.event_specific_data.error
            while error.cause is not None:
                error = error.cause
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"{error.cls_name}: {error.message.strip()}"[:2000], programmingLanguage="python",
                stackTrace="".join(error.stack)[-4000:] or None, producer=PRODUCER)
        partition = run.tags.get("dagster/partition")
        job = Job(namespace=self.lineage.namespace, name=step, facets={"jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DAGSTER", jobType="ASSET", producer=PRODUCER)})
        return RunEvent(
            eventType=state, eventTime=_time(entry.timestamp), producer=PRODUCER, job=job,
            run=Run(runId=_run_id(entry.run_id, step, partition or ""), facets=run_facets),
            inputs=[InputDataset(namespace=self.lineage.dataset_namespace, name=dataset_name(k))
                    for k in self._parents(keys)],
            outputs=[self._output(k, materialised[k]) for k in sorted(keys, key=lambda k: k.to_user_string())],
        )

    def check_event(self, run, entry):
        from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent, RunState
        from openlineage.client.generated import data_quality_assertions_dataset as dq
        from openlineage.client.generated import job_type_job, parent_run

        evaluation = entry.dagster_event.event_specific_data
        key = evaluation.asset_key
        name = f"{key.to_user_string()}:{evaluation.check_name}"
        assertion = dq.Assertion(assertion=evaluation.check_name, success=bool(evaluation.passed),
                                 severity=evaluation.severity.value.lower() if evaluation.severity else None)
        return RunEvent(
            eventType=RunState.COMPLETE, eventTime=_time(entry.timestamp), producer=PRODUCER,
            job=Job(namespace=self.lineage.namespace, name=name, facets={"jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="DAGSTER", jobType="ASSET_CHECK", producer=PRODUCER)}),
            run=Run(runId=_run_id(entry.run_id, name), facets={"parent": parent_run.ParentRunFacet(
                run=parent_run.Run(runId=entry.run_id),
                job=parent_run.Job(namespace=self.lineage.namespace, name=run.job_name),
                producer=PRODUCER)}),
            inputs=[InputDataset(namespace=self.lineage.dataset_namespace, name=dataset_name(key),
                                 inputFacets={"dataQualityAssertions": dq.DataQualityAssertionsDatasetFacet(
                                     assertions=[assertion], producer=PRODUCER)})],
            outputs=[],
        )


def collect(instance, repository_def, lineage: OpenLineageResource, cursor: dict) -> tuple[list, dict]:
    """OpenLineage events of the runs that finished since ``cursor``; the cursor to store next."""
    after = cursor.get("after")
    seen = set(cursor.get("seen", []))
    updated_after = dt.datetime.fromtimestamp(after, dt.timezone.utc) - dt.timedelta(microseconds=1) if after else None
    records = instance.get_run_records(filters=RunsFilter(statuses=FINISHED, updated_after=updated_after))
    records = sorted((r for r in records if r.dagster_run.run_id not in seen),
                     key=lambda r: r.update_timestamp.timestamp())[:BATCH]
    builder = LineageBuilder(instance, repository_def, lineage)
    events = []
    for record in records:
        events += builder.run_events(record.dagster_run)
    if records:
        last = records[-1].update_timestamp.timestamp()
        newest = {r.dagster_run.run_id for r in records if r.update_timestamp.timestamp() == last}
        cursor = {"after": last, "seen": sorted(newest | (seen if last == after else set()))}
    return events, cursor


@sensor(name="openlineage_events", minimum_interval_seconds=30,
        description="Emits OpenLineage START/COMPLETE/FAIL events for every asset step and check "
                    "(file locally, HTTP to Marquez with PLATFORMQ_OPENLINEAGE_URL).")
def openlineage_events(context: SensorEvaluationContext, openlineage: OpenLineageResource):
    cursor = json.loads(context.cursor) if context.cursor else {}
    events, new_cursor = collect(context.instance, context.repository_def, openlineage, cursor)
    if events:
        openlineage.emit(events)  # emitted before the cursor moves: a crash re-sends, never loses
    context.update_cursor(json.dumps(new_cursor))
    if not events:
        return SkipReason("no new asset steps or checks")
    context.log.info(f"emitted {len(events)} OpenLineage event(s)")
