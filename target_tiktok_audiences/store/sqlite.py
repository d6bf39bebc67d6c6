"""The membership store in a SQLite file: one machine, no server, the default.

A dry run works on a temporary copy of the file (SQLite's backup API), so it plans exactly as a
real run would and leaves the file untouched. Per-audience locks are `flock`s on small files
beside the store, which the OS frees when the process dies.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from target_tiktok_audiences.store.backend import Backend, Params, Rows


def read_only(path: str) -> str:
    """The URI that opens a database file read-only, never creating it.

    By its absolute path: a file URI cannot be relative, and `membership_store` may be.
    """
    return Path(path).resolve().as_uri() + "?mode=ro"


@dataclass(frozen=True)
class FileReader:
    """Runs one read-only query on a run's store file and work file, in a worker process.

    Picklable, and on a connection of its own (as `PlanRows` reads batches): it sees what the
    run's connection committed, and never creates a file.
    """

    store: str
    work: str

    def __call__(self, sql: str, params: Params) -> list[tuple[Any, ...]]:
        """The query's rows; `work.` tables are found by their names alone, as in the run."""
        db = sqlite3.connect(read_only(self.store), uri=True)
        try:
            db.execute("PRAGMA cache_size=-16384")  # as the run's: a grouping sorts in memory
            db.execute("ATTACH DATABASE ? AS work", (read_only(self.work),))
            return db.execute(sql, params).fetchall()
        finally:
            db.close()


class SQLiteBackend(Backend):
    """A SQLite connection in autocommit mode; the store opens its own transactions."""

    words = {
        "blob": "BLOB",
        "real": "REAL",
        "id_pk": "INTEGER PRIMARY KEY",
        "row_order": "INTEGER PRIMARY KEY",  # the rowid: free, and in insertion order
        "table_suffix": " WITHOUT ROWID",
        "differs": "IS NOT",
        # Equal, NULL equal to NULL: `IS` probes an index like `=` does...
        "same": "{a} IS {b}",
        # ...when the probed table is the inner one, which CROSS JOIN makes it in SQLite.
        "probe_join": "CROSS JOIN",
        "in_rows": "IN ({rows})",
        # A byte of a blob that is 0 or 1, as that number (SQLite has no get_byte).
        "flag_at": "(substr({blob}, {at} + 1, 1) = x'01')",
        # The plan lives in the attached work file, where worker processes can read it.
        "work_table": "TABLE",
        "work": "work.",
        # A person's key of its own for the people of an audience's second, third... stream:
        # two bytes of the stream's index before the key (`||` of blobs is text: cast back).
        "mix_person": "CAST(x'{index:04x}' || {person} AS BLOB)",
    }
    errors = (sqlite3.Error,)
    begin = ("BEGIN IMMEDIATE",)  # take the write lock first: no deadlock between two writers
    hint = "a writable SQLite file"
    elsewhere = "a file of its own (a new path)"

    def __init__(
        self,
        path: str,
        *,
        throwaway: bool = False,
        create: bool = True,
        timeout: float,
    ) -> None:
        """Open (creating it, private to the user) the file at `path`.

        `throwaway`: work on a private temporary copy of that file (empty if there is none),
        removed on close: a dry run plans exactly like a real run and changes nothing, and,
        being on disk rather than in memory, stays flat however large the audience.
        `timeout`: how long a statement waits for another process's lock on the file (SQLite's
        busy wait, the only place a local file waits on anyone) before the run ends.
        """
        super().__init__(path, throwaway=throwaway, timeout=timeout)
        self._locks: dict[int, int] = {}
        self._held: list[int] = []  # locks on this run's temporary files
        self._copy: str | None = None
        if not create and path != ":memory:" and not Path(path).exists():
            raise self.missing_error()
        try:
            if path == ":memory:":
                self._db = sqlite3.connect(":memory:", isolation_level=None)
            elif throwaway:
                self._copy = _run_file(self._held)
                atexit.register(self.close)  # a dry run that fails leaves no copy behind
                self._db = sqlite3.connect(self._copy, isolation_level=None)
                if Path(path).exists():
                    source = sqlite3.connect(read_only(path), uri=True)
                    source.backup(self._db)
                    source.close()
            else:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
                self._db = sqlite3.connect(path, isolation_level=None, timeout=timeout)
        except (sqlite3.Error, OSError) as exc:
            raise self.open_error(exc) from None

    def prepare(self) -> None:
        """WAL lets `status` read while a run writes; NORMAL sync is safe under WAL."""
        # Switching a new file to WAL needs it to itself, and SQLite answers "locked" at once,
        # without its busy wait, while another run is creating the same store: wait here.
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if time.monotonic() > deadline:
                    raise self.timeout_error() from None
                time.sleep(0.05)
        self._db.execute("PRAGMA synchronous=NORMAL")
        # 16 MiB of page cache: enough for the diff's index scans, and memory stays flat
        # however large the audience grows.
        self._db.execute("PRAGMA cache_size=-16384")
        # A large sort (planning a first sync, building an index) may use a second core.
        self._db.execute("PRAGMA threads=1")
        # The run's plan goes in a private file of its own, which worker processes read a batch
        # at a time (`PlanRows`): the hashes need not pass through this process. WAL: they read
        # while this connection writes; no sync: the file dies with the run.
        self.work_path = _run_file(self._held)
        atexit.register(self.close)
        self._db.execute("ATTACH DATABASE ? AS work", (self.work_path,))
        self._db.execute("PRAGMA work.journal_mode=WAL")
        self._db.execute("PRAGMA work.synchronous=OFF")

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one statement (SQLite speaks `?` and `:name` natively).

        A lock another process held past `timeout` ends the run with the timeout's message.
        """
        try:
            return self._db.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise self.timeout_error() from None
            raise

    def reader(self) -> FileReader | None:
        """Reads the store's file (a dry run's copy) and the work file (None for ":memory:")."""
        store = self._copy or self.location
        if store == ":memory:" or self.work_path is None:
            return None
        return FileReader(store, self.work_path)

    def load(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """executemany: in-process, so no round trips to save; all or nothing.

        Outside a transaction it opens one of its own (deferred: a temporary table's rows take
        no lock on the store): in autocommit mode, each row would be a transaction.
        """
        own = not self._db.in_transaction
        try:
            if own:
                self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                rows,
            )
            if own:
                self._db.execute("COMMIT")
        except BaseException as exc:
            if own and self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                raise self.timeout_error() from None
            raise

    def dump(self, query: str) -> Rows:
        """Iterate the cursor: SQLite steps through the rows as they are read."""
        yield from self._db.execute(query)

    def tables(self) -> dict[str, set[str]]:
        """The file's own tables (not temporary ones, nor SQLite's internal `sqlite_*`)."""
        found: dict[str, set[str]] = {}
        for table, column in self._db.execute(
            "SELECT m.name, c.name FROM main.sqlite_master m, pragma_table_info(m.name, 'main') c "
            "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        ):
            found.setdefault(table, set()).add(column)
        return found

    def try_lock(self, audience: int) -> bool:
        """`flock` a file per audience beside the store; none needed for a copy in memory."""
        if audience in self._locks or self.throwaway or self.location == ":memory:":
            return True
        lock = self._lock_path(audience)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._locks[audience] = fd
        return True

    def lock_held(self, audience: int) -> bool:
        """Try the audience's lock file read-only, creating nothing: no file, no holder."""
        if audience in self._locks or self.throwaway or self.location == ":memory:":
            return False
        try:
            fd = os.open(self._lock_path(audience), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing lets go of a lock this took
        return False

    def _lock_path(self, audience: int) -> Path:
        return Path(self.location + ".locks") / f"audience-{audience}.lock"

    def close(self) -> None:
        """Close the connection, let go of the lock files, remove the work file and copy."""
        self._db.close()
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()
        for path in (self._copy, self.work_path):
            if path:
                _remove_run_file(path.removesuffix(".sqlite"))
        for fd in self._held:
            os.close(fd)
        self._held.clear()
        self._copy = self.work_path = None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another connection's lock (its busy wait ran out)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


# A run's temporary databases (its work file, a dry run's copy of the store) hold hashes.
# Each has a lock file beside it that the run holds (`flock`) while it lives, so a later run
# removes the files of one killed before it could (SIGKILL, out of memory) and never those of
# a live one.
_RUN_FILES = "tiktok-audiences-run-"
_RUN_FILE_SUFFIXES = (".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal", ".lock")
# A lock file younger than this may not be held yet: its run is between creating and locking it.
_NEW_RUN_FILE_SECONDS = 60


def _run_file(held: list[int]) -> str:
    """The path of a new empty temporary database only this user may read, held by this run."""
    _remove_orphaned_run_files()
    fd, lock = tempfile.mkstemp(prefix=_RUN_FILES, suffix=".lock")
    fcntl.flock(fd, fcntl.LOCK_EX)
    held.append(fd)
    path = lock.removesuffix(".lock") + ".sqlite"
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    return path


def _remove_run_file(base: str) -> None:
    for suffix in _RUN_FILE_SUFFIXES:
        Path(base + suffix).unlink(missing_ok=True)


def _remove_orphaned_run_files() -> None:
    """Remove the temporary files of runs that died without removing them."""
    for lock in Path(tempfile.gettempdir()).glob(f"{_RUN_FILES}*.lock"):
        # Another user's files, or a file gone meanwhile: not ours to remove.
        with contextlib.suppress(OSError):
            if time.time() - lock.stat().st_mtime < _NEW_RUN_FILE_SECONDS:
                continue
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its run lives
                _remove_run_file(str(lock).removesuffix(".lock"))
            finally:
                os.close(fd)
