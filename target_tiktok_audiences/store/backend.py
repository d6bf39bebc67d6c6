"""What the membership store needs from a database, and the few places SQL dialects differ.

The store's SQL (schema, diff, confirmation, copy) is written once, in `store/`, with `?` and
`:name` parameters and a handful of words filled in per database (`{blob}`, `{real}`, ...). A
backend supplies the connection, those words, bulk loading and streaming (executemany for SQLite,
COPY for PostgreSQL), and the per-audience lock that keeps two runs off one audience.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.redaction import scrub

Params = Sequence[Any] | Mapping[str, Any]
# Rows streamed out of a store; a generator, so that a reader stopping early can close it.
Rows = Generator[tuple[Any, ...], None, None]


class Cursor(Protocol):
    """What `Backend.execute` returns: the part of a DB-API cursor (sqlite3, psycopg) used here.

    A row is a tuple of column values; `fetchone` gives None only past the last row, so an
    aggregate (`COUNT(*)`, `SUM(...)`) can be indexed at once.
    """

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""

    def fetchone(self) -> Any:
        """The next row, or None past the last."""

    def fetchall(self) -> list[Any]:
        """The rows not yet fetched."""


def driver_cause(exc: object) -> str:
    """The first line of a driver's exception text, without any password or known secret."""
    return scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0])


class StoreMissingError(StoreError):
    """Opened with `create=False` where no membership store exists yet."""


class Backend:
    """One connection to the database that holds a membership store."""

    # DDL words for the shared schema: `str.format` fields of the store's SQL.
    words: ClassVar[dict[str, str]]
    # The driver's base exception classes, so callers can catch database failures.
    errors: tuple[type[Exception], ...]
    # Statements that open, commit and undo a transaction (savepoints when nested in another).
    begin: tuple[str, ...] = ("BEGIN",)
    commit: tuple[str, ...] = ("COMMIT",)
    rollback: tuple[str, ...] = ("ROLLBACK",)
    # Opens a read-only transaction that sees one consistent state (for copying a store out).
    begin_snapshot: str = "BEGIN"
    # What `membership_store` should name, for error messages.
    hint: ClassVar[str]
    # Where a store of its own would go, for the message that refuses another application's.
    elsewhere: ClassVar[str]
    # Whether other applications' tables may sit beside the store's (a shared schema): if not,
    # any table that is not the store's makes the location another application's.
    shares_namespace: ClassVar[bool] = False

    def __init__(self, location: str, *, throwaway: bool, timeout: float) -> None:
        self.location = location
        self.throwaway = throwaway
        # `store_timeout`: the longest one operation (connecting included) may take.
        self.timeout = timeout
        # A file holding this run's plan that other connections can read (None: the plan is
        # private to this connection), so worker processes read batches themselves.
        self.work_path: str | None = None

    def open_error(self, exc: object) -> StoreError:
        """A one-line error for a store that cannot be opened, naming the setting to fix."""
        cause = driver_cause(exc)
        return StoreError(
            f"membership store {self.location!r} cannot be opened ({cause}): check "
            f"`membership_store` points at {self.hint}."
        )

    def timeout_error(self, seconds: float | None = None) -> StoreError:
        """An operation outlasted `store_timeout` (or `seconds`): the database stopped answering."""
        return StoreError(
            f"membership store {self.location!r} did not answer within "
            f"{self.timeout if seconds is None else seconds:g} s (`store_timeout`): nothing "
            "unconfirmed was recorded; check the database "
            "(a stopped or overloaded server, or another process holding a lock on the store), "
            "then re-run, or raise `store_timeout`"
        )

    def missing_error(self) -> StoreMissingError:
        """The store does not exist and the caller asked not to create it."""
        return StoreMissingError(
            f"no membership store at {self.location!r}: no sync has stored anything there yet "
            "(check `membership_store`)"
        )

    @contextmanager
    def transaction(self) -> Iterator[Backend]:
        """All or nothing: a run that dies inside leaves the store as it was before.

        Yields this backend, whose `execute` takes `?` and `:name` parameters on either database.
        """
        for statement in self.begin:
            self.execute(statement)
        try:
            yield self
        except BaseException:
            # A failed rollback (a dead connection) must not hide why the transaction failed;
            # the database undoes an unfinished transaction itself.
            with contextlib.suppress(*self.errors, StoreError):
                for statement in self.rollback:
                    self.execute(statement)
            raise
        for statement in self.commit:
            self.execute(statement)

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        """Run one statement written with `?` or `:name` parameters; return its cursor."""
        raise NotImplementedError

    def reader(self) -> Callable[[str, Params], list[tuple[Any, ...]]] | None:
        """What runs a read-only query elsewhere (a worker process), on what was committed.

        Picklable. None where only this connection sees the run's tables (temporary ones).
        """
        return None

    def load(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append many rows to a table, without a round trip per row."""
        raise NotImplementedError

    def dump(self, query: str) -> Rows:
        """Stream the rows of a parameterless SELECT without holding them all in memory."""
        raise NotImplementedError

    def tables(self) -> dict[str, set[str]]:
        """The store's own (not temporary) tables, each with its column names."""
        raise NotImplementedError

    def try_lock(self, audience: int) -> bool:
        """Take this audience's lock for the life of the connection, if nobody holds it."""
        raise NotImplementedError

    def lock_held(self, audience: int) -> bool:
        """Whether another connection holds this audience's lock now; takes and keeps nothing.

        The same lock `try_lock` takes, tried without waiting and let go of at once.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection: temporary tables, locks and an open throwaway go with it."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Session settings applied once the schema version is known to be readable."""

    def create_namespace(self) -> None:
        """Create whatever holds the store's tables before the first table is made."""

    def lock_schema(self) -> None:
        """Inside a transaction: keep other processes from creating or upgrading at once."""

    def analyze(self, table: str) -> None:
        """Refresh the planner's statistics of a temporary table that was just filled."""

    def reclaim(self, table: str) -> None:
        """An emptied temporary table: drop the dead rows its DELETEs left behind."""

    def reset_ids(self, table: str) -> None:
        """After rows were loaded with their ids: the next generated id follows the largest."""

    def lock_audience(self, audience: int, label: str, timeout: float) -> None:
        """Poll `try_lock` until `timeout`, then fail with a message that says what to do."""
        deadline = time.monotonic() + timeout
        while not self.try_lock(audience):
            if time.monotonic() >= deadline:
                msg = (
                    f"audience {label} is being synced by another run on store "
                    f"{self.location!r} (waited {timeout:g} s): let it finish, or raise "
                    "`store_lock_timeout`"
                )
                raise StoreError(msg)
            time.sleep(0.2)


class Watchdog:
    """Ends a connection's operation that outlasts its deadline, from a thread of its own.

    A database server that stops answering (a stopped process, a vanished host) leaves the
    connection waiting for bytes that never come, and a server-side statement timeout never
    fires in a stopped process: at the deadline, `expire` is called (it shuts the connection's
    socket down, so the waiting call fails at once) and `fired` stays true from then on.
    Invariant: at most one deadline is armed; nested `bounded` blocks share the outermost one.
    """

    def __init__(self, seconds: float, expire: Callable[[], None]) -> None:
        self.seconds = seconds
        self.fired = False
        self._expire = expire
        self._deadline: float | None = None
        self._depth = 0
        self._closed = False
        self._wake = threading.Condition()
        threading.Thread(target=self._watch, name="store-watchdog", daemon=True).start()

    @contextmanager
    def bounded(self) -> Iterator[None]:
        """Arm the deadline for the operation inside the block (re-armed by `extend`)."""
        with self._wake:
            self._depth += 1
            if self._depth == 1:
                self._deadline = time.monotonic() + self.seconds
                self._wake.notify()
        try:
            yield
        finally:
            with self._wake:
                self._depth -= 1
                if not self._depth:
                    self._deadline = None

    def extend(self) -> None:
        """The operation made progress (a row streamed): its deadline starts again."""
        if self._deadline is not None:
            self._deadline = time.monotonic() + self.seconds

    def close(self) -> None:
        """Stop watching; the thread ends."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _watch(self) -> None:
        with self._wake:
            while not self._closed:
                if self._deadline is None:
                    self._wake.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                self.fired = True
                self._deadline = None
                self._expire()
