"""What the membership store needs from a database, and the few places SQL dialects differ.

The store's SQL (schema, diff, confirmation, copy) is written once, in `store.py`, with `?` and
`:name` parameters and a handful of words filled in per database (`{blob}`, `{real}`, ...). A
backend supplies the connection, those words, bulk loading and streaming (executemany for SQLite,
COPY for PostgreSQL), and the per-audience lock that keeps two runs off one audience.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.redaction import scrub

Params = Sequence[Any] | Mapping[str, Any]


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

    def __init__(self, location: str, *, throwaway: bool) -> None:
        self.location = location
        self.throwaway = throwaway
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

    def missing_error(self) -> StoreMissingError:
        """The store does not exist and the caller asked not to create it."""
        return StoreMissingError(
            f"no membership store at {self.location!r}: no sync has stored anything there yet "
            "(check `membership_store`)"
        )

    def execute(self, sql: str, params: Params = ()) -> Any:
        """Run one statement written with `?` or `:name` parameters; return its cursor."""
        raise NotImplementedError

    def load(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append many rows to a table, without a round trip per row."""
        raise NotImplementedError

    def dump(self, query: str) -> Iterator[tuple[Any, ...]]:
        """Stream the rows of a parameterless SELECT without holding them all in memory."""
        raise NotImplementedError

    def tables(self) -> dict[str, set[str]]:
        """The store's own (not temporary) tables, each with its column names."""
        raise NotImplementedError

    def try_lock(self, audience: int) -> bool:
        """Take this audience's lock for the life of the connection, if nobody holds it."""
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
