"""Governance API over HTTP (ASGI in process) on a ManualClock: lifecycle, problems, auth, tenancy."""

import json
import typing

import pytest
from fastapi.testclient import TestClient

from services.governance import ManualClock, ProposalState
from services.governance import errors as governance_errors
from services.governance.api import ERROR_STATUS, StateName, create_governance_app, error_status
from tests.services.problems import is_problem

START = 1_000
VOTING_DELAY = 10
VOTING_PERIOD = 100
MIN_DELAY = 50
GRACE = 200
DAO_BODY = {
    "holdings": {"alice": 600, "bob": 300, "carol": 100},
    "treasury": {"USDC": 1_000, "native": 50},
    "parameters": {"ml/champion": "v6", "risk.max_leverage": 3},
    "voting_delay": VOTING_DELAY, "voting_period": VOTING_PERIOD, "min_delay": MIN_DELAY, "grace_period": GRACE,
}
PAY_BOB = [{"type": "transfer", "to": "bob", "amount": 250, "asset": "USDC"},
           {"type": "set_parameter", "name": "ml/champion", "value": "v7"}]


@pytest.fixture
def setup(ctx):
    clock = ManualClock(START)
    app = create_governance_app(ctx, clock)
    keys = {
        # acts for every account of its tenant's DAO (governance:proxy, through "*")
        "t1_admin": ctx.keys.create("ops", "t1", ["admin"]),
        # a trader acts only as the account named like its subject: alice-ops is none of the DAO's
        "t1_trader": ctx.keys.create("alice-ops", "t1", ["trader"]),
        "t1_alice": ctx.keys.create("alice", "t1", ["trader"]),
        "t1_bob": ctx.keys.create("bob", "t1", ["trader"]),
        "t1_viewer": ctx.keys.create("victor", "t1", ["viewer"]),
        "t1_engineer": ctx.keys.create("erin", "t1", ["engineer"]),
        "t1_auditor": ctx.keys.create("audrey", "t1", ["auditor"]),
        "t2_trader": ctx.keys.create("bob-ops", "t2", ["trader"]),
        "t2_admin": ctx.keys.create("ops", "t2", ["admin"]),
    }
    client = TestClient(app, raise_server_exceptions=False)
    return client, keys, clock


def h(keys, who):
    return {"X-API-Key": keys[who]}


def create_dao(client, keys, who="t1_admin", **overrides):
    r = client.post("/v1/daos", json={**DAO_BODY, **overrides}, headers=h(keys, who))
    assert r.status_code == 201, r.text
    return r.json()


def propose(client, keys, actions=PAY_BOB, description="Pay bob, promote v7", proposer="alice", who="t1_admin"):
    r = client.post("/v1/dao/proposals", json={"proposer": proposer, "actions": actions, "description": description},
                    headers=h(keys, who))
    assert r.status_code == 201, r.text
    return r.json()


def test_full_lifecycle_over_http(setup):
    client, keys, clock = setup
    w, r = h(keys, "t1_admin"), h(keys, "t1_viewer")
    dao = create_dao(client, keys, self_delegate=False)
    assert dao["tenant"] == "t1" and dao["total_supply"] == 1_000 and dao["treasury"] == {"USDC": 1_000, "native": 50}
    assert dao["settings"]["voting_period"] == VOTING_PERIOD and dao["parameters"]["ml/champion"] == "v6"
    assert all(holder["votes"] == 0 and holder["delegate"] is None for holder in dao["holders"])

    # tokens do not vote until delegated: alice and bob self-delegate, carol delegates to alice
    for delegator, delegatee in (("alice", "alice"), ("bob", "bob"), ("carol", "alice")):
        d = client.post("/v1/dao/delegations", json={"delegator": delegator, "delegatee": delegatee}, headers=w)
        assert d.status_code == 200, d.text
    assert d.json() == {"delegator": "carol", "delegatee": "alice", "balance": 100, "delegatee_votes": 700}
    clock.advance(1)  # the delegations are now in the past

    p = propose(client, keys)
    pid = p["id"]
    assert p["state"] == "Pending" and p["proposer"] == "alice" and p["actions"][0]["amount"] == 250
    assert p["snapshot"] == START + 1 + VOTING_DELAY and p["deadline"] == p["snapshot"] + VOTING_PERIOD
    assert p["eta"] is None and p["actions"][1] == {"type": "set_parameter", "name": "ml/champion", "value": "v7",
                                                    "target": "parameters"}
    listed = client.get("/v1/dao/proposals", headers=r).json()
    assert [(x["id"], x["state"]) for x in listed] == [(pid, "Pending")]
    is_problem(client.post(f"/v1/dao/proposals/{pid}/votes", json={"voter": "alice", "support": "for"},
                           headers=w), 409)  # not Active yet

    clock.set(p["snapshot"] + 1)  # past the voting delay
    assert client.get(f"/v1/dao/proposals/{pid}", headers=r).json()["state"] == "Active"
    ballot = client.post(f"/v1/dao/proposals/{pid}/votes", json={"voter": "alice", "support": "for"}, headers=w)
    assert ballot.status_code == 201 and ballot.json()["weight"] == 700
    against = client.post(f"/v1/dao/proposals/{pid}/votes",
                          json={"voter": "bob", "support": "against", "reason": "too much"}, headers=w).json()
    assert against["weight"] == 300 and against["reason"] == "too much"
    # carol delegated away: her ballot weighs nothing, but it is a ballot
    assert client.post(f"/v1/dao/proposals/{pid}/votes", json={"voter": "carol", "support": "abstain"},
                       headers=w).json()["weight"] == 0
    double = is_problem(client.post(f"/v1/dao/proposals/{pid}/votes", json={"voter": "alice", "support": "against"},
                                    headers=w), 409)
    assert "already voted" in double["detail"] and double["error"] == "GovernorAlreadyCastVote"
    assert double["type"].endswith("/governor-already-cast-vote")
    tally = client.get(f"/v1/dao/proposals/{pid}/tally", headers=r).json()
    assert (tally["for_votes"], tally["against_votes"], tally["abstain_votes"], tally["voters"]) == (700, 300, 0, 3)
    assert tally["quorum"] == 1_000 * 4 // 100 and tally["quorum_reached"] and tally["vote_succeeded"]
    is_problem(client.post(f"/v1/dao/proposals/{pid}/queue", headers=w), 409)  # still Active

    clock.set(p["deadline"] + 1)  # past the voting period
    assert client.get(f"/v1/dao/proposals/{pid}", headers=r).json()["state"] == "Succeeded"
    queued = client.post(f"/v1/dao/proposals/{pid}/queue", headers=w)
    assert queued.status_code == 200, queued.text
    queued = queued.json()
    assert queued["state"] == "Queued" and queued["eta"] == clock.now() + MIN_DELAY
    assert queued["expires_at"] == queued["eta"] + GRACE
    early = is_problem(client.post(f"/v1/dao/proposals/{pid}/execute", headers=w), 409)  # before the eta
    assert early["error"] == "TimelockUnexpectedOperationState" and f"eta is {queued['eta']}" in early["detail"]
    assert client.get("/v1/dao", headers=r).json()["treasury"]["USDC"] == 1_000

    clock.set(queued["eta"])  # past the timelock delay
    done = client.post(f"/v1/dao/proposals/{pid}/execute", headers=w)
    assert done.status_code == 200 and done.json()["state"] == "Executed"
    state = client.get("/v1/dao", headers=r).json()
    assert state["treasury"] == {"USDC": 750, "native": 50} and state["parameters"]["ml/champion"] == "v7"
    assert state["now"] == queued["eta"] and state["proposals"] == 1
    again = is_problem(client.post(f"/v1/dao/proposals/{pid}/execute", headers=w), 409)
    assert "Executed" in again["detail"]
    assert client.get("/v1/dao/proposals", params={"state": "Executed"}, headers=r).json()[0]["id"] == pid


def test_governance_changes_its_own_settings(setup):
    client, keys, clock = setup
    w = h(keys, "t1_admin")
    create_dao(client, keys)
    clock.advance(1)
    p = propose(client, keys, [{"type": "set_parameter", "name": "voting_period", "value": 500, "target": "governor"},
                               {"type": "set_parameter", "name": "min_delay", "value": 5, "target": "timelock"},
                               {"type": "transfer", "to": "dave", "amount": 20}], "Slower votes, faster timelock")
    clock.set(p["snapshot"] + 1)
    client.post(f"/v1/dao/proposals/{p['id']}/votes", json={"voter": "alice", "support": "for"}, headers=w)
    clock.set(p["deadline"] + 1)
    eta = client.post(f"/v1/dao/proposals/{p['id']}/queue", headers=w).json()["eta"]
    clock.set(eta)
    assert client.post(f"/v1/dao/proposals/{p['id']}/execute", headers=w).json()["state"] == "Executed"
    dao = client.get("/v1/dao", headers=w).json()
    assert dao["settings"]["voting_period"] == 500 and dao["settings"]["min_delay"] == 5
    assert dao["treasury"]["native"] == 30  # a transfer without an asset pays the native asset


def test_cancel_defeat_expiry_and_failed_execution(setup):
    client, keys, clock = setup
    w = h(keys, "t1_admin")
    create_dao(client, keys)
    clock.advance(1)
    p = propose(client, keys, description="to be withdrawn")
    not_proposer = is_problem(client.post(f"/v1/dao/proposals/{p['id']}/cancel", json={"caller": "bob"},
                                          headers=w), 422)
    assert not_proposer["error"] == "GovernorOnlyProposer"
    cancelled = client.post(f"/v1/dao/proposals/{p['id']}/cancel", json={"caller": "alice"}, headers=w)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "Canceled"
    is_problem(client.post(f"/v1/dao/proposals/{p['id']}/cancel", json={"caller": "alice"}, headers=w), 409)
    dup = is_problem(client.post("/v1/dao/proposals", json={"proposer": "alice", "actions": PAY_BOB,
                                                              "description": "to be withdrawn"}, headers=w), 409)
    assert dup["error"] == "GovernorUnexpectedProposalState"  # same actions + description = same id

    ignored = propose(client, keys, description="nobody votes")
    too_big = propose(client, keys, [{"type": "transfer", "to": "bob", "amount": 5_000, "asset": "USDC"}], "too big")
    clock.set(too_big["snapshot"] + 1)
    client.post(f"/v1/dao/proposals/{too_big['id']}/votes", json={"voter": "alice", "support": "for"}, headers=w)
    clock.set(too_big["deadline"] + 1)
    assert client.get(f"/v1/dao/proposals/{ignored['id']}", headers=w).json()["state"] == "Defeated"
    is_problem(client.post(f"/v1/dao/proposals/{ignored['id']}/queue", headers=w), 409)
    eta = client.post(f"/v1/dao/proposals/{too_big['id']}/queue", headers=w).json()["eta"]
    clock.set(eta)
    short = is_problem(client.post(f"/v1/dao/proposals/{too_big['id']}/execute", headers=w), 409)
    assert short["error"] == "TreasuryInsufficientBalance" and "nothing was transferred" in short["detail"]
    after = client.get(f"/v1/dao/proposals/{too_big['id']}", headers=w).json()
    assert after["state"] == "Queued" and client.get("/v1/dao", headers=w).json()["treasury"]["USDC"] == 1_000
    clock.set(eta + GRACE)
    assert client.get(f"/v1/dao/proposals/{too_big['id']}", headers=w).json()["state"] == "Expired"
    is_problem(client.post(f"/v1/dao/proposals/{too_big['id']}/execute", headers=w), 409)
    states = [x["state"] for x in client.get("/v1/dao/proposals", headers=w).json()]
    assert states == ["Canceled", "Defeated", "Expired"]
    assert len(client.get("/v1/dao/proposals", params={"limit": 1}, headers=w).json()) == 1


def test_proposal_threshold_is_a_conflict(setup):
    client, keys, clock = setup
    create_dao(client, keys, proposal_threshold=200)
    clock.advance(1)
    r = is_problem(client.post("/v1/dao/proposals", json={"proposer": "carol", "actions": PAY_BOB,
                                                           "description": "carol has 100 votes"},
                               headers=h(keys, "t1_admin")), 409)
    assert r["error"] == "GovernorInsufficientProposerVotes" and "threshold is 200" in r["detail"]
    assert propose(client, keys, proposer="bob")["state"] == "Pending"


def test_every_governance_error_has_a_status():
    classes = [getattr(governance_errors, n) for n in governance_errors.__all__ if n != "GovernanceError"]
    assert set(ERROR_STATUS) == set(classes), "map each new GovernanceError to 404, 409 or 422"
    assert set(ERROR_STATUS.values()) <= {404, 409, 422}
    assert ERROR_STATUS[governance_errors.GovernorNonexistentProposal] == 404
    assert error_status(governance_errors.GovernorAlreadyCastVote("a", "p")) == 409
    assert error_status(governance_errors.InvalidAction("bad")) == 422
    assert set(typing.get_args(StateName)) == {s.name for s in ProposalState}


def test_unknown_proposal_and_missing_or_duplicate_dao(setup):
    client, keys, _ = setup
    w = h(keys, "t1_admin")
    is_problem(client.get("/v1/dao", headers=w), 404)
    is_problem(client.get("/v1/dao/proposals", headers=w), 404)
    create_dao(client, keys)
    is_problem(client.post("/v1/daos", json=DAO_BODY, headers=w), 409)
    missing = is_problem(client.get("/v1/dao/proposals/0x" + "ab" * 32, headers=w), 404)
    assert "no proposal" in missing["detail"]
    for suffix in ("/votes", "/queue", "/execute", "/cancel", "/tally"):
        method = "GET" if suffix == "/tally" else "POST"
        body = {"voter": "alice", "support": "for"} if suffix == "/votes" else {"caller": "alice"}
        r = client.request(method, "/v1/dao/proposals/0x" + "cd" * 32 + suffix, headers=w,
                           json=body if suffix in ("/votes", "/cancel") else None)
        is_problem(r, 404)


def test_authentication_and_roles(setup):
    client, keys, _ = setup
    is_problem(client.post("/v1/daos", json=DAO_BODY), 401)
    is_problem(client.get("/v1/dao", headers={"X-API-Key": "pq_wrong"}), 401)
    is_problem(client.get("/v1/dao", headers={"Authorization": "Bearer not.a.jwt"}), 401)
    for who in ("t1_viewer", "t1_engineer", "t1_auditor"):
        forbidden = is_problem(client.post("/v1/daos", json=DAO_BODY, headers=h(keys, who)), 403)
        assert "governance:write" in forbidden["detail"]
    # minting every holder's tokens is acting for every account: a trader's key cannot create the DAO
    forbidden = is_problem(client.post("/v1/daos", json=DAO_BODY, headers=h(keys, "t1_alice")), 403)
    assert "governance:proxy" in forbidden["detail"] and forbidden["may_act_as"] == "alice"
    create_dao(client, keys)
    for who in ("t1_viewer", "t1_engineer", "t1_auditor"):  # they all hold governance:read
        assert client.get("/v1/dao", headers=h(keys, who)).status_code == 200
        is_problem(client.post("/v1/dao/delegations", json={"delegator": "bob", "delegatee": "alice"},
                               headers=h(keys, who)), 403)
    token = client.post("/auth/token", json={"api_key": keys["t1_bob"]}).json()["access_token"]  # bob's own votes
    ok = client.post("/v1/dao/delegations", json={"delegator": "bob", "delegatee": "alice"},
                     headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json()["delegatee_votes"] == 900


def test_a_trader_acts_only_as_its_own_account(setup):
    """A governance:write key acts for the account named like its subject: it delegates, proposes, votes and cancels
    as itself; naming any other account is a 403 that names the account it may act as, and changes nothing."""
    client, keys, clock = setup
    alice, bob = h(keys, "t1_alice"), h(keys, "t1_bob")
    create_dao(client, keys, self_delegate=False)
    daos = client.app.state.daos

    def refused(r, account, field, other):
        p = is_problem(r, 403)
        assert p["type"].endswith("/not-your-account") and p["may_act_as"] == account
        assert repr(account) in p["detail"] and f"{field} {other!r}" in p["detail"]
        assert "governance:proxy" in p["detail"]
        return p

    # delegations: her own, yes; bob's or carol's, no (to herself or to anyone)
    refused(client.post("/v1/dao/delegations", json={"delegator": "bob", "delegatee": "alice"}, headers=alice),
            "alice", "delegator", "bob")
    refused(client.post("/v1/dao/delegations", json={"delegator": "carol", "delegatee": "carol"}, headers=alice),
            "alice", "delegator", "carol")
    assert daos["t1"].token.delegates("bob") is None and daos["t1"].token.delegates("carol") is None
    d = client.post("/v1/dao/delegations", json={"delegator": "alice", "delegatee": "alice"}, headers=alice)
    assert d.status_code == 200 and d.json()["delegatee_votes"] == 600
    assert client.post("/v1/dao/delegations", json={"delegator": "bob", "delegatee": "bob"},
                       headers=bob).status_code == 200
    clock.advance(1)

    # proposals: as herself, yes; as bob, no
    refused(client.post("/v1/dao/proposals", json={"proposer": "bob", "actions": PAY_BOB, "description": "as bob"},
                        headers=alice), "alice", "proposer", "bob")
    assert client.get("/v1/dao", headers=alice).json()["proposals"] == 0
    mine = propose(client, keys, description="alice's own", who="t1_alice")
    assert mine["proposer"] == "alice"
    withdrawn = propose(client, keys, description="to withdraw", who="t1_alice")

    # cancel: bob may not cancel as alice (nor she as bob); she cancels her own
    refused(client.post(f"/v1/dao/proposals/{withdrawn['id']}/cancel", json={"caller": "alice"}, headers=bob),
            "bob", "caller", "alice")
    assert client.get(f"/v1/dao/proposals/{withdrawn['id']}", headers=bob).json()["state"] == "Pending"
    cancelled = client.post(f"/v1/dao/proposals/{withdrawn['id']}/cancel", json={"caller": "alice"}, headers=alice)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "Canceled"

    # votes: each as itself; alice may not cast bob's ballot
    clock.set(mine["snapshot"] + 1)
    refused(client.post(f"/v1/dao/proposals/{mine['id']}/votes", json={"voter": "bob", "support": "for"},
                        headers=alice), "alice", "voter", "bob")
    assert client.get(f"/v1/dao/proposals/{mine['id']}/tally", headers=alice).json()["voters"] == 0
    ballot = client.post(f"/v1/dao/proposals/{mine['id']}/votes", json={"voter": "alice", "support": "for"},
                         headers=alice)
    assert ballot.status_code == 201 and ballot.json()["weight"] == 600
    against = client.post(f"/v1/dao/proposals/{mine['id']}/votes", json={"voter": "bob", "support": "against"},
                          headers=bob)
    assert against.status_code == 201 and against.json()["weight"] == 300
    # a token minted from a trader's key is that trader, too
    token = client.post("/auth/token", json={"api_key": keys["t1_bob"]}).json()["access_token"]
    refused(client.post("/v1/dao/delegations", json={"delegator": "carol", "delegatee": "bob"},
                        headers={"Authorization": f"Bearer {token}"}), "bob", "delegator", "carol")

    # queueing and executing act for no account: any governance:write caller may
    clock.set(mine["deadline"] + 1)
    eta = client.post(f"/v1/dao/proposals/{mine['id']}/queue", headers=bob).json()["eta"]
    clock.set(eta)
    assert client.post(f"/v1/dao/proposals/{mine['id']}/execute", headers=bob).json()["state"] == "Executed"


def test_a_trader_holding_no_tokens_cannot_drain_the_treasury(setup, ctx):
    """The review's attack: a trader key with no tokens moves every holder's votes to itself, proposes paying the
    whole treasury to itself, votes, queues and executes. Each step that acts for another account is refused."""
    client, keys, clock = setup
    mallory, me = {"X-API-Key": ctx.keys.create("mallory", "t1", ["trader"])}, "mallory"
    create_dao(client, keys)
    for holder in ("alice", "bob", "carol"):
        is_problem(client.post("/v1/dao/delegations", json={"delegator": holder, "delegatee": me}, headers=mallory),
                   403)
    clock.advance(1)
    p = client.post("/v1/dao/proposals", headers=mallory, json={
        "proposer": me, "description": "pay me", "actions": [{"type": "transfer", "to": me, "amount": 1_000,
                                                               "asset": "USDC"}]}).json()
    clock.set(p["snapshot"] + 1)
    own = client.post(f"/v1/dao/proposals/{p['id']}/votes", json={"voter": me, "support": "for"}, headers=mallory)
    assert own.status_code == 201 and own.json()["weight"] == 0  # her own ballot: she holds nothing
    for voter in ("alice", "bob"):
        is_problem(client.post(f"/v1/dao/proposals/{p['id']}/votes", json={"voter": voter, "support": "for"},
                               headers=mallory), 403)
    clock.set(p["deadline"] + 1)
    assert client.get(f"/v1/dao/proposals/{p['id']}", headers=mallory).json()["state"] == "Defeated"
    is_problem(client.post(f"/v1/dao/proposals/{p['id']}/queue", headers=mallory), 409)
    assert client.get("/v1/dao", headers=mallory).json()["treasury"] == {"USDC": 1_000, "native": 50}


def test_bad_input_is_422_never_500(setup):
    client, keys, clock = setup
    w = h(keys, "t1_admin")
    for body in ({**DAO_BODY, "holdings": {}}, {**DAO_BODY, "holdings": {"bad name!": 5}},
                 {**DAO_BODY, "holdings": {"alice": 10**30 + 1}}, {**DAO_BODY, "voting_period": 0},
                 {**DAO_BODY, "quorum_numerator": 101}, {**DAO_BODY, "extra": 1},
                 {**DAO_BODY, "parameters": {"x": 10**31}}):
        r = is_problem(client.post("/v1/daos", json=body, headers=w), 422)
    assert r["errors"]
    assert client.get("/v1/dao", headers=w).status_code == 404  # none of them created anything
    create_dao(client, keys)
    clock.advance(1)
    ok_actions = [{"type": "transfer", "to": "bob", "amount": 1}]
    bad_proposals = [
        {"proposer": "alice", "actions": [], "description": "no actions"},
        {"proposer": "alice", "actions": ok_actions * 51, "description": "too many"},
        {"proposer": "alice", "actions": [{"type": "transfer", "to": "bob", "amount": 0}], "description": "zero"},
        {"proposer": "alice", "actions": [{"type": "transfer", "to": "bob", "amount": 10**30 + 1}], "description": "x"},
        {"proposer": "alice", "actions": [{"type": "mint", "to": "bob", "amount": 1}], "description": "unknown type"},
        {"proposer": "alice", "actions": ok_actions, "description": "x" * 10_001},
        {"proposer": "alice", "actions": ok_actions, "description": ""},
        {"proposer": "", "actions": ok_actions, "description": "empty proposer"},
        {"proposer": "alice", "actions": [{"type": "set_parameter", "name": "quorum", "value": 1,
                                           "target": "governor"}], "description": "unknown governor setting"},
        {"proposer": "alice", "actions": [{"type": "set_parameter", "name": "voting_period", "value": 0,
                                           "target": "governor"}], "description": "invalid value"},
        {"proposer": "alice", "actions": [{"type": "set_parameter", "name": "voting_period", "value": True,
                                           "target": "governor"}], "description": "a bool is not an int"},
        {"proposer": "alice", "actions": ok_actions, "description": "bound to bob #proposer=bob"},
    ]
    for body in bad_proposals:
        is_problem(client.post("/v1/dao/proposals", json=body, headers=w), 422)
    core = is_problem(client.post("/v1/dao/proposals", json=bad_proposals[8], headers=w), 422)
    assert core["error"] == "InvalidAction" and "unknown parameter 'quorum'" in core["detail"]
    raw = [b'{"proposer": "alice", "actions": [{"type": "transfer", "to": "bob", "amount": 1}], '
           b'"description": "\\ud800"}',  # a lone surrogate: could be neither hashed nor answered
           b'{"proposer": "alice", "actions": [{"type": "set_parameter", "name": "x", "value": NaN}], '
           b'"description": "nan"}',
           b'{not json']
    for content in raw:
        is_problem(client.post("/v1/dao/proposals", content=content,
                               headers={**w, "content-type": "application/json"}), 422)
    pid = propose(client, keys, ok_actions, "fine")["id"]
    clock.set(client.get(f"/v1/dao/proposals/{pid}", headers=w).json()["snapshot"] + 1)
    for body in ({"voter": "alice", "support": "yes"}, {"voter": "alice", "support": 1},
                 {"voter": "alice", "support": "for", "reason": "r" * 1001}, {"support": "for"}):
        is_problem(client.post(f"/v1/dao/proposals/{pid}/votes", json=body, headers=w), 422)
    is_problem(client.get("/v1/dao/proposals/not-an-id", headers=w), 422)
    is_problem(client.get("/v1/dao/proposals", params={"state": "Sleeping"}, headers=w), 422)
    assert client.get("/v1/dao", headers=w).json()["proposals"] == 1


def test_tenant_isolation_on_every_route(setup):
    """Tenant 2 probes every tenant-scoped route with tenant 1's ids: always 404, nothing of tenant 1 changes."""
    client, keys, clock = setup
    t1, t2 = h(keys, "t1_admin"), h(keys, "t2_admin")
    create_dao(client, keys)
    clock.advance(1)
    active = propose(client, keys, description="will be active")
    clock.set(active["snapshot"] + 1)
    client.post(f"/v1/dao/proposals/{active['id']}/votes", json={"voter": "bob", "support": "for"}, headers=t1)
    pending = propose(client, keys, description="still pending")
    daos = client.app.state.daos

    def t1_state():
        reads = [client.get("/v1/dao", headers=t1).json(), client.get("/v1/dao/proposals", headers=t1).json()]
        for pid in (active["id"], pending["id"]):
            reads += [client.get(f"/v1/dao/proposals/{pid}", headers=t1).json(),
                      client.get(f"/v1/dao/proposals/{pid}/tally", headers=t1).json()]
        return json.dumps(reads, sort_keys=True), len(daos["t1"].governor.events)

    before = t1_state()
    a, p = active["id"], pending["id"]
    probes = {
        ("GET", "/v1/dao"): dict(url="/v1/dao"),
        ("POST", "/v1/dao/delegations"): dict(url="/v1/dao/delegations",
                                              json={"delegator": "carol", "delegatee": "alice"}),
        ("POST", "/v1/dao/proposals"): dict(url="/v1/dao/proposals", json={
            "proposer": "alice", "actions": [{"type": "transfer", "to": "mallory", "amount": 1_000, "asset": "USDC"}],
            "description": "drain t1"}),
        ("GET", "/v1/dao/proposals"): dict(url="/v1/dao/proposals"),
        ("GET", "/v1/dao/proposals/{proposal_id}"): dict(url=f"/v1/dao/proposals/{a}"),
        ("POST", "/v1/dao/proposals/{proposal_id}/votes"): dict(url=f"/v1/dao/proposals/{a}/votes",
                                                                json={"voter": "alice", "support": "against"}),
        ("POST", "/v1/dao/proposals/{proposal_id}/queue"): dict(url=f"/v1/dao/proposals/{a}/queue"),
        ("POST", "/v1/dao/proposals/{proposal_id}/execute"): dict(url=f"/v1/dao/proposals/{a}/execute"),
        ("POST", "/v1/dao/proposals/{proposal_id}/cancel"): dict(url=f"/v1/dao/proposals/{p}/cancel",
                                                                 json={"caller": "alice"}),
        ("GET", "/v1/dao/proposals/{proposal_id}/tally"): dict(url=f"/v1/dao/proposals/{a}/tally"),
    }
    tenant_routes = {(m, r.path) for r in client.app.routes for m in getattr(r, "methods", ())
                     if r.path.startswith("/v1/") and (m, r.path) != ("POST", "/v1/daos")}  # creates its own
    assert tenant_routes == set(probes), "a new tenant-scoped route needs an isolation probe"
    # tenant 2 without a DAO of its own: every route is a 404
    for (method, _), kwargs in probes.items():
        is_problem(client.request(method, **kwargs, headers=t2), 404)
    assert t1_state() == before
    # tenant 2 with its own DAO (same account names): tenant 1's proposals stay invisible...
    # (and a trader of tenant 2, acting as accounts that are not its own, changes nothing of tenant 1's either)
    for (method, _), kwargs in probes.items():
        assert client.request(method, **kwargs, headers=h(keys, "t2_trader")).status_code in (403, 404)
    assert t1_state() == before
    mine = create_dao(client, keys, who="t2_admin", holdings={"alice": 5, "zed": 7}, treasury={"USDC": 1})
    assert mine["tenant"] == "t2" and mine["total_supply"] == 12
    for (method, route), kwargs in probes.items():
        r = client.request(method, **kwargs, headers=t2)
        if "{proposal_id}" in route:
            is_problem(r, 404)
        else:  # ...and the routes without an id act on tenant 2's own DAO only
            assert r.status_code in (200, 201), r.text
    assert t1_state() == before
    assert client.get("/v1/dao", headers=t2).json()["treasury"] == {"USDC": 1}
    assert [x["description"] for x in client.get("/v1/dao/proposals", headers=t2).json()] == ["drain t1"]
    assert daos["t1"].token.delegates("carol") == "carol" and daos["t2"].token.delegates("carol") == "alice"


def test_audit_and_metrics(setup):
    client, keys, _ = setup
    client.post("/v1/daos", json=DAO_BODY, headers={**h(keys, "t1_admin"), "X-Request-ID": "dao-1"})
    records = client.get("/audit", headers=h(keys, "t1_auditor")).json()
    mine = [r for r in records if r["correlation_id"] == "dao-1"]
    assert mine and mine[0]["status"] == 201 and mine[0]["subject"] == "ops" and mine[0]["path"] == "/v1/daos"
    assert 'http_requests_total{method="POST",route="/v1/daos",status="201"}' in client.get("/metrics").text
