"""Reading and writing a membership store directly, for tests: what production never needs.

`confirm_rows` applies arbitrary (person, slots) rows as TikTok confirmed them, through the
store's own merge, so tests can build a confirmed state without planning it first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from target_tiktok_audiences.store import MembershipStore
from target_tiktok_audiences.store.plan import SENT_SLOTS
from target_tiktok_audiences.store.schema import SLOT_COLUMNS, SLOT_LIST
from target_tiktok_audiences.tiktok.mapping import Slots


def confirm_rows(
    store: MembershipStore, audience: int, action: str, rows: Sequence[tuple[bytes, Slots]]
) -> None:
    """Apply confirmed changes, given as (person, slots), to `members` in one transaction."""
    with store.transaction() as db:
        blob = db.words["blob"]
        db.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS confirming (person {blob} NOT NULL, "
            + ", ".join(f"{c} {blob}" for c in SLOT_COLUMNS)
            + ")"
        )
        db.load("confirming", ("person", *SLOT_COLUMNS), ((p, *slots) for p, slots in rows))
        store._merge(db, audience, action, "SELECT person, {slots} FROM confirming", {})
        db.execute("DELETE FROM confirming")


def plan_rows(
    store: MembershipStore, audience: int, action: str, page: int = 2000
) -> Iterator[tuple[int, bytes, Slots, Slots]]:
    """Planned rows in order: (seq, person, store slots, sent), a page at a time."""
    last = -1
    width = len(SLOT_COLUMNS)
    while True:
        rows = store._db.execute(
            f"SELECT seq, person, {SLOT_LIST}, {SENT_SLOTS} FROM plan "
            "WHERE audience = ? AND action = ? AND seq > ? ORDER BY seq LIMIT ?",
            (audience, action, last, page),
        ).fetchall()
        for row in rows:
            yield row[0], row[1], row[2 : 2 + width], row[2 + width :]
        if len(rows) < page:
            return
        last = rows[-1][0]


def member_hashes(store: MembershipStore, audience: int) -> list[tuple[bytes, ...]]:
    """Every confirmed person of an audience: (person, *slots), in person order."""
    return store._db.execute(
        f"SELECT person, {SLOT_LIST} FROM members WHERE audience = ? ORDER BY person",
        (audience,),
    ).fetchall()
