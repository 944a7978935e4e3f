"""Data API: authenticated, tenant-scoped, paginated reads of the lake's gold tables."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query
from pydantic import BaseModel

from services.common.app import ServiceContext, create_service_app
from services.common.auth import Principal
from services.common.problems import Problem
from services.data_api.reader import MAX_PAGE, Lake, LakeReader, ReadError


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


def create_data_app(ctx: ServiceContext, lake: Lake) -> FastAPI:
    app = create_service_app(ctx, "platformQ data API", "Reads of materialised gold tables, per tenant.")
    reader = LakeReader(lake)
    can_read = ctx.require("data:read")

    @app.get("/v1/catalog", response_model=list[TableOut], tags=["data"])
    def catalog(principal: Principal = Depends(can_read)):
        return reader.catalog()

    @app.get("/v1/tables/{namespace}/{table}/rows", response_model=PageOut, tags=["data"])
    def rows(namespace: Annotated[str, Path(pattern=r"^[a-z_]{1,32}$")],
             table: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,64}$")],
             columns: Annotated[str | None, Query(max_length=1000, description="comma-separated")] = None,
             filter: Annotated[list[str] | None, Query(max_length=20, description="column:op:value")] = None,
             snapshot_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
             page_size: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
             page_token: Annotated[str | None, Query(max_length=200)] = None,
             principal: Principal = Depends(can_read)):
        wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        if filter and any(len(f) > 300 for f in filter):
            raise Problem(422, "Unprocessable Content", "a filter is too long", "invalid-read")
        try:
            page = reader.read(f"{namespace}.{table}", principal.tenant, wanted, filter, snapshot_id, page_size,
                               page_token)
        except ReadError as exc:
            raise Problem(exc.status, "Not Found" if exc.status == 404 else "Unprocessable Content", str(exc),
                          exc.kind) from None
        return PageOut(**page.__dict__)

    return app
