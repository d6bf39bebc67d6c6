"""Confirmation: a change is stored only once TikTok confirmed it (`code == 0`).

Each confirmed batch is applied from `plan` itself, in one transaction: an add upserts the
member's hashes, a delete clears them, and a member left with no hash is gone. A run that dies
between batches leaves `members` exactly what TikTok holds, and the next run sends the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from target_tiktok_audiences.store.backend import Backend
from target_tiktok_audiences.store.history import History
from target_tiktok_audiences.store.schema import ANY_SLOT, SENDABLE, SLOT_COLUMNS, SLOT_LIST


class Confirmation(History):
    """Applies what TikTok confirmed to `members`, and forgets an audience TikTok deleted."""

    def confirm_planned(
        self,
        audience: int,
        action: str,
        first: int,
        last: int,
        receipts: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Apply the planned rows with a hash to send and seq from `first` to `last`.

        A batch TikTok confirmed is such a run of planned rows: they are applied from `plan`
        itself, in one set-based statement, without passing the hashes back in. `receipts`:
        (request_id, rows) of the requests that carried it, kept in the same transaction.
        """
        self._confirm(
            action,
            [(audience, receipts)],
            "seq BETWEEN :first AND :last",
            {"first": first, "last": last},
        )

    def _confirm(
        self,
        action: str,
        carried: Sequence[tuple[int, Sequence[tuple[str, int]]]],
        which: str,
        args: dict[str, object],
    ) -> None:
        """Apply, in one transaction, what a confirmed batch carried in each of its audiences.

        `carried`: (audience, receipts) of each; `which`: SQL picking the audience's planned
        rows the batch carried (`:a` is the audience, `args` the other parameters). Of those,
        the rows with a hash to send are applied, and the receipts kept: a batch is confirmed
        in every audience it carried, or in none.
        """
        rows = (
            "SELECT person, {slots} FROM plan WHERE audience = :a AND action = :action "
            f"AND {which} AND ({SENDABLE})"
        )
        with self.transaction() as db:
            for audience, receipts in carried:
                self._merge(db, audience, action, rows, {**args, "action": action})
                self._keep_receipts(db, audience, action, receipts)

    def confirm_kept(self, audience: int, action: str) -> None:
        """Apply the planned rows with nothing to send, once the sent ones are confirmed.

        Every hash of such a row is kept: a delete's by another person who still has it
        (TikTok is not asked to remove it, and only the store forgets this person); a
        composed audience's add's by an earlier add of the same hash.
        """
        rows = (
            "SELECT person, {slots} FROM plan WHERE audience = :a AND action = :action "
            f"AND NOT ({SENDABLE})"
        )
        if action == "add" and audience not in self._composed:
            return  # only a composed audience keeps adds
        args = {"a": audience, "action": action}
        with self.transaction() as db:
            if db.execute(rows.format(slots=SLOT_LIST) + " LIMIT 1", args).fetchone():
                self._merge(db, audience, action, rows, {"action": action})

    def _merge(
        self, db: Backend, audience: int, action: str, rows: str, args: dict[str, object]
    ) -> None:
        """Merge confirmed rows (a query of person and slots) into `members`, set-based.

        An add upserts; a delete clears each confirmed hash the member still has (an upsert
        that only ever meets existing rows: UPDATE ... FROM is newer than some SQLite builds),
        then a member left with no hash at all is gone.
        """
        args = {**args, "a": audience}
        source = rows.format(slots=SLOT_LIST)
        db.execute("UPDATE audiences SET last_change_at = ? WHERE id = ?", (time.time(), audience))
        if action == "add":
            merge = ", ".join(f"{c} = COALESCE(excluded.{c}, members.{c})" for c in SLOT_COLUMNS)
            db.execute(
                f"INSERT INTO members (audience, person, {SLOT_LIST}) "
                f"SELECT :a, person, {SLOT_LIST} FROM ({source}) AS r WHERE true "
                f"ON CONFLICT (audience, person) DO UPDATE SET {merge}",
                args,
            )
            return
        clear = ", ".join(
            f"{c} = CASE WHEN members.{c} = excluded.{c} THEN NULL ELSE members.{c} END"
            for c in SLOT_COLUMNS
        )
        # Members are reached through their primary key, one probe per confirmed person,
        # whatever the planner believes about the audience's size.
        in_rows = db.words["in_rows"].format(rows=f"SELECT person FROM ({source}) AS p")
        db.execute(
            f"INSERT INTO members (audience, person, {SLOT_LIST}) "
            f"SELECT :a, person, {SLOT_LIST} FROM ({source}) AS r WHERE person IN "
            f"(SELECT person FROM members WHERE audience = :a AND person {in_rows}) "
            f"ON CONFLICT (audience, person) DO UPDATE SET {clear}",
            args,
        )
        db.execute(
            f"DELETE FROM members WHERE audience = :a AND person {in_rows} AND NOT ({ANY_SLOT})",
            args,
        )

    def finish_upload(self, audience: int) -> None:
        """The audience has been uploaded: held people are members now, holding is over."""
        with self.transaction() as db:
            db.execute("DELETE FROM pending WHERE audience = ?", (audience,))
            db.execute(
                "UPDATE audiences SET uploaded_at = COALESCE(uploaded_at, ?), dirty = 0 "
                "WHERE id = ?",
                (time.time(), audience),
            )

    def forget_deleted_audience(self, audience: int) -> int:
        """TikTok no longer has this audience: its confirmed people become held ones.

        In one transaction: every member moves to `pending` (a held person already there
        stays as held), the TikTok id is forgotten and the audience counts as never uploaded.
        The next upload then creates the audience again and sends everyone held, like any
        first upload; `finish_upload` clears `pending` only once TikTok confirmed it all, so a
        run that dies on the way leaves nobody behind. Returns the number of people held.
        """
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO pending (audience, person, {SLOT_LIST}) "
                f"SELECT audience, person, {SLOT_LIST} FROM members WHERE audience = ? "
                "ON CONFLICT (audience, person) DO NOTHING",
                (audience,),
            )
            db.execute("DELETE FROM members WHERE audience = ?", (audience,))
            db.execute(
                "UPDATE audiences SET audience_id = NULL, uploaded_at = NULL WHERE id = ?",
                (audience,),
            )
        return self.count_pending(audience)
