"""Erasure: the people who hold given hashes, in every audience and source; dropping them.

`tiktok-audiences erase` finds, by hash, every confirmed member, held person and source row
that holds one of the hashes it was given, and erases each such person with all of their
hashes. Per audience it says which hashes to delete on TikTok: not those another remaining
member of that audience still holds (as the planner keeps shared hashes). Members are dropped
only once TikTok confirmed their deletes; held people and source rows, which TikTok never got,
go at once. The suppression list and the erasure receipts are kept here too. Only hashes are
ever stored or returned, never a raw identifier.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.store.audiences import AudienceRow, Audiences
from target_tiktok_audiences.store.schema import SLOT_COLUMNS, SLOT_LIST, in_words
from target_tiktok_audiences.tiktok.mapping import Slots

# One hash: its slot (index into SLOTS) and its digest.
Hash = tuple[int, bytes]

# Per connection: the hashes being erased, and the members found holding one of them.
_ERASE_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS erasing (
    slot INTEGER NOT NULL,
    hash {blob} NOT NULL,
    PRIMARY KEY (slot, hash)
);
CREATE TEMP TABLE IF NOT EXISTS erased (
    audience INTEGER NOT NULL,
    person {blob} NOT NULL,
    {slots},
    PRIMARY KEY (audience, person)
)
"""


def _holds(alias: str) -> str:
    """SQL: the row `alias` holds one of the hashes being erased."""
    return " OR ".join(
        f"{alias}.{c} IN (SELECT hash FROM erasing WHERE slot = {i})"
        for i, c in enumerate(SLOT_COLUMNS)
    )


def hash_text(slot: int, digest: bytes) -> str:
    """A hash as receipts and output show it: `SLOT:hex`."""
    return f"{SLOTS[slot]}:{digest.hex()}"


@dataclass
class AudienceErasure:
    """One audience's part of an erasure.

    `people`: the members found, in person order; `rows[i]`: the hashes of `people[i]` to
    delete on TikTok (None where the person lacks the slot, where another remaining member
    holds the hash, or where an earlier row deletes it already); `waits[i]`: the rows whose
    deletes must be confirmed before `people[i]` may be dropped (its own, if it sends any,
    and the earlier rows that delete its other hashes); `kept`: hashes not deleted because
    another member holds them. `held`: its held people found.
    """

    row: AudienceRow
    people: list[bytes] = field(default_factory=list)
    rows: list[Slots] = field(default_factory=list)
    waits: list[set[int]] = field(default_factory=list)
    kept: int = 0
    held: int = 0

    @property
    def deletes(self) -> int:
        """Hashes to delete on TikTok."""
        return sum(digest is not None for row in self.rows for digest in row)


@dataclass
class ErasurePlan:
    """Who an erasure finds: per audience, and in sources (`(stream, selection)`: people)."""

    audiences: list[AudienceErasure]
    sources: dict[tuple[str, str], int]


class Erasure(Audiences):
    """Finds, drops and records erased people; keeps the suppression list."""

    def _load_erasing(self, hashes: Sequence[Hash]) -> None:
        """Make this connection's `erasing` hold exactly `hashes`."""
        for statement in in_words(_ERASE_TEMP, self._db):
            self._db.execute(statement)
        self._db.execute("DELETE FROM erasing")
        self._db.load("erasing", ("slot", "hash"), sorted(set(hashes)))

    def plan_erasure(self, hashes: Sequence[Hash]) -> ErasurePlan:
        """Everyone who holds one of `hashes`, per audience and per source; changes nothing.

        Reads only (the temporary tables are this connection's). The hashes each audience
        deletes on TikTok are its found members' hashes less those another of its members,
        not found, still holds; a hash two found members hold is deleted once, in the first.
        """
        db = self._db
        self._load_erasing(hashes)
        db.execute("DELETE FROM erased")
        db.execute(
            f"INSERT INTO erased (audience, person, {SLOT_LIST}) SELECT m.audience, m.person, "
            + ", ".join(f"m.{c}" for c in SLOT_COLUMNS)
            + f" FROM members m WHERE {_holds('m')}"
        )
        found: dict[int, AudienceErasure] = {}
        rows = db.execute(
            f"SELECT audience, person, {SLOT_LIST} FROM erased ORDER BY audience, person"
        ).fetchall()
        for audience, person, *slots in rows:
            part = found.get(audience)
            if part is None:
                part = found[audience] = AudienceErasure(self.get_audience(audience))
            part.people.append(bytes(person))
            part.rows.append(tuple(None if s is None else bytes(s) for s in slots))
        for part in found.values():
            self._drop_shared(part)
        held = db.execute(
            f"SELECT p.audience, COUNT(*) FROM pending p WHERE {_holds('p')} GROUP BY p.audience"
        ).fetchall()
        for audience, count in held:
            if audience not in found:
                found[audience] = AudienceErasure(self.get_audience(audience))
            found[audience].held = count
        sources = db.execute(
            "SELECT s.stream, s.selection, COUNT(*) FROM source_people p JOIN sources s "
            f"ON s.id = p.source WHERE {_holds('p')} GROUP BY s.stream, s.selection"
        ).fetchall()
        return ErasurePlan(
            [found[a] for a in sorted(found)],
            {(stream, selection): count for stream, selection, count in sources},
        )

    def _drop_shared(self, part: AudienceErasure) -> None:
        """Take out of `part.rows` the hashes other members keep, and repeats of a hash."""
        kept: list[set[bytes]] = []
        for column in SLOT_COLUMNS:
            kept.append(
                {
                    bytes(digest)
                    for (digest,) in self._db.execute(
                        f"SELECT DISTINCT m.{column} FROM members m WHERE m.audience = :a "
                        f"AND m.{column} IN (SELECT x.{column} FROM erased x "
                        "WHERE x.audience = :a) AND NOT EXISTS (SELECT 1 FROM erased y "
                        "WHERE y.audience = :a AND y.person = m.person)",
                        {"a": part.row.id},
                    ).fetchall()
                }
            )
        sender: dict[Hash, int] = {}  # the row that deletes each hash
        rows = []
        for index, row in enumerate(part.rows):
            out: list[bytes | None] = []
            waits: set[int] = set()
            for slot, digest in enumerate(row):
                if digest is None:
                    out.append(None)
                elif (slot, digest) in sender:
                    waits.add(sender[slot, digest])
                    out.append(None)
                elif digest in kept[slot]:
                    part.kept += 1
                    out.append(None)
                else:
                    sender[slot, digest] = index
                    waits.add(index)
                    out.append(digest)
            rows.append(tuple(out))
            part.waits.append(waits)
        part.rows = rows

    def drop_held_and_sources(self, hashes: Sequence[Hash], touched: Sequence[int]) -> None:
        """Drop the held people and source rows holding one of `hashes`, in one transaction.

        TikTok never got them, so nothing waits for a confirmation. `touched`: the
        audiences whose members are being erased, marked dirty in the same transaction, so
        that their next sync plans them in full against sources that no longer have those
        people (even if this erasure stops before their deletes are confirmed).
        """
        self._load_erasing(hashes)
        with self.transaction() as db:
            db.execute(f"DELETE FROM pending WHERE {_holds('pending')}")
            db.execute(f"DELETE FROM source_people WHERE {_holds('source_people')}")
            for audience in touched:
                db.execute("UPDATE audiences SET dirty = 1 WHERE id = ?", (audience,))

    def drop_members(self, audience: int, people: Sequence[bytes]) -> None:
        """Drop confirmed members of an audience (TikTok confirmed their deletes)."""
        with self.transaction() as db:
            for person in people:
                db.execute(
                    "DELETE FROM members WHERE audience = ? AND person = ?", (audience, person)
                )

    def suppress(self, hashes: Sequence[Hash]) -> None:
        """Put hashes on the suppression list, which every audience excludes from then on."""
        with self.transaction() as db:
            for slot, digest in sorted(set(hashes)):
                db.execute(
                    "INSERT INTO suppressions (slot, hash) VALUES (?, ?) "
                    "ON CONFLICT (slot, hash) DO NOTHING",
                    (slot, digest),
                )

    def record_erasure(
        self,
        hashes: Sequence[Hash],
        audiences: Sequence[dict],
        request_ids: Sequence[str],
        *,
        complete: bool,
    ) -> str:
        """Record an erasure receipt; return its id.

        `audiences`: per audience, what was erased there (names, ids and counts, no raw
        value); `complete`: every delete was confirmed.
        """
        receipt = uuid.uuid4().hex
        with self.transaction() as db:
            db.execute(
                "INSERT INTO erasures (receipt, erased_at, hashes, audiences, request_ids, "
                "complete) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    receipt,
                    time.time(),
                    json.dumps([hash_text(slot, digest) for slot, digest in sorted(set(hashes))]),
                    json.dumps(list(audiences)),
                    json.dumps(list(request_ids)),
                    int(complete),
                ),
            )
        return receipt
