"""Durable state for services whose domain core lives in memory (governance, derivatives).

The whole domain state is saved after every change, in the same request, before the answer: a restart loads
what the last answered change left. A change the store does not take is undone in memory too (the state is
restored from the last saved copy), so memory never runs ahead of the store. SQLite locally, Postgres in
production (a SQLAlchemy URL).

Several processes may share one store row (``platformq serve`` and the in-process services of Dagster runs on one
home, or several API workers): every copy carries a generation; a process reloads the stored copy when it is
newer before it reads or changes anything, and saves only over the generation it changed (compare and set), so
no process overwrites a change it has not seen. A save that loses that race is undone and refused (try again).

The state is pickled: it is read back only from this store, which the operator controls (like the trading
journal); the stored copy carries a format version, and a copy written by another version is refused at start-up
instead of being loaded into classes that changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import pickle
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, Callable, Iterator


class StateStoreError(Exception):
    """The store could not take a change (the change was undone), or holds a copy this code cannot load."""


class StateStore:
    def __init__(self, url: str, name: str):
        import sqlalchemy as sa

        self.name = name
        self._engine = sa.create_engine(url, future=True)
        meta = sa.MetaData()
        self._table = sa.Table(
            "service_state", meta,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("format", sa.Integer, nullable=False),
            sa.Column("generation", sa.Integer, nullable=False),
            sa.Column("state", sa.LargeBinary, nullable=False),
            sa.Column("saved_at", sa.String(40), nullable=False),
        )
        # A keyed state's parts (KeyedDurableState): the row above is then their header, whose generation counts
        # every save of the name; a part carries the generation of the save that last wrote it.
        self._parts = sa.Table(
            "service_state_parts", meta,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("key", sa.Text, primary_key=True),  # a contract symbol, a tenant id (any length)
            sa.Column("generation", sa.Integer, nullable=False),
            sa.Column("state", sa.LargeBinary, nullable=False),
        )
        meta.create_all(self._engine)

    def generation(self) -> int:
        """The stored copy's generation (0: nothing stored yet)."""
        import sqlalchemy as sa

        t = self._table
        with self._engine.connect() as conn:
            found = conn.execute(sa.select(t.c.generation).where(t.c.name == self.name)).scalar()
        return int(found) if found is not None else 0

    def load(self) -> tuple[int, int, bytes] | None:
        """(format, generation, pickled state) of the stored copy, or None."""
        import sqlalchemy as sa

        t = self._table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.c.format, t.c.generation, t.c.state).where(t.c.name == self.name)).first()
        return (int(row[0]), int(row[1]), bytes(row[2])) if row is not None else None

    def save(self, format_version: int, data: bytes, generation: int) -> bool:
        """Store ``data`` as generation ``generation + 1`` if the stored copy is still ``generation``; False when
        another process saved meanwhile (nothing is written)."""
        import sqlalchemy as sa

        t = self._table
        values = {"format": format_version, "state": data, "generation": generation + 1,
                  "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")}
        with self._engine.begin() as conn:
            if generation == 0:
                try:
                    conn.execute(t.insert().values(name=self.name, **values))
                except sa.exc.IntegrityError:  # another process stored the first copy
                    return False
                return True
            done = conn.execute(sa.update(t).where(t.c.name == self.name, t.c.generation == generation)
                                .values(**values))
            return done.rowcount == 1

    def load_parts(self, since: int = 0) -> tuple[int, int, list[tuple[str, bytes]]] | None:
        """(format, generation, [(key, pickled part)]) of the parts saved after generation ``since``, or None.

        The header is read before the parts: a part saved in between is read again at the next refresh, never
        missed (reading them the other way round could record a generation whose parts were not read)."""
        import sqlalchemy as sa

        t, p = self._table, self._parts
        with self._engine.connect() as conn:
            header = conn.execute(sa.select(t.c.format, t.c.generation).where(t.c.name == self.name)).first()
            if header is None:
                return None
            rows = conn.execute(sa.select(p.c.key, p.c.state).where(p.c.name == self.name,
                                                                     p.c.generation > since)).all()
        return int(header[0]), int(header[1]), [(str(k), bytes(v)) for k, v in rows]

    def save_parts(self, format_version: int, parts: dict[str, bytes], generation: int,
                   remove: tuple[str, ...] = ()) -> bool:
        """Write ``parts`` as generation ``generation + 1`` if the header is still at ``generation`` (compare and
        set over the whole name, as :meth:`save`), in one transaction; False when another process saved meanwhile.
        Parts not named are not touched, so the cost of a save is that of the parts it writes; the parts named in
        ``remove`` are deleted (an upgrade whose new layout has no such part)."""
        import sqlalchemy as sa

        t, p = self._table, self._parts
        header = {"format": format_version, "state": b"", "generation": generation + 1,
                  "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")}
        with self._engine.begin() as conn:
            if generation == 0:
                try:
                    conn.execute(t.insert().values(name=self.name, **header))
                except sa.exc.IntegrityError:
                    return False
            elif conn.execute(sa.update(t).where(t.c.name == self.name, t.c.generation == generation)
                              .values(**header)).rowcount != 1:
                return False
            # the header's row is now locked by this transaction: no other save of the name runs until it ends
            for key in remove:
                conn.execute(sa.delete(p).where(p.c.name == self.name, p.c.key == key))
            for key, data in parts.items():
                values = {"generation": generation + 1, "state": data}
                if conn.execute(sa.update(p).where(p.c.name == self.name, p.c.key == key)
                                .values(**values)).rowcount == 0:
                    conn.execute(p.insert().values(name=self.name, key=key, **values))
        return True

    def close(self) -> None:
        self._engine.dispose()


class _RefreshingLock:
    """The state's lock: whoever takes it first (not re-entrantly) sees the latest stored copy."""

    def __init__(self, durable: "DurableState"):
        self._lock = threading.RLock()
        self._durable = durable
        self._depth = threading.local()

    def __enter__(self):
        self._lock.acquire()
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        if depth == 0:
            try:
                self._durable.refresh()
            except StateStoreError:
                self._depth.n -= 1
                self._lock.release()
                raise
            except Exception:  # the store is unreachable: reads go on from memory; a change then fails to save
                pass
        return self

    def __exit__(self, *exc):
        self._depth.n -= 1
        self._lock.release()
        return False


def _format_error(name: str, found: int, reads: int) -> StateStoreError:
    return StateStoreError(f"the {name} state store holds format {found}, this code reads format {reads}: start it "
                           "with the version that wrote it")


def _save_or_undo(durable, save: Callable[[], bool], restore: Callable[[], None]) -> None:
    """Save a change (``save`` is False when another process saved first); when the store fails or the race is
    lost, put memory back as stored (``restore``; after a lost race, then load the other copy) and refuse."""
    try:
        saved = save()
    except Exception as exc:
        restore()
        raise StateStoreError(f"the {durable.store.name} state store did not take the change "
                              f"({type(exc).__name__}); nothing was changed") from exc
    if not saved:
        restore()
        try:
            durable.refresh()
        except Exception:
            pass
        raise StateStoreError(f"the {durable.store.name} state changed in another process meanwhile; "
                              "nothing was changed, try again")
    durable.generation += 1


class DurableState:
    """A service's domain state (a dict or an object), saved to ``store`` after each :meth:`change`.

    Code that changes the state does so inside ``with durable.change():``, and code that reads it inside
    ``with durable.lock:`` (both see another process's newer copy first). The state object keeps its identity (a
    reload or a failed change replaces its contents in place), so the app may hold references to it;
    ``on_load`` is called after each such replacement (to re-attach what is not saved, like a clock).
    """

    def __init__(self, store: StateStore | None, initial: Callable[[], Any], format_version: int,
                 on_load: Callable[[], None] | None = None):
        self.store, self.format_version, self.on_load = store, format_version, on_load
        self.lock = _RefreshingLock(self)
        loaded = store.load() if store is not None else None
        self._check_format(loaded)
        self.state = pickle.loads(loaded[2]) if loaded is not None else initial()
        self.generation = loaded[1] if loaded is not None else 0
        self._saved = loaded[2] if loaded is not None else pickle.dumps(self.state)

    def _check_format(self, loaded) -> None:
        if loaded is not None and loaded[0] != self.format_version:
            raise _format_error(self.store.name, loaded[0], self.format_version)

    def _restore(self) -> None:
        saved = pickle.loads(self._saved)
        if isinstance(self.state, dict):
            self.state.clear()
            self.state.update(saved)
        else:
            self.state.__dict__.clear()
            self.state.__dict__.update(saved.__dict__)
        if self.on_load is not None:
            self.on_load()

    def refresh(self) -> None:
        """Load the stored copy in place when another process saved a newer one."""
        if self.store is None or self.store.generation() == self.generation:
            return
        loaded = self.store.load()
        self._check_format(loaded)
        self._saved, self.generation = loaded[2], loaded[1]
        self._restore()

    @contextlib.contextmanager
    def change(self) -> Iterator[Any]:
        """Serialises changes; saves the state after the block, or restores it when the block or the save fails."""
        with self.lock:
            try:
                yield self.state
            except BaseException:
                self._restore()  # a change refused half-way leaves nothing behind either
                raise
            data = pickle.dumps(self.state)
            if data == self._saved:
                return
            if self.store is not None:
                _save_or_undo(self, lambda: self.store.save(self.format_version, data, self.generation),
                              self._restore)
            self._saved = data


class KeyedDurableState:
    """A service's domain state as a dict of independent parts (one per contract, one per tenant), each part saved
    in a row of its own: a change names the parts it may change and saves only those that did, so what a request
    costs does not grow with the history the other parts hold (a whole-state save pickled and wrote every
    contract ever listed on every trade).

    Otherwise as :class:`DurableState`: ``with durable.change(key, ...):`` saves before the answer and undoes the
    named parts in memory when the block or the save fails; ``with durable.lock:`` for reads; both first load the
    parts another process saved since (one query for the header when nothing changed); saves are compare-and-set
    over the whole name, and a save that finds another process saved first takes that process's parts and saves
    again on top of them, unless they include a part the change named (then it is refused and undone, as a whole
    state's is). A change that adds a part it did not name is refused (it would never be saved). ``state``
    is the dict given (it keeps its identity); a stored copy replaces its contents, and contents given with an
    empty store are saved at once. ``upgrade(format, pickled)`` turns a whole-state copy written by an older
    version (one :class:`DurableState` row) into parts, and ``upgrade_parts(format, {key: pickled})`` the parts
    an older version wrote in another layout; the result is stored in their place (a part it has no more is
    deleted).

    A part may hold :class:`PartMap` s (bound with :meth:`bind`): their items are parts of their own, and a
    change saves each item it looked at (read or wrote) that changed, without naming them.
    """

    REBASES = 5  # saves on top of other processes' parts before giving up (each is one lost race)

    def __init__(self, store: StateStore | None, format_version: int, state: dict | None = None,
                 on_load: Callable[[], None] | None = None,
                 upgrade: Callable[[int, bytes], dict[str, Any]] | None = None,
                 upgrade_parts: Callable[[int, dict[str, bytes]], dict[str, Any]] | None = None):
        self.store, self.format_version, self.on_load = store, format_version, on_load
        self.lock = _RefreshingLock(self)
        self.state: dict = state if state is not None else {}
        self._saved: dict[str, bytes] = {}
        self._touched: set[str] | None = None  # the parts a PartMap handed out during the open change
        self.generation = 0
        if store is None:
            self._saved = {k: pickle.dumps(v) for k, v in self.state.items()}
            return
        header = store.load()
        if header is not None and header[0] != format_version:
            if header[2] and upgrade is not None:  # a whole-state copy
                old_keys, new = (), upgrade(header[0], header[2])
            elif not header[2] and upgrade_parts is not None:  # parts in an older layout
                old = dict(store.load_parts(0)[2])
                new = upgrade_parts(header[0], old)
                old_keys = tuple(k for k in old if k not in new)
            else:
                raise _format_error(store.name, header[0], format_version)
            parts = {k: pickle.dumps(v) for k, v in new.items()}
            # False: another process upgraded it first
            store.save_parts(format_version, parts, header[1], remove=old_keys)
            header = store.load()
        if header is None:
            initial = {k: pickle.dumps(v) for k, v in self.state.items()}
            if initial and store.save_parts(format_version, initial, 0):
                self._saved, self.generation = initial, 1
                return
        self.state.clear()
        self._apply(store.load_parts(0))

    def _apply(self, loaded) -> None:
        if loaded is None:
            return
        fmt, generation, parts = loaded
        if fmt != self.format_version:
            raise _format_error(self.store.name, fmt, self.format_version)
        for key, data in parts:
            self.state[key] = pickle.loads(data)
            self._saved[key] = data
        self.generation = generation
        if parts and self.on_load is not None:
            self.on_load()

    def refresh(self) -> None:
        """Load the parts another process saved since this one last saw the store."""
        if self.store is None or self.store.generation() == self.generation:
            return
        self._apply(self.store.load_parts(self.generation))

    def _restore(self, keys) -> None:
        """The named parts (and any added or removed) as last saved."""
        for key in [k for k in self.state if k not in self._saved]:
            del self.state[key]
        for key in {*keys, *(k for k in self._saved if k not in self.state)}:
            if key in self._saved:
                self.state[key] = pickle.loads(self._saved[key])
        if self.on_load is not None:
            self.on_load()

    def touch(self, key: str) -> None:
        """A :class:`PartMap` handed out part ``key``: the open change (if any) saves it if it changed."""
        if self._touched is not None:
            self._touched.add(key)

    def bind(self, parts: "PartMap", prefix: str) -> None:
        """Keep ``parts``' items in this state, each a part of its own under ``prefix`` + its key."""
        parts.bind(self.state, prefix, self.touch)

    @contextlib.contextmanager
    def change(self, *keys: str) -> Iterator[dict]:
        """Serialises changes; saves the named parts (and those bound PartMaps handed out) that changed after
        the block, or restores them when the block or the save fails."""
        with self.lock:
            outer, self._touched = self._touched, set()
            try:
                yield self.state
            except BaseException:
                self._restore({*keys, *self._touched})
                raise
            finally:
                touched, self._touched = self._touched, outer
            keys = (*keys, *sorted(touched - set(keys)))
            unnamed = sorted(k for k in self.state if k not in self._saved and k not in keys)
            missing = sorted(k for k in self._saved if k not in self.state)
            if unnamed or missing:
                self._restore(keys)
                raise StateStoreError(f"a change to the {self.store.name if self.store else 'in-memory'} state "
                                      f"added parts it did not name {unnamed} or removed parts {missing}; "
                                      "nothing was changed")
            changed = {}
            for key in keys:
                if key in self.state:
                    data = pickle.dumps(self.state[key])
                    if data != self._saved.get(key):
                        changed[key] = data
            if not changed:
                return
            if self.store is not None:
                _save_or_undo(self, lambda: self._save_on_top(changed, keys), lambda: self._restore(keys))
            self._saved.update(changed)

    def _save_on_top(self, changed: dict[str, bytes], keys) -> bool:
        """Save ``changed``; when another process saved meanwhile, but none of the parts this change named (it
        read nothing they wrote), take their parts and save again on top of them: changes to different contracts
        from different processes do not refuse each other. False when they wrote a named part (a real conflict)."""
        for _ in range(self.REBASES):
            if self.store.save_parts(self.format_version, changed, self.generation):
                return True
            loaded = self.store.load_parts(self.generation)
            if loaded is None or loaded[0] != self.format_version or any(key in keys for key, _ in loaded[2]):
                return False
            self._apply(loaded)  # only parts this change did not name
        return False


class PartMap(MutableMapping):
    """A dict whose items are parts of a :class:`KeyedDurableState` once bound to it (``durable.bind(map,
    prefix)``): each item is saved in its own row, so a change to one item does not write the others, and the
    object holding the map (itself a part) pickles without them. A change saves every item it was handed (read or
    written) that changed; code must reach items through the map (not keep them across changes).

    Unbound (a new map, or an object used without a store) it is a plain dict and pickles its items; binding
    moves them into the state. A bound map pickles as a placeholder: loaded again it refuses to be used until it
    is bound (its items are in the store's other parts, not in it).
    """

    def __init__(self, items: Mapping | None = None):
        self._own: dict | None = dict(items or {})
        self._parts: dict | None = None
        self._prefix = ""
        self._touch: Callable[[str], None] | None = None

    def bind(self, parts: dict, prefix: str, touch: Callable[[str], None] | None = None) -> None:
        """Keep the items in ``parts`` under ``prefix`` + key (a :class:`KeyedDurableState`'s ``state``, with its
        ``touch``; or a dict of parts being built); items this map held unbound move there."""
        touch = touch if touch is not None else (lambda key: None)
        if self._own:
            for key, value in self._own.items():
                parts[prefix + key] = value
                touch(prefix + key)
        self._own, self._parts, self._prefix, self._touch = None, parts, prefix, touch

    def _where(self) -> dict:
        if self._own is not None:
            return self._own
        if self._parts is None:
            raise StateStoreError("a PartMap loaded from a store is used before it was bound to its state")
        return self._parts

    def __getitem__(self, key: str) -> Any:
        if self._own is not None:
            return self._own[key]
        value = self._where()[self._prefix + key]
        self._touch(self._prefix + key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if self._own is not None:
            self._own[key] = value
            return
        self._where()[self._prefix + key] = value
        self._touch(self._prefix + key)

    def __delitem__(self, key: str) -> None:
        if self._own is not None:
            del self._own[key]
            return
        del self._where()[self._prefix + key]
        self._touch(self._prefix + key)

    def __contains__(self, key: object) -> bool:
        if self._own is not None:
            return key in self._own
        return isinstance(key, str) and self._prefix + key in self._where()

    def __iter__(self) -> Iterator[str]:
        if self._own is not None:
            return iter(list(self._own))
        n = len(self._prefix)
        return iter([k[n:] for k in self._where() if k.startswith(self._prefix)])

    def __len__(self) -> int:
        if self._own is not None:
            return len(self._own)
        return sum(1 for k in self._where() if k.startswith(self._prefix))

    def __getstate__(self) -> dict:
        return {"items": self._own}  # None when bound: the items are parts of their own

    def __setstate__(self, state: dict) -> None:
        self._own, self._parts, self._prefix, self._touch = state["items"], None, "", None

    def __repr__(self) -> str:
        where = "unbound" if self._own is not None else f"bound at {self._prefix!r}" if self._parts else "detached"
        return f"PartMap({where}, {len(self) if self._own is not None or self._parts is not None else '?'} items)"
