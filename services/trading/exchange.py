"""The exchange: matching engine + accounts, balances, fees, copy trading, durable journal.

Pure domain code (no HTTP, no Dagster). Every state-changing command is
validated, applied, then appended to the journal store (undone if it fails while
applied or the store does not take it: the journal holds exactly what was
applied); restoring from the journal replays the same commands and reaches the
identical books, orders and balances. One process owns a journal (SqlJournal
refuses a write after another writer's, JournalConflict). Money is integer minor units (cents: one tick of price times one lot),
quantities integer lots.

Balances per account and asset (``USD`` and one asset per instrument):
``free`` can be used, ``locked`` backs open orders. A buy locks its worst-case
cost (limit price x open quantity + the larger of the maker and taker fee + one
unit per lot of rounding slack; what a fill below the limit saves is released at
once); a sell locks the lots. Fees (maker/taker, in basis points of notional, rounded
up) go to the venue. Conservation, per asset, holds after every command:
sum(free + locked) + fees collected = deposits - withdrawals.

An order may carry a client order id (FIX's ClOrdID): unique per account among the account's kept orders, it is in
the journalled command (a replay, and a snapshot, rebuild the index) and a placement repeating it answers the order
it placed instead of placing another (:meth:`Exchange.place`); the same id with other order fields is refused.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import re
import threading
import zlib
from typing import Callable, Iterator, NamedTuple, Protocol

from services.common import heap
from services.trading.engine import (BUY, FOK, GTC, IOC, SELL, MatchingEngine, Order, OrderStatus, RejectedOrder,
                                     RestingBooks)

CASH = "USD"
SIDES = {"BUY": BUY, "SELL": SELL}
TIFS = {"GTC": GTC, "IOC": IOC, "FOK": FOK}


class ExchangeError(ValueError):
    """A command the exchange refuses; ``status`` maps it to an HTTP status."""

    def __init__(self, message: str, status: int = 422, kind: str = "rejected"):
        super().__init__(message)
        self.status = status
        self.kind = kind


# What a journal replays to depends on the rules that applied its commands: copy sizing and the buy reserve
# changed in version 2; in version 3 a copy is an IOC limit at the leader's fill price (it was a market order, which
# could pay far more than the exposure cap was computed at) and copies go one level deep (the trades a copy order
# makes are not copied again: a leader's deep book of resting orders hit by copies made copies of copies without
# end). Each command records its rules and is replayed under them (SUPPORTED_RULES); a journal written under other
# rules is refused on restore, rather than replayed to other balances (or stopped half-way by a command the new
# state refuses).
RULES_VERSION = 3
SUPPORTED_RULES = (2, 3)


class JournalRulesError(ExchangeError):
    def __init__(self, found, seq: int):
        super().__init__(
            f"journal command {seq} was applied under exchange rules {found or 1}, this exchange replays rules "
            f"{', '.join(map(str, SUPPORTED_RULES))}: replaying it would not reach the same balances. Settle the "
            "venue with the version that wrote the journal (cancel orders, unfollow, withdraw) and start a new "
            "journal.", 409, "journal-rules")


class JournalUnavailable(ExchangeError):
    """The journal store did not take a command (or a batch): it was undone, nothing is applied; try again."""

    def __init__(self, message: str):
        super().__init__(message, 503, "journal-unavailable")


class JournalConflict(ExchangeError):
    """Another process wrote to this exchange's journal: this one's state is no longer the journal's, so it takes
    no more commands (one process owns a trading journal; a restart reads what the other wrote)."""

    def __init__(self, message: str):
        super().__init__(message, 503, "journal-conflict")


class NotFound(ExchangeError):
    def __init__(self, message: str):
        super().__init__(message, 404, "not-found")


# A client order id: what a client names its order with, to send the placement again after a lost answer (a
# timeout, a gateway's 502) without placing a second order. 1 to 64 visible ASCII characters (a UUID, or
# "GPUH30:quote:17"); unique per account among that account's kept orders (see HISTORY).
CLIENT_ORDER_ID = re.compile(r"^[\x21-\x7e]{1,64}$")


class ClientOrderIdReused(ExchangeError):
    """A placement names a client order id the account's kept orders hold with other order fields."""

    def __init__(self, client_order_id: str, order_id: int):
        super().__init__(f"client order id {client_order_id!r} names order {order_id}, placed with other order "
                         "fields: use a new id for a new order", 422, "client-order-id-reused")
        self.order_id = order_id


log = logging.getLogger("platformq.trading")


class JournalStore(Protocol):
    def append(self, command: dict) -> int: ...
    def append_many(self, commands: list[dict]) -> None: ...
    def load(self) -> list[dict]: ...
    def stream(self, after: int = 0) -> Iterator[dict]: ...  # the commands in order from the (after+1)-th
    # Optional (a journal without them never snapshots): a snapshot of the state after the first ``commands``
    # commands; the newest one, or None.
    # def save_snapshot(self, commands: int, data: bytes) -> None: ...
    # def latest_snapshot(self) -> tuple[int, bytes] | None: ...
    # def holds(self, commands: int) -> bool: ...  # the journal still holds the snapshot's commands


class MemoryJournal:
    def __init__(self):
        self.commands: list[dict] = []
        self.snapshots: list[tuple[int, bytes]] = []

    def append(self, command: dict) -> int:
        self.commands.append(command)
        return len(self.commands)

    def append_many(self, commands: list[dict]) -> None:
        self.commands.extend(commands)

    def load(self) -> list[dict]:
        return list(self.commands)

    def stream(self, after: int = 0) -> Iterator[dict]:
        return iter(self.commands[after:])

    def save_snapshot(self, commands: int, data: bytes) -> None:
        self.snapshots = [*self.snapshots[-1:], (commands, data)]

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        return self.snapshots[-1] if self.snapshots else None

    def holds(self, commands: int) -> bool:
        return len(self.commands) >= commands


def _seq_type():
    import sqlalchemy as sa

    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _sqlite_wal(dbapi_connection, _record) -> None:
    """The local (SQLite) journal in write-ahead-log mode: a commit is one sync of the log instead of the rollback
    journal's several (0.3 ms against 0.7 ms an append here), and as durable: synchronous stays FULL, so a command
    answered is on disk, whatever happens to the process or the machine after. Readers (a restore, the read-back
    of a lost reply) do not block the writer. (synchronous=NORMAL would save the sync, ~0.4 ms an order, at the
    price of the last answered commands on a power loss: not taken.)"""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


class SqlJournal:
    """Journal in a SQL database: SQLite locally, Postgres in production (SQLAlchemy URL).

    One process owns a journal. Each write names its sequence number: the one after the last command this
    journal object read (on restore) or wrote, inserted only if the journal holds nothing from there on (and the
    sequence number is the table's primary key). A write that finds another writer's command there raises
    :class:`JournalConflict` instead of appending a command the other process's state never saw. A write that
    fails is read back (its reply may be lost after the store committed it): its own commands found there are
    written, not another writer's."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self._last_seq = 0  # the seq of the last command read (stream) or written by this object
        # a write whose outcome is unknown (it failed and the journal could not be read after it): its first seq
        # and its texts, resolved by the next write
        self._in_doubt: tuple[int, list[str]] | None = None
        self._engine = sa.create_engine(url, future=True)
        if self._engine.dialect.name == "sqlite":
            sa.event.listen(self._engine, "connect", _sqlite_wal)
        meta = sa.MetaData()
        self._table = sa.Table(
            "exchange_journal", meta,
            # 64-bit: a 32-bit seq (Postgres's integer) ran out after 2.1 billion commands, ~25 days at 1,000 a
            # second; SQLite's INTEGER primary key is already 64-bit (and must stay INTEGER to be the rowid)
            sa.Column("seq", _seq_type(), primary_key=True, autoincrement=True),
            sa.Column("command", sa.Text, nullable=False),
        )
        # A snapshot: the state after the journal's first ``commands`` commands, the last of which is ``seq`` (its
        # text kept too: SQLite reuses the seqs of an emptied table, so the seq alone does not name the command).
        self._snapshots = sa.Table(
            "exchange_snapshot", meta,
            sa.Column("commands", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("last_command", sa.Text, nullable=False),
            sa.Column("data", sa.LargeBinary, nullable=False),
        )
        meta.create_all(self._engine)
        self._widen_seq()
        # one statement, compiled once (built per write, its cache key cost more than SQLite's commit)
        self._guarded = sa.text(
            "INSERT INTO exchange_journal (seq, command) SELECT :seq, :command "
            "WHERE NOT EXISTS (SELECT 1 FROM exchange_journal WHERE seq >= :seq)"
        ).bindparams(sa.bindparam("seq", type_=sa.BigInteger), sa.bindparam("command", type_=sa.Text))

    def _widen_seq(self) -> None:
        """A journal created with a 32-bit seq (before _seq_type) is widened in place on Postgres, once."""
        import sqlalchemy as sa

        if self._engine.dialect.name != "postgresql":
            return
        [seq] = [c for c in sa.inspect(self._engine).get_columns("exchange_journal") if c["name"] == "seq"]
        if isinstance(seq["type"], sa.BigInteger):
            return
        log.warning("trading: widening the journal's seq to bigint (a table rewrite, once)")
        with self._engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE exchange_journal ALTER COLUMN seq TYPE BIGINT"))

    def append(self, command: dict) -> int:
        self._write([command])
        return self._last_seq

    def append_many(self, commands: list[dict]) -> None:
        """One transaction for a whole batch: it is in the journal entirely or not at all."""
        if commands:
            self._write(commands)

    def _write(self, commands: list[dict]) -> None:
        first = self._last_seq + 1
        try:
            self._insert(commands)
        except JournalConflict:
            raise
        except Exception:
            # the store's reply was lost: the write may have committed all the same (Postgres committed, the
            # connection dropped before the answer). Read what the journal holds there, on another connection:
            # our commands there mean they are written (the command stays applied and is answered); nothing
            # there, that they are not (undone, journal-unavailable); no read, unknown until the next write
            texts = [json.dumps(c, sort_keys=True) for c in commands]
            found = self._found(first, len(texts))
            if found == texts:
                log.warning("trading: the journal's reply to commands %d..%d was lost, but they are written",
                            first, first + len(texts) - 1)
                self._in_doubt, self._last_seq = None, first + len(texts) - 1
                return
            self._in_doubt = (first, texts) if found is None else None
            raise

    def _insert(self, commands: list[dict]) -> None:
        import sqlalchemy as sa

        t, first = self._table, self._last_seq + 1
        texts = [json.dumps(c, sort_keys=True) for c in commands]
        try:
            with self._engine.begin() as conn:
                # the first command goes in only where the journal holds nothing from its seq on; the others follow
                # it in the same transaction (the primary key refuses a concurrent writer's same seqs)
                inserted = conn.execute(self._guarded, {"seq": first, "command": texts[0]}).rowcount == 1
                if inserted and len(texts) > 1:
                    conn.execute(t.insert(), [{"seq": first + i, "command": text}
                                              for i, text in enumerate(texts[1:], start=1)])
        except sa.exc.IntegrityError:
            inserted = False
        if not inserted:
            # what holds the seqs: our own commands (a write whose reply was lost, see _write), or another writer's
            found = self._found(first, len(texts))
            if found != texts:
                doubt, self._in_doubt = self._in_doubt, None
                if doubt is not None and found and doubt[0] == first and found == doubt[1][:len(found)]:
                    # an earlier write of this process, answered "not written" (journal-unavailable) when neither
                    # it nor the read after it came back, is in the journal after all: the live state lacks it
                    raise JournalConflict(
                        f"the trading journal holds commands from {first} on that this process answered as not "
                        "written (the journal's reply and the read after it were lost): this process's state is "
                        "not the journal's any more; restart it to read them")
                raise JournalConflict(
                    f"another process wrote to the trading journal after its command {first - 1}: this process's "
                    "state is not the journal's any more (one process owns a trading journal); restart it to read "
                    "what the other wrote")
        self._in_doubt = None
        self._last_seq = first + len(texts) - 1

    def _found(self, first: int, count: int, tries: int = 2) -> list[str] | None:
        """The journal's commands' texts from seq ``first`` on (at most ``count``), read on a fresh connection
        (a dropped one is discarded by the pool); None when the journal cannot be read."""
        import sqlalchemy as sa

        t = self._table
        query = sa.select(t.c.command).where(t.c.seq >= first).order_by(t.c.seq).limit(count)
        for _ in range(tries):
            try:
                with self._engine.connect() as conn:
                    return list(conn.execute(query).scalars())
            except Exception as exc:
                log.warning("trading: reading the journal after a failed write: %s: %s", type(exc).__name__, exc)
        return None

    def load(self) -> list[dict]:
        return list(self.stream())

    def stream(self, after: int = 0, batch: int = 1000) -> Iterator[dict]:
        """The commands in order from the ``after``+1-th, fetched ``batch`` rows at a time. A restart replays
        through this: the parsed journal is ~2x the state it replays to (a venue day: 16 MiB of commands for
        7 MiB of state), so holding all of it beside the state would triple a long-lived service's memory at
        every start. After a snapshot, the read starts past the snapshot's last command (by its seq)."""
        import sqlalchemy as sa

        t = self._table
        query = sa.select(t.c.seq, t.c.command).order_by(t.c.seq)
        with self._engine.connect() as conn:
            start = 0
            if after:
                last = conn.execute(sa.select(self._snapshots.c.seq).where(
                    self._snapshots.c.commands == after)).scalar()
                if last is not None:
                    query, start = query.where(t.c.seq > last), last
                else:
                    query = query.offset(after)
                    start = conn.execute(sa.select(t.c.seq).order_by(t.c.seq).offset(after - 1).limit(1)).scalar()
            self._last_seq = start or 0  # what this object has seen: its next write follows it
            rows = conn.execution_options(yield_per=batch).execute(query)
            for seq, text in rows:
                self._last_seq = seq
                yield json.loads(text)

    def save_snapshot(self, commands: int, data: bytes) -> None:
        """Keep this snapshot and the one before it (one transaction: a crash leaves the previous ones)."""
        import sqlalchemy as sa

        t = self._snapshots
        with self._engine.begin() as conn:
            # the exchange's last command is the last this object read or wrote (another writer's later commands
            # are not in the exchange's state; its next write will find them and stop it)
            last = conn.execute(sa.select(self._table.c.seq, self._table.c.command)
                                .where(self._table.c.seq == self._last_seq)).first()
            if last is None:
                raise ValueError("a snapshot of an empty journal")
            conn.execute(t.delete().where(t.c.commands >= commands))
            conn.execute(t.insert().values(commands=commands, seq=last[0], last_command=last[1], data=data))
            kept = conn.execute(sa.select(t.c.commands).order_by(t.c.commands.desc()).limit(2)).scalars().all()
            conn.execute(t.delete().where(t.c.commands < min(kept)))

    def holds(self, commands: int) -> bool:
        """Does the journal still hold the snapshot's commands (its last command is there, where it was)?"""
        import sqlalchemy as sa

        t = self._snapshots
        with self._engine.connect() as conn:
            last = conn.execute(sa.select(t.c.seq, t.c.last_command).where(t.c.commands == commands)).first()
            return last is not None and conn.execute(
                sa.select(self._table.c.command).where(self._table.c.seq == last[0])).scalar() == last[1]

    def latest_snapshot(self) -> tuple[int, bytes] | None:
        import sqlalchemy as sa

        t = self._snapshots
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.c.commands, t.c.data).order_by(t.c.commands.desc()).limit(1)).first()
        return (int(row[0]), bytes(row[1])) if row else None

    def close(self) -> None:
        self._engine.dispose()


@dataclasses.dataclass
class Balance:
    free: int = 0
    locked: int = 0


@dataclasses.dataclass
class Account:
    account_id: str
    tenant: str
    balances: dict[str, Balance] = dataclasses.field(default_factory=dict)

    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def free(self, asset: str) -> int:
        """Free balance, read without creating a row: a refused command must leave no trace the journal lacks."""
        held = self.balances.get(asset)
        return held.free if held is not None else 0


@dataclasses.dataclass
class Follow:
    follower: str
    leader: str
    multiplier: float
    max_exposure: int  # minor units of |position| x price after the copy


@dataclasses.dataclass
class CopyLink:
    follower_order_id: int
    leader_trade_id: int
    leader_account: str


class Fill(NamedTuple):
    """One side of a trade, with its fee. A tuple, not a dict: the service keeps every fill in memory, and a
    dict per fill was a third of a venue day's state (a tuple is under half its size)."""

    trade_id: int
    ts: int
    instrument: str
    price: int
    quantity: int
    account_id: str
    order_id: int
    side: str
    fee: int
    liquidity: str  # MAKER or TAKER


# What commands change besides the matching engine and the append-only history (fills, copy links):
# small tables, one entry per account or per open order, copied whole when a batch starts.
_SMALL_STATE = ("accounts", "reserved", "sell_locked", "fees_collected", "deposits", "withdrawals", "follows",
                "last_price")
_NESTED_STATE = ("accounts", "follows")  # mutable values: copied deep; the others map to ints


# A failed batch write rebuilds the books from the engine's command log (see Exchange._rollback). The log is cut
# whenever it has grown by this many commands (or twice the resting orders, if more) since it was last cut: the
# books are saved as they stand (RestingBooks, costing the resting orders: amortised, at most half an order's copy
# per command) and the log restarts there. An undo then replays at most that many commands from the saved books,
# however long the venue has run (`make bench`: ~6 ms after 200,000 commands, ~5 ms after 10,000; 1.2 s after
# 200,000 when the log was never cut), and the log's memory stays bounded. A served exchange also freezes the
# heap at each cut (on_cut, services.common.heap), so Python's full collections do not walk the history.
REBASE_COMMANDS = 5_000

# What the exchange keeps of closed history: per account its last HISTORY orders (and any older one still open)
# and its last HISTORY fills, per instrument its last HISTORY trades — the API's largest page, so every page it
# serves is whole. What is older is trimmed at each cut of the engine's log (outside any batch), so a served
# exchange's memory is bounded by its accounts, instruments and open orders, not by the days it has run. The
# full history is the journal's, and the lake's (bronze orders and fills, silver trades). ``history=None``
# keeps everything (the exchange before this bound; the bench's baseline).
HISTORY = 1000

# A start loads the newest snapshot of the state and replays only the commands after it, instead of the whole
# journal. The exchange saves one at a cut of its log once this many commands were journalled since the last (and
# after a start that replayed as many): the state is bounded (HISTORY), so a snapshot costs the accounts and the
# open orders, not the history. 0: never. SNAPSHOT_FORMAT names the layout; a snapshot of another layout (or
# rules, instruments, fees or kept history) is passed over and the whole journal replayed, as is one that does not
# load or does not balance.
SNAPSHOT_COMMANDS = 100_000
SNAPSHOT_FORMAT = 1


class Exchange:
    def __init__(self, instruments: list[str], maker_fee_bps: int = 5, taker_fee_bps: int = 10,
                 journal: JournalStore | None = None, clock: Callable[[], int] | None = None,
                 rebase_commands: int = REBASE_COMMANDS, on_cut: Callable[[], object] | None = None,
                 history: int | None = HISTORY, snapshot_commands: int = SNAPSHOT_COMMANDS):
        import time

        if history is not None and (type(history) is not int or history < 1):
            raise ValueError(f"history must be a positive number of entries or None (keep all), got {history!r}")

        self.instruments = list(instruments)
        self.maker_fee_bps = maker_fee_bps
        self.taker_fee_bps = taker_fee_bps
        self.engine = MatchingEngine(self.instruments)
        self.accounts: dict[str, Account] = {}
        # per-account history (ascending), trimmed to ``history`` at each cut: an order's owner is Order.account
        self.account_orders: dict[str, list[int]] = {}  # account -> its order ids (in engine.orders)
        self.account_fills: dict[str, list[Fill]] = {}  # account -> its fills (both sides of a trade, with fees)
        self.instrument_trades: dict[str, list[tuple]] = {}  # instrument -> its trades (the engine's tuples)
        self.reserved: dict[int, int] = {}  # open buy order -> USD still locked for it
        self.sell_locked: dict[int, int] = {}  # open sell order -> lots still locked for it
        self.fees_collected: dict[str, int] = {}
        self.deposits: dict[str, int] = {}
        self.withdrawals: dict[str, int] = {}
        self.follows: dict[str, dict[str, Follow]] = {}  # leader -> follower -> follow
        self.copy_links: list[CopyLink] = []
        self.last_price: dict[str, int] = {}  # instrument -> price of its latest trade (marks positions)
        # client order ids of kept orders: order -> (client order id, account, instrument, side, quantity, price,
        # time in force) as placed, and per account client order id -> order; trimmed with the orders
        self.client_ids: dict[int, tuple] = {}
        self.client_orders: dict[str, dict[str, int]] = {}
        self.history = history
        self.journal = journal or MemoryJournal()
        self.clock = clock or (lambda: int(time.time() * 1_000_000))
        self._lock = threading.RLock()
        self._replaying = False
        self._batch: list[dict] | None = None
        self._batch_broken = False  # a command of the batch in progress failed while being applied
        self._fenced: str | None = None  # why this exchange takes no more commands (another journal writer)
        # a command in progress outside a batch: the balances of the accounts it touched (None: opened by it) and
        # what its orders had reserved or locked, as before it (what _undo_command puts back)
        self._undo: dict[str, dict | None] | None = None
        self._undo_orders: dict[int, tuple] | None = None
        self.rebase_commands = rebase_commands
        self._base: RestingBooks | None = None  # where the engine's command log starts (None: at the beginning)
        self._rebase_at = rebase_commands
        self.on_cut = on_cut  # called after each cut of the engine's log outside a restart (services.common.heap)
        self.journaled = 0  # commands in the journal (all applied)
        self.snapshot_commands = snapshot_commands
        self._snapshot_at = 0  # journalled commands at the last snapshot (saved or loaded)

    # -- persistence -------------------------------------------------------
    @classmethod
    def restore(cls, instruments: list[str], journal: JournalStore, **kwargs) -> "Exchange":
        """The exchange the journal replays to: from its newest usable snapshot, and the commands after it."""
        exchange = cls(instruments, journal=journal, **kwargs)
        exchange._replaying = True
        try:
            # a replay only builds state that lives on: the collector, walking the growing heap, would find nothing
            with heap.collector_paused():
                snapshot = journal.latest_snapshot() if hasattr(journal, "latest_snapshot") else None
                if snapshot is not None and not exchange._load_snapshot(*snapshot):
                    exchange = cls(instruments, journal=journal, **kwargs)  # passed over: the whole journal
                    exchange._replaying = True
                commands = journal.stream(exchange.journaled) if exchange.journaled else journal.stream()
                try:
                    for seq, command in enumerate(commands, start=exchange.journaled + 1):
                        if command.get("rules") not in SUPPORTED_RULES:
                            raise JournalRulesError(command.get("rules"), seq)
                        exchange._apply(command)
                        exchange.journaled = seq
                        exchange._maybe_rebase()
                finally:
                    if hasattr(commands, "close"):  # a refused journal: end the read now (its connection), not at GC
                        commands.close()
        finally:
            exchange._replaying = False
        if exchange.journaled - exchange._snapshot_at >= exchange.snapshot_commands > 0:
            exchange.snapshot()  # the next start replays from here
        return exchange

    # -- snapshots -----------------------------------------------------------
    def _snapshot_header(self) -> dict:
        return {"format": SNAPSHOT_FORMAT, "rules": RULES_VERSION, "instruments": self.instruments,
                "fees_bps": [self.maker_fee_bps, self.taker_fee_bps], "history": self.history}

    def snapshot(self) -> bool:
        """Save the state as it stands to the journal's store (see SNAPSHOT_COMMANDS); outside a batch only.
        A snapshot that cannot be saved is logged and skipped: the journal alone restores the exchange."""
        save = getattr(self.journal, "save_snapshot", None)
        if save is None:
            return False
        with self._lock:
            if self._batch is not None:
                raise ExchangeError("no snapshot inside a batch")
            if not self.journaled:
                return False
            engine = self.engine
            engine.compact()  # the books hold their live orders only
            levels = [[instrument, side, price, [order.order_id for order in level]]
                      for instrument, book in engine.books.items()
                      for side, half in ((BUY, book.bids), (SELL, book.asks)) for price, level in half.levels.items()]
            state = {
                **self._snapshot_header(), "commands": self.journaled,
                "next_ids": [engine._next_order_id, engine._next_trade_id],
                "orders": [order.state() for order in engine.orders.values()],
                "levels": levels,
                "accounts": [[a.account_id, a.tenant, {k: [b.free, b.locked] for k, b in a.balances.items()}]
                             for a in self.accounts.values()],
                "account_orders": self.account_orders, "account_fills": self.account_fills,
                "tape": self.instrument_trades,
                "reserved": list(self.reserved.items()), "sell_locked": list(self.sell_locked.items()),
                "fees_collected": self.fees_collected, "deposits": self.deposits, "withdrawals": self.withdrawals,
                "follows": [dataclasses.astuple(f) for by_leader in self.follows.values() for f in by_leader.values()],
                "copy_links": [dataclasses.astuple(link) for link in self.copy_links],
                "last_price": self.last_price,
                # added without a new format: a snapshot written before client order ids has none to restore
                "client_ids": [[order_id, *entry] for order_id, entry in self.client_ids.items()],
            }
            data = zlib.compress(json.dumps(state, separators=(",", ":")).encode(), 1)
            commands = self.journaled
            try:  # with the lock held: the journal's last command must be the snapshot's
                save(commands, data)
            except Exception as exc:  # the journal is what restores; a snapshot only shortens the replay
                log.warning("trading: the snapshot after %d commands was not saved (%s); the next start replays "
                            "from the one before", commands, exc)
                return False
            self._snapshot_at = commands
            return True

    def _load_snapshot(self, commands: int, data: bytes) -> bool:
        """Take the state from a snapshot; False (and a log line) when it is passed over."""
        try:
            state = json.loads(zlib.decompress(data))
        except (zlib.error, ValueError) as exc:
            log.warning("trading: the snapshot after %d commands does not load (%s); replaying the whole journal",
                        commands, exc)
            return False
        if not self.journal.holds(commands):
            log.warning("trading: the journal no longer holds the %d commands of its snapshot; replaying the whole "
                        "journal", commands)
            return False
        header = {k: state.get(k) for k in self._snapshot_header()}
        if header != json.loads(json.dumps(self._snapshot_header())) or state.get("commands") != commands:
            log.info("trading: the snapshot after %d commands was written by another version or configuration "
                     "(%s); replaying the whole journal", commands, header)
            return False
        engine = self.engine
        engine._next_order_id, engine._next_trade_id = state["next_ids"]
        orders = engine.orders
        for values in state["orders"]:
            order = Order.from_state(values)
            orders[order.order_id] = order
        engine.load_books((instrument, side, price, [orders[order_id] for order_id in ids])
                          for instrument, side, price, ids in state["levels"])
        for account_id, tenant, balances in state["accounts"]:
            self.accounts[account_id] = Account(account_id, tenant, {k: Balance(*v) for k, v in balances.items()})
        self.account_orders = state["account_orders"]
        self.account_fills = {a: [Fill(*f) for f in fills] for a, fills in state["account_fills"].items()}
        self.instrument_trades = {i: [tuple(t) for t in trades] for i, trades in state["tape"].items()}
        self.reserved, self.sell_locked = dict(state["reserved"]), dict(state["sell_locked"])
        self.fees_collected, self.deposits = state["fees_collected"], state["deposits"]
        self.withdrawals, self.last_price = state["withdrawals"], state["last_price"]
        for values in state["follows"]:
            follow = Follow(*values)
            self.follows.setdefault(follow.leader, {})[follow.follower] = follow
        self.copy_links = [CopyLink(*values) for values in state["copy_links"]]
        for order_id, *entry in sorted(state.get("client_ids", ())):  # oldest first: a reused id names the newest
            self._index_client_id(order_id, tuple(entry))
        unbalanced = {asset: sides for asset, sides in self.conservation().items() if sides[0] != sides[1]}
        if unbalanced:
            log.warning("trading: the snapshot after %d commands does not balance (%s); replaying the whole journal",
                        commands, unbalanced)
            return False
        # as after a cut: the engine's log starts at these books
        self._base = engine.resting()
        self._rebase_at = max(self.rebase_commands, 2 * self._base.orders)
        self.journaled = self._snapshot_at = commands
        return True

    def _command(self, command: dict):
        """Validate, apply, then journal. A command whose application fails (a bug, or an error no validation
        foresaw) or that the journal does not take is undone: the live state never holds what the journal lacks,
        and the journal never holds a command that does not apply (a restart would fail on it every time)."""
        with self._lock:
            self._refuse_if_fenced()
            if self._batch is None:
                self._maybe_rebase()
            elif self._batch_broken:
                raise ExchangeError("a command of this batch failed: the batch is undone, send it again", 409,
                                    "batch-undone")
            command = {"ts": self.clock(), **command, "rules": RULES_VERSION}
            self._validate(command)
            if self._batch is not None:
                try:
                    result = self._apply(command)
                except BaseException:
                    self._batch_broken = True  # the batch is undone as it ends, nothing of it journalled
                    raise
                self._batch.append(command)
                return result
            saved = self._begin_undo(command)
            try:
                result = self._apply(command)
                self._undo = self._undo_orders = None
                self._journal_write(self.journal.append, command)
            except BaseException:
                self._undo_command(saved)
                raise
            self.journaled += 1
            return result

    def _refuse_if_fenced(self) -> None:
        if self._fenced is not None:
            raise JournalConflict(self._fenced)

    def _journal_write(self, write: Callable, arg) -> None:
        """Write to the journal; its store's errors become JournalUnavailable (503: nothing applied, try again)
        and another writer's command JournalConflict, after which this exchange takes no more commands."""
        try:
            write(arg)
        except JournalConflict as exc:
            self._fenced = str(exc)
            log.error("trading: %s", exc)
            raise
        except Exception as exc:
            log.warning("trading: the journal did not take a command (%s: %s); it was undone", type(exc).__name__,
                        exc)
            raise JournalUnavailable(f"the trading journal is unavailable ({type(exc).__name__}); nothing was "
                                     "applied: try again") from exc

    # -- undoing one command (outside a batch) --------------------------------
    _MISSING = object()

    def _begin_undo(self, c: dict) -> dict:
        """What undoing the command will need, taken in constant time: the engine's lengths and next ids, the
        per-asset totals; the accounts and orders the command touches are recorded as it touches them
        (_touch, _touch_order)."""
        engine = self.engine
        self._undo, self._undo_orders = {}, {}
        return {
            "next_order_id": engine._next_order_id, "next_trade_id": engine._next_trade_id,
            "lengths": [len(engine.trades), len(engine.journal), len(self.copy_links)],
            "totals": {name: dict(getattr(self, name))
                       for name in ("fees_collected", "deposits", "withdrawals", "last_price")},
            "follows": copy.deepcopy(self.follows) if c["op"] in ("follow", "unfollow") else None,
            "accounts": self._undo, "orders": self._undo_orders,
        }

    def _touch(self, account_id: str) -> Account:
        """The account a command changes; its balances are recorded first when the command can be undone."""
        account = self.accounts[account_id]
        undo = self._undo
        if undo is not None and account_id not in undo:
            undo[account_id] = {asset: (b.free, b.locked) for asset, b in account.balances.items()}
        return account

    def _touch_order(self, order_id: int) -> None:
        undo = self._undo_orders
        if undo is not None and order_id not in undo:
            undo[order_id] = (self.reserved.get(order_id, self._MISSING), self.sell_locked.get(order_id, self._MISSING))

    def _undo_command(self, saved: dict) -> None:
        """Back to before the command: the engine and the history as in a batch's rollback (only when the command
        reached the engine), the balances and reserves it touched from their records."""
        self._undo = self._undo_orders = None
        engine = self.engine
        n_trades, n_journal, n_links = saved["lengths"]
        placed = range(saved["next_order_id"], engine._next_order_id)  # the orders the command made (the rollback
        # takes the engine's next id back, so they are read first)
        self._forget_client_ids(saved["next_order_id"])
        if len(engine.journal) != n_journal or engine._next_order_id != saved["next_order_id"]:
            self._rollback_engine(saved)
        del self.copy_links[n_links:]
        for account_id, balances in saved["accounts"].items():
            if balances is None:  # opened by the command
                self.accounts.pop(account_id, None)
                continue
            held = self.accounts[account_id].balances
            for asset in [a for a in held if a not in balances]:
                del held[asset]
            for asset, (free, locked) in balances.items():
                balance = held.setdefault(asset, Balance())
                balance.free, balance.locked = free, locked
        for order_id, values in saved["orders"].items():
            for table, value in zip((self.reserved, self.sell_locked), values):
                if value is self._MISSING:
                    table.pop(order_id, None)
                else:
                    table[order_id] = value
        for order_id in placed:  # recorded by _touch_order only after _place had reserved for them: they go
            self.reserved.pop(order_id, None)
            self.sell_locked.pop(order_id, None)
        for name, value in saved["totals"].items():
            setattr(self, name, value)
        if saved["follows"] is not None:
            self.follows = saved["follows"]

    @property
    def lock(self) -> threading.RLock:
        """Held by every command; hold it to read books, orders or balances consistently."""
        return self._lock

    @contextlib.contextmanager
    def batch(self):
        """Journal every command of the block in one write (all commands that were accepted).

        A batch's commands are applied before they are journalled (each one is validated
        against the state the previous ones left), so if the journal write fails the live
        state is rolled back to before the batch: it never holds what a restart would lose.
        """
        with self._lock:
            if self._batch is not None:
                raise ExchangeError("batches do not nest")
            self._refuse_if_fenced()
            saved = self._checkpoint()
            self._batch, self._batch_broken = [], False
            try:
                yield
            finally:
                pending, self._batch = self._batch, None
                if self._batch_broken:  # a command failed half-applied: undo the batch, journal none of it
                    self._batch_broken = False
                    self._rollback(saved)
                else:
                    try:
                        self._journal_write(self.journal.append_many, pending)
                    except BaseException:
                        self._rollback(saved)
                        raise
                    self.journaled += len(pending)

    def _checkpoint(self) -> dict:
        """What a batch may change, saved in time independent of the books' depth.

        Order and trade ids only grow, and the history (trades, fills, copy links, the engine's
        journal, closed orders) is only appended to, so it is saved as lengths and next ids. The
        books and the orders still resting in them are not copied (a deepcopy of 30,000 resting
        orders held the exchange lock for half a second on every batch): a rollback rebuilds
        them from the engine's own in-memory journal, which is what a restart would do, starting
        from the books saved when that journal was last cut (REBASE_COMMANDS). The
        small per-account tables are copied (int-valued ones shallowly)."""
        self._maybe_rebase()
        engine = self.engine
        return {
            "next_order_id": engine._next_order_id, "next_trade_id": engine._next_trade_id,
            "lengths": [len(x) for x in (engine.trades, engine.journal, self.copy_links)],
            "tables": {name: (copy.deepcopy(getattr(self, name)) if name in _NESTED_STATE else dict(getattr(self, name)))
                       for name in _SMALL_STATE},
        }

    def _maybe_rebase(self) -> None:
        """Cut the engine's command log once it has grown past ``_rebase_at`` (see REBASE_COMMANDS). Never inside
        a batch: a batch's checkpoint counts positions in the log."""
        engine = self.engine
        if len(engine.journal) < self._rebase_at:
            return
        self._trim_history()
        engine.compact()
        self._base = engine.resting()
        engine.journal.clear()
        self._rebase_at = max(self.rebase_commands, 2 * self._base.orders)
        if self._replaying:
            return
        if self.journaled - self._snapshot_at >= self.snapshot_commands > 0:
            self.snapshot()
        if self.on_cut is not None:
            self.on_cut()

    def _trim_history(self) -> None:
        """Forget what is older than the kept history (see HISTORY); costs the accounts, instruments and what goes.

        The engine's trade list is only read for the trades of the command (or batch) in progress, so it restarts
        at each cut; the tape is ``instrument_trades``. A copy link goes with its follower's order."""
        keep, engine = self.history, self.engine
        engine.trades.clear()
        if keep is None:
            return
        orders, gone, client_ids = engine.orders, False, self.client_ids
        for ids in self.account_orders.values():
            if len(ids) > keep:
                older = ids[:-keep]
                still_open = [order_id for order_id in older if orders[order_id].open_qty]
                if len(still_open) < len(older):
                    for order_id in older:
                        if not orders[order_id].open_qty:
                            del orders[order_id]
                            if client_ids and order_id in client_ids:  # its client order id goes with it
                                self._unindex_client_id(order_id)
                    ids[:-keep] = still_open
                    gone = True
        for index in (self.account_fills, self.instrument_trades):
            for entries in index.values():
                if len(entries) > keep:
                    del entries[:-keep]
        if gone and self.copy_links:
            self.copy_links = [link for link in self.copy_links if link.follower_order_id in orders]

    def _kept(self, ids: list[int]) -> tuple[int, ...]:
        """The part of an account's order ids that is always kept (its last ``history``, and older open ones)."""
        keep = self.history
        if keep is None or len(ids) <= keep:
            return tuple(ids)
        orders = self.engine.orders
        return tuple(order_id for order_id in ids[:-keep] if orders[order_id].open_qty) + tuple(ids[-keep:])

    def _rollback(self, saved: dict) -> None:
        """Back to the checkpoint. Only runs when the journal write failed (or a command failed while applied),
        so its cost (the books saved when the engine's journal was last cut, and the engine's commands since, up
        to the batch) is paid only then."""
        self._forget_client_ids(saved["next_order_id"])
        self._rollback_engine(saved)
        del self.copy_links[saved["lengths"][2]:]
        for name, value in saved["tables"].items():
            setattr(self, name, value)

    def _rollback_engine(self, saved: dict) -> None:
        """The engine, and the orders, fills and trades it made, back to ``saved``'s next ids and lengths; also
        after a command that failed half-way (an order the engine made but the exchange never indexed, a trade
        not settled)."""
        engine = self.engine
        n_trades, n_journal, _ = saved["lengths"]
        base = self._base
        if base is None:
            rebuilt = MatchingEngine(list(engine.books), self_trade_prevention=engine.stp)
        else:
            rebuilt = MatchingEngine.from_resting(base, list(engine.books), self_trade_prevention=engine.stp)
        rebuilt.apply_journal(engine.journal[:n_journal])
        if (rebuilt._next_order_id, rebuilt._next_trade_id, (base.trades if base else 0) + len(rebuilt.trades)) != (
                saved["next_order_id"], saved["next_trade_id"], n_trades):
            raise RuntimeError("replaying the engine's journal did not reach the state before the batch")
        # orders and fills the batch added, newest first: each is the last entry of its account's index (if it
        # got there: a command that failed half-way may have left it out)
        for order_id in range(engine._next_order_id - 1, saved["next_order_id"] - 1, -1):
            order = engine.orders.get(order_id)
            if order is not None:
                _pop_last(self.account_orders, order.account, order_id)
        for trade in reversed(engine.trades[n_trades:]):  # each trade added the buyer's fill, then the seller's
            for account_id in (trade[8], trade[7]):
                _pop_last(self.account_fills, account_id, trade[0], key=lambda fill: fill.trade_id)
            _pop_last(self.instrument_trades, trade[2], trade)
        # the orders the batch placed go; every order the replay rebuilt (resting at its start, or placed since)
        # takes its state from before the batch, in its place in the dict (its order is the orders' ids'); an order
        # closed before the replay's start is unchanged: a closed order takes no command
        for order_id in range(saved["next_order_id"], engine._next_order_id):
            engine.orders.pop(order_id, None)
        engine.orders.update(rebuilt.orders)
        engine.books = rebuilt.books
        engine._next_order_id, engine._next_trade_id = saved["next_order_id"], saved["next_trade_id"]
        del engine.trades[n_trades:]
        del engine.journal[n_journal:]

    # -- commands ------------------------------------------------------------
    def open_account(self, tenant: str, account_id: str) -> Account:
        return self._command({"op": "open_account", "tenant": tenant, "account": account_id})

    def deposit(self, account_id: str, asset: str, amount: int) -> Account:
        return self._command({"op": "deposit", "account": account_id, "asset": asset, "amount": amount})

    def withdraw(self, account_id: str, asset: str, amount: int) -> Account:
        return self._command({"op": "withdraw", "account": account_id, "asset": asset, "amount": amount})

    def place(self, account_id: str, instrument: str, side: str, quantity: int, price: int | None = None,
              time_in_force: str = "GTC", client_order_id: str | None = None) -> Order:
        """Place an order. With a ``client_order_id`` the account's kept orders already hold, it is the order that
        placement made (as it stands now), nothing placed again; with other order fields, ClientOrderIdReused."""
        if client_order_id is not None:
            return self.place_named(account_id, instrument, side, quantity, price, time_in_force, client_order_id)[0]
        return self._command({"op": "place", "account": account_id, "instrument": instrument, "side": side,
                              "quantity": quantity, "price": price, "tif": time_in_force})

    def place_named(self, account_id: str, instrument: str, side: str, quantity: int, price: int | None,
                    time_in_force: str, client_order_id: str) -> tuple[Order, bool]:
        """:meth:`place` with a client order id: the order, and whether this call placed it (False: the order the
        id names, placed before with these fields)."""
        with self._lock:
            placed = self.placed_order(account_id, client_order_id, instrument, side, quantity, price, time_in_force)
            if placed is not None:
                return placed, False
            # the id is in the command only when given: the journal's other commands stay as they were
            return self._command({"op": "place", "account": account_id, "instrument": instrument, "side": side,
                                  "quantity": quantity, "price": price, "tif": time_in_force,
                                  "client_order_id": client_order_id}), True

    def placed_order(self, account_id: str, client_order_id: str, instrument: str, side: str, quantity: int,
                     price: int | None, time_in_force: str) -> Order | None:
        """The kept order the account placed with this client order id and these fields (None: no such id);
        ClientOrderIdReused when the id names an order placed with other fields."""
        with self._lock:
            order = self.client_order(account_id, client_order_id)
            if order is None:
                return None
            if self.client_ids[order.order_id][2:] != (instrument, side, quantity, price, time_in_force):
                raise ClientOrderIdReused(client_order_id, order.order_id)
            return order

    def client_order(self, account_id: str, client_order_id: str) -> Order | None:
        """The account's kept order with this client order id (a dict lookup)."""
        order_id = self.client_orders.get(account_id, {}).get(client_order_id)
        return None if order_id is None else self.engine.orders.get(order_id)

    def client_order_id(self, order_id: int) -> str | None:
        entry = self.client_ids.get(order_id) if self.client_ids else None
        return None if entry is None else entry[0]

    def cancel(self, account_id: str, order_id: int) -> Order:
        return self._command({"op": "cancel", "account": account_id, "order_id": order_id})

    def amend(self, account_id: str, order_id: int, quantity: int | None = None, price: int | None = None) -> Order:
        return self._command({"op": "amend", "account": account_id, "order_id": order_id, "quantity": quantity,
                              "price": price})

    def follow(self, follower: str, leader: str, multiplier: float = 1.0, max_exposure: int = 10**9) -> Follow:
        return self._command({"op": "follow", "follower": follower, "leader": leader, "multiplier": multiplier,
                              "max_exposure": max_exposure})

    def unfollow(self, follower: str, leader: str) -> None:
        return self._command({"op": "unfollow", "follower": follower, "leader": leader})

    # -- validation (before applying: a refused command changes nothing) --
    def _account(self, account_id: str) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            raise NotFound(f"unknown account {account_id!r}")
        return account

    def _open_order(self, account_id: str, order_id: int) -> Order:
        order = self.engine.orders.get(order_id)
        if order is None or order.account != account_id:
            raise NotFound(f"unknown order {order_id} for account {account_id!r}")
        if not order.open_qty:
            raise ExchangeError(f"order {order_id} is not open (status {order.status})", 409, "order-not-open")
        return order

    def _validate(self, c: dict) -> None:
        op = c["op"]
        if op == "open_account":
            if c["account"] in self.accounts:
                raise ExchangeError(f"account {c['account']!r} already exists", 409, "account-exists")
        elif op in ("deposit", "withdraw"):
            account = self._account(c["account"])
            if c["asset"] != CASH and c["asset"] not in self.instruments:
                raise ExchangeError(f"unknown asset {c['asset']!r}")
            if type(c["amount"]) is not int or c["amount"] <= 0:
                raise ExchangeError("amount must be a positive integer (minor units or lots)")
            if op == "withdraw" and account.free(c["asset"]) < c["amount"]:
                raise ExchangeError("insufficient free balance", 422, "insufficient-funds")
        elif op == "place":
            account = self._account(c["account"])
            if c["instrument"] not in self.instruments:
                raise NotFound(f"unknown instrument {c['instrument']!r}")
            if c["side"] not in SIDES or c["tif"] not in TIFS:
                raise ExchangeError("side must be BUY or SELL and time_in_force GTC, IOC or FOK")
            if type(c["quantity"]) is not int or c["quantity"] <= 0:
                raise ExchangeError("quantity must be a positive integer number of lots")
            if c["price"] is not None and (type(c["price"]) is not int or c["price"] <= 0):
                raise ExchangeError("price must be a positive integer number of ticks")
            client_order_id = c.get("client_order_id")
            if client_order_id is not None:
                if type(client_order_id) is not str or not CLIENT_ORDER_ID.match(client_order_id):
                    raise ExchangeError("client_order_id must be 1 to 64 visible ASCII characters")
                if client_order_id in self.client_orders.get(c["account"], ()):  # place() answers a repeat
                    raise ClientOrderIdReused(client_order_id, self.client_orders[c["account"]][client_order_id])
            self._check_funds(account, c["instrument"], SIDES[c["side"]], c["quantity"], c["price"])
        elif op == "cancel":
            self._account(c["account"])
            self._open_order(c["account"], c["order_id"])
        elif op == "amend":
            account = self._account(c["account"])
            order = self._open_order(c["account"], c["order_id"])
            qty = c["quantity"] if c["quantity"] is not None else order.open_qty
            price = c["price"] if c["price"] is not None else order.price
            if type(qty) is not int or qty <= 0 or type(price) is not int or price <= 0:
                raise ExchangeError("quantity and price must be positive integers")
            if qty == order.open_qty and price == order.price:
                raise ExchangeError("amendment changes nothing")
            if order.side == BUY:
                extra = self._buy_reserve(price, qty) - self.reserved.get(order.order_id, 0)
                if extra > account.free(CASH):
                    raise ExchangeError("insufficient free USD for the amended order", 422, "insufficient-funds")
            elif qty > order.open_qty and qty - order.open_qty > account.free(order.instrument):
                raise ExchangeError("insufficient free lots for the amended order", 422, "insufficient-funds")
        elif op == "follow":
            follower, leader = self._account(c["follower"]), self._account(c["leader"])
            if follower.account_id == leader.account_id:
                raise ExchangeError("an account cannot follow itself")
            if follower.tenant != leader.tenant:
                raise NotFound(f"unknown account {c['leader']!r}")  # other tenants' accounts are invisible
            if self._copies(leader.account_id, follower.account_id):
                raise ExchangeError(f"{c['leader']!r} already copies {c['follower']!r} (directly or through "
                                    "others): this follow would close a cycle", 409, "follow-cycle")
            if not (0 < float(c["multiplier"]) <= 10) or type(c["max_exposure"]) is not int or c["max_exposure"] <= 0:
                raise ExchangeError("multiplier must be in (0, 10] and max_exposure a positive integer")
        elif op == "unfollow":
            if c["follower"] not in self.follows.get(c["leader"], {}):
                raise NotFound("no such follow")
        else:
            raise ExchangeError(f"unknown command {op!r}")

    def _copies(self, account_id: str, leader_id: str) -> bool:
        """Does ``account_id`` copy ``leader_id``, directly or through a chain of follows? (costs the follows)"""
        seen, todo = {leader_id}, [leader_id]
        while todo:
            for follower in self.follows.get(todo.pop(), ()):
                if follower == account_id:
                    return True
                if follower not in seen:
                    seen.add(follower)
                    todo.append(follower)
        return False

    def _buy_reserve(self, price: int, qty: int) -> int:
        """Most a buy of ``qty`` at ``price`` can cost: it may fill as taker or, resting, as maker."""
        notional = price * qty
        return notional + self._fee(notional, max(self.maker_fee_bps, self.taker_fee_bps)) + qty

    def _market_buy_cost(self, instrument: str, qty: int) -> int | None:
        """Worst-case cost of a market buy: walk the asks (None if not enough liquidity)."""
        asks = self.engine.books[instrument].asks
        cost, left = 0, qty
        for price, level_qty in asks.depth():
            take = min(left, level_qty)
            cost += self._buy_reserve(price, take)
            left -= take
            if not left:
                return cost
        return cost if cost else None

    def _check_funds(self, account: Account, instrument: str, side: int, qty: int, price: int | None) -> None:
        if side == BUY:
            need = self._buy_reserve(price, qty) if price is not None else self._market_buy_cost(instrument, qty)
            if need is None:
                raise ExchangeError("no liquidity for a market buy", 422, "no-liquidity")
            if need > account.free(CASH):
                raise ExchangeError(f"insufficient free USD: need {need}, have {account.free(CASH)}",
                                    422, "insufficient-funds")
        elif qty > account.free(instrument):
            raise ExchangeError(f"insufficient free {instrument} lots: need {qty}, have "
                                f"{account.free(instrument)}", 422, "insufficient-funds")

    # -- application (deterministic: replay runs exactly this) ------------------
    def _apply(self, c: dict):
        op = c["op"]
        if op == "open_account":
            if self._undo is not None:
                self._undo[c["account"]] = None
            account = self.accounts[c["account"]] = Account(c["account"], c["tenant"])
            return account
        if op == "deposit":
            account = self._touch(c["account"])
            account.balance(c["asset"]).free += c["amount"]
            self.deposits[c["asset"]] = self.deposits.get(c["asset"], 0) + c["amount"]
            return account
        if op == "withdraw":
            account = self._touch(c["account"])
            account.balance(c["asset"]).free -= c["amount"]
            self.withdrawals[c["asset"]] = self.withdrawals.get(c["asset"], 0) + c["amount"]
            return account
        if op == "place":
            order = self._place(c["account"], c["instrument"], SIDES[c["side"]], c["quantity"], c["price"],
                                TIFS[c["tif"]], c["ts"], copy_of=None, rules=c["rules"])
            client_order_id = c.get("client_order_id")
            if client_order_id is not None:
                self._index_client_id(order.order_id, (client_order_id, c["account"], c["instrument"], c["side"],
                                                       c["quantity"], c["price"], c["tif"]))
            return order
        if op == "cancel":
            self._touch_order(c["order_id"])
            order = self.engine.cancel(c["order_id"], c["ts"])
            self._release(order)
            return order
        if op == "amend":
            return self._amend(c)
        if op == "follow":
            follow = Follow(c["follower"], c["leader"], float(c["multiplier"]), c["max_exposure"])
            self.follows.setdefault(c["leader"], {})[c["follower"]] = follow
            return follow
        if op == "unfollow":
            del self.follows[c["leader"]][c["follower"]]
            return None
        raise ExchangeError(f"unknown command {op!r}")

    def _index_client_id(self, order_id: int, entry: tuple) -> None:
        """Index an order's client order id. A replay may meet an id again that the live exchange had forgotten
        (its order trimmed at another cut): the newer order takes it."""
        self.client_ids[order_id] = entry
        self.client_orders.setdefault(entry[1], {})[entry[0]] = order_id

    def _unindex_client_id(self, order_id: int) -> None:
        client_order_id, account_id = self.client_ids.pop(order_id)[:2]
        by_id = self.client_orders.get(account_id)
        if by_id is not None and by_id.get(client_order_id) == order_id:  # not a newer order's
            del by_id[client_order_id]
            if not by_id:
                del self.client_orders[account_id]

    def _forget_client_ids(self, first_order_id: int) -> None:
        """Unindex the client order ids of the orders from ``first_order_id`` on (an undone command or batch).
        A live placement never takes an id another kept order holds, so unindexing restores the index."""
        client_ids = self.client_ids
        if client_ids:
            for order_id in range(self.engine._next_order_id - 1, first_order_id - 1, -1):
                if order_id in client_ids:
                    self._unindex_client_id(order_id)

    def _lock_for(self, account: Account, order_instrument: str, side: int, qty: int, price: int | None) -> int:
        if side == BUY:
            amount = self._buy_reserve(price, qty) if price is not None else self._market_buy_cost(order_instrument, qty)
            cash = account.balance(CASH)
            cash.free -= amount
            cash.locked += amount
            return amount
        lots = account.balance(order_instrument)
        lots.free -= qty
        lots.locked += qty
        return qty

    def _place(self, account_id, instrument, side, qty, price, tif, ts, copy_of, rules=RULES_VERSION):
        account = self._touch(account_id)
        locked = self._lock_for(account, instrument, side, qty, price)
        first_trade = len(self.engine.trades)
        try:
            order = self.engine.submit(instrument, account_id, side, qty, price, tif, ts)
        except RejectedOrder:
            self._unlock(account, instrument, side, locked)
            raise
        self.account_orders.setdefault(account_id, []).append(order.order_id)
        if side == BUY:
            self.reserved[order.order_id] = locked
        else:
            self.sell_locked[order.order_id] = locked
        trades = self.engine.trades[first_trade:]
        # copies go one level deep (rules 3): a copy's trades are not copied, neither side of them; under rules 2 a
        # copy's own fill was not copied, the fills of the resting orders it hit were
        copied = copy_of is None or rules < 3
        before = self._settle(trades, copied)
        self._release(order)
        if copied:
            self._copy_all_fills(account_id if copy_of is None else None, trades, ts, before, rules)
        return order

    def _amend(self, c):
        order = self.engine.orders[c["order_id"]]
        account = self._touch(c["account"])
        self._touch_order(order.order_id)
        new_qty = c["quantity"] if c["quantity"] is not None else order.open_qty
        new_price = c["price"] if c["price"] is not None else order.price
        if order.side == BUY:
            target = self._buy_reserve(new_price, new_qty)
            delta = target - self.reserved[order.order_id]
            cash = account.balance(CASH)
            cash.free -= delta
            cash.locked += delta
            self.reserved[order.order_id] = target
        elif new_qty > order.open_qty:  # reductions are released after the amendment
            lots = account.balance(order.instrument)
            lots.free -= new_qty - order.open_qty
            lots.locked += new_qty - order.open_qty
            self.sell_locked[order.order_id] += new_qty - order.open_qty
        first_trade = len(self.engine.trades)
        self.engine.amend(order.order_id, c["quantity"], c["price"], c["ts"])
        trades = self.engine.trades[first_trade:]
        before = self._settle(trades)
        self._release(order)
        self._copy_all_fills(c["account"], trades, c["ts"], before, c["rules"])
        return order

    def _unlock(self, account: Account, instrument: str, side: int, amount: int) -> None:
        bal = account.balance(CASH if side == BUY else instrument)
        bal.locked -= amount
        bal.free += amount

    def _release(self, order: Order) -> None:
        """Give back what an order no longer needs locked (after fills, cancels, expiry): a buy keeps
        the reserve of its open quantity (fills below the limit leave a surplus), a sell its open lots."""
        account = self._touch(order.account)
        self._touch_order(order.order_id)
        held = self.reserved if order.side == BUY else self.sell_locked
        need = 0
        if order.open_qty:
            need = self._buy_reserve(order.price, order.open_qty) if order.side == BUY else order.open_qty
        surplus = held.get(order.order_id, 0) - need
        if surplus:
            self._unlock(account, order.instrument, order.side, surplus)
        if need:
            held[order.order_id] = need
        else:
            held.pop(order.order_id, None)

    def _fee(self, notional: int, bps: int) -> int:
        return -(-notional * bps // 10_000)

    def _settle(self, trades, copied: bool = True) -> dict[str, tuple[int, dict[str, int], dict[str, int]]]:
        """Settle the trades; returns, for each leader in them (if they are ``copied``), what copy sizing reads
        from before its fills: its equity, its positions and the marks."""
        before = {}
        if copied:
            marks = dict(self.last_price)
            leaders = {a for t in trades for a in (t[7], t[8]) if self.follows.get(a)}
            before = {a: (self.equity(a, marks), {i: self.position(a, i) for i in self.instruments}, marks)
                      for a in leaders}
        if self._undo_orders is not None:
            for t in trades:
                self._touch_order(t[5])
                self._touch_order(t[6])
        touched = {}
        self._settle_trades(trades)
        for t in trades:  # resting orders that filled completely give back their surplus too
            touched[t[5]] = touched[t[6]] = None
        for order_id in touched:
            self._release(self.engine.orders[order_id])
        return before

    def _settle_trades(self, trades) -> None:
        for trade in trades:
            trade_id, ts, instrument, price, qty, buy_id, sell_id, buy_acct, sell_acct, aggressor = trade
            notional = price * qty
            buyer, seller = self._touch(buy_acct), self._touch(sell_acct)
            buy_fee = self._fee(notional, self.taker_fee_bps if aggressor == BUY else self.maker_fee_bps)
            sell_fee = self._fee(notional, self.taker_fee_bps if aggressor == SELL else self.maker_fee_bps)
            cost = notional + buy_fee
            buyer.balance(CASH).locked -= cost
            self.reserved[buy_id] -= cost
            buyer.balance(instrument).free += qty
            seller.balance(instrument).locked -= qty
            self.sell_locked[sell_id] -= qty
            seller.balance(CASH).free += notional - sell_fee
            self.fees_collected[CASH] = self.fees_collected.get(CASH, 0) + buy_fee + sell_fee
            self.last_price[instrument] = price
            self.instrument_trades.setdefault(instrument, []).append(trade)
            for account_id, order_id, side, fee in ((buy_acct, buy_id, "BUY", buy_fee),
                                                    (sell_acct, sell_id, "SELL", sell_fee)):
                self.account_fills.setdefault(account_id, []).append(
                    Fill(trade_id, ts, instrument, price, qty, account_id, order_id, side, fee,
                         "TAKER" if SIDES[side] == aggressor else "MAKER"))

    def _copy_all_fills(self, aggressor_id: str | None, trades, ts: int, before: dict, rules: int) -> None:
        """Copy the fills of every account in these trades: the aggressor's first (none for a copy
        order), then the resting (maker) orders' owners, in trade order. A leader's passive fills are
        trades too."""
        makers = [t[8] if t[9] == BUY else t[7] for t in trades]
        for account_id in dict.fromkeys([aggressor_id] + makers):
            if account_id in before:  # a leader with fills here
                self._copy_fills(account_id, trades, ts, before, rules)

    def _copy_fills(self, leader_id: str, trades, ts: int, before: dict, rules: int) -> None:
        """Mirror a leader's fills into followers' accounts, after the leader's fill. Sizes use the
        leader's equity and positions from before its fills (``before``, from :meth:`_settle`). A copy is an
        IOC limit order at the leader's fill price (rules 3; a market order under rules 2): it fills there or
        better, or not at all, so the exposure cap, computed at that price, holds."""
        followers = self.follows[leader_id]
        leader_equity, leader_positions, marks = before[leader_id]
        for trade in trades:
            trade_id, _, instrument, price, qty, _, _, buy_acct, sell_acct, _ = trade
            if leader_id not in (buy_acct, sell_acct):
                continue
            side = BUY if buy_acct == leader_id else SELL
            leader_position = leader_positions[instrument]
            leader_positions[instrument] += qty if side == BUY else -qty
            for follower_id in sorted(followers):
                follow = followers[follower_id]
                copy_qty = copy_size(qty, self.equity(follower_id, marks), leader_equity, follow.multiplier,
                                     self.position(follower_id, instrument), side, price, follow.max_exposure,
                                     leader_position)
                if copy_qty <= 0:
                    continue
                account = self.accounts[follower_id]
                limit = price if rules >= 3 else None
                try:
                    self._check_funds(account, instrument, side, copy_qty, limit)
                except ExchangeError:
                    continue  # the follower cannot afford it: no copy, nothing half-done
                order = self._place(follower_id, instrument, side, copy_qty, limit, IOC, ts, copy_of=trade_id,
                                    rules=rules)
                self.copy_links.append(CopyLink(order.order_id, trade_id, leader_id))

    # -- queries -------------------------------------------------------------
    def orders_of(self, account_id: str, open_only: bool = False, limit: int | None = None) -> list[Order]:
        """An account's orders, oldest first; the last ``limit`` of them (open ones only if asked).

        Costs the account's own orders (newest first until ``limit``), not the venue's history."""
        with self._lock:
            out = []
            for order_id in reversed(self.account_orders.get(account_id, ())):
                if limit is not None and len(out) >= limit:
                    break
                order = self.engine.orders[order_id]
                if order.open_qty or not open_only:
                    out.append(order)
            return out[::-1]

    def trades_of(self, instrument: str, limit: int) -> list[tuple]:
        """The instrument's last ``limit`` trades, oldest first (the tape); costs ``limit``, not the history."""
        with self._lock:
            return self.instrument_trades.get(instrument, [])[-limit:]

    def fills_of(self, account_id: str, limit: int | None = None) -> list[Fill]:
        """An account's fills, oldest first; the last ``limit`` of them."""
        with self._lock:
            return self.account_fills.get(account_id, [])[-limit if limit else 0:]

    def cash_equity(self, account_id: str) -> int:
        cash = self.accounts[account_id].balances.get(CASH)  # read without creating a row
        return cash.free + cash.locked if cash is not None else 0

    def equity(self, account_id: str, marks: dict[str, int] | None = None) -> int:
        """Cash plus positions valued at ``marks`` (default: each instrument's last trade price; an
        instrument that has not traded yet counts for nothing)."""
        marks = self.last_price if marks is None else marks
        return self.cash_equity(account_id) + sum(self.position(account_id, i) * marks.get(i, 0) for i in marks)

    def position(self, account_id: str, instrument: str) -> int:
        lots = self.accounts[account_id].balances.get(instrument)  # read without creating a row
        return lots.free + lots.locked if lots is not None else 0

    def conservation(self) -> dict[str, tuple[int, int]]:
        """Per asset: (held by accounts + fees, deposits - withdrawals). Equal when books balance."""
        assets = {a for acc in self.accounts.values() for a in acc.balances} | set(self.deposits)
        out = {}
        for asset in sorted(assets):
            held = sum(acc.balances[asset].free + acc.balances[asset].locked
                       for acc in self.accounts.values() if asset in acc.balances)
            out[asset] = (held + self.fees_collected.get(asset, 0),
                          self.deposits.get(asset, 0) - self.withdrawals.get(asset, 0))
        return out

    def state(self) -> dict:
        """What a restart must reproduce, as far as it is kept (see HISTORY): trimming happens at the cuts of the
        engine's log, which a live exchange and a restarted one reach at other commands, so this is the kept part
        only (what was trimmed differs, what is kept does not)."""
        keep = self.history
        engine = self.engine
        kept = {account: self._kept(ids) for account, ids in sorted(self.account_orders.items())}
        kept_orders = sorted(order_id for ids in kept.values() for order_id in ids)
        kept_set = set(kept_orders)
        return {
            "books": {name: book.snapshot() for name, book in sorted(engine.books.items())},
            "next_ids": (engine._next_order_id, engine._next_trade_id),
            "orders": tuple(engine.orders[order_id].as_tuple() for order_id in kept_orders),
            "balances": {a.account_id: {k: (b.free, b.locked) for k, b in sorted(a.balances.items())}
                         for a in sorted(self.accounts.values(), key=lambda a: a.account_id)},
            "fees": dict(self.fees_collected),
            "reserved": dict(sorted(self.reserved.items())), "sell_locked": dict(sorted(self.sell_locked.items())),
            "copy_links": [dataclasses.astuple(link) for link in self.copy_links
                           if link.follower_order_id in kept_set],
            "account_orders": kept,
            "fills": {a: tuple(fills[-keep if keep else 0:]) for a, fills in sorted(self.account_fills.items())},
            "tape": {i: tuple(trades[-keep if keep else 0:]) for i, trades in sorted(self.instrument_trades.items())},
            "client_ids": {order_id: self.client_ids[order_id] for order_id in kept_orders
                           if order_id in self.client_ids},
            "client_orders": {account: dict(sorted((cid, order_id) for cid, order_id in by_id.items()
                                                   if order_id in kept_set))
                              for account, by_id in sorted(self.client_orders.items())
                              if any(order_id in kept_set for order_id in by_id.values())},
        }


def _pop_last(index: dict[str, list], name: str, value, key: Callable = lambda entry: entry) -> None:
    """Take the entry ``value`` (or whose ``key`` is ``value``) off the end of ``index[name]`` (an account's orders
    or fills, an instrument's trades), if it is there: a command that failed half-way may not have added it (the
    entries added after the point to undo are taken off newest first, so an older one is never at the end)."""
    entries = index.get(name)
    if not entries or key(entries[-1]) != value:
        return
    entries.pop()
    if not entries:
        del index[name]


def copy_size(leader_qty: int, follower_equity: int, leader_equity: int, multiplier: float, position: int,
              side: int, price: int, max_exposure: int, leader_position: int = 0) -> int:
    """Lots a follower copies. A buy: leader's lots x equity ratio x multiplier, clamped by the exposure
    cap. A sell (positions are long only, so it closes part of one): the same fraction of the follower's
    position as the leader's sell is of the leader's position before it."""
    if side == SELL:
        return position * leader_qty // leader_position if leader_position > 0 and position > 0 else 0
    if leader_equity <= 0 or follower_equity <= 0:
        return 0
    wanted = int(leader_qty * (follower_equity / leader_equity) * multiplier)
    return max(0, min(wanted, max_exposure // price - position))


__all__ = ["CASH", "ClientOrderIdReused", "Exchange", "ExchangeError", "MemoryJournal", "NotFound", "OrderStatus",
           "SqlJournal", "copy_size"]
