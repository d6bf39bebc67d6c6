"""One connection to a membership store: opening it, transactions, the per-audience locks.

Opening checks the schema version before any change (a newer store, or another application's
data, is refused untouched), creates or migrates the store, then makes this run's temporary
tables. Everything the store does goes through the one backend connection opened here.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Self

from target_tiktok_audiences.settings.schema import setting_default
from target_tiktok_audiences.store.backend import Backend, Params
from target_tiktok_audiences.store.schema import in_words, stored_version, upgrade
from target_tiktok_audiences.store.sqlite import SQLiteBackend
from target_tiktok_audiences.store.temporary import TEMP_SCHEMA

if TYPE_CHECKING:
    from target_tiktok_audiences.workers import Workers


# Fewer rows than this to read, and a query runs here: worker processes would cost more.
BESIDE_ROWS = 50_000
Query = tuple[str, Params]  # a statement and its parameters
Found = list[tuple[Any, ...]]  # a query's rows


def is_postgres_url(location: str) -> bool:
    """Whether `membership_store` names a PostgreSQL database rather than a SQLite file."""
    return location.startswith(("postgresql://", "postgres://"))


class Connection:
    """A store opened in SQLite or PostgreSQL, one connection per run, and this run's state."""

    def __init__(
        self,
        location: str,
        *,
        throwaway: bool = False,
        create: bool = True,
        timeout: float | None = None,
        workers: Workers | None = None,
    ) -> None:
        """Open the store at `location`: a SQLite path (or ":memory:") or a PostgreSQL URL.

        `throwaway`: a dry run's store; it plans exactly like a real run and nothing it
        writes outlives `close` (SQLite: a temporary copy; PostgreSQL: a transaction that is
        rolled back). `create=False`: fail with StoreMissingError rather than create a store.
        `timeout` (`store_timeout`, whose default it takes when None): the longest any one
        store operation may take, connecting included; past it the run ends with a StoreError
        naming the store. `workers`: the run's, where some long read-only queries may run
        side by side (`_beside`).
        """
        if timeout is None:
            timeout = float(setting_default("store_timeout"))
        backend: Backend
        if is_postgres_url(location):
            # Imported here: psycopg takes a third of a second to import, SQLite users never pay.
            from target_tiktok_audiences.store.postgres import PostgresBackend

            backend = PostgresBackend(location, throwaway=throwaway, timeout=timeout)
        else:
            backend = SQLiteBackend(location, throwaway=throwaway, create=create, timeout=timeout)
        self._db: Backend = backend
        self._workers = workers
        self.path = backend.location
        self._staged_indexed = False
        # Audiences with rows in each temporary table: clearing the only one is a truncate.
        self._in_temp: dict[str, set[int]] = {"staged": set(), "plan": set()}
        # Groups staged with a row that removes its person: only they need looking for one.
        self._leaving: set[int] = set()
        # Groups whose staged rows nobody reads again: they go with the next truncate.
        self._retired: set[int] = set()
        # Sources replaced whole in this run: every person of theirs came in a record now.
        self._whole_fresh: set[int] = set()
        # Audiences whose staged rows `stage_composed` made, some of them from earlier runs.
        self._composed: set[int] = set()
        # Composed first syncs planned by `stage_composed` itself, with the people planned.
        self._planned_first: dict[int, int] = {}
        # Those `plan` then counted: nothing is staged for them, their planned adds are
        # what holding them moves (`hold`).
        self._planned_from_sources: set[int] = set()
        # Per slot, the hashes repeated among the people a first sync was planned from, as
        # worker processes find them (`stage_composed`).
        self._repeats: dict[int, list[Future[Found]]] = {}
        try:
            # Before any change: a newer store is not touched.
            version = stored_version(backend, self.path)
            if version is None and not create:
                raise backend.missing_error()
            backend.prepare()
            upgrade(backend, self.path, version)
            for statement in in_words(TEMP_SCHEMA, backend):
                backend.execute(statement)
        except backend.errors as exc:
            backend.close()
            raise backend.open_error(exc) from None
        except BaseException:
            backend.close()
            raise

    @classmethod
    def open(
        cls,
        location: str,
        *,
        throwaway: bool = False,
        create: bool = True,
        timeout: float | None = None,
        workers: Workers | None = None,
    ) -> Self:
        """Open the store a `membership_store` setting names (see `__init__`)."""
        return cls(location, throwaway=throwaway, create=create, timeout=timeout, workers=workers)

    def _beside(self, queries: Sequence[Query], *, rows: int) -> list[Found] | None:
        """The rows of read-only queries, run side by side in worker processes, in order.

        `rows`: how many rows they read in all. None where they are not worth it (fewer than
        `BESIDE_ROWS`), or cannot be (a single core; the run's tables private to this
        connection, as in PostgreSQL): the caller then runs them here, as statements of its
        own.
        """
        tasks = self._start_beside(queries, rows=rows)
        return None if tasks is None else [task.result() for task in tasks]

    def _start_beside(self, queries: Sequence[Query], *, rows: int) -> list[Future[Found]] | None:
        """Start `_beside`'s queries, in order, and return at once: their rows to come."""
        reader = self._db.reader()
        workers = self._workers
        if rows < BESIDE_ROWS or reader is None or workers is None or workers.count < 2:
            return None
        return [workers.submit(reader, sql, params, parallel=True) for sql, params in queries]

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """The database driver's exception classes, for callers that catch its failures."""
        return self._db.errors

    def close(self) -> None:
        """Close the connection (temporary tables and the work file go with it), release locks."""
        self._db.close()

    def lock_audience(self, audience: int, label: str, timeout: float) -> None:
        """Keep other runs off this audience until this run ends (or dies: the lock is freed).

        Runs on different audiences of one store proceed side by side; a second run on the
        same audience waits up to `timeout` seconds, then fails with a clear message.
        """
        self._db.lock_audience(audience, label, timeout)

    def transaction(self) -> AbstractContextManager[Backend]:
        """All or nothing (`Backend.transaction`): a run that dies inside changes nothing."""
        return self._db.transaction()
