"""The OpenLineage sensor's cursor and run pairing on a real (SQLite) Dagster instance: a finished run
is emitted once even when its tags change later, and every START gets a terminal event, even when
the step's process died and run monitoring failed the run."""

import json
import os
import subprocess
import sys
import textwrap

from dagster import (AssetKey, AssetSpec, Definitions, asset, define_asset_job, instance_for_test, materialize,
                     multi_asset)

from resources.lineage import OpenLineageResource
from sensors.lineage import collect
from tests.conftest import ROOT


@asset
def broken():
    raise ValueError("boom")


@asset
def fine():
    return 1


@asset
def killed():
    pass


@multi_asset(specs=[AssetSpec(["bronze", "partner_quotes"], skippable=True),
                     AssetSpec(["bronze", "kyc_events"], skippable=True)], can_subset=True)
def landing(context):
    raise ValueError("kyc file unreadable")


def names(events):
    return [(e.job.name, e.eventType.value) for e in events]


def test_a_finished_run_tagged_later_is_not_emitted_again(tmp_path):
    resource = OpenLineageResource(file_path=str(tmp_path / "events.jsonl"))
    with instance_for_test() as instance:
        failed = materialize([broken], instance=instance, raise_on_error=False)
        materialize([fine], instance=instance)  # a later run finishes after the failed one
        repo = Definitions(assets=[broken, fine]).get_repository_def()
        events, cursor = collect(instance, repo, resource, {})
        assert names(events) == [("broken", "START"), ("broken", "FAIL"), ("fine", "START"), ("fine", "COMPLETE")]
        cursor = json.loads(json.dumps(cursor))  # as the sensor stores it
        # the run-retry daemon tags the failed run once it launches the retry (this moves its update time)
        instance.add_run_tags(failed.run_id, {"dagster/auto_retry_run_id": "00000000-0000-0000-0000-000000000000"})
        again, cursor = collect(instance, repo, resource, cursor)
        assert again == []
        # a run that finishes afterwards is still emitted, once
        materialize([fine], instance=instance)
        later, cursor = collect(instance, repo, resource, json.loads(json.dumps(cursor)))
        assert names(later) == [("fine", "START"), ("fine", "COMPLETE")]
        assert collect(instance, repo, resource, cursor)[0] == []


def test_a_cursor_written_before_end_times_were_kept_still_works(tmp_path):
    resource = OpenLineageResource(file_path=str(tmp_path / "events.jsonl"))
    with instance_for_test() as instance:
        result = materialize([fine], instance=instance)
        repo = Definitions(assets=[fine]).get_repository_def()
        [record] = instance.get_run_records()
        old = {"after": record.update_timestamp.timestamp(), "seen": [result.run_id]}
        assert collect(instance, repo, resource, old)[0] == []


def test_a_step_whose_process_died_gets_a_fail_event(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    child = textwrap.dedent("""
        import os
        from dagster import DagsterInstance, asset, materialize

        @asset
        def killed():
            os._exit(9)  # the process dies mid-step (OOM kill, node loss)

        materialize([killed], instance=DagsterInstance.get())
    """)
    done = subprocess.run([sys.executable, "-c", child], env={**os.environ, "DAGSTER_HOME": str(home)}, cwd=ROOT,
                          capture_output=True, timeout=120)
    assert done.returncode == 9
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        instance.report_run_failed(run, "the run worker is gone")  # what run monitoring does
        events, _ = collect(instance, Definitions(assets=[killed]).get_repository_def(),
                            OpenLineageResource(file_path=str(tmp_path / "events.jsonl")), {})
    assert names(events) == [("killed", "START"), ("killed", "FAIL")]
    start, fail = events
    assert fail.run.runId == start.run.runId
    assert "the run worker is gone" in fail.run.facets["errorMessage"].message
    assert [o.name for o in fail.outputs] == ["killed"]
    assert fail.eventTime >= start.eventTime


def test_a_subset_run_lists_only_its_selected_assets(tmp_path):
    resource = OpenLineageResource(file_path=str(tmp_path / "events.jsonl"))
    defs = Definitions(assets=[landing], jobs=[define_asset_job("landing_job", selection=[landing])])
    kyc = AssetKey(["bronze", "kyc_events"])
    with instance_for_test() as instance:
        # a subset as an ephemeral job (materialize) and as the run's asset selection (a job's subset)
        materialize([landing], selection=[kyc], instance=instance, raise_on_error=False)
        defs.resolve_job_def("landing_job").execute_in_process(instance=instance, asset_selection=[kyc],
                                                               raise_on_error=False)
        events, _ = collect(instance, defs.get_repository_def(), resource, {})
    assert names(events) == [("landing", "START"), ("landing", "FAIL")] * 2
    assert [[o.name for o in e.outputs] for e in events] == [["bronze.kyc_events"]] * 4


def test_a_slow_backend_gets_the_runs_over_several_ticks_each_once(tmp_path, monkeypatch):
    """A tick stops taking runs once its time is spent and keeps a cursor of the runs it sent: a tick cut off at
    Dagster's sensor timeout keeps none, and every later tick sent the same runs' events again, for ever."""
    import time

    from dagster import build_sensor_context

    import sensors.lineage as lineage_sensor

    sent = []

    def slow_emit(self, events):
        time.sleep(0.2 * len(events))  # e.g. Marquez answering in 20 ms, a backfill's runs of ~60 events each
        sent.extend(events)
        return len(events)

    monkeypatch.setattr(OpenLineageResource, "emit", slow_emit)
    monkeypatch.setattr(lineage_sensor, "TICK_BUDGET_S", 0.3, raising=False)
    resource = OpenLineageResource(file_path=str(tmp_path / "events.jsonl"))
    defs = Definitions(assets=[fine])
    with instance_for_test() as instance:
        runs = [materialize([fine], instance=instance).run_id for _ in range(3)]
        cursor, ticks = None, 0
        while True:
            with build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources={"openlineage": resource}) as context:
                before = len(sent)
                lineage_sensor.openlineage_events(context)
                cursor = context.cursor
            ticks += 1
            if len(sent) == before:
                break
            assert len(sent) - before == 2  # one run's START and COMPLETE per tick
    assert ticks == 4
    assert [e.run.facets["parent"].run.runId for e in sent] == [r for r in runs for _ in range(2)]


def test_a_backend_under_a_path_prefix_gets_the_events(tmp_path):
    """PLATFORMQ_OPENLINEAGE_URL naming a backend behind a path (an ingress at /marquez, DataHub's
    /openapi/openlineage): the events went to the host's root path instead (urljoin drops the last segment)."""
    from tests.services.serving import capturing_app, serve

    backend, received = capturing_app("/marquez/api/v1/lineage", reply={})
    with instance_for_test() as instance:
        materialize([fine], instance=instance)
        events, _ = collect(instance, Definitions(assets=[fine]).get_repository_def(),
                            OpenLineageResource(file_path=str(tmp_path / "unused.jsonl")), {})
        with serve(backend) as url:
            OpenLineageResource(url=f"{url}/marquez").emit(events)
    assert [e["eventType"] for e in received] == ["START", "COMPLETE"]


def test_a_backend_failing_midway_through_a_tick_gets_each_run_once(tmp_path, monkeypatch):
    """The backend refuses a tick's second run (Marquez restarting): the tick raised, the daemon kept none of the
    cursor it had moved past the first run, and the next tick sent the first run's events again. The runs sent are
    kept, the failure is logged and the next tick starts at the run that failed (and raises if it fails again)."""
    from dagster import build_sensor_context

    import sensors.lineage as lineage_sensor

    sent, refuse = [], {"parent": None}

    def flaky_emit(self, events):
        parent = events[0].run.facets["parent"].run.runId
        if parent == refuse["parent"]:
            raise ConnectionError("Marquez is restarting")
        sent.extend(events)
        return len(events)

    monkeypatch.setattr(OpenLineageResource, "emit", flaky_emit)
    resource = OpenLineageResource(file_path=str(tmp_path / "events.jsonl"))
    defs = Definitions(assets=[fine])
    with instance_for_test() as instance:
        runs = [materialize([fine], instance=instance).run_id for _ in range(3)]

        def tick(cursor):
            """What the daemon does: the cursor the tick kept, or the one before it when the tick raised."""
            with build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources={"openlineage": resource}) as context:
                try:
                    lineage_sensor.openlineage_events(context)
                except Exception as exc:  # noqa: BLE001 - a failed tick
                    return cursor, exc
                return context.cursor, None

        refuse["parent"] = runs[1]
        cursor, error = tick(None)
        assert error is None and [e.run.facets["parent"].run.runId for e in sent] == [runs[0]] * 2
        cursor, error = tick(cursor)  # the same run refused again: now the tick fails, and sends nothing
        assert isinstance(error, ConnectionError) and len(sent) == 2
        refuse["parent"] = None
        cursor, error = tick(cursor)
        assert error is None and tick(cursor) == (cursor, None)
    assert [e.run.facets["parent"].run.runId for e in sent] == [r for r in runs for _ in range(2)]


def test_a_slow_backend_gets_each_event_once_per_send(tmp_path):
    """openlineage-python's HTTP transport retried a POST whose answer did not come within the timeout five times:
    a backend that stores the event and answers late (Marquez under load) stored each event six times, and one
    event took ~40 s to fail (with the 5 s timeout), most of a sensor tick's minute."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import pytest

    received = []

    class Late(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers.get("content-length") or 0)))
            time.sleep(0.6)  # stored, answered after the client's timeout
            try:
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Late)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with instance_for_test() as instance:
        materialize([fine], instance=instance)
        events, _ = collect(instance, Definitions(assets=[fine]).get_repository_def(),
                            OpenLineageResource(file_path=str(tmp_path / "unused.jsonl")), {})
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match="(?i)timed? ?out"):
            OpenLineageResource(url=f"http://127.0.0.1:{server.server_address[1]}", timeout_s=0.2).emit(events[:1])
        assert len(received) == 1 and time.monotonic() - started < 2
    finally:
        server.shutdown()
        server.server_close()
