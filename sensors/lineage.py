"""OpenLineage sensor: every step that materialises assets becomes an OpenLineage run (START, then
COMPLETE or FAIL), every asset check evaluation a COMPLETE run of the check's own job.

* job: namespace ``platformq``, name = the Dagster step (``silver__trades``); the Dagster run is the
  parent run facet, so Marquez groups a run's steps under it;
* datasets: named after the Iceberg tables (``bronze.orders``) in the warehouse's namespace; outputs
  are the assets the step materialised (for START and FAIL, those the run planned for the step: the
  selected ones of a subset multi-asset), inputs their parents in the asset graph; outputs carry the
  schema facet (from ``dagster/column_schema``) and column lineage where the asset reports
  ``dagster/column_lineage``;
* checks: the checked table is the input, with a ``dataQualityAssertions`` facet.

Runs are read once they finish (any storage: per-run logs, no global event-log cursor needed). The
cursor keeps the latest run end time emitted and the runs emitted in the minute before it: a run's
end time never changes, so a finished run whose tags change later (the run-retry daemon tags a failed
run when it launches the retry) is not read again, and a run whose end became visible a little late
is still read; a restart neither repeats nor skips a run. A tick sends runs for at most ``TICK_BUDGET_S`` and
moves the cursor past each run once its events are sent, leaving the rest to the next ticks (a tick cut off at
Dagster's sensor timeout would keep no cursor and send the same events again on every tick). A run the backend
refuses after others were sent ends the tick with those kept (an error in the log): a tick that raises keeps no
cursor; the next tick starts at that run and fails if it is refused again.

Every START is closed: a step whose process died (run monitoring then fails the run) or whose run was
cancelled never reports success or failure, so it gets FAIL (ABORT for a cancelled run) at the run's end.
"""

import datetime as dt
import json
import time
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
# The assets a run selected, per step (logged when the run is created): a subset run of a multi-asset plans only
# the selected ones, whether they are the run's asset_selection or the whole of an ephemeral job (materialize()).
PLANNED = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
RUN_END_EVENTS = {DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED}
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
BATCH = 50  # runs per evaluation
# Runs that ended up to this long before the latest one emitted are still looked at (their end can become
# visible after a later run's: concurrent commits, clocks of different run workers).
LATE_S = 60.0
# A tick stops starting runs' events after this long, so it ends well inside Dagster's sensor timeout (60 s):
# one cut off there stores no cursor, and every later tick would send the same runs' events again, for ever
# (a backfill's runs hold thousands of events; a backend taking 20 ms each needs a minute for them).
TICK_BUDGET_S = 25.0


def dataset_name(key: AssetKey) -> str:
    return ".".join(key.path)


def _time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat()


def _node(step_key: str) -> str:
    return step_key.split("[")[0]


def _run_id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "platformq:" + ":".join(parts)))


class LineageBuilder:
    def __init__(self, instance, repository_def, lineage: OpenLineageResource):
        self.instance = instance
        self.lineage = lineage
        self.graph = repository_def.asset_graph

    def run_events(self, run) -> list:
        """OpenLineage events for one finished run, in the order its steps and checks happened."""
        entries = self.instance.all_logs(run.run_id, of_type=STEP_EVENTS | RUN_END_EVENTS | {PLANNED})
        materialisations = [e for e in entries if e.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION]
        planned: dict[str, set[AssetKey]] = {}  # node (a step key without its mapping key) -> assets
        for entry in entries:
            if entry.dagster_event.event_type == PLANNED:
                planned.setdefault(_node(entry.dagster_event.step_key), set()).add(entry.dagster_event.asset_key)
        events = []
        started: dict[str, None] = {}  # steps whose START was emitted and not yet closed, in order
        run_end = None
        for entry in entries:
            kind = entry.dagster_event.event_type
            if kind in RUN_END_EVENTS:
                run_end = entry
            elif kind == DagsterEventType.ASSET_CHECK_EVALUATION:
                events.append(self.check_event(run, entry))
            elif kind not in (DagsterEventType.ASSET_MATERIALIZATION, PLANNED):
                event = self.step_event(run, entry, materialisations, planned)
                if event is not None:
                    events.append(event)
                    if kind == DagsterEventType.STEP_START:
                        started[entry.dagster_event.step_key] = None
                    else:
                        started.pop(entry.dagster_event.step_key, None)
        for step in started:  # the step's process died, or the run was cancelled under it
            events.append(self.unfinished_step_event(run, step, run_end or entries[-1], planned))
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

    def step_event(self, run, entry, materialisations, planned_by_node: dict[str, set[AssetKey]]):
        from openlineage.client.event_v2 import RunState
        from openlineage.client.generated import error_message_run

        event = entry.dagster_event
        step = event.step_key
        if step is None:
            return None
        planned = planned_by_node.get(_node(step), set())
        if event.event_type == DagsterEventType.STEP_SUCCESS:
            materialised = {e.dagster_event.asset_key: e.asset_materialization.metadata for e in materialisations
                            if e.dagster_event.step_key == step}
            state = RunState.COMPLETE
            if not materialised and not planned:
                return None  # a plain op
        else:
            materialised = {key: None for key in planned}
            state = RunState.START if event.event_type == DagsterEventType.STEP_START else RunState.FAIL
            if not materialised:
                return None  # an op that builds no asset (a check-only step, a plain op)
        error_facet = None
        if state == RunState.FAIL and event.event_specific_data and event.event_specific_data.error:
            error = event.event_specific_data.error
            while error.cause is not None:
                error = error.cause
            error_facet = error_message_run.ErrorMessageRunFacet(
                message=f"{error.cls_name}: {error.message.strip()}"[:2000], programmingLanguage="python",
                stackTrace="".join(error.stack)[-4000:] or None, producer=PRODUCER)
        return self._step_run_event(run, step, state, entry.timestamp, materialised, error_facet)

    def unfinished_step_event(self, run, step: str, run_end, planned_by_node: dict[str, set[AssetKey]]):
        """FAIL (ABORT for a cancelled run) at the run's end for a step that started and never finished."""
        from openlineage.client.event_v2 import RunState
        from openlineage.client.generated import error_message_run

        planned = {key: None for key in planned_by_node.get(_node(step), set())}
        if run.status == DagsterRunStatus.CANCELED:
            return self._step_run_event(run, step, RunState.ABORT, run_end.timestamp, planned)
        if run.status == DagsterRunStatus.SUCCESS:
            return self._step_run_event(run, step, RunState.COMPLETE, run_end.timestamp, {})
        message = (run_end.message or "") if run_end.dagster_event.event_type in RUN_END_EVENTS else ""
        error_facet = error_message_run.ErrorMessageRunFacet(
            message=(f"step {step} did not finish: {message}" if message else f"step {step} did not finish")[:2000],
            programmingLanguage="python", producer=PRODUCER)
        return self._step_run_event(run, step, RunState.FAIL, run_end.timestamp, planned, error_facet)

    def _step_run_event(self, run, step: str, state, timestamp: float, materialised: dict, error_facet=None):
        from openlineage.client.event_v2 import InputDataset, Job, Run, RunEvent
        from openlineage.client.generated import job_type_job, parent_run

        keys = set(materialised)
        run_facets = {"parent": parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run.run_id), job=parent_run.Job(namespace=self.lineage.namespace,
                                                                    name=run.job_name), producer=PRODUCER)}
        if error_facet is not None:
            run_facets["errorMessage"] = error_facet
        partition = run.tags.get("dagster/partition")
        job = Job(namespace=self.lineage.namespace, name=step, facets={"jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DAGSTER", jobType="ASSET", producer=PRODUCER)})
        return RunEvent(
            eventType=state, eventTime=_time(timestamp), producer=PRODUCER, job=job,
            run=Run(runId=_run_id(run.run_id, step, partition or ""), facets=run_facets),
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


def _ended(record) -> float:
    """When the run finished: fixed once it has, unlike the record's update time (tags change it)."""
    return record.end_time if record.end_time is not None else record.update_timestamp.timestamp()


def pending(instance, cursor: dict) -> list:
    """The records of the runs that finished since ``cursor`` and were not emitted yet, oldest end first (at most
    ``BATCH``)."""
    after = cursor.get("after")
    seen = _seen(cursor)
    floor = after - LATE_S if after is not None else None
    # a run's record is updated when it ends (and later, when its tags change): never before its end time
    updated_after = dt.datetime.fromtimestamp(floor, dt.timezone.utc) if floor is not None else None
    records = instance.get_run_records(filters=RunsFilter(statuses=FINISHED, updated_after=updated_after))
    return sorted((r for r in records if r.dagster_run.run_id not in seen and (floor is None or _ended(r) >= floor)),
                  key=_ended)[:BATCH]


def _seen(cursor: dict) -> dict:
    seen = cursor.get("seen", {})
    if isinstance(seen, list):  # a cursor from before end times were kept
        seen = {run_id: cursor.get("after") for run_id in seen}
    return seen


def advance(cursor: dict, records: list) -> dict:
    """``cursor`` once the events of ``records`` (runs of :func:`pending`, in its order) are emitted."""
    if not records:
        return cursor
    after = cursor.get("after")
    emitted = {r.dagster_run.run_id: _ended(r) for r in records}
    latest = max(emitted.values()) if after is None else max(after, *emitted.values())
    seen = {run_id: ended for run_id, ended in {**_seen(cursor), **emitted}.items() if ended >= latest - LATE_S}
    return {"after": latest, "seen": seen}


def collect(instance, repository_def, lineage: OpenLineageResource, cursor: dict) -> tuple[list, dict]:
    """OpenLineage events of the runs that finished since ``cursor``; the cursor to store next.

    ``cursor``: ``after``, the latest end time emitted, and ``seen``, the runs emitted that ended within
    ``LATE_S`` of it (run id -> end time)."""
    records = pending(instance, cursor)
    builder = LineageBuilder(instance, repository_def, lineage)
    events = []
    for record in records:
        events += builder.run_events(record.dagster_run)
    return events, advance(cursor, records)


@sensor(name="openlineage_events", minimum_interval_seconds=30,
        description="Emits OpenLineage START/COMPLETE/FAIL events for every asset step and check "
                    "(file locally, HTTP to Marquez with PLATFORMQ_OPENLINEAGE_URL).")
def openlineage_events(context: SensorEvaluationContext, openlineage: OpenLineageResource):
    cursor = json.loads(context.cursor) if context.cursor else {}
    builder = LineageBuilder(context.instance, context.repository_def, openlineage)
    deadline = time.monotonic() + TICK_BUDGET_S
    emitted, done = 0, []
    for record in pending(context.instance, cursor):
        if done and time.monotonic() >= deadline:
            break  # the rest waits for the next tick (its cursor covers only the runs sent)
        try:
            events = builder.run_events(record.dagster_run)
            if events:
                openlineage.emit(events)  # emitted before the cursor moves: a crash re-sends, never loses
        except Exception as exc:
            if not done:
                raise  # the tick fails: nothing was sent, the next one starts at this run again
            # a tick that raises keeps none of its cursor: the runs sent before this one would be sent again
            context.log.error(f"OpenLineage events of run {record.dagster_run.run_id} not sent "
                              f"({type(exc).__name__}: {exc}); the {len(done)} run(s) sent before it are kept, "
                              "it is the next tick's first")
            break
        emitted += len(events)
        done.append(record)
        context.update_cursor(json.dumps(advance(cursor, done)))
    if not emitted:
        return SkipReason("no new asset steps or checks")
    context.log.info(f"emitted {emitted} OpenLineage event(s) of {len(done)} run(s)")
