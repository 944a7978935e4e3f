"""Existing Airflow DAGs in the asset graph: each configured DAG is an external asset
(``airflow/<dag_id>``) and every finished DAG run becomes an observation of it (run id, state,
start and end, conf). The cursor keeps, per DAG, the latest end time observed and the runs observed that ended
within ``LATE_S`` of it: the next tick asks for runs ending from ``LATE_S`` before that time and leaves those
out, so runs sharing an end time (more of them than one page of Airflow's answer) are each observed once, and a
run that ended a little earlier than one already observed but was committed later (concurrent runs, schedulers
in HA, a bulk state change) is still observed."""

import datetime as dt
import json

from dagster import AssetKey, AssetObservation, AssetSpec, SensorEvaluationContext, SensorResult, SkipReason, sensor

from resources.airflow import AirflowResource


LATE_S = 300.0  # how much earlier than the latest end observed a run's end may become visible


def _ended(end: str) -> dt.datetime:
    return dt.datetime.fromisoformat(end)


def dag_asset_key(dag_id: str) -> AssetKey:
    return AssetKey(["airflow", dag_id])


def airflow_dag_specs(dag_ids: list[str]) -> list[AssetSpec]:
    return [AssetSpec(dag_asset_key(d), group_name="airflow", kinds={"airflow"}, owners=["team:data-platform"],
                      description=f"The Airflow DAG {d}: observed from its runs (not materialised by Dagster).")
            for d in dag_ids]


def build_airflow_sensor(dag_ids: list[str]):
    @sensor(name="airflow_dag_runs", minimum_interval_seconds=60, asset_selection=[dag_asset_key(d) for d in dag_ids],
            description="Observes finished runs of the configured Airflow DAGs (PLATFORMQ_AIRFLOW_DAGS).")
    def airflow_dag_runs(context: SensorEvaluationContext, airflow: AirflowResource):
        cursor = json.loads(context.cursor) if context.cursor else {}
        observations, failed = [], {}
        for dag_id in dag_ids:
            state = cursor.get(dag_id, {})
            after, seen = state.get("after"), state.get("seen", {})
            since = (_ended(after) - dt.timedelta(seconds=LATE_S)).isoformat() if after else None
            if isinstance(seen, list):  # a cursor from before the look-back (the runs that ended at `after`): it
                seen, since = {run_id: after for run_id in seen}, after  # does not know the earlier ones, no repeats
            try:
                runs = airflow.finished_runs(dag_id, ended_since=since, skip=set(seen))
            except Exception as exc:  # one DAG Airflow refuses (renamed, deleted, not permitted) must not stop the rest
                failed[dag_id] = f"{type(exc).__name__}: {exc}"
                context.log.error(f"Airflow DAG {dag_id}: its runs could not be listed ({failed[dag_id]}); "
                                  "it is skipped this tick, its cursor unchanged")
                continue
            for run in runs:
                observations.append(AssetObservation(
                    asset_key=dag_asset_key(dag_id),
                    metadata={"airflow/run_id": run["run_id"], "airflow/state": run["state"],
                              "airflow/start_date": run["start_date"] or "", "airflow/end_date": run["end_date"] or "",
                              "airflow/conf": run["conf"]}))
            ended = {r["run_id"]: r["end_date"] for r in runs if r["end_date"]}
            if ended:
                latest = max([*([after] if after else []), *ended.values()], key=_ended)
                # the next tick asks for runs ending from LATE_S before `latest`: remember those it must leave out
                floor = _ended(latest) - dt.timedelta(seconds=LATE_S)
                cursor[dag_id] = {"after": latest, "seen": {
                    run_id: end for run_id, end in sorted({**seen, **ended}.items()) if _ended(end) >= floor}}
        if failed and len(failed) == len(dag_ids):
            raise RuntimeError("no configured Airflow DAG could be listed: " + "; ".join(
                f"{d}: {why}" for d, why in failed.items()))
        if not observations:
            return SkipReason("no finished Airflow DAG runs since the last check"
                              + (f" (not listed: {', '.join(sorted(failed))})" if failed else ""))
        return SensorResult(asset_events=observations, cursor=json.dumps(cursor))

    return airflow_dag_runs
