"""A proposal may set delays and periods only within the bounds a new DAO gets (ten years): 10**30 would lock it."""

import pytest
from fastapi.testclient import TestClient

from services.governance import ManualClock
from services.governance import errors as E
from services.governance.actions import set_parameter
from services.governance.api import create_governance_app
from services.governance.timelock import MAX_TIME
from tests.services.governance.helpers import START, make_dao
from tests.services.governance.test_api import create_dao, h, propose
from tests.services.problems import is_problem

SETTINGS = [("governor", "voting_delay"), ("governor", "voting_period"),
            ("timelock", "min_delay"), ("timelock", "grace_period")]


@pytest.fixture
def setup(ctx):
    keys = {"t1_trader": ctx.keys.create("alice-ops", "t1", ["trader"]),
            "t1_admin": ctx.keys.create("ops", "t1", ["admin"]),  # proposes as alice (governance:proxy)
            "t1_viewer": ctx.keys.create("victor", "t1", ["viewer"])}
    return TestClient(create_governance_app(ctx, ManualClock(START)), raise_server_exceptions=False), keys


@pytest.mark.parametrize("target, name", SETTINGS)
def test_a_proposal_cannot_set_a_time_beyond_the_bound(setup, target, name):
    client, keys = setup
    before = create_dao(client, keys)["settings"]
    for value in (10**30, MAX_TIME + 1):
        action = {"type": "set_parameter", "name": name, "value": value, "target": target}
        r = client.post("/v1/dao/proposals", headers=h(keys, "t1_admin"),
                        json={"proposer": "alice", "actions": [action], "description": f"{name}={value}"})
        problem = is_problem(r, 422)
        assert problem["error"] == "InvalidAction" and f"invalid value {value!r} for parameter {name!r}" in \
            problem["detail"]
    propose(client, keys, [{"type": "set_parameter", "name": name, "value": MAX_TIME, "target": target}],
            description=f"{name} at the bound")
    assert client.get("/v1/dao", headers=h(keys, "t1_viewer")).json()["settings"] == before


@pytest.mark.parametrize("target, name", SETTINGS)
def test_the_core_validators_share_the_bound(target, name):
    dao = make_dao()
    validator = dao.governor if target == "governor" else dao.timelock
    validator.validate_action(set_parameter(name, MAX_TIME, target))
    with pytest.raises(E.InvalidAction, match="invalid value"):
        validator.validate_action(set_parameter(name, MAX_TIME + 1, target))
