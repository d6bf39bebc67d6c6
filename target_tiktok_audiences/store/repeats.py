"""Each hash sent once: in a composed audience's plan, a hash that several rows carry.

Two streams' people often share a hash (the same person in a CRM and a warehouse). Each later
add or delete of it is kept, not sent (`confirm_kept` applies it once the sent ones are
confirmed), so TikTok is asked once per change, however many included people hold it.
"""

from __future__ import annotations

from collections.abc import Sequence

from target_tiktok_audiences.store.connection import Found
from target_tiktok_audiences.store.schema import SENDABLE, SLOT_COLUMNS
from target_tiktok_audiences.store.staged import Staging


class Repeats(Staging):
    """Marks `kept` the later rows of a composed plan's repeated hashes."""

    def _send_each_hash_once(self, audience: int, actions: Sequence[str]) -> None:
        """In a composed audience, keep each later row of a hash several planned rows carry.

        One grouping per slot finds the repeated hashes, each with its first row
        (`repeated`); only their other rows are then marked. `actions`: those the plan may
        have rows of (a first sync's are adds). A slot with fewer than two hashes to send is
        skipped after one count of them all. A first sync whose candidates worker processes
        sought (`stage_composed`) looks only at those (`_send_repeats_once`).
        """
        if audience not in self._composed:
            return
        repeats = self._repeats.pop(audience, None)
        if repeats is not None:
            self._send_repeats_once(audience, [task.result() for task in repeats])
            return
        db = self._db
        for action in actions:
            args = {"a": audience, "action": action}
            # One pass counts each slot's hashes to send: a slot with fewer than two has no
            # repeat, and needs no grouping.
            counts = db.execute(
                f"SELECT {', '.join(f'COUNT({slot})' for slot in SLOT_COLUMNS)} FROM plan "
                f"WHERE audience = :a AND action = :action AND ({SENDABLE})",
                args,
            ).fetchone()
            slots = [(bit, slot) for bit, slot in enumerate(SLOT_COLUMNS) if counts[bit] > 1]
            groupings = [(_repeated(slot, f"{slot} IS NOT NULL"), args) for _, slot in slots]
            # A sort of each slot's hashes, a second or two at 1M: side by side where they can.
            beside = self._beside(groupings, rows=sum(counts))
            for index, (bit, slot) in enumerate(slots):
                db.execute("DELETE FROM repeated")
                if beside is None:
                    sql, _ = groupings[index]
                    found = db.execute(f"INSERT INTO repeated (hash, first) {sql}", args).rowcount
                else:
                    db.load("repeated", ("hash", "first"), beside[index])
                    found = len(beside[index])
                if found:
                    self._keep_repeated(bit, slot, args)
            db.execute("DELETE FROM repeated")

    def _send_repeats_once(self, audience: int, candidates: Sequence[Found]) -> None:
        """As `_send_each_hash_once`, for a first sync whose candidates worker processes found.

        `candidates`: per slot, the hashes several of the people it was planned from have
        (`stage_composed`); only they can repeat among its adds. A slot without one needs
        no look at the plan.
        """
        db = self._db
        args = {"a": audience, "action": "add"}
        for bit, (slot, hashes) in enumerate(zip(SLOT_COLUMNS, candidates, strict=True)):
            if not hashes:
                continue
            db.execute("DELETE FROM candidates")
            db.load("candidates", ("hash",), hashes)
            db.execute("DELETE FROM repeated")
            among = f"{slot} IN (SELECT hash FROM candidates)"
            if db.execute(
                f"INSERT INTO repeated (hash, first) {_repeated(slot, among)}", args
            ).rowcount:
                self._keep_repeated(bit, slot, args)
        db.execute("DELETE FROM candidates")
        db.execute("DELETE FROM repeated")

    def _keep_repeated(self, bit: int, slot: str, args: dict[str, object]) -> None:
        """Mark kept each planned row's hash in `repeated`, but in the hash's first row."""
        self._db.execute(
            f"UPDATE plan SET kept = kept | {1 << bit} WHERE audience = :a "
            f"AND action = :action AND {slot} IN (SELECT hash FROM repeated) "
            f"AND seq <> (SELECT first FROM repeated r WHERE r.hash = plan.{slot})",
            args,
        )


def _repeated(slot: str, among: str) -> str:
    """SQL: each hash of `slot` that several of :a's planned :action rows `among` carry.

    With its first row (`repeated`'s columns).
    """
    return (
        f"SELECT {slot}, MIN(seq) FROM plan WHERE audience = :a AND action = :action "
        f"AND {among} GROUP BY {slot} HAVING COUNT(*) > 1"
    )
