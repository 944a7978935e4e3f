"""Durable issuer state: which status-list index each tenant's credential holds, and whether it is revoked or
suspended.

The status lists a verifier reads are rebuilt from this at start-up, so a revocation outlives the process and
an index is never handed to a second credential. SQLite locally, Postgres in production (a SQLAlchemy URL).
One service process per store: the process keeps the lists in memory and writes each change here before
answering (a change that cannot be written is not made).
"""

from __future__ import annotations

import dataclasses
import datetime as dt


class IndexTaken(Exception):
    """The status-list index is already held by another of the tenant's credentials in the store."""


@dataclasses.dataclass(frozen=True)
class StoredStatus:
    tenant: str
    credential_id: str
    index: int
    revoked: bool
    suspended: bool


class CredentialStore:
    def __init__(self, url: str):
        import sqlalchemy as sa

        self._engine = sa.create_engine(url, future=True)
        meta = sa.MetaData()
        self._table = sa.Table(
            "credential_status", meta,
            sa.Column("tenant", sa.String(128), primary_key=True),
            sa.Column("credential_id", sa.Text, primary_key=True),
            sa.Column("list_index", sa.Integer, nullable=False),
            sa.Column("revoked", sa.Boolean, nullable=False, default=False),
            sa.Column("suspended", sa.Boolean, nullable=False, default=False),
            sa.Column("issued_at", sa.String(40), nullable=False),
            sa.UniqueConstraint("tenant", "list_index"),  # each tenant has its own status lists
        )
        meta.create_all(self._engine)

    def load(self) -> list[StoredStatus]:
        import sqlalchemy as sa

        t = self._table
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.tenant, t.c.credential_id, t.c.list_index, t.c.revoked,
                                          t.c.suspended).order_by(t.c.list_index)).all()
        return [StoredStatus(r[0], r[1], int(r[2]), bool(r[3]), bool(r[4])) for r in rows]

    def add(self, tenant: str, credential_id: str, index: int) -> None:
        """Record a newly issued credential; :class:`IndexTaken` when another of the tenant's credentials holds
        ``index`` (another process issued it), ``KeyError`` when the tenant already has ``credential_id``."""
        import sqlalchemy as sa

        t = self._table
        with self._engine.begin() as conn:
            if conn.execute(sa.select(t.c.list_index).where(t.c.tenant == tenant,
                                                            t.c.list_index == index)).first() is not None:
                raise IndexTaken(index)
            if conn.execute(sa.select(t.c.list_index).where(
                    t.c.tenant == tenant, t.c.credential_id == credential_id)).first() is not None:
                raise KeyError(credential_id)
            try:
                conn.execute(t.insert().values(
                    tenant=tenant, credential_id=credential_id, list_index=index, revoked=False, suspended=False,
                    issued_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")))
            except sa.exc.IntegrityError:  # a concurrent writer took the index or the id between the reads
                raise IndexTaken(index) from None

    def set_status(self, tenant: str, credential_id: str, revoked: bool, suspended: bool) -> None:
        import sqlalchemy as sa

        t = self._table
        with self._engine.begin() as conn:
            done = conn.execute(sa.update(t).where(t.c.tenant == tenant, t.c.credential_id == credential_id)
                                .values(revoked=revoked, suspended=suspended))
            if done.rowcount != 1:
                raise KeyError(credential_id)

    def close(self) -> None:
        self._engine.dispose()
