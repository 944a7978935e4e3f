"""Durable issuer state: which status-list index each tenant's credential holds, and whether it is revoked or
suspended.

The store is the source of truth, shared by every service process on it: a process writes each change here
before answering (a change that cannot be written is not made), reads a credential's stored status before
changing it, and rebuilds a status list from here before serving it, so a process started earlier never serves
or writes back a view older than another process's change. A revocation is monotonic in the write itself and
outlives every process; an index is never handed to a second credential. SQLite locally, Postgres in production
(a SQLAlchemy URL).
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

    def get(self, tenant: str, credential_id: str) -> StoredStatus | None:
        """The credential's stored status (whichever process issued or changed it); ``None`` when never issued."""
        import sqlalchemy as sa

        t = self._table
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.c.list_index, t.c.revoked, t.c.suspended).where(
                t.c.tenant == tenant, t.c.credential_id == credential_id)).first()
        return None if row is None else StoredStatus(tenant, credential_id, int(row[0]), bool(row[1]), bool(row[2]))

    def indexes_set(self, tenant: str, purpose: str) -> list[int]:
        """The tenant's status-list indexes whose ``purpose`` bit ("revocation" / "suspension") is set."""
        import sqlalchemy as sa

        t = self._table
        flag = {"revocation": t.c.revoked, "suspension": t.c.suspended}[purpose]
        with self._engine.connect() as conn:
            return [int(i) for i in conn.execute(sa.select(t.c.list_index).where(t.c.tenant == tenant, flag)).scalars()]

    def indexes(self, tenant: str) -> list[int]:
        """Every status-list index the tenant's credentials hold (whichever process issued them)."""
        import sqlalchemy as sa

        t = self._table
        with self._engine.connect() as conn:
            return [int(i) for i in conn.execute(sa.select(t.c.list_index).where(t.c.tenant == tenant)).scalars()]

    def tenants(self) -> list[str]:
        """Every tenant that issued a credential (through any process)."""
        import sqlalchemy as sa

        with self._engine.connect() as conn:
            return list(conn.execute(sa.select(self._table.c.tenant).distinct()).scalars())

    def set_status(self, tenant: str, credential_id: str, revoked: bool, suspended: bool) -> None:
        """Store the credential's status. ``revoked`` is OR-ed into the row in the same statement: a process whose
        view predates another's revocation cannot write it back to False."""
        import sqlalchemy as sa

        t = self._table
        with self._engine.begin() as conn:
            done = conn.execute(sa.update(t).where(t.c.tenant == tenant, t.c.credential_id == credential_id)
                                .values(revoked=sa.or_(t.c.revoked, sa.literal(revoked, sa.Boolean)),
                                        suspended=suspended))
            if done.rowcount != 1:
                raise KeyError(credential_id)

    def close(self) -> None:
        self._engine.dispose()
