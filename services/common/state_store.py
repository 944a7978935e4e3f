"""Durable state for services whose domain core lives in memory (governance, derivatives).

The whole domain state is saved after every change, in the same request, before the answer: a restart loads
what the last answered change left. A change the store does not take is undone in memory too (the state is
restored from the last saved copy), so memory never runs ahead of the store. SQLite locally, Postgres in
production (a SQLAlchemy URL). One service process per store row.

The state is pickled: it is read back only from this store, which the operator controls (like the trading
journal); the stored copy carries a format version, and a copy written by another version is refused at start-up
instead of being loaded into classes that changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import pickle
import threading
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
            sa.Column("state", sa.LargeBinary, nullable=False),
            sa.Column("saved_at", sa.String(40), nullable=False),
        )
        meta.create_all(self._engine)

    def load(self) -> tuple[int, bytes] | None:
        import sqlalchemy as sa

        t = self._table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.c.format, t.c.state).where(t.c.name == self.name)).first()
        return (int(row[0]), bytes(row[1])) if row is not None else None

    def save(self, format_version: int, data: bytes) -> None:
        import sqlalchemy as sa

        t = self._table
        values = {"format": format_version, "state": data,
                  "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")}
        with self._engine.begin() as conn:
            done = conn.execute(sa.update(t).where(t.c.name == self.name).values(**values))
            if done.rowcount == 0:
                conn.execute(t.insert().values(name=self.name, **values))

    def close(self) -> None:
        self._engine.dispose()


class DurableState:
    """A service's domain state (a dict or an object), saved to ``store`` after each :meth:`change`.

    Code that changes the state does so inside ``with durable.change():``; the state object keeps its identity
    (a failed change restores its contents in place), so the app may hold references to it.
    """

    def __init__(self, store: StateStore | None, initial: Callable[[], Any], format_version: int):
        self.store, self.format_version = store, format_version
        self.lock = threading.RLock()
        loaded = store.load() if store is not None else None
        if loaded is not None and loaded[0] != format_version:
            raise StateStoreError(f"the {store.name} state store holds format {loaded[0]}, this code reads "
                                  f"format {format_version}: start it with the version that wrote it")
        self.state = pickle.loads(loaded[1]) if loaded is not None else initial()
        self._saved = loaded[1] if loaded is not None else pickle.dumps(self.state)

    def _restore(self) -> None:
        saved = pickle.loads(self._saved)
        if isinstance(self.state, dict):
            self.state.clear()
            self.state.update(saved)
        else:
            self.state.__dict__.clear()
            self.state.__dict__.update(saved.__dict__)

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
                try:
                    self.store.save(self.format_version, data)
                except Exception as exc:
                    self._restore()
                    raise StateStoreError(f"the {self.store.name} state store did not take the change "
                                          f"({type(exc).__name__}); nothing was changed") from exc
            self._saved = data
