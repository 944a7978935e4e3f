"""The governance state outlives the process: DAOs, proposals, votes and treasury are saved in a StateStore after
each change (SQLite under home for `platformq serve`, Postgres in production); a change the store does not take is
answered 503 and undone in memory."""

import pickle

import pytest
from fastapi.testclient import TestClient

from resources.services import build_local_app
from services.common.app import ServiceContext
from services.common.state_store import StateStore
from services.governance import ManualClock
from services.governance.api import create_governance_app
from tests.services.problems import is_problem
from tests.services.stores import FlakyStore, part_generations

START = 1_000
MIN_DELAY = 50
DAO_BODY = {
    "holdings": {"alice": 600, "bob": 300, "carol": 100},
    "treasury": {"USDC": 1_000, "native": 50},
    "parameters": {"ml/champion": "v6"},
    "voting_delay": 10, "voting_period": 100, "min_delay": MIN_DELAY, "grace_period": 200,
}
PAY_BOB = [{"type": "transfer", "to": "bob", "amount": 250, "asset": "USDC"},
           {"type": "set_parameter", "name": "ml/champion", "value": "v7"}]
PAY_CAROL = [{"type": "transfer", "to": "carol", "amount": 40, "asset": "USDC"}]
PAY_DAVE = [{"type": "transfer", "to": "dave", "amount": 7, "asset": "native"}]


# The keys below act for several of the DAO's accounts (alice, bob, carol...): admin keys (governance:proxy); a
# trader's key acts only as its own account (tests/services/governance/test_api.py).
def app_on(store, clock):
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    app = create_governance_app(ctx, clock, store=store)
    return TestClient(app, raise_server_exceptions=False), {"X-API-Key": ctx.keys.create("ops", "t1", ["admin"])}


def ok(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def propose(client, key, actions, description):
    return ok(client.post("/v1/dao/proposals", json={"proposer": "alice", "actions": actions,
                                                     "description": description}, headers=key), 201)


def vote(client, key, pid, voter, support):
    return client.post(f"/v1/dao/proposals/{pid}/votes", json={"voter": voter, "support": support}, headers=key)


def snapshot(client, key):
    """Everything the API shows of the tenant's DAO."""
    proposals = ok(client.get("/v1/dao/proposals", headers=key))
    return {"dao": ok(client.get("/v1/dao", headers=key)), "list": proposals,
            "proposals": [ok(client.get(f"/v1/dao/proposals/{p['id']}", headers=key)) for p in proposals],
            "tallies": [ok(client.get(f"/v1/dao/proposals/{p['id']}/tally", headers=key)) for p in proposals]}


def restart_keeps_everything(served, clock):
    """Executed, queued and active proposals, votes and treasury outlive a restart; the restored proposals go on."""
    client, key = served()
    ok(client.post("/v1/daos", json=DAO_BODY, headers=key), 201)
    clock.advance(1)
    executed = propose(client, key, PAY_BOB, "pay bob")
    queued = propose(client, key, PAY_CAROL, "pay carol")
    clock.set(executed["snapshot"] + 1)
    for pid in (executed["id"], queued["id"]):
        ok(vote(client, key, pid, "alice", "for"), 201)
        ok(vote(client, key, pid, "bob", "abstain"), 201)
    clock.set(executed["deadline"] + 1)
    for pid in (executed["id"], queued["id"]):
        assert ok(client.post(f"/v1/dao/proposals/{pid}/queue", headers=key))["state"] == "Queued"
    clock.advance(MIN_DELAY)
    assert ok(client.post(f"/v1/dao/proposals/{executed['id']}/execute", headers=key))["state"] == "Executed"
    active = propose(client, key, PAY_DAVE, "pay dave")
    clock.set(active["snapshot"] + 1)
    ok(vote(client, key, active["id"], "alice", "against"), 201)
    before = snapshot(client, key)
    assert before["dao"]["treasury"] == {"USDC": 750, "native": 50}
    assert before["dao"]["parameters"]["ml/champion"] == "v7"
    assert [p["state"] for p in before["list"]] == ["Executed", "Queued", "Active"]

    client, key = served()  # a new process on the same store
    assert snapshot(client, key) == before
    # the ballots cast before the restart still count: alice cannot vote twice
    assert is_problem(vote(client, key, active["id"], "alice", "for"), 409)["error"] == "GovernorAlreadyCastVote"
    assert ok(vote(client, key, active["id"], "bob", "for"), 201)["weight"] == 300
    assert ok(vote(client, key, active["id"], "carol", "for"), 201)["weight"] == 100
    # the proposal queued before the restart executes once the (app's) clock has passed its eta
    assert ok(client.post(f"/v1/dao/proposals/{queued['id']}/execute", headers=key))["state"] == "Executed"
    clock.set(active["deadline"] + 1)
    assert ok(client.get(f"/v1/dao/proposals/{active['id']}", headers=key))["state"] == "Defeated"  # 600 vs 400

    client, key = served()
    states = {p["id"]: p["state"] for p in ok(client.get("/v1/dao/proposals", headers=key))}
    assert states == {executed["id"]: "Executed", queued["id"]: "Executed", active["id"]: "Defeated"}
    tally = ok(client.get(f"/v1/dao/proposals/{active['id']}/tally", headers=key))
    assert (tally["against_votes"], tally["for_votes"], tally["voters"]) == (600, 400, 3)
    dao = ok(client.get("/v1/dao", headers=key))
    assert dao["treasury"] == {"USDC": 710, "native": 50} and dao["now"] == clock.now()
    # the restored DAO still runs on the app's clock: a new proposal goes through its whole life
    again = propose(client, key, PAY_DAVE, "pay dave again")
    clock.set(again["snapshot"] + 1)
    ok(vote(client, key, again["id"], "alice", "for"), 201)
    clock.set(again["deadline"] + 1)
    assert ok(client.post(f"/v1/dao/proposals/{again['id']}/queue", headers=key))["state"] == "Queued"
    clock.advance(MIN_DELAY)
    assert ok(client.post(f"/v1/dao/proposals/{again['id']}/execute", headers=key))["state"] == "Executed"
    client, key = served()
    assert ok(client.get("/v1/dao", headers=key))["treasury"] == {"USDC": 710, "native": 43}


def test_the_served_governance_app_keeps_its_state_across_a_restart(tmp_path, monkeypatch):
    """`platformq serve`'s governance app (build_local_app): a restart used to start with no DAOs at all."""
    clock = ManualClock(START)
    monkeypatch.setattr("services.governance.api.SystemClock", lambda: clock)

    def served():
        app, ctx = build_local_app("governance", str(tmp_path))
        return (TestClient(app, raise_server_exceptions=False),
                {"X-API-Key": ctx.keys.create("alice-ops", "t1", ["admin"])})

    restart_keeps_everything(served, clock)
    assert (tmp_path / "services" / "governance.db").exists()


def test_a_change_the_store_does_not_take_answers_503_and_is_undone(tmp_path):
    clock = ManualClock(START)
    store = FlakyStore(f"sqlite:///{tmp_path / 'governance.db'}", "governance")
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    client = TestClient(create_governance_app(ctx, clock, store=store), raise_server_exceptions=False)
    key = {"X-API-Key": ctx.keys.create("alice-ops", "t1", ["admin"])}
    ok(client.post("/v1/daos", json=DAO_BODY, headers=key), 201)
    clock.advance(1)
    paid = propose(client, key, PAY_BOB, "pay bob")
    unvoted = propose(client, key, PAY_CAROL, "pay carol")
    clock.set(paid["snapshot"] + 1)
    ok(vote(client, key, paid["id"], "alice", "for"), 201)
    clock.set(paid["deadline"] + 1)
    ok(client.post(f"/v1/dao/proposals/{paid['id']}/queue", headers=key))
    clock.advance(MIN_DELAY)
    late = propose(client, key, PAY_DAVE, "pay dave")
    clock.set(late["snapshot"] + 1)
    before = snapshot(client, key)

    store.fail = True
    refused = [vote(client, key, late["id"], "alice", "for"),
               client.post(f"/v1/dao/proposals/{paid['id']}/execute", headers=key),
               client.post("/v1/dao/proposals", json={"proposer": "alice", "actions": PAY_DAVE,
                                                      "description": "never"}, headers=key),
               client.post("/v1/dao/delegations", json={"delegator": "carol", "delegatee": "alice"}, headers=key)]
    for r in refused:
        problem = is_problem(r, 503)
        assert problem["type"].endswith("/state-store-unavailable") and "nothing was changed" in problem["detail"]
    assert snapshot(client, key) == before  # the vote is not counted, the transfer not made, nothing proposed
    other = {"X-API-Key": ctx.keys.create("ops", "t2", ["admin"])}
    is_problem(client.post("/v1/daos", json=DAO_BODY, headers=other), 503)  # no DAO is created either
    is_problem(client.get("/v1/dao", headers=other), 404)
    # a refused domain change (409) is still a 409, and leaves nothing behind either
    is_problem(vote(client, key, unvoted["id"], "alice", "for"), 409)  # its voting period is over
    assert snapshot(client, key) == before

    store.fail = False
    assert ok(vote(client, key, late["id"], "alice", "for"), 201)["weight"] == 600
    assert ok(client.post(f"/v1/dao/proposals/{paid['id']}/execute", headers=key))["state"] == "Executed"
    assert ok(client.get("/v1/dao", headers=key))["treasury"]["USDC"] == 750
    # the DAOs restored after the failure still run on the app's clock
    clock.set(late["deadline"] + 1)
    assert ok(client.get(f"/v1/dao/proposals/{late['id']}", headers=key))["state"] == "Succeeded"
    client, key = app_on(StateStore(f"sqlite:///{tmp_path / 'governance.db'}", "governance"), clock)
    state = snapshot(client, key)
    assert state["dao"]["treasury"]["USDC"] == 750
    assert [p["state"] for p in state["list"]] == ["Executed", "Defeated", "Succeeded"]


@pytest.mark.slow
def test_the_state_outlives_a_restart_on_postgres():
    """The production store: Postgres (started by make test via infra/scripts/test-services.sh)."""
    from tests.integration.servers import PG_DSN, postgres_database

    clock = ManualClock(START)
    with postgres_database() as db:
        url = PG_DSN.format(db=db)
        stores = []

        def served():
            stores.append(StateStore(url, "governance"))
            return app_on(stores[-1], clock)

        try:
            restart_keeps_everything(served, clock)
        finally:
            for store in stores:
                store.close()



def old_layout(app, tenant):
    """The tenant's DAO as versions before format 3 pickled it: the governor holding its proposals, counters,
    operation ids and events, the timelock its operations, the treasury and parameter store their logs (the same
    classes, attributes laid out as then)."""
    live = app.state.daos[tenant]
    dao = pickle.loads(pickle.dumps(live))  # its PartMaps come back detached: replaced below
    records = {pid: pickle.loads(pickle.dumps(live.governor._records[pid])) for pid in live.governor.proposal_ids()}
    gov = dao.governor.__dict__
    del gov["_records"], gov["_proposal_seq"]
    gov.update(_proposals={pid: r.proposal for pid, r in records.items()},
               _counts={pid: r.counts for pid, r in records.items()},
               _timelock_ids={pid: r.timelock_id for pid, r in records.items() if r.timelock_id},
               _events=list(live.governor.events))
    ops = {}
    for op_id in live.timelock._ops:
        op = pickle.loads(pickle.dumps(live.timelock._ops[op_id]))
        del op.__dict__["canceled"]  # the field came with format 3
        ops[op_id] = op
    dao.timelock.__dict__["_ops"] = ops
    dao.treasury.__dict__["_audit"] = list(live.treasury.audit_log)
    dao.parameters.__dict__["_history"] = list(live.parameters.history)
    return dao


def test_a_vote_saves_only_its_proposal_and_older_stores_are_upgraded(tmp_path):
    """A DAO's part holds neither its proposals nor its operations: a vote writes its proposal's record and
    nothing else (not the DAO, not another tenant's), so a request's cost does not grow with the DAO's history.
    Stores the previous versions wrote (format 2: one part per tenant's DAO holding its proposals; format 1: every
    DAO in one row) are read, stored in the new layout and carried on from."""
    clock = ManualClock(START)
    url = f"sqlite:///{tmp_path / 'governance.db'}"
    ctx = ServiceContext("test", rate=1000.0, burst=1000)
    app = create_governance_app(ctx, clock, store=StateStore(url, "governance"))
    client = TestClient(app, raise_server_exceptions=False)
    t1, t2 = ({"X-API-Key": ctx.keys.create("ops", t, ["admin"])} for t in ("t1", "t2"))
    for key in (t1, t2):
        ok(client.post("/v1/daos", json=DAO_BODY, headers=key), 201)
    clock.advance(1)
    paid = propose(client, t2, PAY_BOB, "pay bob")
    other = propose(client, t2, PAY_CAROL, "pay carol")
    clock.set(paid["snapshot"] + 1)
    ok(vote(client, t2, other["id"], "alice", "against"), 201)
    written = part_generations(url)
    record = "t2\x1fproposal\x1f" + paid["id"]
    assert set(written) == {"t1", "t2", record, "t2\x1fproposal\x1f" + other["id"]}
    ok(vote(client, t2, paid["id"], "alice", "for"), 201)
    now = part_generations(url)
    assert {k for k in now if now[k] != written[k]} == {record}  # the DAO and the other proposal: not written
    clock.set(paid["deadline"] + 1)
    ok(client.post(f"/v1/dao/proposals/{paid['id']}/queue", headers=t2))
    clock.advance(MIN_DELAY)
    ok(client.post(f"/v1/dao/proposals/{other['id']}/cancel", json={"caller": "alice"}, headers=t2), 409)
    ok(client.post(f"/v1/dao/proposals/{paid['id']}/execute", headers=t2))
    pending = propose(client, t1, PAY_DAVE, "pay dave")
    ok(vote(client, t1, pending["id"], "bob", "for"), 409)  # still pending
    before = {"t1": snapshot(client, t1), "t2": snapshot(client, t2)}
    def history(daos):
        return {t: (daos[t].governor.events, daos[t].treasury.audit_log, daos[t].parameters.history)
                for t in ("t1", "t2")}

    events = history(app.state.daos)
    assert [(r.to, r.amount) for r in events["t2"][1]] == [("bob", 250)] and len(events["t2"][2]) == 1
    assert [e.name for e in events["t2"][0]] == ["ProposalCreated", "ProposalCreated", "VoteCast", "VoteCast",
                                              "ProposalQueued", "ProposalExecuted"]
    old = {t: pickle.dumps(old_layout(app, t)) for t in ("t1", "t2")}

    for fmt in (2, 1):
        clock = ManualClock(app.state.clock.now())  # each store's apps start where the first one stopped
        legacy = f"sqlite:///{tmp_path / f'format{fmt}.db'}"
        if fmt == 2:
            assert StateStore(legacy, "governance").save_parts(2, old, 0)
        else:
            whole = {t: pickle.loads(data) for t, data in old.items()}
            assert StateStore(legacy, "governance").save(1, pickle.dumps(whole), 0)
        upgraded = create_governance_app(ctx, clock, store=StateStore(legacy, "governance"))
        client = TestClient(upgraded, raise_server_exceptions=False)
        assert {"t1": snapshot(client, t1), "t2": snapshot(client, t2)} == before, fmt
        assert history(upgraded.state.daos) == events
        operation = app.state.daos["t2"].governor.timelock_operation_id(paid["id"])
        assert set(part_generations(legacy)) == set(written) | {
            "t1\x1fproposal\x1f" + pending["id"], "t2\x1foperation\x1f" + operation,
            "t2\x1ftransfer\x1f000000000000", "t2\x1fparameter-change\x1f000000000000"}
        # carried on from: a restart reads the upgraded store as it is; alice's ballot still counts
        client, key = app_on(StateStore(legacy, "governance"), clock)
        assert snapshot(client, key) == before["t1"]
        clock.set(pending["snapshot"] + 1)
        assert ok(vote(client, key, pending["id"], "bob", "for"), 201)["weight"] == 300
        assert is_problem(vote(client, key, pending["id"], "bob", "for"), 409)["error"] == "GovernorAlreadyCastVote"


def test_two_processes_voting_on_different_proposals_of_one_dao_at_once_are_never_refused(tmp_path):
    """Two API processes on one store, each taking ballots on another proposal of the same DAO at the same time: a
    vote writes its proposal's record only, so a save that finds the other's newer save (the other proposal's
    record) is made on top of it instead of answering 503; both proposals keep every ballot."""
    import threading

    clock = ManualClock(START)
    url = f"sqlite:///{tmp_path / 'governance.db'}"
    ctx = ServiceContext("test", rate=10_000.0, burst=10_000)
    key = {"X-API-Key": ctx.keys.create("ops", "t1", ["admin"])}
    clients = [TestClient(create_governance_app(ctx, clock, store=StateStore(url, "governance")),
                          raise_server_exceptions=False) for _ in range(2)]
    voters = [f"v{i}" for i in range(60)]
    ok(clients[0].post("/v1/daos", json={**DAO_BODY, "holdings": {v: 10 + i for i, v in enumerate(voters)}},
                       headers=key), 201)
    clock.advance(1)
    pids = [propose(client, key, actions, description)["id"]
            for client, actions, description in zip(clients, (PAY_BOB, PAY_CAROL), ("pay bob", "pay carol"))]
    clock.advance(DAO_BODY["voting_delay"] + 1)
    statuses = [[], []]
    start = threading.Barrier(2)

    def vote_many(i):
        start.wait()
        for voter in voters[i::2]:
            statuses[i].append(vote(clients[i], key, pids[i], voter, "for").status_code)

    threads = [threading.Thread(target=vote_many, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [[201] * 30, [201] * 30]
    client, key = app_on(StateStore(url, "governance"), clock)
    tallies = [ok(client.get(f"/v1/dao/proposals/{pid}/tally", headers=key)) for pid in pids]
    assert [t["voters"] for t in tallies] == [30, 30]
    assert [t["for_votes"] for t in tallies] == [sum(10 + i for i in range(j, 60, 2)) for j in (0, 1)]
