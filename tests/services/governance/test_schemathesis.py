"""Schemathesis against the governance API's own OpenAPI schema: no 500s, no schema violations."""

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error

from services.common.app import ServiceContext
from services.governance import ManualClock
from services.governance.api import create_governance_app

CTX = ServiceContext("schemathesis", rate=10_000.0, burst=10_000)
CLOCK = ManualClock(1_000)
APP = create_governance_app(CTX, CLOCK)
KEY = CTX.keys.create("fuzzer", "t1", ["admin"])
_setup = TestClient(APP)
assert _setup.post("/v1/daos", headers={"X-API-Key": KEY}, json={
    "holdings": {"alice": 600, "bob": 300, "carol": 100}, "treasury": {"USDC": 1_000, "native": 50},
    "voting_delay": 10, "voting_period": 100, "min_delay": 50, "grace_period": 200}).status_code == 201
CLOCK.advance(1)
assert _setup.post("/v1/dao/proposals", headers={"X-API-Key": KEY}, json={
    "proposer": "alice", "actions": [{"type": "transfer", "to": "bob", "amount": 5, "asset": "USDC"}],
    "description": "seed"}).status_code == 201
CLOCK.advance(11)  # the seed proposal is Active: votes can be cast and tallied

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    case.call_and_validate(headers={"X-API-Key": KEY}, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])
