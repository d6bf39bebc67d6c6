"""History: every run, what it did to each audience, and TikTok's receipts for it.

A run is recorded from its start (`start_run`, which first prunes the runs older than
`history_days`, with their rows and receipts). Each audience's sync adds its report row when it
ends, ok or failed with its one-line cause (`record_sync`; a sync applied again in the same
run replaces it). Each confirmed mapping request leaves a receipt, its TikTok `request_id` and
the rows it carried, written in the transaction of the confirmation it proves
(`confirm.Confirmation.confirm_planned`), so a receipt exists exactly for what the store holds
as confirmed. A connection that started no run (a dry run, `status`, `store copy`) records
nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from target_tiktok_audiences.store.audiences import Audiences
from target_tiktok_audiences.store.backend import Backend

DAY_SECONDS = 86400.0
# The report's counts a run keeps per audience, as `report_counts` names them.
_COUNTS = ("added", "removed", "changed", "unchanged", "held", "requests")
# A run that synced no audience: added to requests (HistoryEntry's order), all unknown.
_NO_COUNTS = (None,) * 8


@dataclass(frozen=True)
class HistoryEntry:
    """One run's record of one audience (`audience` None: a run that synced no audience).

    `started_at` is the run's start; `finished_at` when the audience's sync ended (for a run
    without audiences, when the run ended; None while it runs, or if it died). The counts are
    None for a run without audiences. `request_ids`: the receipts, in confirmation order.
    """

    run_id: int
    started_at: float
    finished_at: float | None
    audience: str | None
    audience_id: str | None
    result: str | None
    error: str | None
    added: int | None
    removed: int | None
    changed: int | None
    unchanged: int | None
    skipped: int | None
    skipped_by_reason: dict[str, int] | None
    held: int | None
    requests: int | None
    request_ids: tuple[str, ...]


class History(Audiences):
    """Records runs, their per-audience results and receipts; reads them back, newest first."""

    _run: int | None = None  # the run this connection records (None: it records nothing)

    def start_run(self, history_days: int) -> int:
        """Forget runs that started over `history_days` ago, then record this run's start.

        Under the schema lock, so that the newest run's id is this one's when it is read back
        (another process starting a run waits; RETURNING is newer than some SQLite builds).
        """
        now = time.time()
        old = "SELECT id FROM history_runs WHERE started_at < ?"
        cutoff = (now - history_days * DAY_SECONDS,)
        with self.transaction() as db:
            db.lock_schema()
            db.execute(f"DELETE FROM history_receipts WHERE run IN ({old})", cutoff)
            db.execute(f"DELETE FROM history_audiences WHERE run IN ({old})", cutoff)
            db.execute("DELETE FROM history_runs WHERE started_at < ?", cutoff)
            db.execute("INSERT INTO history_runs (started_at) VALUES (?)", (now,))
            run = int(db.execute("SELECT MAX(id) FROM history_runs").fetchone()[0])
        self._run = run
        return run

    def finish_run(self) -> None:
        """The run ended without failing (a failed sync has already marked it failed)."""
        if self._run is None:
            return
        with self.transaction() as db:
            db.execute(
                "UPDATE history_runs SET finished_at = COALESCE(finished_at, ?), "
                "result = COALESCE(result, 'ok') WHERE id = ?",
                (time.time(), self._run),
            )

    def record_sync(
        self, audience: int, result: str, error: str | None, counts: dict[str, Any]
    ) -> None:
        """Record how an audience's sync ended: its last result (`status`), and this run's.

        The audience keeps the counts of its last sync that did not fail. A failed sync fails
        the run too, with the first failure's cause: nothing after it is synced.
        """
        self.record_result(audience, result, error, counts if result == "ok" else None)
        if self._run is None:
            return
        skipped = {str(k): int(v) for k, v in counts["skipped"].items()}
        names = ", ".join(_COUNTS)
        values = [int(counts[name]) for name in _COUNTS]
        row = self.get_audience(audience)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO history_audiences (run, audience, audience_id, finished_at, result, "
                f"error, skipped, skipped_by_reason, {names}) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, {', '.join('?' * len(_COUNTS))}) "
                "ON CONFLICT (run, audience) DO UPDATE SET audience_id = excluded.audience_id, "
                "finished_at = excluded.finished_at, result = excluded.result, "
                "error = excluded.error, skipped = excluded.skipped, "
                "skipped_by_reason = excluded.skipped_by_reason, "
                + ", ".join(f"{name} = excluded.{name}" for name in _COUNTS),
                (
                    self._run,
                    audience,
                    row.audience_id,
                    time.time(),
                    result,
                    error,
                    sum(skipped.values()),
                    json.dumps(skipped, sort_keys=True),
                    *values,
                ),
            )
            if result != "ok":
                db.execute(
                    "UPDATE history_runs SET finished_at = ?, result = ?, "
                    "error = COALESCE(error, ?) WHERE id = ?",
                    (time.time(), result, error, self._run),
                )

    def _keep_receipts(
        self, db: Backend, audience: int, action: str, receipts: Sequence[tuple[str, int]]
    ) -> None:
        """Inside a confirmation's transaction: the (request_id, rows) of what it confirms."""
        if self._run is None:
            return
        for request_id, rows in receipts:
            db.execute(
                "INSERT INTO history_receipts (run, audience, action, request_id, rows) "
                "VALUES (?, ?, ?, ?, ?)",
                (self._run, audience, action, request_id, rows),
            )

    def history(self, *, key: str | None = None, limit: int | None = None) -> list[HistoryEntry]:
        """The recorded runs, newest first, each with its audiences in the order they ended.

        `key`: only the audiences of that key of `audiences` (their runs only); `limit`: the
        newest that many runs. A run that synced no audience shows as one entry, unless `key`.
        """
        where = ""
        args: list[Any] = []
        if key is not None:
            where = (
                " WHERE id IN (SELECT h.run FROM history_audiences h JOIN audiences a "
                "ON a.id = h.audience WHERE a.stream = ?)"
            )
            args.append(key)
        query = (
            "SELECT id, started_at, finished_at, result, error FROM history_runs"
            f"{where} ORDER BY id DESC"
        )
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        entries: list[HistoryEntry] = []
        for run, started, finished, result, error in self._db.execute(query, args).fetchall():
            rows = self._run_rows(run, key)
            if not rows and key is None:
                rows = [(finished, None, None, result, error, *_NO_COUNTS, ())]
            entries.extend(HistoryEntry(run, started, *row) for row in rows)
        return entries

    def _run_rows(self, run: int, key: str | None) -> list[tuple[Any, ...]]:
        """One run's audience rows, from `finished_at` on, in the order their syncs ended."""
        query = (
            "SELECT h.audience, h.finished_at, a.stream, h.audience_id, h.result, h.error, "
            "h.added, h.removed, h.changed, h.unchanged, h.skipped, h.skipped_by_reason, "
            "h.held, h.requests FROM history_audiences h JOIN audiences a ON a.id = h.audience "
            "WHERE h.run = ?" + (" AND a.stream = ?" if key is not None else "")
        )
        args: list[Any] = [run] if key is None else [run, key]
        receipts: dict[int, list[str]] = {}
        for audience, request_id in self._db.execute(
            "SELECT audience, request_id FROM history_receipts WHERE run = ? ORDER BY id", (run,)
        ).fetchall():
            receipts.setdefault(audience, []).append(request_id)
        rows = self._db.execute(query + " ORDER BY h.finished_at, h.audience", args).fetchall()
        return [
            (
                *row[1:11],
                json.loads(row[11]),
                row[12],
                row[13],
                tuple(receipts.get(row[0], ())),
            )
            for row in rows
        ]
