"""Planning: the difference between what is staged and what is confirmed, in `plan`.

Deletes are planned before adds: a person whose email changed loses the old hash, then gains
the new one, so a run that dies between the two leaves the store exactly in step with TikTok.
Rows are planned in person order (a composed audience's first sync: its sources' order, then
person order), so a dry run and the real run, on either database, send the very same batches.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from target_tiktok_audiences.store.repeats import Repeats
from target_tiktok_audiences.store.schema import (
    ANY_SLOT,
    OLD_COLUMNS,
    SENDABLE,
    SLOT_COLUMNS,
    SLOT_LIST,
)
from target_tiktok_audiences.store.sqlite import read_only
from target_tiktok_audiences.tiktok.mapping import Batch, Slots


@dataclass
class PlanSummary:
    """What a planned sync would do, in people (not hashes)."""

    joined: int = 0
    left: int = 0
    changed: int = 0
    unchanged: int = 0
    people: int = 0
    confirmed: int = 0
    held: int = 0
    add_rows: int = 0
    delete_rows: int = 0
    # For the run report, which accounts for every record; not part of what is planned.
    # People staged (each person's last row), members and leavers:
    staged: int = field(default=0, compare=False)
    # People whose last staged row removes them, confirmed or not, and those of them for
    # want of consent:
    removals: int = field(default=0, compare=False)
    no_consent: int = field(default=0, compare=False)
    # Leavers with no staged row at all (a complete snapshot's absent people):
    absent: int = field(default=0, compare=False)
    # Of the joined and changed, those whose records came in this run (for a composed
    # audience, whose other people come from sources as they last were):
    fresh_joined: int = field(default=0, compare=False)
    fresh_changed: int = field(default=0, compare=False)


def _slot_changes(new: Sequence[str], old: Sequence[str], differs: str) -> str:
    """SQL select list: the slots (named as in SLOT_COLUMNS) where `new` has a hash `old` lacks."""
    return ", ".join(
        f"CASE WHEN {n} IS NOT NULL AND {n} {differs} {o} THEN {n} END AS {c}"
        for n, o, c in zip(new, old, SLOT_COLUMNS, strict=True)
    )


# A plan row's slots as sent: a kept hash is not.
SENT_SLOTS = ", ".join(
    f"CASE WHEN (kept & {1 << i}) = 0 THEN {c} END" for i, c in enumerate(SLOT_COLUMNS)
)
_PLAN_COLUMNS = f"audience, action, person, {SLOT_LIST}"


@dataclass(frozen=True)
class PlanRows:
    """Reads batches of one audience's planned rows from a run's work file.

    Picklable, and on a connection of its own: a worker process reads the hashes it builds
    a body from, rather than the process that keeps the store reading them and passing them.
    """

    path: str
    audience: int
    action: str

    def __call__(self, first: int, last: int) -> list[Slots]:
        """The slots to send of the planned rows from seq `first` to `last`, in plan order."""
        # Read-only, and never creating the file: a body built after the run closed fails.
        db = sqlite3.connect(read_only(self.path), uri=True)
        try:
            return db.execute(
                f"SELECT {SENT_SLOTS} FROM plan WHERE audience = ? AND action = ? "
                f"AND seq BETWEEN ? AND ? AND ({SENDABLE}) ORDER BY seq",
                (self.audience, self.action, first, last),
            ).fetchall()
        finally:
            db.close()


class Planning(Repeats):
    """Plans each audience's changes against its confirmed members."""

    @cached_property
    def _differs(self) -> str:
        """SQL: a staged person's slots differ from the confirmed member's."""
        differs = self._db.words["differs"]
        return " OR ".join(f"st.{c} {differs} m.{c}" for c in SLOT_COLUMNS)

    @cached_property
    def _adds(self) -> str:
        """SQL select list over `diff`: the hashes a changed or joining person gains."""
        return _slot_changes(SLOT_COLUMNS, OLD_COLUMNS, self._db.words["differs"])

    @cached_property
    def _drops(self) -> str:
        """SQL select list over `diff`: the hashes a changed person loses."""
        return _slot_changes(OLD_COLUMNS, SLOT_COLUMNS, self._db.words["differs"])

    def plan(self, audience: int, *, snapshot: bool, complete: bool) -> PlanSummary:
        """Write this audience's changes into `plan` and count them in people.

        `snapshot` and `complete`: people confirmed but not staged as members leave. Otherwise
        only people staged with `remove` leave. Delete slots whose hash another member still
        has are marked `kept` and not sent, but still leave the person's row. Rows are
        planned in person order (free from the indexes in SQLite), so a dry run and the real
        run, on either database, send the very same batches.
        """
        db = self._db
        args = {"a": audience}
        whole = snapshot and complete
        self._in_temp["plan"].add(audience)
        planned = self._planned_first.pop(audience, None)  # by `stage_composed`
        if planned is None:
            self._planned_from_sources.discard(audience)
            db.execute("DELETE FROM plan WHERE audience = :a", args)
        else:
            self._planned_from_sources.add(audience)
        summary = PlanSummary(confirmed=self.count_members(audience))
        if not summary.confirmed:
            self._plan_first_sync(audience, summary, planned)
            db.analyze("plan")
            self._send_each_hash_once(audience, ("add",) if summary.add_rows else ())
            return summary
        self._index_staged(audience)
        summary.staged, summary.removals, summary.no_consent = self.staged_people(audience)
        # Who joined or changed, in one pass over the staged members: usually few people.
        db.execute("DELETE FROM diff")
        db.execute(
            f"INSERT INTO diff (person, joined, fresh, {SLOT_LIST}, {', '.join(OLD_COLUMNS)}) "
            "SELECT st.person, CASE WHEN m.person IS NULL THEN 1 ELSE 0 END, st.fresh, "
            + ", ".join(f"st.{c}" for c in SLOT_COLUMNS)
            + ", "
            + ", ".join(f"m.{c}" for c in SLOT_COLUMNS)
            + " FROM staged st LEFT JOIN members m ON m.audience = :a AND m.person = st.person "
            f"WHERE st.audience = :a AND st.remove = 0 AND (m.person IS NULL OR {self._differs})",
            args,
        )
        summary.joined, summary.changed, summary.fresh_joined, summary.fresh_changed = db.execute(
            "SELECT COALESCE(SUM(joined), 0), COUNT(*) - COALESCE(SUM(joined), 0), "
            "COALESCE(SUM(joined * fresh), 0), COALESCE(SUM((1 - joined) * fresh), 0) FROM diff"
        ).fetchone()
        staying = summary.staged - summary.removals
        summary.people = staying if whole else self.people_after(audience, snapshot=False)
        summary.unchanged = staying - summary.joined - summary.changed
        # Leavers, then people whose identifiers changed lose their old hashes.
        if self._may_leave(audience, summary, snapshot=whole):
            if whole:
                leavers = (
                    "NOT EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                    "AND st.person = m.person AND st.remove = 0)"
                )
            else:
                leavers = (
                    "EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                    "AND st.person = m.person AND st.remove = 1)"
                )
            summary.left = db.execute(
                f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT :a, 'delete', m.person, "
                f"{SLOT_LIST} FROM members m WHERE m.audience = :a AND {leavers} "
                "ORDER BY m.person",
                args,
            ).rowcount
            if whole:
                summary.absent = summary.left
                if summary.removals:
                    summary.absent -= db.execute(
                        "SELECT COUNT(*) FROM staged st JOIN members m ON m.audience = :a "
                        "AND m.person = st.person WHERE st.audience = :a AND st.remove = 1",
                        args,
                    ).fetchone()[0]
        db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT * FROM (SELECT :a, 'delete', person, "
            f"{self._drops} FROM diff WHERE joined = 0) AS x WHERE {ANY_SLOT} ORDER BY person",
            args,
        )
        summary.add_rows = db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT * FROM (SELECT :a, 'add', person, "
            f"{self._adds} FROM diff) AS x WHERE {ANY_SLOT} ORDER BY person",
            args,
        ).rowcount
        db.execute("DELETE FROM diff")
        db.analyze("plan")
        self._keep_shared_hashes(audience, snapshot=whole)
        self._send_each_hash_once(audience, ("delete", "add"))
        summary.delete_rows = self._count_sendable(audience, "delete")
        return summary

    def _may_leave(self, audience: int, summary: PlanSummary, *, snapshot: bool) -> bool:
        """Whether anyone can leave, told without a pass over every member.

        In a snapshot, the confirmed members staged again are the staged members who did not
        join: if they are all the confirmed, nobody leaves (a re-run of the same snapshot
        skips a second of looking each member up at 1M). Otherwise only a staged `remove`
        makes a leaver.
        """
        if snapshot:
            return summary.confirmed > summary.people - summary.joined
        return self.stages_leavers(audience)

    def _plan_first_sync(self, audience: int, summary: PlanSummary, planned: int | None) -> None:
        """Plan a first sync (nobody confirmed): everyone staged joins; count them in `summary`.

        `planned`: the people of a composed first sync that `stage_composed` planned itself,
        all of them this run's records; None when they are staged.

        One sort, without the staged index: each person's rows become neighbours in `plan`,
        their last row last, so repeats are found by comparing each row with the next (a
        statement numbers its rows consecutively, in SQLite and PostgreSQL alike). Every
        staged member has a hash, or it would have been skipped. A composed audience's
        people are staged once each, members all, in their sources' order and then in
        person order (`stage_composed`): they are planned in that order, without a sort.
        """
        if planned is not None:
            summary.staged = summary.joined = summary.add_rows = summary.people = planned
            summary.fresh_joined = planned
            return
        args = {"a": audience}
        composed = audience in self._composed
        planned = self._db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT :a, CASE WHEN no_consent = 1 THEN "
            "'no-consent' WHEN remove = 1 THEN 'leave' ELSE 'add' END, person, "
            f"{SLOT_LIST} FROM staged WHERE audience = :a "
            f"ORDER BY {'seq' if composed else 'person, seq'}",
            args,
        ).rowcount
        summary.staged = summary.joined = summary.add_rows = summary.people = planned
        if composed:
            summary.fresh_joined = (
                planned
                - self._db.execute(
                    "SELECT COUNT(*) FROM staged WHERE audience = :a AND fresh = 0", args
                ).fetchone()[0]
            )
            return
        planned -= self._db.execute(
            "DELETE FROM plan WHERE seq IN (SELECT p.seq FROM plan p JOIN plan n "
            "ON n.seq = p.seq + 1 AND n.audience = :a AND n.person = p.person "
            "WHERE p.audience = :a)",
            args,
        ).rowcount
        # Someone whose last word is "leaving" has nothing to leave yet.
        summary.staged = planned
        summary.no_consent = self._db.execute(
            "DELETE FROM plan WHERE audience = :a AND action = 'no-consent'", args
        ).rowcount
        leave = self._db.execute("DELETE FROM plan WHERE audience = :a AND action = 'leave'", args)
        summary.removals = summary.no_consent + leave.rowcount
        summary.joined = summary.add_rows = summary.people = planned - summary.removals
        summary.fresh_joined = summary.joined

    def _keep_shared_hashes(self, audience: int, *, snapshot: bool) -> None:
        """Do not send the delete of a hash that another person of the audience keeps."""
        if not self._count_sendable(audience, "delete"):
            return
        for bit, slot in enumerate(SLOT_COLUMNS):
            # The planned deletes are few next to the audience: look each member's hash up
            # among them, rather than gather every member's hash to look the deletes up in.
            deleted = (
                f"SELECT {slot} FROM plan WHERE audience = :a AND action = 'delete' "
                f"AND {slot} IS NOT NULL"
            )
            kept = (
                f"SELECT {slot} FROM staged WHERE audience = :a AND remove = 0 "
                f"AND {slot} IN ({deleted})"
            )
            if not snapshot:
                kept += (
                    f" UNION ALL SELECT m.{slot} FROM members m WHERE m.audience = :a "
                    f"AND m.{slot} IN ({deleted}) AND NOT EXISTS (SELECT 1 FROM staged st "
                    "WHERE st.audience = :a AND st.person = m.person)"
                )
            self._db.execute(
                f"UPDATE plan SET kept = kept | {1 << bit} WHERE audience = :a "
                f"AND action = 'delete' AND {slot} IS NOT NULL AND {slot} IN ({kept})",
                {"a": audience},
            )

    def _count_sendable(self, audience: int, action: str) -> int:
        return self._db.execute(
            f"SELECT COUNT(*) FROM plan WHERE audience = ? AND action = ? AND ({SENDABLE})",
            (audience, action),
        ).fetchone()[0]

    def next_batch(self, audience: int, action: str, after: int, limit: int) -> Batch | None:
        """The next `limit` planned rows after seq `after` with a hash to send, as a batch.

        Where the plan is in a work file, only the batch's seq range is read here: a worker
        process reads its hashes (`PlanRows`) while this one confirms the batch before. Else
        its rows are read here, in one query finished before the batch is sent: a statement
        left open would pin an old snapshot of the file, and the confirmations written in
        between would then fail with "database is locked" once another run has written (and
        on PostgreSQL, the connection cannot run the confirmations while a result is open).
        """
        args = (audience, action, after, limit)
        sendable = (
            "FROM plan WHERE audience = ? AND action = ? AND seq > ? "
            f"AND ({SENDABLE}) ORDER BY seq LIMIT ?"
        )
        if self._db.work_path:
            first, last, size = self._db.execute(
                f"SELECT MIN(seq), MAX(seq), COUNT(*) FROM (SELECT seq {sendable}) AS b", args
            ).fetchone()
            if not size:
                return None
            return Batch(first, last, size, source=PlanRows(self._db.work_path, audience, action))
        rows = self._db.execute(f"SELECT seq, {SENT_SLOTS} {sendable}", args).fetchall()
        if not rows:
            return None
        return Batch(rows[0][0], rows[-1][0], len(rows), rows=[row[1:] for row in rows])
