"""Copying a whole store into another, across SQLite and PostgreSQL (`store copy`).

A copy is the same store: every table goes, ids kept, in one transaction in the destination,
read from one consistent snapshot of the source with every audience locked, so no run can
confirm a change the copy would miss. A destination that holds data is replaced only by force.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.settings.schema import setting_default
from target_tiktok_audiences.store.audiences import AudienceRow, Audiences
from target_tiktok_audiences.store.backend import StoreMissingError, driver_cause
from target_tiktok_audiences.store.connection import is_postgres_url
from target_tiktok_audiences.store.schema import GENERATED_IDS, TABLES

# The destination keeps its own schema version: the copy never writes the source's.
_KEEP_VERSION = {"meta": " WHERE key <> 'schema_version'"}


class Copying(Audiences):
    """Copies this store into another, table by table."""

    def _count(self, table: str) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def _is_empty(self) -> bool:
        """No row in any table but `meta`: nothing a copy into this store would replace."""
        return not any(
            self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
            for table in TABLES
            if table != "meta"
        )

    def _lock_all(self, audiences: Iterable[AudienceRow], timeout: float, doing: str) -> None:
        """Hold every audience's lock, so no run writes while the store is copied."""
        for row in audiences:
            label = f"{row.name or row.stream} (stream {row.stream})"
            try:
                self.lock_audience(row.id, label, timeout)
            except StoreError:
                msg = (
                    f"cannot {doing}: audience {label} of store {self.path!r} is being synced "
                    "by another run; let it finish and try again"
                )
                raise StoreError(msg) from None

    def copy_into(self, dest: Copying, *, force: bool, lock_timeout: float) -> dict[str, int]:
        """Copy every table of the store into `dest`, in one transaction there.

        Every table the copy loads is emptied first (`meta` but for the schema version), so
        the destination holds exactly the source's audiences, members, held people, sources
        and history (runs, their audiences' reports, receipts).

        The source is read in one consistent snapshot, with every audience locked, so no run
        can confirm a change that the copy would miss. Ids are kept: a copy is the same store.
        """
        audiences = self.list_audiences()
        if not audiences:
            msg = f"membership store {self.path!r} holds no audience: nothing to copy"
            raise StoreError(msg)
        self._lock_all(audiences, lock_timeout, "copy")
        existing = dest.list_audiences()
        if not dest._is_empty() and not force:
            msg = (
                f"membership store {dest.path!r} is not empty ({len(existing)} audiences): "
                "pass --force to replace everything in it with the copy"
            )
            raise StoreError(msg)
        dest._lock_all(existing, lock_timeout, "replace the destination")
        self._db.execute(self._db.begin_snapshot)
        try:
            counts = {table: self._count(table) for table in TABLES if table != "meta"}
            with dest.transaction() as db:
                for table in reversed(TABLES):
                    db.execute(f"DELETE FROM {table}" + _KEEP_VERSION.get(table, ""))
                for table, columns in TABLES.items():
                    query = f"SELECT {', '.join(columns)} FROM {table}"
                    query += _KEEP_VERSION.get(table, "")
                    # Closed even when loading fails: an unfinished COPY out would block the
                    # source connection.
                    with contextlib.closing(self._db.dump(query)) as rows:
                        db.load(table, columns, rows)
                for table in GENERATED_IDS:
                    db.reset_ids(table)
                copied = {table: dest._count(table) for table in counts}
                if copied != counts:
                    msg = f"copy incomplete ({copied} of {counts}): nothing was written"
                    raise StoreError(msg)
        finally:
            with contextlib.suppress(*self._db.errors):  # only ends a read: nothing to lose
                self._db.execute("COMMIT")
        return counts


def _identity(location: str) -> str:
    """What tells two `membership_store` values apart: the file, or the URL and schema."""
    if is_postgres_url(location):
        from target_tiktok_audiences.store.postgres import split_schema

        url, schema = split_schema(location)
        return f"{url.replace('postgres://', 'postgresql://', 1)}#{schema}"
    return str(Path(location).resolve())


def copy_store(
    source: str, dest: str, *, force: bool = False, lock_timeout: float | None = None
) -> dict[str, int]:
    """Copy a whole store (SQLite or PostgreSQL) into another, for `tiktok-audiences store copy`.

    Everything goes: audiences with their ids, names, times and last results, confirmed
    members, held people, the sources composed audiences are planned from, and the run
    history with its receipts. The destination
    is created if need be and written in one transaction; one that already holds data is
    refused unless `force`, which replaces it. Returns the rows copied, table by table (all
    but `meta`). Every expected failure
    is a StoreError with a one-line message, as the command line wants. `lock_timeout`: how
    long to wait for a run syncing an audience (`store_lock_timeout`'s default when None).
    """
    if lock_timeout is None:
        lock_timeout = float(setting_default("store_lock_timeout"))
    if _identity(source) == _identity(dest):
        msg = "--from and --to name the same membership store: nothing to copy"
        raise StoreError(msg)
    try:
        opened = Copying.open(source, create=False)
    except StoreMissingError:
        msg = f"no membership store at {mask_url(source)!r} to copy from: check --from"
        raise StoreMissingError(msg) from None
    with contextlib.closing(opened) as src, contextlib.closing(Copying.open(dest)) as dst:
        try:
            return src.copy_into(dst, force=force, lock_timeout=lock_timeout)
        except (*src.errors, *dst.errors) as exc:
            msg = (
                f"copying {src.path!r} to {dst.path!r} failed ({driver_cause(exc)}): nothing "
                "was written to "
                "the destination; fix the cause and run the copy again"
            )
            raise StoreError(msg) from None
