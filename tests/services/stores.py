"""A state store whose saves fail while ``fail`` is set: the database went away; and what a keyed store holds
(shared by the services' tests)."""

from services.common.state_store import StateStore


class FlakyStore(StateStore):
    fail = False

    def save(self, *args):
        if self.fail:
            raise ConnectionError("database down")
        return super().save(*args)

    def save_parts(self, *args):
        if self.fail:
            raise ConnectionError("database down")
        return super().save_parts(*args)


def part_generations(url: str, name: str | None = None) -> dict[str, int]:
    """Each part's key and the generation of the save that last wrote it (of every name, or of ``name``)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    query = "SELECT key, generation FROM service_state_parts" + (" WHERE name = :n" if name else "")
    with engine.connect() as conn:
        found = dict(conn.execute(sa.text(query), {"n": name} if name else {}).all())
    engine.dispose()
    return found
