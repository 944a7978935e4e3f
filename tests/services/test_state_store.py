"""DurableState and KeyedDurableState: a change is saved before it counts; a failed change or save leaves memory as
the store has it; a keyed state saves only the parts a change names."""

import pickle
import threading

import pytest

from services.common.state_store import DurableState, KeyedDurableState, PartMap, StateStore, StateStoreError
from tests.integration.servers import PG_DSN, postgres_database
from tests.services.stores import FlakyStore, part_generations


class Book:
    def __init__(self):
        self.entries = []


def test_state_outlives_the_process_and_keeps_its_identity(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    durable = DurableState(StateStore(url, "books"), Book, format_version=1)
    book = durable.state
    with durable.change() as state:
        state.entries.append(1)
    with pytest.raises(ValueError), durable.change() as state:  # refused half-way: nothing of it stays
        state.entries.append(2)
        raise ValueError("refused")
    assert durable.state is book and book.entries == [1]
    assert DurableState(StateStore(url, "books"), Book, format_version=1).state.entries == [1]
    assert DurableState(StateStore(url, "other"), Book, format_version=1).state.entries == []  # one row per name


def test_a_change_the_store_does_not_take_is_undone(tmp_path):
    store = FlakyStore(f"sqlite:///{tmp_path / 'state.db'}", "daos")
    durable = DurableState(store, dict, format_version=1)
    daos = durable.state
    with durable.change() as state:
        state["t1"] = {"treasury": 100}
    store.fail = True
    with pytest.raises(StateStoreError, match="did not take the change"), durable.change() as state:
        state["t1"]["treasury"] -= 40
        state["t2"] = {"treasury": 5}
    assert durable.state is daos and daos == {"t1": {"treasury": 100}}
    store.fail = False
    assert DurableState(StateStore(store._engine.url.render_as_string(hide_password=False), "daos"), dict,
                        format_version=1).state == {"t1": {"treasury": 100}}


def test_a_copy_in_another_format_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    durable = DurableState(StateStore(url, "daos"), dict, format_version=1)
    with durable.change() as state:
        state["t1"] = 1
    with pytest.raises(StateStoreError, match="holds format 1, this code reads format 2"):
        DurableState(StateStore(url, "daos"), dict, format_version=2)


def test_processes_sharing_a_store_see_each_others_changes_and_lose_none(tmp_path):
    """`platformq serve` and a Dagster run's in-process service share one home: each must read the other's
    changes, and neither may save over a change it has not seen (the whole state is saved each time)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    a = DurableState(StateStore(url, "markets"), dict, format_version=1)
    b = DurableState(StateStore(url, "markets"), dict, format_version=1)
    with a.change() as state:
        state["RUN1"] = 1
    with b.lock:  # a read sees the newer copy
        assert b.state == {"RUN1": 1}
    with b.change() as state:  # a change is made on top of it, not over it
        state["RUN2"] = 2
    with a.change() as state:
        state["RUN3"] = 3
    assert DurableState(StateStore(url, "markets"), dict, format_version=1).state == {"RUN1": 1, "RUN2": 2, "RUN3": 3}


def test_a_save_that_loses_the_race_is_refused_and_undone(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    a = DurableState(StateStore(url, "daos"), dict, format_version=1)
    b = DurableState(StateStore(url, "daos"), dict, format_version=1)
    with a.change() as state:
        state["t1"] = 1
    b.refresh = lambda: None  # b does not look before it changes: the race the compare-and-set is for
    with pytest.raises(StateStoreError, match="changed in another process"), b.change() as state:
        state["t2"] = 2
    assert DurableState(StateStore(url, "daos"), dict, format_version=1).state == {"t1": 1}


# ---------------------------------------------------------------- keyed state: one row per part


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
    else:
        with postgres_database() as db:
            yield PG_DSN.format(db=db)


def entries(durable) -> dict:
    return {key: book.entries for key, book in durable.state.items()}


def test_a_keyed_change_writes_only_the_parts_it_names(store_url):
    durable = KeyedDurableState(StateStore(store_url, "markets"), 1)
    markets = durable.state
    for symbol in ("A", "B", "C"):
        with durable.change(symbol) as state:
            state[symbol] = Book()
    with durable.change("A") as state:
        state["A"].entries.append(1)
    # B and C were not written again: what a change costs does not grow with the other parts
    assert part_generations(store_url, "markets") == {"A": 4, "B": 2, "C": 3}
    with durable.change("B"):  # nothing changed: nothing written
        pass
    assert durable.generation == 4 and StateStore(store_url, "markets").generation() == 4
    assert durable.state is markets
    assert entries(KeyedDurableState(StateStore(store_url, "markets"), 1)) == {"A": [1], "B": [], "C": []}


def test_a_refused_keyed_change_undoes_its_parts_and_a_part_it_did_not_name_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = FlakyStore(url, "markets")
    durable = KeyedDurableState(store, 1)
    with durable.change("A") as state:
        state["A"] = Book()
    a = durable.state["A"]
    with pytest.raises(ValueError), durable.change("A") as state:  # refused half-way (a 422)
        state["A"].entries.append(2)
        raise ValueError("refused")
    assert entries(durable) == {"A": []}
    store.fail = True
    with pytest.raises(StateStoreError, match="did not take the change"), durable.change("A", "B") as state:
        state["A"].entries.append(3)
        state["B"] = Book()
    assert entries(durable) == {"A": []}
    store.fail = False
    # a part added without being named would live in memory only: refused, and nothing of the change stays
    with pytest.raises(StateStoreError, match=r"added parts it did not name \['C'\]"), \
            durable.change("A") as state:
        state["A"].entries.append(4)
        state["C"] = Book()
    with pytest.raises(StateStoreError, match=r"removed parts \['A'\]"), durable.change("B") as state:
        del state["A"]
    assert entries(durable) == {"A": []} and durable.state["A"] is not a  # restored from the saved copy
    assert entries(KeyedDurableState(StateStore(url, "markets"), 1)) == {"A": []}


class Ledger:
    """A part whose history is a PartMap: the ledger pickles without its entries once bound."""

    def __init__(self):
        self.total = 0
        self.entries = PartMap()


def test_a_part_map_keeps_its_items_as_parts_and_a_change_saves_those_it_handed_out(store_url):
    def opened():
        durable = KeyedDurableState(StateStore(store_url, "ledgers"), 1)

        def bind():
            for key, ledger in list(durable.state.items()):
                if isinstance(ledger, Ledger):
                    durable.bind(ledger.entries, key + "/")
        durable.on_load = bind
        bind()
        return durable

    durable = opened()
    ledger = Ledger()
    ledger.entries["e1"] = [1]  # unbound: a plain dict, which binding empties into the state
    with durable.change("L") as state:
        state["L"] = ledger
        durable.bind(ledger.entries, "L/")
    assert part_generations(store_url, "ledgers") == {"L": 1, "L/e1": 1}
    with durable.change("L") as state:
        state["L"].entries["e2"] = []
        state["L"].total += 1
    with durable.change("L") as state:  # an item changed in place, reached through the map: saved, alone
        state["L"].entries["e2"].append(7)
    assert part_generations(store_url, "ledgers") == {"L": 2, "L/e1": 1, "L/e2": 3}
    assert len(pickle.dumps(durable.state["L"])) < 200 and sorted(ledger.entries) == ["e1", "e2"]
    with pytest.raises(ValueError), durable.change("L") as state:  # refused: the items it touched are undone
        state["L"].entries["e1"].append(2)
        state["L"].entries["e3"] = [3]
        raise ValueError("refused")
    with pytest.raises(StateStoreError, match=r"removed parts \['L/e1'\]"), durable.change("L") as state:
        del state["L"].entries["e1"]
    assert dict(durable.state["L"].entries) == {"e1": [1], "e2": [7]} and "e3" not in durable.state["L"].entries
    again = opened().state["L"]  # another process: the ledger and its entries, bound on load
    assert (again.total, dict(again.entries)) == (1, {"e1": [1], "e2": [7]})
    loose = pickle.loads(pickle.dumps(durable.state["L"]))  # loaded but never bound: its items are elsewhere
    with pytest.raises(StateStoreError, match="before it was bound"):
        loose.entries["e1"]


def test_keyed_processes_see_each_others_parts_and_lose_none(store_url):
    a = KeyedDurableState(StateStore(store_url, "markets"), 1)
    b = KeyedDurableState(StateStore(store_url, "markets"), 1)
    with a.change("X", "Y") as state:
        state["X"], state["Y"] = Book(), Book()
    with b.lock:
        assert entries(b) == {"X": [], "Y": []}
    y_in_b = b.state["Y"]
    with a.change("X") as state:
        state["X"].entries.append(1)
    with b.change("Y") as state:  # b first loads a's X (only X: its Y is the object it had), then changes Y
        assert state["X"].entries == [1] and state["Y"] is y_in_b
        state["Y"].entries.append(2)
    with a.lock:
        assert entries(a) == {"X": [1], "Y": [2]}
    b.refresh = lambda: None  # b does not look before it changes: the race the compare-and-set is for
    with a.change("X") as state:
        state["X"].entries.append(3)
    with b.change("Y") as state:  # a wrote X only: b's change to Y is saved on top of it, and b now has a's X
        state["Y"].entries.append(4)
    assert entries(b) == {"X": [1, 3], "Y": [2, 4]}
    with a.change("X") as state:
        state["X"].entries.append(5)
    with pytest.raises(StateStoreError, match="changed in another process"), b.change("X") as state:
        state["X"].entries.append(6)  # a wrote the part b changes: refused and undone
    assert entries(b) == {"X": [1, 3], "Y": [2, 4]}  # undone: X as b last saw it
    del b.refresh  # b looks again: a's X
    with b.lock:
        assert entries(b) == {"X": [1, 3, 5], "Y": [2, 4]}
    assert entries(KeyedDurableState(StateStore(store_url, "markets"), 1)) == {"X": [1, 3, 5], "Y": [2, 4]}


def test_keyed_writers_in_parallel_lose_no_change(store_url):
    """Two processes changing their own parts at once: every change is kept (a save that loses the race is saved
    again on top of the other's parts; one that still fails after the rebases is retried here)."""
    durables = [KeyedDurableState(StateStore(store_url, "markets"), 1) for _ in range(2)]
    for i, d in enumerate(durables):
        with d.change(f"P{i}") as state:
            state[f"P{i}"] = Book()

    def write(i):
        d, done = durables[i], 0
        while done < 25:
            try:
                with d.change(f"P{i}") as state:
                    state[f"P{i}"].entries.append(done)
                done += 1
            except StateStoreError:
                pass

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert entries(KeyedDurableState(StateStore(store_url, "markets"), 1)) == {
        "P0": list(range(25)), "P1": list(range(25))}


def test_a_whole_state_copy_is_upgraded_to_parts_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    whole = DurableState(StateStore(url, "markets"), dict, format_version=1)
    with whole.change() as state:
        state["old"] = {"A": [1], "B": [2]}
    calls = []

    def upgrade(fmt, data):
        calls.append(fmt)
        return dict(pickle.loads(data)["old"])

    keyed = KeyedDurableState(StateStore(url, "markets"), 2, upgrade=upgrade)
    assert keyed.state == {"A": [1], "B": [2]} and calls == [1]
    assert KeyedDurableState(StateStore(url, "markets"), 2, upgrade=upgrade).state == {"A": [1], "B": [2]}
    assert calls == [1]  # stored as parts: not upgraded again
    with pytest.raises(StateStoreError, match="holds format 2, this code reads format 1"):
        DurableState(StateStore(url, "markets"), dict, format_version=1)  # the old code refuses the new copy
    with pytest.raises(StateStoreError, match="holds format 2, this code reads format 3"):
        KeyedDurableState(StateStore(url, "markets"), 3, upgrade=upgrade)  # parts in another format: no upgrade
