"""DurableState: a change is saved before it counts; a failed change or save leaves memory as the store has it."""

import pytest

from services.common.state_store import DurableState, StateStore, StateStoreError
from tests.services.stores import FlakyStore


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
