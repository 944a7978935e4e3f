"""AirflowResource's errors carry what Airflow said: a real HTTP server on loopback answers as Airflow's
REST API does when it refuses a call (a JSON problem document), or as a proxy in front of it does (text).
It also lists the runs of one DAG as Airflow does (filters, order, pages), for the Airflow sensor."""

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from dagster import SensorResult, build_sensor_context

from resources.airflow import AirflowError, AirflowResource
from sensors.airflow import build_airflow_sensor

ERRORS = "https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html#section/Errors/"
CONFLICT = {"detail": "DAG Run with dag_run_id 'nightly' already exists for DAG 'platformq_export'", "status": 409,
            "title": "Conflict", "type": ERRORS + "AlreadyExists"}
NOT_FOUND = {"detail": "DAG with dag_id: 'no_such_dag' not found", "status": 404, "title": "DAG not found",
             "type": ERRORS + "NotFound"}
BAD_GATEWAY = "<html><body><h1>502 Bad Gateway</h1>upstream airflow-api-server is unreachable</body></html>"

# (path prefix) -> (status, content type, body); the first matching prefix answers
ROUTES = {
    "/auth/token": (401, "application/json", json.dumps({"detail": "Invalid username or password"})),
    "/api/v2/dags/platformq_export/dagRuns/missing_run": (404, "application/json", json.dumps(
        {"detail": "The DagRun with dag_id: `platformq_export` and run_id: `missing_run` was not found"})),
    "/api/v2/dags/platformq_export/dagRuns": (409, "application/json", json.dumps(CONFLICT)),
    "/api/v2/dags/no_such_dag": (404, "application/json", json.dumps(NOT_FOUND)),
    "/api/v2/dags/behind_proxy": (502, "text/html", BAD_GATEWAY),
}

# The runs of the DAG "bulk_marked" (run id, end date), listed by GET .../dagRuns as Airflow does: final states,
# end_date filters, ordered by end_date then id, and never more than MAX_PAGE a page (Airflow caps `limit` at
# its [api] maximum_page_limit)
BULK_RUNS: list[tuple[str, str]] = []
MAX_PAGE = 2


def bulk_runs_page(query: dict) -> str:
    def ended(run):
        return dt.datetime.fromisoformat(run[1])

    runs = [(i, r) for i, r in enumerate(BULK_RUNS)]
    if "end_date_gt" in query:
        runs = [(i, r) for i, r in runs if ended(r) > dt.datetime.fromisoformat(query["end_date_gt"][0])]
    if "end_date_gte" in query:
        runs = [(i, r) for i, r in runs if ended(r) >= dt.datetime.fromisoformat(query["end_date_gte"][0])]
    assert query["order_by"] == ["end_date"] and set(query["state"]) == {"success", "failed"}
    runs.sort(key=lambda pair: (ended(pair[1]), pair[0]))
    offset = int(query.get("offset", ["0"])[0])
    page = runs[offset:offset + min(int(query["limit"][0]), MAX_PAGE)]
    return json.dumps({"total_entries": len(runs), "dag_runs": [
        {"dag_id": "bulk_marked", "dag_display_name": "bulk_marked", "dag_run_id": run_id, "dag_versions": [],
         "run_after": end, "run_type": "manual", "state": "failed", "start_date": None, "end_date": end, "conf": {}}
        for _, (run_id, end) in page]})


class FakeAirflow(BaseHTTPRequestHandler):
    def answer(self):
        if int(self.headers.get("content-length") or 0):
            self.rfile.read(int(self.headers["content-length"]))
        url = urlsplit(self.path)
        if url.path.startswith("/api/v2/dags/hung/"):
            time.sleep(2)  # an API server that accepts the call and does not answer in time
        if url.path == "/api/v2/dags/bulk_marked/dagRuns":
            status, content_type, body = 200, "application/json", bulk_runs_page(parse_qs(url.query))
        else:
            status, content_type, body = next(v for k, v in ROUTES.items() if self.path.startswith(k))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = answer

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def base_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAirflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def airflow(base_url):
    return AirflowResource(base_url=base_url, token="a-token", timeout_s=5)


def test_a_refused_trigger_carries_airflows_title_detail_and_status(airflow):
    with pytest.raises(AirflowError) as conflict:
        airflow.trigger("platformq_export", run_id="nightly")
    message = str(conflict.value)
    assert "HTTP 409" in message and "Conflict" in message and CONFLICT["detail"] in message
    assert (conflict.value.status, conflict.value.title, conflict.value.detail) == (409, "Conflict", CONFLICT["detail"])

    with pytest.raises(AirflowError) as missing:
        airflow.trigger("no_such_dag")
    message = str(missing.value)
    assert "no_such_dag" in message and "HTTP 404" in message and "DAG not found" in message
    assert NOT_FOUND["detail"] in message
    assert (missing.value.status, missing.value.title) == (404, "DAG not found")


def test_a_body_that_is_not_json_is_carried_as_text(airflow):
    with pytest.raises(AirflowError) as bad_gateway:
        airflow.trigger("behind_proxy")
    message = str(bad_gateway.value)
    assert "HTTP 502" in message and "upstream airflow-api-server is unreachable" in message
    assert bad_gateway.value.status == 502 and bad_gateway.value.detail == BAD_GATEWAY


def test_every_call_carries_airflows_detail(airflow):
    """Not only trigger: reading a run, listing runs and unpausing answer with Airflow's reason too."""
    with pytest.raises(AirflowError, match="HTTP 404.*`missing_run` was not found"):
        airflow.state("platformq_export", "missing_run")
    with pytest.raises(AirflowError, match="HTTP 404.*DAG not found.*'no_such_dag' not found"):
        airflow.unpause("no_such_dag")
    with pytest.raises(AirflowError, match="HTTP 502.*upstream airflow-api-server is unreachable"):
        airflow.finished_runs("behind_proxy")
    with pytest.raises(AirflowError, match="HTTP 502.*upstream airflow-api-server is unreachable"):
        airflow.trigger_and_wait("behind_proxy", timeout_s=1, poll_s=0.1)


def test_a_call_airflow_does_not_answer_fails_after_the_timeout(base_url):
    """Only the token request had a timeout: a REST call to an API server that accepted the connection and
    hung waited for ever (a sensor tick's thread stuck in the code server, trigger_and_wait past its deadline)."""
    airflow = AirflowResource(base_url=base_url, token="a-token", timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(AirflowError, match="no answer from Airflow"):
        airflow.state("hung", "a-run")
    # the call's own timeout, not four of them: urllib3 retried a read that timed out three times, so every call to
    # a hung API server took 4 x timeout_s (2 minutes by default: twice a sensor tick's time limit)
    assert time.monotonic() - started < 2 * 0.4
    with pytest.raises(AirflowError, match="no answer from Airflow"):  # a listing too (the sensor's call)
        airflow.finished_runs("hung")
    assert time.monotonic() - started < 4 * 0.4


def test_refused_credentials_carry_airflows_detail(base_url):
    airflow = AirflowResource(base_url=base_url, username="admin", password="wrong", timeout_s=5)
    with pytest.raises(AirflowError, match="'admin'.*HTTP 401.*Invalid username or password") as refused:
        airflow.trigger("platformq_export")
    assert refused.value.status == 401


def test_the_sensor_observes_every_run_once_when_many_end_at_the_same_time(base_url):
    """Runs marked failed in one bulk action share their end date: more of them than a page holds must still
    each be observed, once, over the ticks that follow."""
    t0, t1, t2 = "2025-01-01T00:00:00+00:00", "2025-01-01T01:00:00+00:00", "2025-01-01T02:00:00+00:00"
    BULK_RUNS[:] = [("first", t0)] + [(f"bulk{i}", t1) for i in range(5)]
    sensor = build_airflow_sensor(["bulk_marked"])
    airflow = AirflowResource(base_url=base_url, token="a-token", timeout_s=5)
    cursor, observed = None, []

    def tick():
        nonlocal cursor
        with build_sensor_context(cursor=cursor, resources={"airflow": airflow}) as context:
            result = sensor(context)
        if isinstance(result, SensorResult):
            cursor = result.cursor
            observed.extend(e.metadata["airflow/run_id"].value for e in result.asset_events)
            return True
        return False

    while tick():
        assert len(observed) <= len(BULK_RUNS)
    assert sorted(observed) == sorted(r for r, _ in BULK_RUNS)
    BULK_RUNS.append(("later", t2))
    assert tick() and not tick()
    assert sorted(observed) == sorted(r for r, _ in BULK_RUNS)
    # only the runs within the look-back of the cursor's time (the bulk ones ended an hour before)
    assert json.loads(cursor)["bulk_marked"]["seen"] == {"later": t2}


def test_a_run_that_ended_earlier_but_became_visible_later_is_observed_once(base_url):
    """Two runs end at 00:00:10 and 00:00:30, but the first one's end is committed after a tick saw the second
    (concurrent runs, schedulers in HA): a cursor at the latest end never asked for it again."""
    from sensors.airflow import LATE_S

    BULK_RUNS[:] = [("a", "2025-01-01T00:00:00+00:00"), ("c", "2025-01-01T00:00:30+00:00")]
    sensor = build_airflow_sensor(["bulk_marked"])
    airflow = AirflowResource(base_url=base_url, token="a-token", timeout_s=5)

    def tick(cursor):
        with build_sensor_context(cursor=cursor, resources={"airflow": airflow}) as context:
            result = sensor(context)
        if not isinstance(result, SensorResult):
            return [], cursor
        return [e.metadata["airflow/run_id"].value for e in result.asset_events], result.cursor

    first, cursor = tick(None)
    BULK_RUNS.append(("b", "2025-01-01T00:00:10+00:00"))  # visible only now
    second, cursor = tick(cursor)
    third, cursor = tick(cursor)
    assert (first, second, third) == (["a", "c"], ["b"], [])
    assert LATE_S >= 20
    # a cursor from before the look-back (the runs at its time) repeats nothing it did not record, then looks back
    legacy = json.dumps({"bulk_marked": {"after": "2025-01-01T00:00:30+00:00", "seen": ["c"]}})
    assert tick(legacy)[0] == []
    BULK_RUNS.append(("d", "2025-01-01T00:00:40+00:00"))
    upgraded, cursor = tick(legacy)
    assert upgraded == ["d"] and json.loads(cursor)["bulk_marked"]["seen"] == {
        "c": "2025-01-01T00:00:30+00:00", "d": "2025-01-01T00:00:40+00:00"}


def test_a_dag_airflow_refuses_does_not_stop_the_others_being_observed(base_url):
    """A configured DAG that was renamed or deleted (404) used to make every tick raise: no DAG was observed."""
    BULK_RUNS[:] = [("first", "2025-01-01T00:00:00+00:00")]
    airflow = AirflowResource(base_url=base_url, token="a-token", timeout_s=5)
    with build_sensor_context(resources={"airflow": airflow}) as context:
        result = build_airflow_sensor(["no_such_dag", "bulk_marked"])(context)
    assert isinstance(result, SensorResult)
    assert [e.metadata["airflow/run_id"].value for e in result.asset_events] == ["first"]
    assert set(json.loads(result.cursor)) == {"bulk_marked"}  # the refused DAG keeps its cursor (none) for later
    with build_sensor_context(resources={"airflow": airflow}) as context, \
            pytest.raises(RuntimeError, match="no configured Airflow DAG could be listed: no_such_dag: .*not found"):
        build_airflow_sensor(["no_such_dag"])(context)


def test_an_expired_token_is_renewed_once_and_a_given_token_is_not():
    """Airflow's JWTs expire (30 min by default in Airflow 3); a resource that logged in renews its token when
    Airflow answers 401 and sends the refused call again."""
    issued, seen = [], []

    class Expiring(BaseHTTPRequestHandler):
        def answer(self):
            if int(self.headers.get("content-length") or 0):
                self.rfile.read(int(self.headers["content-length"]))
            if self.path == "/auth/token":
                issued.append(f"token-{len(issued) + 1}")
                status, body = 201, {"access_token": issued[-1]}
            else:
                seen.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != f"Bearer {issued[-1] if issued else 'none'}" or len(seen) == 1:
                    status, body = 401, {"detail": "Token expired"}  # the first call: the token has just expired
                else:
                    status, body = 200, {"dag_id": "export", "dag_display_name": "export", "dag_run_id": "r1",
                                         "dag_versions": [], "run_after": "2024-01-02T00:00:00Z",
                                         "run_type": "manual", "state": "success", "start_date": None,
                                         "end_date": None, "conf": {}}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Expiring)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        logged_in = AirflowResource(base_url=url, username="svc", password="pw", timeout_s=5)
        assert logged_in.state("export", "r1")["state"] == "success"
        assert issued == ["token-1", "token-2"] and seen == ["Bearer token-1", "Bearer token-2"]
        seen.clear()
        given = AirflowResource(base_url=url, token="static", timeout_s=5)
        with pytest.raises(AirflowError) as refused:
            given.state("export", "r1")
        assert refused.value.status == 401 and seen == ["Bearer static"] and len(issued) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_a_wait_rides_out_an_api_server_that_fails_a_poll_and_triggers_once():
    """A long trigger_and_wait polls the run every few seconds: one poll answered 502 by the proxy (the API server
    restarting) or not answered in time ended the wait with an error while the DAG run went on, and Dagster's run
    retry then triggered the DAG a second time. A poll that gets no verdict is asked again until the deadline;
    a refusal that will not change (404) still ends the wait at once."""
    triggered, polls = [], []
    answers = ["running", (502, "text/html", BAD_GATEWAY), "hang", "success"]

    def dag_run(state, run_id="r1"):
        return {"dag_id": "export", "dag_display_name": "export", "dag_run_id": run_id, "dag_versions": [],
                "run_after": "2024-01-02T00:00:00Z", "run_type": "manual", "state": state,
                "start_date": "2024-01-02T00:00:01Z", "end_date": None, "conf": {"partition": "2024-01-01"}}

    class Flaky(BaseHTTPRequestHandler):
        def answer(self):
            sent = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, content_type = 200, "application/json"
            if self.command == "POST":
                triggered.append(self.path)
                body = json.dumps({**dag_run("queued"), "dag_run_id": json.loads(sent).get("dag_run_id") or "r1"})
            elif self.path.endswith("/dagRuns/gone"):
                status, body = 404, json.dumps({"detail": "The DagRun with run_id: `gone` was not found"})
            else:
                polls.append(self.path)
                answer = answers[min(len(polls), len(answers)) - 1]
                if answer == "hang":
                    time.sleep(1.0)  # accepted and not answered within the call's timeout
                    answer = "running"
                if isinstance(answer, tuple):
                    status, content_type, body = answer
                else:
                    body = json.dumps(dag_run(answer))
            data = body.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up on the hung answer
                pass

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    airflow = AirflowResource(base_url=f"http://127.0.0.1:{server.server_address[1]}", token="t", timeout_s=0.3)
    try:
        run = airflow.trigger_and_wait("export", conf={"partition": "2024-01-01"}, timeout_s=30, poll_s=0.05)
        assert run["state"] == "success" and run["run_id"] == "r1"
        assert len(triggered) == 1 and len(polls) == 4
        # an API server that keeps failing still ends the wait at its deadline, naming the last failure
        answers[:] = [(502, "text/html", BAD_GATEWAY)]
        polls.clear()
        started = time.monotonic()
        with pytest.raises(AirflowError, match="still unknown after 1 s.*HTTP 502"):
            airflow.trigger_and_wait("export", timeout_s=1, poll_s=0.05)
        assert time.monotonic() - started < 3 and len(polls) > 1
        with pytest.raises(AirflowError, match="HTTP 404"):  # a run Airflow does not know: at once
            airflow.trigger_and_wait("export", run_id="gone", timeout_s=30, poll_s=0.05)
    finally:
        server.shutdown()
        server.server_close()


def test_a_wait_rides_out_a_token_renewal_that_gets_no_answer():
    """The JWT expires during a long wait (a poll is answered 401) while the API server restarts: the renewal's
    POST /auth/token got no answer and raised httpx's error, not an AirflowError, which ended the wait (and a retry
    triggered the DAG again). It is a poll without a verdict like any other: the wait goes on."""
    issued, polls, auth_calls = [], [], []

    class Restarting(BaseHTTPRequestHandler):
        def answer(self):
            sent = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path == "/auth/token":
                auth_calls.append(1)
                if len(auth_calls) == 2:  # the renewal: the API server is restarting
                    self.close_connection = True
                    self.wfile.write(b"")
                    self.connection.close()
                    return
                issued.append(f"token-{len(issued) + 1}")
                status, body = 201, {"access_token": issued[-1]}
            elif self.command == "POST":
                status, body = 200, {"dag_id": "export", "dag_display_name": "export",
                                     "dag_run_id": json.loads(sent).get("dag_run_id") or "r1", "dag_versions": [],
                                     "run_after": "2024-01-02T00:00:00Z", "run_type": "manual", "state": "queued",
                                     "start_date": None, "end_date": None, "conf": {}}
            else:
                polls.append(self.headers.get("Authorization"))
                if len(polls) == 1:
                    status, body = 401, {"detail": "Token expired"}
                else:
                    status, body = 200, {"dag_id": "export", "dag_display_name": "export", "dag_run_id": "r1",
                                         "dag_versions": [], "run_after": "2024-01-02T00:00:00Z",
                                         "run_type": "manual", "state": "success", "start_date": None,
                                         "end_date": None, "conf": {}}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Restarting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    airflow = AirflowResource(base_url=f"http://127.0.0.1:{server.server_address[1]}", username="svc",
                              password="pw", timeout_s=2)
    try:
        run = airflow.trigger_and_wait("export", timeout_s=30, poll_s=0.05)
        assert run["state"] == "success" and len(auth_calls) == 3 and polls[-1] == "Bearer token-2"
    finally:
        server.shutdown()
        server.server_close()
