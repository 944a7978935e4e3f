"""Data API: authenticated, tenant-scoped, paginated reads of the lake's gold tables and, for auditors, of the
services' audit log; and the tenant's erasure requests (filed here, carried out by the lake's maintenance
job)."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from services.common.app import ServiceContext, create_service_app
from services.common.auth import Principal
from services.common.problems import Problem
from services.data_api.reader import DEFAULT_CACHE_BYTES, MAX_PAGE, Lake, LakeReader, ReadError

AUDIT_LOG = "governance.audit_log"  # resources/audit_trail.py writes it; no Dagster or lake code here


class ColumnOut(BaseModel):
    name: str
    type: str


class TableOut(BaseModel):
    table: str
    snapshot_id: int | None
    tenant_scoped: bool
    columns: list[ColumnOut]


class PageOut(BaseModel):
    table: str
    snapshot_id: int | None
    columns: list[str]
    rows: list[dict[str, Any]]
    next_page_token: str | None
    total_rows: int


class ErasureDesk(Protocol):
    """Where erasure requests go (the lake's ``governance.erasure_requests``; injected, so no Dagster here)."""

    def file(self, tenant: str, account_id: int, reason: str, requested_by: str) -> dict: ...
    def of_tenant(self, tenant: str) -> list[dict]: ...


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "7" or true is not an account id
    account_id: int = Field(ge=0, le=2**63 - 1, description="The tenant's account to erase.")
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S",
                        description="Why (kept with the request, e.g. the data subject's ticket).")


class ErasureOut(BaseModel):
    request_id: str
    tenant_id: str
    account_id: int
    reason: str
    requested_by: str
    requested_at: dt.datetime
    status: str  # pending, in_progress, completed or rejected
    detail: str | None = None
    completed_at: dt.datetime | None = None


def _lake_outage(exc: BaseException) -> bool:
    """Whether a lake call failed because the lake is unreachable or failing (its catalog's database, its object
    store, a data file gone from under a read), not because of the request or the code."""
    module = type(exc).__module__.split(".")[0]
    if isinstance(exc, PermissionError):  # access refused (a rotated key): not an outage that passes by itself
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, FileNotFoundError)):  # a data file gone from under a read
        return True
    if module == "requests":  # a REST catalog that cannot be reached
        import requests

        return isinstance(exc, (requests.ConnectionError, requests.Timeout))
    if isinstance(exc, OSError):
        # pyarrow's S3 filesystem raises plain OSErrors: an unreachable, throttling or failing store says "AWS
        # Error" (its access refusals too: those are not waited out). A file that cannot be decoded (corrupt
        # Parquet) is an OSError as well, and stays a 500: retrying would never help.
        text = str(exc)
        return "AWS Error" in text and "ACCESS_DENIED" not in text
    if module == "sqlalchemy":  # the SQL catalog's database: down, refusing, locked, or its pool exhausted
        from sqlalchemy.exc import InterfaceError, OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        return isinstance(exc, (OperationalError, InterfaceError, PoolTimeout))
    if module == "pyiceberg":  # a REST catalog's 5xx
        from pyiceberg.exceptions import ServerError, ServiceUnavailableError, TooManyRequestsError

        return isinstance(exc, (ServerError, ServiceUnavailableError, TooManyRequestsError))
    return False


def _erasure_out(row: dict) -> ErasureOut:
    return ErasureOut(**{k: row.get(k) for k in ErasureOut.model_fields})


def create_data_app(ctx: ServiceContext, lake: Lake, erasure: ErasureDesk | None = None,
                    page_cache_bytes: int = DEFAULT_CACHE_BYTES) -> FastAPI:
    """``page_cache_bytes``: how much of recent reads' rows to keep, so that the next pages of a read are
    slices of them instead of scans of the whole table (0: none, every page scans)."""
    app = create_service_app(ctx, "platformQ data API", "Reads of materialised gold tables, per tenant.")
    reader = app.state.data_reader = LakeReader(lake, page_cache_bytes)
    can_read = ctx.require("data:read")
    can_audit = ctx.require("audit:read")

    @contextlib.contextmanager
    def lake_call(writing: bool = False):
        """A lake that cannot be reached is a 503 clients retry, as the other services' dependencies, not a 500.
        ``writing``: the call commits to the lake, and a failure may come after its commit (the catalog's database
        failing over as it commits, the refresh that follows): a 503 says the change was not made, so it answers
        500 ``lake-write-outcome-unknown`` instead, telling the caller to look before sending it again."""
        try:
            yield
        except Exception as exc:
            if not _lake_outage(exc):
                raise
            ctx.logger.warning(f"the lake failed ({exc!r})", exc_info=exc, extra={"service": ctx.name})
            if writing:
                raise Problem(500, "Internal Server Error", f"the lake failed while the request was being recorded "
                              f"({type(exc).__name__}): it may have been recorded; list the requests before "
                              "sending it again", "lake-write-outcome-unknown") from None
            raise Problem(503, "Service Unavailable", f"the lake is unavailable ({type(exc).__name__}); try again "
                          "later", "lake-unavailable") from None

    @app.get("/v1/catalog", response_model=list[TableOut], tags=["data"])
    def catalog(principal: Principal = Depends(can_read)):
        with lake_call():
            return reader.catalog()

    def page(identifier: str, principal: Principal, columns, filter, snapshot_id, page_size, page_token,
             namespaces: tuple[str, ...] | None = None) -> PageOut:
        wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        if filter and any(len(f) > 300 for f in filter):
            raise Problem(422, "Unprocessable Content", "a filter is too long", "invalid-read")
        try:
            with lake_call():
                read = reader.read(identifier, principal.tenant, wanted, filter, snapshot_id, page_size, page_token,
                                   **({"namespaces": namespaces} if namespaces else {}))
        except ReadError as exc:
            raise Problem(exc.status, "Not Found" if exc.status == 404 else "Unprocessable Content", str(exc),
                          exc.kind) from None
        return PageOut(**read.__dict__)

    @app.get("/v1/tables/{namespace}/{table}/rows", response_model=PageOut, tags=["data"])
    def rows(namespace: Annotated[str, Path(pattern=r"^[a-z_]{1,32}$")],
             table: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,64}$")],
             columns: Annotated[str | None, Query(max_length=1000, description="comma-separated")] = None,
             filter: Annotated[list[str] | None, Query(max_length=20, description="column:op:value")] = None,
             snapshot_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
             page_size: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
             page_token: Annotated[str | None, Query(max_length=200)] = None,
             principal: Principal = Depends(can_read)):
        return page(f"{namespace}.{table}", principal, columns, filter, snapshot_id, page_size, page_token)

    @app.get("/v1/audit-log", response_model=PageOut, tags=["audit"])
    def audit_log(columns: Annotated[str | None, Query(max_length=1000, description="comma-separated")] = None,
                  filter: Annotated[list[str] | None, Query(max_length=20, description="column:op:value, e.g. "
                                                            "ts:ge:2026-11-01T00:00:00+00:00")] = None,
                  snapshot_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
                  page_size: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                  page_token: Annotated[str | None, Query(max_length=200)] = None,
                  principal: Principal = Depends(can_audit)):
        """The tenant's state-changing requests to every service, from the lake's ``governance.audit_log``
        (read in from the services' audit files by the ``governance_audit`` job), paginated like a table."""
        return page(AUDIT_LOG, principal, columns, filter, snapshot_id, page_size, page_token,
                    namespaces=(AUDIT_LOG.split(".")[0],))

    if erasure is not None:
        can_file = ctx.require("erasure:write")
        can_list = ctx.require("erasure:read")

        @app.post("/v1/erasure-requests", response_model=ErasureOut, status_code=202, tags=["erasure"])
        def file_erasure(body: ErasureIn, principal: Principal = Depends(can_file)):
            """File a request to erase one of the caller's tenant's accounts (checked and carried out by the
            nightly lake_maintenance job; an account of another tenant is rejected there)."""
            with lake_call():  # a lake that cannot be reached is found before anything is written: 503
                erasure.of_tenant(principal.tenant)
            with lake_call(writing=True):
                row = erasure.file(principal.tenant, body.account_id, body.reason.strip(), principal.subject)
            return _erasure_out({**row, "status": "pending"})

        @app.get("/v1/erasure-requests", response_model=list[ErasureOut], tags=["erasure"])
        def list_erasures(principal: Principal = Depends(can_list)):
            with lake_call():
                return [_erasure_out(r) for r in erasure.of_tenant(principal.tenant)]

        @app.get("/v1/erasure-requests/{request_id}", response_model=ErasureOut, tags=["erasure"])
        def get_erasure(request_id: Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")],
                        principal: Principal = Depends(can_list)):
            with lake_call():
                rows = erasure.of_tenant(principal.tenant)
            for row in rows:
                if row["request_id"] == request_id:
                    return _erasure_out(row)
            raise Problem(404, "Not Found", f"no erasure request {request_id}", "unknown-erasure-request")

    return app
