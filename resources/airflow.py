"""Airflow as a Dagster resource, through apache-airflow-client (REST API v2, Airflow 3).

Teams keep existing DAGs: ``trigger_and_wait`` starts a DAG run (with a conf), polls it to a final
state and returns it; ``finished_runs`` lists runs that ended at or after a time, which the Airflow sensor
turns into observations of the DAG's external asset. Authentication: a JWT from ``/auth/token``
(username and password) or a token given directly.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Collection
from typing import Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr

FINAL_STATES = ("success", "failed")


class AirflowError(Exception):
    """A call Airflow refused or failed. ``status`` is the HTTP status; ``title`` and ``detail`` are those of
    Airflow's JSON error document (``detail`` is the body itself when that is not JSON)."""

    def __init__(self, message: str, status: int | None = None, title: str | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.status, self.title, self.detail = status, title, detail


def _problem(body: str | bytes | None) -> tuple[str | None, str | None]:
    """(title, detail) of an Airflow error body: the fields of its JSON document, else the text itself."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = (body or "").strip()
    if not text:
        return None, None
    try:
        doc = json.loads(text)
    except ValueError:
        return None, text
    if not isinstance(doc, dict) or ("detail" not in doc and "title" not in doc):
        return None, text
    title, detail = doc.get("title"), doc.get("detail")
    if detail is not None and not isinstance(detail, str):  # a validation error's detail is a list of errors
        detail = json.dumps(detail)
    return (str(title) if title is not None else None), detail


def _refused(what: str, status: int | None, reason: str | None, body: str | bytes | None) -> AirflowError:
    """``what`` failed: HTTP status and reason, then Airflow's title and detail (its text, shortened)."""
    title, detail = _problem(body)
    message = f"{what}: HTTP {status}" + (f" {reason}" if reason else "")
    if title and title != reason:
        message += f": {title}"
    if detail:
        message += f": {detail if len(detail) <= 2000 else detail[:2000] + '...'}"
    return AirflowError(message, status=status, title=title, detail=detail)


@contextlib.contextmanager
def _answered(what: str):
    """Turn the REST client's error for an error status into an AirflowError that keeps Airflow's reason."""
    import urllib3
    from airflow_client.client.exceptions import ApiException

    try:
        yield
    except ApiException as exc:
        raise _refused(what, exc.status, exc.reason, exc.body) from None
    except urllib3.exceptions.HTTPError as exc:  # no answer: a timeout, a refused or dropped connection
        raise AirflowError(f"{what}: no answer from Airflow ({exc})") from None


def _transient(exc: AirflowError) -> bool:
    """No verdict on the call: no answer, the API server (or a proxy before it) failing, or too many requests."""
    return exc.status is None or exc.status >= 500 or exc.status == 429


def _retries():
    """A connection that could not be made is retried (nothing was sent); a call sent and not answered within
    ``timeout_s`` is not: urllib3's default retried such a read three times, so one call to a hung API server took
    four times ``timeout_s`` (two minutes with the default, past a sensor tick's time limit)."""
    import urllib3

    return urllib3.util.Retry(total=None, connect=2, read=0, other=0, status=0, redirect=5, backoff_factor=0.2)


class AirflowResource(ConfigurableResource):
    base_url: str  # http(s)://airflow-api-server:8080
    username: str | None = None
    password: str | None = None
    token: str | None = None
    timeout_s: float = 30.0  # per HTTP call (the token and every REST call): a hung API server fails the call

    _token: Any = PrivateAttr(default=None)

    def _access_token(self) -> str | None:
        if self.token:
            return self.token
        if self._token is None and self.username:
            import httpx

            try:
                response = httpx.post(f"{self.base_url.rstrip('/')}/auth/token", timeout=self.timeout_s,
                                      json={"username": self.username, "password": self.password or ""})
            except httpx.HTTPError as exc:  # no answer: like any call without a verdict (a wait asks again)
                raise AirflowError(f"Airflow did not answer the login of {self.username!r}: no answer from "
                                   f"Airflow ({type(exc).__name__}: {exc})") from None
            if response.status_code >= 300:
                raise _refused(f"Airflow refused the credentials of {self.username!r}", response.status_code,
                               response.reason_phrase, response.text)
            try:
                self._token = response.json()["access_token"]
            except (ValueError, KeyError, TypeError):
                raise _refused(f"Airflow's login answer for {self.username!r} holds no access_token",
                               response.status_code, response.reason_phrase, response.text) from None
        return self._token

    def _client(self):
        import airflow_client.client as airflow

        config = airflow.Configuration(host=self.base_url.rstrip("/"), access_token=self._access_token(),
                                       retries=_retries())
        return airflow.ApiClient(config)

    def _call(self, what: str, call):
        """``call(client)`` with Airflow's refusals as AirflowError. A JWT this resource obtained is renewed once
        when Airflow answers 401 (it expired: a long ``trigger_and_wait``, a sensor's resource kept across
        ticks); a refused call did nothing, so it is sent again. A token given directly is not renewed."""
        for attempt in (1, 2):
            try:
                with self._client() as client, _answered(what):
                    return call(client)
            except AirflowError as exc:
                if exc.status != 401 or self.token or not self.username or attempt == 2:
                    raise
                self._token = None

    def unpause(self, dag_id: str) -> None:
        import airflow_client.client as airflow
        from airflow_client.client.api.dag_api import DAGApi

        self._call(f"Airflow refused to unpause {dag_id}", lambda client: DAGApi(client).patch_dag(
            dag_id, airflow.DAGPatchBody(is_paused=False), _request_timeout=self.timeout_s))

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        import airflow_client.client as airflow
        from airflow_client.client.api.dag_run_api import DagRunApi

        body = airflow.TriggerDAGRunPostBody(conf=conf or {}, dag_run_id=run_id, logical_date=None)
        return self._call(f"Airflow refused to trigger {dag_id}", lambda client: DagRunApi(client).trigger_dag_run(
            dag_id, body, _request_timeout=self.timeout_s).dag_run_id)

    def state(self, dag_id: str, run_id: str) -> dict:
        from airflow_client.client.api.dag_run_api import DagRunApi

        return _run_dict(self._call(f"Airflow did not give run {run_id} of {dag_id}", lambda client: DagRunApi(
            client).get_dag_run(dag_id, run_id, _request_timeout=self.timeout_s)))

    def trigger_and_wait(self, dag_id: str, conf: dict | None = None, run_id: str | None = None,
                         timeout_s: float = 600.0, poll_s: float = 2.0) -> dict:
        """Trigger a run and return its final state; raise AirflowError when it does not finish in time.

        A poll that gets no verdict (no answer in time, a 5xx from the API server or its proxy, 429) is asked again
        until the deadline: ending the wait there left the DAG run going, and a retry of the step or the run
        triggered the DAG a second time. A refusal that will not change (401, 403, 404) ends the wait at once."""
        run_id = self.trigger(dag_id, conf, run_id)
        deadline = time.monotonic() + timeout_s
        state = "unknown"
        while True:
            try:
                run = self.state(dag_id, run_id)
            except AirflowError as exc:
                if not _transient(exc):
                    raise
                if time.monotonic() > deadline:
                    raise AirflowError(f"{dag_id} run {run_id} still {state} after {timeout_s:.0f} s "
                                       f"(last poll: {exc})", status=exc.status, title=exc.title,
                                       detail=exc.detail) from None
                state = "unknown"
                time.sleep(poll_s)
                continue
            if run["state"] in FINAL_STATES:
                return run
            state = run["state"]
            if time.monotonic() > deadline:
                raise AirflowError(f"{dag_id} run {run_id} still {state} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def finished_runs(self, dag_id: str, ended_since: str | None = None, skip: Collection[str] = (),
                      limit: int = 100) -> list[dict]:
        """Runs of ``dag_id`` that reached a final state at or after ``ended_since`` (ISO time), oldest first,
        less the run ids in ``skip`` (those already observed that ended at ``ended_since``): the first page
        (Airflow caps its size) that holds another run, read past pages that hold only skipped runs (runs
        marked failed in one bulk action share their end time)."""
        import datetime as dt

        from airflow_client.client.api.dag_run_api import DagRunApi

        kwargs = {"state": list(FINAL_STATES), "order_by": ["end_date"], "limit": limit}
        if ended_since:
            kwargs["end_date_gte"] = dt.datetime.fromisoformat(ended_since)

        def pages(client):
            offset = 0
            while True:
                page = DagRunApi(client).get_dag_runs(dag_id, offset=offset, _request_timeout=self.timeout_s,
                                                      **kwargs).dag_runs
                runs = [_run_dict(r) for r in page if r.dag_run_id not in skip]
                if runs or not page:
                    return runs
                offset += len(page)

        return self._call(f"Airflow did not list the runs of {dag_id}", pages)


def _run_dict(run) -> dict:
    state = getattr(run.state, "value", run.state)
    return {"dag_id": run.dag_id, "run_id": run.dag_run_id, "state": str(state),
            "start_date": run.start_date.isoformat() if run.start_date else None,
            "end_date": run.end_date.isoformat() if run.end_date else None,
            "conf": run.conf or {}}


def airflow_resource(settings, env_refs: bool = False) -> AirflowResource | None:
    from resources import setting

    if not settings.airflow_url:
        return None
    return AirflowResource(base_url=settings.airflow_url, username=settings.airflow_username,
                           password=setting(settings, "airflow_password", env_refs),
                           token=setting(settings, "airflow_token", env_refs))
