"""Journal stand-ins for the trading tests."""

from services.trading.exchange import MemoryJournal


class Down(MemoryJournal):
    """A journal whose store does not take writes while ``down``."""

    down = False

    def append(self, command):
        if self.down:
            raise OSError("database is locked")
        return super().append(command)

    def append_many(self, commands):
        if self.down:
            raise OSError("database is locked")
        return super().append_many(commands)
