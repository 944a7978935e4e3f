"""Schemathesis against the derivatives API's own OpenAPI schema: no 500s, no schema violations."""

import datetime as dt

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error

from services.common.app import ServiceContext
from services.derivatives.api import FuturesMarkets, create_derivatives_app
from services.derivatives.futures import gpu_hour_future

CTX = ServiceContext("schemathesis", rate=10_000.0, burst=10_000)
MARKETS = FuturesMarkets()  # the markets the app starts with: one contract, two funded accounts
HOUSE = MARKETS.list_contract(gpu_hour_future("GPUH30", dt.date(2030, 12, 31)), "t1")
HOUSE.open_account("t1/a1", 10**9)
HOUSE.open_account("t1/a2", 10**9)
APP = create_derivatives_app(CTX, MARKETS)
KEY = CTX.keys.create("fuzzer", "t1", ["admin"])

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(headers={"X-API-Key": KEY}, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])
