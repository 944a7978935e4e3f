"""The local online store: Feast's SQLite store, but an entity's stored row is replaced only by a newer one.

Feast's Redis store (production) reads each entity's stored event timestamp before writing and skips a row
that is not newer (``new <= stored``), also against earlier rows of the same batch. Feast's SQLite store
overwrites unconditionally: materialising an older day after a newer one (a backfill, a retry, a re-run)
rolled local online scoring back to the old day's features. This store gives SQLite Redis's rule, so the
local platform behaves as production does. ``resources/feast.py`` configures it; Feast finds the store
class from the config class (same module, name without ``Config``).

Imports Feast at module level: only Feast imports this module (when it builds the online store).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Literal

from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.utils import make_tzaware

STORE_TYPE = "features.sqlite_online.NewerWinsSqliteOnlineStore"
_READ_CHUNK = 500  # entity keys per stored-timestamp lookup (SQLite limits a statement's parameters)


class NewerWinsSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["features.sqlite_online.NewerWinsSqliteOnlineStore"] = STORE_TYPE  # type: ignore[assignment]


class NewerWinsSqliteOnlineStore(SqliteOnlineStore):
    def online_write_batch(self, config, table, data: list, progress: Callable[[int], Any] | None) -> None:
        if not data:
            return super().online_write_batch(config, table, data, progress)
        stored: list[dt.datetime | None] = []
        keys = [entity_key for entity_key, *_ in data]
        for start in range(0, len(keys), _READ_CHUNK):
            stored.extend(ts for ts, _ in self.online_read(config, table, keys[start:start + _READ_CHUNK]))
        latest: dict[bytes, dt.datetime] = {}  # newest event time per entity: stored, or queued in this batch
        newer = []
        skipped = 0
        for row, stored_ts in zip(data, stored):
            entity_key, _, event_ts, _ = row
            key = entity_key.SerializeToString(deterministic=True)
            event_ts = make_tzaware(event_ts)
            seen = latest.get(key) or (make_tzaware(stored_ts) if stored_ts is not None else None)
            if seen is not None and event_ts <= seen:  # Redis's rule: an older or equal row does not replace
                skipped += 1
                continue
            latest[key] = event_ts
            newer.append(row)
        if newer:
            super().online_write_batch(config, table, newer, progress)
        if progress and skipped:
            progress(skipped)
