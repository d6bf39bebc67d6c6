"""Sources: each stream's latest snapshot (or, incremental, its people as changed), in hashes.

Composed audiences are planned from sources, not from one run's input. A source changes only in
the transaction that marks `dirty` the audiences planned from it, so an audience whose sources
moved is planned again in full even if the run dies right after.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from target_tiktok_audiences.store.backend import Backend
from target_tiktok_audiences.store.schema import SLOT_COLUMNS, SLOT_LIST
from target_tiktok_audiences.store.staged import Staging
from target_tiktok_audiences.tiktok.mapping import Slots


@dataclass(frozen=True)
class SourceRow:
    """The store's record of one stream's source: its latest snapshot, in hashes."""

    id: int
    stream: str

    @property
    def group(self) -> int:
        """Its staged rows' group: never an audience's (audiences stage under their own id)."""
        return -self.id


class Sources(Staging):
    """The sources of a store, and the selections of this run's records staged for them."""

    def source(self, stream: str, selection: str = "") -> SourceRow:
        """The store's row for a stream's source, created on first use (see `audience`).

        `selection`: the records of the stream an audience picks (its `where` and `split_by`,
        as text); "" for all of them.
        """
        find = "SELECT id FROM sources WHERE stream = ? AND selection = ?"
        row = self._db.execute(find, (stream, selection)).fetchone()
        if row is None:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO sources (stream, selection) VALUES (?, ?) "
                    "ON CONFLICT (stream, selection) DO NOTHING",
                    (stream, selection),
                )
            row = self._db.execute(find, (stream, selection)).fetchone()
        return SourceRow(row[0], stream)

    def snapshot_times(self) -> dict[str, float]:
        """Per stream, when a run last changed one of its sources (its newest `snapshot_at`)."""
        rows = self._db.execute(
            "SELECT stream, MAX(snapshot_at) FROM sources WHERE snapshot_at IS NOT NULL "
            "GROUP BY stream"
        ).fetchall()
        return {stream: float(at) for stream, at in rows}

    def stage_rows(
        self, group: int, rows: Sequence[tuple[bytes, int, int, str | None, Slots]]
    ) -> None:
        """Record people picked by a selection: (person, remove, no_consent, split, slots).

        As `stage`, in order; bound row by row, for the few streams that feed filtered or
        fanned-out audiences.
        """
        if not rows:
            return
        self._unindex_staged()
        self._staging(group)
        if any(remove for _, remove, _, _, _ in rows):
            self._leaving.add(group)
        self._db.load(
            "staged",
            ("audience", "person", "remove", "no_consent", "split", *SLOT_COLUMNS),
            (
                (group, person, remove, why, split, *slots)
                for person, remove, why, split, slots in rows
            ),
        )

    def filtered_people(self, group: int) -> int:
        """People staged in `group` whose last record its selection did not pick."""
        return self._db.execute(
            "SELECT COUNT(*) FROM staged WHERE audience = ? AND remove = 1 AND no_consent = 2",
            (group,),
        ).fetchone()[0]

    def split_values(self, source: SourceRow) -> list[str]:
        """The `split_by` values that a source's people have, in order."""
        return [
            row[0]
            for row in self._db.execute(
                "SELECT DISTINCT split FROM source_people WHERE source = ? AND split IS NOT NULL "
                "ORDER BY split",
                (source.id,),
            ).fetchall()
        ]

    def remember_planned(self, source: SourceRow, audience: int, dirty: Sequence[int]) -> bool:
        """Change the source by exactly the people planned for its (clean) simple audience.

        Valid when the audience's confirmed members are what the source held (the audience
        is not `dirty`, was uploaded and holds nobody back) and its plan was made against
        those members from the source's staged rows: then the planned people are the
        source's changes, and the source needs no pass of its own. Marks `dirty` (the
        audiences planned from this source) when anything changed; True then.
        """
        args = {"s": source.id, "a": audience}
        planned = "SELECT person FROM plan WHERE audience = :a"
        with self.transaction() as db:
            if not db.execute(planned + " LIMIT 1", args).fetchone():
                return False
            db.execute(
                f"DELETE FROM source_people WHERE source = :s AND person IN ({planned})", args
            )
            db.execute(
                f"INSERT INTO source_people (source, person, {SLOT_LIST}) SELECT :s, person, "
                f"{SLOT_LIST} FROM staged WHERE audience = :a AND remove = 0 "
                f"AND person IN ({planned})",
                args,
            )
            self._mark(db, source, dirty)
        return True

    def remember_first_plan(
        self, source: SourceRow, audience: int, *, whole: bool, dirty: Sequence[int]
    ) -> None:
        """The source after a first sync's plan (nobody confirmed): its planned adds.

        A first sync's plan holds each staged member once, so a whole snapshot's source is
        its adds; otherwise the staged people are replaced by them.
        """
        args = {"s": source.id, "a": audience}
        with self.transaction() as db:
            _clear_for(db, source, audience, whole=whole)
            db.execute(
                f"INSERT INTO source_people (source, person, {SLOT_LIST}) SELECT :s, person, "
                f"{SLOT_LIST} FROM plan WHERE audience = :a AND action = 'add' ORDER BY person",
                args,
            )
            self._mark(db, source, dirty)

    def remember_staged(
        self, source: SourceRow, group: int, *, whole: bool, dirty: Sequence[int]
    ) -> tuple[int, int, int]:
        """The source after what is staged in `group`: replaced by it (`whole`) or changed.

        Each person's last staged row wins. Returns (people, leavers, leavers for want of
        consent) staged, as `staged_people` counts them. A whole snapshot without a removal
        row (the usual one) is one sorted insert, each person's latest row first and the
        others refused as conflicts, with no index of what was staged: it then holds exactly
        the people staged. Otherwise the staged rows are indexed and reduced to each
        person's last one first.
        """
        direct = whole and not self.stages_leavers(group)
        if not direct:
            self._index_staged(group)
        args = {"s": source.id, "g": group}
        with self.transaction() as db:
            _clear_for(db, source, group, whole=whole)
            people = db.execute(
                f"INSERT INTO source_people (source, person, split, {SLOT_LIST}) SELECT :s, "
                f"person, split, {SLOT_LIST} FROM staged WHERE audience = :g AND remove = 0 "
                + (
                    "ORDER BY person, seq DESC ON CONFLICT (source, person) DO NOTHING"
                    if direct
                    else "ORDER BY person"
                ),
                args,
            ).rowcount
            self._mark(db, source, dirty)
        if direct:
            return people, 0, 0
        return self.staged_people(group)

    def note_fresh(self, source: SourceRow, group: int, *, whole: bool) -> None:
        """Remember, for this run, the source's people staged in `group`: their records came now.

        The report of a composed audience counts them as records, and the others (from
        sources as they last were) as people carried over. A source replaced `whole` is all
        this run's records: only its leavers need a row each.
        """
        if whole:
            self._whole_fresh.add(source.id)
            if not self.stages_leavers(group):
                return
        self._db.execute(
            "INSERT INTO fresh (source, person) SELECT :s, person FROM staged "
            f"WHERE audience = :g{' AND remove = 1' if whole else ''} "
            "ON CONFLICT (source, person) DO NOTHING",
            {"s": source.id, "g": group},
        )

    def _mark(self, db: Backend, source: SourceRow, dirty: Sequence[int]) -> None:
        """Inside a transaction: the source changed now; these audiences need planning."""
        db.execute("UPDATE sources SET snapshot_at = ? WHERE id = ?", (time.time(), source.id))
        for audience in dirty:
            db.execute("UPDATE audiences SET dirty = 1 WHERE id = ?", (audience,))


def _clear_for(db: Backend, source: SourceRow, group: int, *, whole: bool) -> None:
    """Inside a transaction: make room for what `group` says of the source.

    A whole snapshot replaces the source; otherwise only the people staged in `group` go.
    """
    if whole:
        db.execute("DELETE FROM source_people WHERE source = ?", (source.id,))
    else:
        db.execute(
            "DELETE FROM source_people WHERE source = :s AND person IN "
            "(SELECT person FROM staged WHERE audience = :g)",
            {"s": source.id, "g": group},
        )
