"""Runs next to a real Airflow (inside the test's network namespace): trigger and wait through
AirflowResource, then observe the finished runs through the Dagster sensor. Prints one JSON line."""

import json
import os
import sys
import time


def wait_for_dags(airflow, dag_ids, timeout=240):
    from airflow_client.client.api.dag_api import DAGApi

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with airflow._client() as client:
                known = {d.dag_id for d in DAGApi(client).get_dags().dags}
            if set(dag_ids) <= known:
                return
        except Exception:  # API not up yet
            pass
        time.sleep(2)
    raise RuntimeError(f"Airflow did not list {dag_ids} in {timeout} s")


def main(url: str, home: str) -> None:
    os.environ.update({"PLATFORMQ_HOME": home, "DAGSTER_HOME": home, "PLATFORMQ_AIRFLOW_URL": url,
                       "PLATFORMQ_AIRFLOW_USERNAME": "admin", "PLATFORMQ_AIRFLOW_PASSWORD": "unused",
                       "PLATFORMQ_AIRFLOW_DAGS": '["platformq_export", "platformq_broken"]'})
    from dagster import AssetKey, DagsterInstance, SensorResult, SkipReason, build_sensor_context

    from platformq_assets.definitions import build_definitions
    from resources.airflow import AirflowError, airflow_resource
    from resources.settings import load_settings

    settings = load_settings()
    airflow = airflow_resource(settings)
    wait_for_dags(airflow, ["platformq_export", "platformq_broken"])
    for dag in ("platformq_export", "platformq_broken"):
        airflow.unpause(dag)
    ok = airflow.trigger_and_wait("platformq_export", conf={"partition": "2024-01-02"}, timeout_s=240, poll_s=1)
    broken = airflow.trigger_and_wait("platformq_broken", timeout_s=240, poll_s=1)
    try:
        airflow.trigger("no_such_dag")
        missing = "accepted"
    except AirflowError as exc:
        missing = str(exc)

    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("airflow_dag_runs") if hasattr(defs, "resolve_sensor_def") else \
        next(s for s in defs.sensors if s.name == "airflow_dag_runs")
    graph = defs.resolve_asset_graph()
    external = [k.to_user_string() for k in graph.get_all_asset_keys() if k.path[0] == "airflow"]
    with build_sensor_context(instance=DagsterInstance.get(), definitions=defs,
                              resources={"airflow": airflow}) as context:
        first = sensor(context)
        cursor = first.cursor
    with build_sensor_context(instance=DagsterInstance.get(), definitions=defs, cursor=cursor,
                              resources={"airflow": airflow}) as context:
        second = sensor(context)
    observed = [{"key": e.asset_key.to_user_string(),
                 **{k: getattr(v, "value", v) for k, v in e.metadata.items()}} for e in first.asset_events]
    print(json.dumps({"ok": ok, "broken": broken, "missing": missing, "external": sorted(external),
                      "observed": observed, "first_is_result": isinstance(first, SensorResult),
                      "second_skipped": isinstance(second, SkipReason), "key": AssetKey(["airflow", "x"]).path[0]},
                     default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
