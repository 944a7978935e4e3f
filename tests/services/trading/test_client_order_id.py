"""Client order ids (FIX ClOrdID) make an order placement safe to send again: a client whose POST /v1/orders answer
was lost (a timeout, a gateway's 502) sends it again with the same ``client_order_id`` (or ``Idempotency-Key``) and
gets the order the first placement made, as it stands now, instead of a second order. Per account (so per tenant),
in the journalled command (a restart and a snapshot keep it), undone with the command or batch that is undone,
forgotten with the account's trimmed history."""

import json
import random
import zlib

import pytest
from fastapi.testclient import TestClient

from services.trading.api import create_trading_app
from services.trading.exchange import (CASH, ClientOrderIdReused, Exchange, ExchangeError, JournalUnavailable,
                                       MemoryJournal, SqlJournal)
from tests.services.problems import is_problem
from tests.services.trading.journals import Down

X, Y = "ACME", "BETA"


def served(ctx, exchange):
    return TestClient(create_trading_app(ctx, exchange), raise_server_exceptions=False)


def venue(ctx, journal=None, **kwargs):
    """t1 (alice) holds a1 and a2, t2 (bob) holds its own a1; each funded with cash and both instruments."""
    ticks = iter(range(1, 10**9))
    exchange = Exchange([X, Y], journal=journal if journal is not None else MemoryJournal(),
                        clock=lambda: next(ticks), **kwargs)
    client = served(ctx, exchange)
    t1 = {"X-API-Key": ctx.keys.create("alice", "t1", ["trader"])}
    t2 = {"X-API-Key": ctx.keys.create("bob", "t2", ["trader"])}
    for key, accounts in ((t1, ("a1", "a2")), (t2, ("a1",))):
        for account in accounts:
            assert client.post("/v1/accounts", json={"account_id": account}, headers=key).status_code == 201
            for asset, amount in ((CASH, 10**8), (X, 1_000), (Y, 1_000)):
                assert client.post(f"/v1/accounts/{account}/deposits", json={"asset": asset, "amount": amount},
                                   headers=key).status_code == 200
    return exchange, client, t1, t2


def order(account="a1", side="BUY", quantity=5, price=100, **more):
    return {"account_id": account, "instrument": X, "side": side, "quantity": quantity, "price_ticks": price, **more}


def ok(response, status=201):
    assert response.status_code == status, response.text
    return response.json()


def orders_of(client, key, account="a1"):
    return ok(client.get("/v1/orders", params={"account_id": account}, headers=key), 200)


def test_a_retried_placement_answers_the_first_order_as_it_stands_and_places_nothing(ctx):
    exchange, client, t1, t2 = venue(ctx)
    first = client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1)
    placed = ok(first)
    assert placed["client_order_id"] == "q-1" and placed["status"] == "NEW" and "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1)
    assert ok(again) == placed and again.headers["Idempotent-Replayed"] == "true"
    assert len(orders_of(client, t1)) == 1 and exchange.accounts["t1/a1"].balances[CASH].locked == \
        exchange._buy_reserve(100, 5)
    # filled in part, then amended: a retry of the original placement answers the order as it stands now
    ok(client.post("/v1/orders", json=order("a2", "SELL", 2, 100), headers=t1))
    ok(client.patch(f"/v1/orders/{placed['order_id']}", json={"quantity": 9}, headers=t1), 200)
    now = ok(client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1))
    assert (now["order_id"], now["filled_quantity"], now["quantity"], now["status"]) == \
        (placed["order_id"], 2, 9, "PARTIALLY_FILLED")
    ok(client.delete(f"/v1/orders/{placed['order_id']}", headers=t1), 200)
    assert ok(client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1))["status"] == "CANCELLED"
    assert len(orders_of(client, t1)) == 1
    # read back by its client order id; every order answer names it
    by_id = ok(client.get("/v1/orders/by-client-order-id", params={"account_id": "a1", "client_order_id": "q-1"},
                          headers=t1), 200)
    assert by_id == ok(client.get(f"/v1/orders/{placed['order_id']}", headers=t1), 200) and by_id["client_order_id"] \
        == "q-1"
    assert orders_of(client, t1)[0]["client_order_id"] == "q-1"
    assert ok(client.post("/v1/orders", json=order(), headers=t1))["client_order_id"] is None
    # a market order (its GTC is an IOC, either time) is the same placement too
    market = order("a2", "SELL", 1, None, type="MARKET", client_order_id="m-1")
    filled = ok(client.post("/v1/orders", json=market, headers=t1))
    assert filled["status"] == "FILLED" and ok(client.post("/v1/orders", json=market, headers=t1)) == filled


def test_the_same_id_with_other_order_fields_is_refused_and_places_nothing(ctx):
    exchange, client, t1, t2 = venue(ctx)
    ok(client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1))
    before = exchange.state()
    for other in (order(quantity=6), order(price=101), order(side="SELL"), {**order(), "instrument": Y},
                  order(time_in_force="IOC"), order(type="MARKET", price=None)):
        problem = is_problem(client.post("/v1/orders", json={**other, "client_order_id": "q-1"}, headers=t1), 422)
        assert problem["type"].endswith("/client-order-id-reused") and "q-1" in problem["detail"]
    assert exchange.state() == before
    for bad in ("", "x" * 65, "with space", "naïve"):
        is_problem(client.post("/v1/orders", json=order(client_order_id=bad), headers=t1), 422)
    with pytest.raises(ClientOrderIdReused):  # the exchange itself, for callers without the API
        exchange.place("t1/a1", X, "BUY", 6, 100, "GTC", "q-1")
    with pytest.raises(ExchangeError, match="client_order_id"):
        exchange.place("t1/a1", X, "BUY", 6, 100, "GTC", "x" * 65)
    assert exchange.state() == before


def test_the_idempotency_key_header_names_the_order_as_its_client_order_id(ctx):
    exchange, client, t1, t2 = venue(ctx)
    keyed = {**t1, "Idempotency-Key": "GPUH30:quote:1"}
    first = ok(client.post("/v1/orders", json=order(), headers=keyed))
    again = client.post("/v1/orders", json=order(), headers=keyed)
    assert ok(again) == first and again.headers["Idempotent-Replayed"] == "true"
    assert first["client_order_id"] == "GPUH30:quote:1" and len(orders_of(client, t1)) == 1
    # the key and the body's id are one name: the same value in both is the same order, different values refused
    assert ok(client.post("/v1/orders", json=order(client_order_id="GPUH30:quote:1"), headers=keyed)) == first
    assert ok(client.post("/v1/orders", json=order(client_order_id="GPUH30:quote:1"), headers=t1)) == first
    problem = is_problem(client.post("/v1/orders", json=order(client_order_id="other"), headers=keyed), 422)
    assert problem["type"].endswith("/idempotency-key-mismatch")
    problem = is_problem(client.post("/v1/orders", json=order(quantity=1), headers=keyed), 422)
    assert problem["type"].endswith("/idempotency-key-reused")
    for bad in (b"x" * 65, b"with space"):
        problem = is_problem(client.post("/v1/orders", json=order(), headers={**t1, "Idempotency-Key": bad}), 400)
        assert problem["type"].endswith("/invalid-idempotency-key")
    assert len(orders_of(client, t1)) == 1


def test_ids_are_per_account_and_tenant_and_reveal_no_other_tenants_order(ctx):
    exchange, client, t1, t2 = venue(ctx)
    mine = ok(client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1))
    # t2's account a1 is its own: the same id is its own order (another tenant's same fields or other ones)
    theirs = client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t2)
    assert ok(theirs)["order_id"] != mine["order_id"] and "Idempotent-Replayed" not in theirs.headers
    other = ok(client.post("/v1/orders", json=order(quantity=7, client_order_id="q-2"), headers=t2))
    assert ok(client.post("/v1/orders", json=order(quantity=3, client_order_id="q-2"), headers=t1))["order_id"] \
        != other["order_id"]
    # another account of the same tenant is independent too
    assert ok(client.post("/v1/orders", json=order("a2", client_order_id="q-1"), headers=t1))["order_id"] not in \
        (mine["order_id"], ok(theirs)["order_id"])
    # reads: each tenant finds its own order by the id; t1's account a2 is unknown to t2
    lookup = "/v1/orders/by-client-order-id"
    assert ok(client.get(lookup, params={"account_id": "a1", "client_order_id": "q-1"}, headers=t1), 200) == \
        ok(client.get(f"/v1/orders/{mine['order_id']}", headers=t1), 200)
    assert ok(client.get(lookup, params={"account_id": "a1", "client_order_id": "q-1"}, headers=t2), 200)[
        "order_id"] == ok(theirs)["order_id"]
    is_problem(client.get(lookup, params={"account_id": "a2", "client_order_id": "q-1"}, headers=t2), 404)
    is_problem(client.get(lookup, params={"account_id": "a1", "client_order_id": "nope"}, headers=t1), 404)
    assert exchange.client_order("t1/a1", "q-1").order_id == mine["order_id"]


def test_a_restart_replays_the_journal_and_loads_snapshots_to_the_same_ids(ctx, tmp_path):
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    exchange, client, t1, t2 = venue(ctx, SqlJournal(url), snapshot_commands=0)
    placed = ok(client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1))
    ok(client.post("/v1/orders", json=order("a2", "SELL", 2, 100, client_order_id="s-1"), headers=t1))
    ok(client.post("/v1/orders/batch", json={"commands": [{"op": "place", "ref": "r", "client_order_id": "b-1",
                                                           **order(price=90)}]}, headers=t1), 200)
    for snapshot in (False, True):
        if snapshot:  # a snapshot of the state, then a start from it (no command replayed)
            assert exchange.snapshot()
        journal = SqlJournal(url)
        restored = Exchange.restore([X, Y], journal, snapshot_commands=0)
        assert restored.state() == exchange.state() and restored.client_orders == exchange.client_orders
        assert restored.client_ids == exchange.client_ids
        assert (restored._snapshot_at == restored.journaled) is snapshot
        exchange.journal.close()
        exchange, client = restored, served(ctx, restored)  # the restarted service serves the same keys
        again = client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1)
        assert again.headers["Idempotent-Replayed"] == "true" and ok(again)["order_id"] == placed["order_id"]
        assert ok(again)["filled_quantity"] == 2
        assert ok(client.post("/v1/orders", json=order("a2", "SELL", 2, 100, client_order_id="s-1"),
                              headers=t1))["status"] == "FILLED"
        is_problem(client.post("/v1/orders", json=order(quantity=4, client_order_id="q-1"), headers=t1), 422)
        assert len(orders_of(client, t1)) == 2 and len(orders_of(client, t1, "a2")) == 1
    journal.close()


def test_a_snapshot_written_before_client_order_ids_still_loads(tmp_path):
    """The snapshot layout only gained a key: one written before it (no "client_ids") is loaded, not passed over."""
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    ex = Exchange([X], journal=SqlJournal(url), snapshot_commands=0)
    for name in ("a", "b"):
        ex.open_account("t1", name)
        ex.deposit(name, CASH, 10**6)
        ex.deposit(name, X, 100)
    ex.place("a", X, "SELL", 5, 100)
    ex.place("b", X, "BUY", 2, 100)
    assert ex.snapshot()
    commands, data = ex.journal.latest_snapshot()
    state = json.loads(zlib.decompress(data))
    assert state.pop("client_ids") == []
    import sqlalchemy as sa

    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("update exchange_snapshot set data = :data where commands = :commands"),
                     {"data": zlib.compress(json.dumps(state).encode()), "commands": commands})
    restored = Exchange.restore([X], SqlJournal(url), snapshot_commands=0)
    assert restored._snapshot_at == restored.journaled == commands  # loaded from the snapshot
    assert restored.state() == ex.state() and restored.client_ids == {}
    restored.journal = MemoryJournal()  # one writer per journal: it goes on in one of its own
    assert restored.place("a", X, "SELL", 1, 101, client_order_id="new").order_id == 3


def test_a_placement_the_journal_refuses_is_undone_with_its_id_so_the_retry_places_it(ctx):
    journal = Down()
    exchange, client, t1, t2 = venue(ctx, journal)
    ok(client.post("/v1/orders", json=order("a2", "SELL", 1, 100), headers=t1))  # something to trade with
    before = exchange.state()
    journal.down = True
    batch = {"commands": [{"op": "place", "ref": "r1", "client_order_id": "b-1", **order(quantity=2)},
                          {"op": "place", "ref": "r2", "client_order_id": "b-2", **order(quantity=3, price=99)},
                          {"op": "cancel", "ref": "r2"}]}
    for path, body in (("/v1/orders", order(client_order_id="q-1")), ("/v1/orders/batch", batch)):
        assert is_problem(client.post(path, json=body, headers=t1), 503)["type"].endswith("/journal-unavailable")
        assert exchange.state() == before and exchange.client_orders == {} and exchange.client_ids == {}
        is_problem(client.get("/v1/orders/by-client-order-id", params={"account_id": "a1", "client_order_id": "q-1"},
                              headers=t1), 404)
    with pytest.raises(JournalUnavailable):  # the exchange alone, too
        exchange.place("t1/a1", X, "BUY", 1, 100, "GTC", "e-1")
    assert exchange.client_order("t1/a1", "e-1") is None
    journal.down = False
    retry = client.post("/v1/orders", json=order(client_order_id="q-1"), headers=t1)
    assert "Idempotent-Replayed" not in retry.headers and ok(retry)["filled_quantity"] == 1
    results = ok(client.post("/v1/orders/batch", json=batch, headers=t1), 200)["results"]
    assert [r["error"] for r in results] == [None, None, None] and results[2]["status"] == "CANCELLED"
    # the batch sent again: its places answer their orders (as they stand), the cancel finds r2 closed
    again = ok(client.post("/v1/orders/batch", json=batch, headers=t1), 200)["results"]
    assert [r["order_id"] for r in again[:2]] == [r["order_id"] for r in results[:2]]
    assert again[1]["status"] == "CANCELLED" and again[2]["error"] and len(orders_of(client, t1)) == 3
    # a place in a batch reusing an id for other fields fails alone
    mixed = ok(client.post("/v1/orders/batch", json={"commands": [
        {"op": "place", "ref": "x", "client_order_id": "b-1", **order(quantity=9)},
        {"op": "place", "ref": "y", "client_order_id": "b-3", **order(quantity=1, price=80)}]}, headers=t1), 200)
    assert "b-1" in mixed["results"][0]["error"] and mixed["results"][1]["error"] is None
    # an Idempotency-Key on a batch (a service client then sends it again after a lost answer) is taken when each
    # place names its order, and refused, not ignored, when one does not
    before = exchange.state()
    unnamed = {"commands": [*batch["commands"], {"op": "place", "ref": "z", **order(quantity=1, price=70)}]}
    problem = is_problem(client.post("/v1/orders/batch", json=unnamed, headers={**t1, "Idempotency-Key": "k"}), 400)
    assert problem["type"].endswith("/idempotency-key-unsupported") and exchange.state() == before
    keyed = ok(client.post("/v1/orders/batch", json=batch, headers={**t1, "Idempotency-Key": "k"}), 200)["results"]
    assert [r["order_id"] for r in keyed[:2]] == [r["order_id"] for r in results[:2]] and exchange.state() == before
    assert Exchange.restore([X, Y], journal).state() == exchange.state()


def test_a_placement_that_fails_while_applied_is_undone_with_its_id(monkeypatch):
    ex = Exchange([X])
    for name in ("a", "b"):
        ex.open_account("t1", name)
        ex.deposit(name, CASH, 10**6)
        ex.deposit(name, X, 100)
    ex.place("a", X, "SELL", 5, 100)
    before = ex.state()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug while settling")

    monkeypatch.setattr(ex, "_settle_trades", broken)
    with pytest.raises(RuntimeError):
        ex.place("b", X, "BUY", 2, 100, client_order_id="c-1")
    assert ex.state() == before and ex.client_ids == {} and ex.client_orders == {}


def test_ids_are_forgotten_with_the_trimmed_history_and_a_restart_agrees(tmp_path):
    """Each account keeps its last ``history`` orders (and older open ones): an older closed order's id goes with
    it, so the index is bounded by the kept orders. A restart trims at other commands than the live exchange (its
    cuts fall elsewhere), so an id the live exchange forgot and took again for a new order is met twice in the
    replay: the newer order takes it."""
    journal = MemoryJournal()
    ticks = iter(range(1, 10**9))
    kept = {"history": 3, "rebase_commands": 7}
    ex = Exchange([X], journal=journal, clock=lambda: next(ticks), **kept)
    for name in ("a", "b"):
        ex.open_account("t1", name)
        ex.deposit(name, CASH, 10**8)
        ex.deposit(name, X, 10**5)
    resting = ex.place("a", X, "BUY", 1, 50, client_order_id="rest")  # stays open: kept, with its id
    for i in range(40):
        ex.place("a", X, "SELL", 1, 100, client_order_id=f"s-{i}")
        ex.place("b", X, "BUY", 1, 100, client_order_id=f"b-{i}")
    # kept: each account's last 3 orders, the open one, and the orders since the last cut (at most 7)
    assert len(ex.client_ids) <= 3 + 3 + 1 + 7 and set(ex.client_orders["a"]) >= {"rest", "s-39"}
    assert "s-0" not in ex.client_orders["a"] and ex.client_order("a", "rest") is resting
    assert set(ex.client_ids) <= set(ex.engine.orders)
    # "s-0" was forgotten: it names a new order now
    again = ex.place("a", X, "SELL", 2, 100, client_order_id="s-0")
    assert again.order_id > resting.order_id + 80 and ex.client_order("a", "s-0") is again
    restored = Exchange.restore([X], journal, **kept)
    assert restored.state() == ex.state()
    assert restored.client_order("a", "s-0").order_id == again.order_id
    assert restored.placed_order("a", "s-0", X, "SELL", 2, 100, "GTC").order_id == again.order_id
    restored._trim_history()
    assert set(restored.client_ids) <= set(restored.engine.orders)


@pytest.mark.parametrize("seed", range(6))
def test_random_flow_with_ids_failed_batches_and_outages_matches_a_restart(seed):
    """Random placements with ids (new, repeated, reused for other fields), cancels, trimming, snapshots, failed
    single commands and failed batches: the live exchange, a restart from its snapshot and a whole replay agree,
    and no id names an order that was undone."""
    rng = random.Random(seed)
    journal = Down()
    ticks = iter(range(1, 10**9))
    kept = {"history": 4, "rebase_commands": 9, "snapshot_commands": 25}
    ex = Exchange([X], journal=journal, clock=lambda: next(ticks), **kept)
    for name in "abc":
        ex.open_account("t1", name)
        ex.deposit(name, CASH, 10**7)
        ex.deposit(name, X, 10**4)

    def step():
        who = rng.choice("abc")
        open_ids = [o.order_id for o in ex.engine.orders.values() if o.open_qty and o.account == who]
        if open_ids and rng.random() < 0.2:
            ex.cancel(who, rng.choice(open_ids))
            return
        fields = (X, rng.choice(("BUY", "SELL")), rng.randint(1, 4), rng.randint(97, 103), "GTC")
        cid = f"c{rng.randint(0, 60)}" if rng.random() < 0.8 else None
        known = ex.client_order(who, cid) if cid else None
        try:
            placed = ex.place(who, *fields, client_order_id=cid)
        except ClientOrderIdReused:
            assert known is not None and ex.client_ids[known.order_id][2:] != fields
            return
        if known is not None:
            assert placed is known and ex.client_ids[known.order_id][2:] == fields

    for _ in range(12):
        for _ in range(rng.randint(5, 25)):
            try:
                step()
            except ExchangeError:
                pass
        before = ex.state()
        journal.down = True
        try:
            if rng.random() < 0.5:
                with ex.batch():
                    for _ in range(rng.randint(1, 6)):
                        try:
                            step()
                        except ExchangeError:
                            pass  # refused alone; the batch's journal write fails as it ends
            else:
                step()
        except ExchangeError:
            pass
        finally:
            journal.down = False
        assert ex.state() == before
        assert set(ex.client_ids) <= set(ex.engine.orders)
        for account, by_id in ex.client_orders.items():
            for cid, order_id in by_id.items():
                assert ex.client_ids[order_id][:2] == (cid, account)
    restored = Exchange.restore([X], journal, **kept)
    assert journal.snapshots and restored.state() == ex.state()
    whole = MemoryJournal()
    whole.commands = journal.commands
    assert Exchange.restore([X], whole, **{**kept, "snapshot_commands": 0}).state() == ex.state()


def test_a_keyed_order_whose_answer_was_lost_is_sent_again_by_the_service_client_and_placed_once(ctx):
    """Over HTTP: the first POST /v1/orders is applied and its answer comes too late (the client's timeout). With an
    Idempotency-Key the service client sends it again and the order is placed once; a client that names the order
    by its client_order_id alone sends it again itself and gets the same order."""
    import asyncio
    import time

    from resources.services import ServiceClientResource, ServiceError
    from tests.services.serving import serve

    exchange, _, t1, _ = venue(ctx)
    app = create_trading_app(ctx, exchange)
    slow = {"left": 1}

    @app.middleware("http")
    async def lose_the_first_answer(request, call_next):
        response = await call_next(request)  # applied
        if request.url.path == "/v1/orders" and request.method == "POST" and slow["left"]:
            slow["left"] -= 1
            await asyncio.sleep(0.6)  # the client has given up waiting by now
        return response

    with serve(app) as url:
        client = ServiceClientResource(service="trading", base_url=url, api_key=t1["X-API-Key"], backoff_s=0.0,
                                       max_retries=3, timeout_s=0.3)
        answer = client.request("POST", "/v1/orders", json_body=order(), idempotency_key="run1:order:0")
        assert answer["client_order_id"] == "run1:order:0" and len(exchange.orders_of("t1/a1")) == 1
        slow["left"] = 1
        with pytest.raises(ServiceError, match="failed"):  # no key: the client does not know it is safe
            client.request("POST", "/v1/orders", json_body=order(price=99, client_order_id="run1:order:1"))
        time.sleep(0.4)
        placed = exchange.orders_of("t1/a1")
        assert len(placed) == 2
        # sent again by the caller: the same order, nothing placed
        again = client.request("POST", "/v1/orders", json_body=order(price=99, client_order_id="run1:order:1"))
        assert again["order_id"] == placed[1].order_id and len(exchange.orders_of("t1/a1")) == 2


def test_a_batch_naming_more_orders_of_an_account_than_it_keeps_is_refused(ctx):
    """An account keeps the client order ids of its last `history` orders: a batch of more named places than that,
    sent again after a lost answer, started with a cut that forgot its oldest orders' ids, and placed them again."""
    exchange, client, t1, t2 = venue(ctx, history=3, rebase_commands=4)
    places = [{"op": "place", "ref": f"r{i}", "client_order_id": f"q-{i}",
               **order(side="SELL", quantity=1, price=100 + i)} for i in range(4)]
    refused = is_problem(client.post("/v1/orders/batch", json={"commands": places}, headers=t1), 422)
    assert refused["type"].endswith("/too-many-client-order-ids") and "at most 3" in refused["detail"]
    assert not exchange.client_ids  # nothing placed
    # three named places of one account (and one of another) are fine, and sent again they place nothing
    places = places[:3] + [{"op": "place", "ref": "r9", "client_order_id": "q-0",
                            **order(account="a2", side="SELL", quantity=1)}]
    first = client.post("/v1/orders/batch", json={"commands": places}, headers={**t1, "Idempotency-Key": "b1"})
    assert first.status_code == 200, first.text
    again = client.post("/v1/orders/batch", json={"commands": places}, headers={**t1, "Idempotency-Key": "b1"})
    assert [r["order_id"] for r in again.json()["results"]] == [r["order_id"] for r in first.json()["results"]]
    assert len(exchange.client_ids) == 4
