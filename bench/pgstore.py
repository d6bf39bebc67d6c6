"""PostgreSQL for the benchmark: the test suite's throwaway server (tests/postgres.py), one per run.

The server class, its binaries lookup and its start/stop are tests/postgres.py's own; this module
adds what the bench needs around it: a fresh database per scenario (so each store uses the
default schema, as a real one would), the size of a store, and the CPU the server spent.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psycopg
from psycopg import sql

from target_tiktok_audiences.store.postgres import split_schema
from tests.postgres import PostgresServer, PostgresUnavailable

__all__ = ["BenchPostgres", "PostgresUnavailable"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                kids += [int(x) for x in Path(task.path, "children").read_text().split()]
    return kids


class BenchPostgres(PostgresServer):
    """tests/postgres.py's server, with a database of its own per store."""

    database = "bench"

    def new_store(self, name: str) -> str:
        """A fresh, empty database `name` (dropped first if it exists); its store URL.

        No `?schema=`: the store uses the default schema (tiktok_audiences).
        """
        with psycopg.connect(self.url(database="postgres"), autocommit=True) as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(database=name)

    def facts(self) -> str:
        """Version, address and the settings that matter for speed."""
        with psycopg.connect(self.url(), autocommit=True) as db:
            values = {
                name: db.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
                for name in (
                    "server_version", "shared_buffers", "work_mem", "fsync",
                    "synchronous_commit", "full_page_writes",
                )
            }  # fmt: skip
        return (
            f"postgresql: {values.pop('server_version')} at 127.0.0.1:{self.port} as "
            f"{self.user if os.geteuid() == 0 else 'this user'} (tests/postgres.py's server, "
            f"data in {self.data}); " + ", ".join(f"{k} {v}" for k, v in values.items())
        )

    def postmaster_pid(self) -> int | None:
        """The server's main process (first line of postmaster.pid)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cpu_seconds(self) -> float | None:
        """CPU the server has used so far: postmaster, reaped backends, live children.

        Taken before and after a run, the difference is the server's CPU for that run: a
        backend alive at the first reading and gone at the second has moved, all of its CPU,
        from the live children into the postmaster's reaped-children times.
        """
        pid = self.postmaster_pid()
        fields = _stat_fields(pid) if pid else None
        if pid is None or fields is None:
            return None
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        for child in _children(pid):
            child_fields = _stat_fields(child)
            if child_fields is not None:
                ticks += int(child_fields[11]) + int(child_fields[12])
        return ticks / _CLK_TCK


def store_stats(url: str) -> tuple[int, int, str]:
    """(bytes, stored identifiers, how): pg_total_relation_size of every table in the store's
    schema (heap, indexes, TOAST; WAL not included), non-null slot columns of its members."""
    conninfo, schema = split_schema(url)
    with psycopg.connect(conninfo, autocommit=True) as db:
        tables = db.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 2 DESC",
            (schema,),
        ).fetchall()
        slots = [
            row[0]
            for row in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'members' AND column_name ~ '^s[0-9]+$' "
                "ORDER BY ordinal_position",
                (schema,),
            )
        ]
        members = sql.Identifier(schema, "members")
        if slots:
            expr = sql.SQL(" + ").join(
                sql.SQL("({} IS NOT NULL)::int").format(sql.Identifier(c)) for c in slots
            )
            query = sql.SQL("SELECT COALESCE(SUM({}), 0) FROM {}").format(expr, members)
            how = f"non-null {'/'.join(slots)} in members"
        else:
            query = sql.SQL("SELECT COUNT(*) FROM {}").format(members)
            how = "rows of members (no s<N> slot columns found)"
        ids = int(db.execute(query).fetchone()[0])
    size = sum(int(total) for _, total, _ in tables)
    parts = ", ".join(
        f"{name} {total / 1e6:.1f} MB (indexes {index / 1e6:.1f})"
        for name, total, index in tables
        if total >= 1e5
    )
    how += f"; pg_total_relation_size in schema {schema}: {parts}"
    return size, ids, how
