"""A state store whose saves fail while ``fail`` is set: the database went away (shared by the services' tests)."""

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
