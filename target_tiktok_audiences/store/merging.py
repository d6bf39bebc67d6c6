"""Merged sends: the planned rows of several audiences of the same advertisers, one per person.

A person planned with the same hashes in the same slots in several of the audiences is one
merged row (`merge_planned`), known by the seq of its first planned row (`first`); each of its
entries names the audiences that hash is sent to (not one that keeps it: another of its people
sends it). Batches are runs of merged rows in plan order (`next_merged_batch`), so a dry run
and the real run, on either database, send the very same bodies. A batch TikTok confirmed is
applied in each audience it carried, exactly the planned rows it carried, in one transaction
(`confirm_merged`).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from target_tiktok_audiences.store.confirm import Confirmation
from target_tiktok_audiences.store.schema import SENDABLE, SLOT_COLUMNS, SLOT_LIST, in_words
from target_tiktok_audiences.store.sqlite import read_only
from target_tiktok_audiences.tiktok.mapping import Batch, Entry, MergedRow

# Each planned row of a merged send, with the merged row it goes in. In the work file on
# SQLite, where worker processes read the batches they build bodies of.
_MERGED_SCHEMA = """
CREATE {work_table} IF NOT EXISTS {work}merged (
    first INTEGER NOT NULL,
    audience INTEGER NOT NULL,
    seq INTEGER NOT NULL
)"""
_MERGED_INDEX = "CREATE INDEX IF NOT EXISTS {work}merged_rows ON merged (first, audience, seq)"
_DROP_INDEX = "DROP INDEX IF EXISTS {work}merged_rows"
# A merged batch's planned rows, each with its merged row, audience, kept mask and slots.
_BATCH_ROWS = (
    f"SELECT m.first, p.audience, p.kept, {', '.join(f'p.{c}' for c in SLOT_COLUMNS)} "
    "FROM merged m JOIN plan p ON p.seq = m.seq WHERE m.first BETWEEN ? AND ? "
    "ORDER BY m.first, m.seq"
)


def merge_rows(
    planned: Iterable[Sequence[Any]], audience_ids: Mapping[int, str]
) -> list[MergedRow]:
    """Merged rows from planned rows (first, audience, kept, slots...), grouped by `first`.

    The planned rows of one merged row are neighbours and have the same slots. An entry lists
    the TikTok id (`audience_ids`) of each audience whose row sends that slot's hash (its bit
    in `kept` clear), once each, in plan order; a hash no audience sends is None.
    """
    merged: list[MergedRow] = []
    group: list[Sequence[Any]] = []
    for row in planned:
        if group and row[0] != group[0][0]:
            merged.append(_merged_row(group, audience_ids))
            group = []
        group.append(row)
    if group:
        merged.append(_merged_row(group, audience_ids))
    return merged


def _merged_row(group: Sequence[Sequence[Any]], audience_ids: Mapping[int, str]) -> MergedRow:
    entries: list[Entry | None] = []
    for i, digest in enumerate(group[0][3:]):
        ids = () if digest is None else _sent_to(group, i, audience_ids)
        entries.append((bytes(digest), ids) if ids else None)
    return MergedRow(entries)


def _sent_to(
    group: Sequence[Sequence[Any]], slot: int, audience_ids: Mapping[int, str]
) -> tuple[str, ...]:
    """The audiences (TikTok ids, once each, in plan order) whose row sends this slot's hash."""
    ids = (audience_ids[row[1]] for row in group if not row[2] & (1 << slot))
    return tuple(dict.fromkeys(ids))


@dataclass(frozen=True)
class MergedRows:
    """Reads a merged batch's rows from a run's work file, in a worker process (see PlanRows).

    `audience_ids`: (audience, TikTok id) of each audience of the send.
    """

    path: str
    audience_ids: tuple[tuple[int, str], ...]

    def __call__(self, first: int, last: int) -> list[MergedRow]:
        """The merged rows numbered `first` to `last`, in plan order."""
        db = sqlite3.connect(read_only(self.path), uri=True)
        try:
            return merge_rows(db.execute(_BATCH_ROWS, (first, last)), dict(self.audience_ids))
        finally:
            db.close()


@dataclass(frozen=True)
class MergedPlan:
    """What `merge_planned` found: merged rows, and each audience's planned rows to send."""

    rows: int
    planned: Mapping[int, int]

    def requests_alone(self, batch_size: int) -> int:
        """Requests the audiences' rows would take, each audience sent on its own."""
        return sum(math.ceil(n / batch_size) for n in self.planned.values())


class Merging(Confirmation):
    """Merges the planned rows of several audiences, reads them in batches, confirms them."""

    _merged_table = False  # whether this connection made the `merged` table yet

    def merge_planned(self, action: str, audiences: Sequence[int]) -> MergedPlan:
        """Number the audiences' planned rows of `action` with a hash to send, by merged row.

        Rows with the same slots are one merged row, known by the lowest seq among them.
        Replaces the previous merge; the index is built once the rows are in.
        """
        db = self._db
        if not self._merged_table:
            for statement in in_words(_MERGED_SCHEMA, db):
                db.execute(statement)
            self._merged_table = True
        db.execute(in_words(_DROP_INDEX, db)[0])
        db.execute("DELETE FROM merged")
        names = ", ".join(f":a{i}" for i in range(len(audiences)))
        args: dict[str, object] = {f"a{i}": a for i, a in enumerate(audiences)}
        db.execute(
            f"INSERT INTO merged (first, audience, seq) SELECT MIN(seq) OVER "
            f"(PARTITION BY {SLOT_LIST}), audience, seq FROM plan WHERE action = :action "
            f"AND audience IN ({names}) AND ({SENDABLE})",
            {**args, "action": action},
        )
        db.execute(in_words(_MERGED_INDEX, db)[0])
        db.analyze("merged")
        rows = db.execute("SELECT COUNT(DISTINCT first) FROM merged").fetchone()[0]
        planned = dict(
            db.execute("SELECT audience, COUNT(*) FROM merged GROUP BY audience").fetchall()
        )
        return MergedPlan(rows, {a: planned[a] for a in audiences if a in planned})

    def next_merged_batch(
        self, after: int, limit: int, audience_ids: Mapping[int, str]
    ) -> tuple[Batch, int] | None:
        """The next `limit` merged rows after `after`, as a batch, with its planned rows.

        Where the plan is in a work file, a worker process reads the rows (`MergedRows`);
        else they are read here, in one query finished before the batch is sent (as
        `next_batch` does, for the same reasons).
        """
        first, last, size = self._db.execute(
            "SELECT MIN(first), MAX(first), COUNT(*) FROM (SELECT DISTINCT first FROM merged "
            "WHERE first > ? ORDER BY first LIMIT ?) AS b",
            (after, limit),
        ).fetchone()
        if not size:
            return None
        planned = self._db.execute(
            "SELECT COUNT(*) FROM merged WHERE first BETWEEN ? AND ?", (first, last)
        ).fetchone()[0]
        if self._db.work_path:
            source = MergedRows(self._db.work_path, tuple(audience_ids.items()))
            return Batch(first, last, size, source=source), planned
        rows = merge_rows(self._db.execute(_BATCH_ROWS, (first, last)).fetchall(), audience_ids)
        return Batch(first, last, size, rows=rows), planned

    def confirm_merged(
        self, action: str, first: int, last: int, receipts: Sequence[tuple[str, int]]
    ) -> dict[int, list[tuple[str, int]]]:
        """Apply a confirmed merged batch (merged rows `first` to `last`) in every audience.

        `receipts`: (request_id, merged rows) of the requests that carried it, in order (one,
        or one per part of a halved batch). Each audience keeps the receipts of those that
        carried rows of its own, with how many; they are returned, by audience.
        """
        parts = self._parts(first, last, receipts)
        carried: dict[int, list[tuple[str, int]]] = {}
        for (lo, hi), (request_id, _) in zip(parts, receipts, strict=True):
            for audience, rows in self._db.execute(
                "SELECT audience, COUNT(*) FROM merged WHERE first BETWEEN ? AND ? "
                "GROUP BY audience ORDER BY audience",
                (lo, hi),
            ).fetchall():
                carried.setdefault(audience, []).append((request_id, rows))
        self._confirm(
            action,
            list(carried.items()),
            "seq IN (SELECT seq FROM merged WHERE audience = :a AND first BETWEEN :first "
            "AND :last)",
            {"first": first, "last": last},
        )
        return carried

    def _parts(
        self, first: int, last: int, receipts: Sequence[tuple[str, int]]
    ) -> list[tuple[int, int]]:
        """The range of merged rows each request of a batch carried (several: it was halved)."""
        if len(receipts) == 1:
            return [(first, last)]
        firsts = [
            row[0]
            for row in self._db.execute(
                "SELECT DISTINCT first FROM merged WHERE first BETWEEN ? AND ? ORDER BY first",
                (first, last),
            ).fetchall()
        ]
        parts, at = [], 0
        for _, rows in receipts:
            parts.append((firsts[at], firsts[at + rows - 1]))
            at += rows
        return parts
