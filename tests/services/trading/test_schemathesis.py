"""Schemathesis against the trading API's own OpenAPI schema: no 500s, no schema violations."""

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
from services.trading.api import create_trading_app
from services.trading.exchange import Exchange

CTX = ServiceContext("schemathesis", rate=10_000.0, burst=10_000)
EXCHANGE = Exchange(["ACME"])
APP = create_trading_app(CTX, EXCHANGE, leaderboard=lambda tenant, date, limit: [])
KEY = CTX.keys.create("fuzzer", "t1", ["admin"])
EXCHANGE.open_account("t1", "t1/a1")
EXCHANGE.deposit("t1/a1", "USD", 10**9)
EXCHANGE.deposit("t1/a1", "ACME", 10**6)

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(headers={"X-API-Key": KEY}, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])
