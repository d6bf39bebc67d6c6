"""Staged people: what this run's input says, and the packed form it travels in (`Staged`).

Staged rows are appended, in input order, to the unindexed temporary table `staged`; each
person's last row wins once `_index_staged` ran. A first upload held back until
`min_audience_size` waits in `pending` (`hold`) until `release_pending` stages it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.store.audiences import Audiences
from target_tiktok_audiences.store.backend import Backend
from target_tiktok_audiences.store.schema import SLOT_COLUMNS, SLOT_LIST
from target_tiktok_audiences.tiktok.mapping import Slots

# Staged people travel packed: a fixed-width record each, unpacked by one SQL statement on the
# database side. Binding nine values per person from Python cost three times as much.
# A record: person key (16 bytes), a remove byte, a no-consent byte, a presence byte per slot
# (each 0 or 1, so that either database tests it by comparing one byte), then every slot at its
# full width, zeros where absent.
_KEY_WIDTH = 16
_SLOT_WIDTHS = tuple(16 if slot.endswith("_MD5") else 32 for slot in SLOTS)
_FLAGS_AT = _KEY_WIDTH + 2
_SLOT_OFFSETS = tuple(_FLAGS_AT + len(SLOTS) + sum(_SLOT_WIDTHS[:i]) for i in range(len(SLOTS)))
_RECORD_WIDTH = _FLAGS_AT + len(SLOTS) + sum(_SLOT_WIDTHS)
_ABSENT = tuple(bytes(width) for width in _SLOT_WIDTHS)
# A staged row stays (a member), leaves, or leaves because consent is not given: the remove and
# no-consent bytes of each, by `Staged.pack`'s remove value.
STAYS, LEAVES, NO_CONSENT = 0, 1, 2
_REMOVE = (b"\x00\x00", b"\x01\x00", b"\x01\x01")
# The presence bytes of each combination of present slots, by its bit mask.
_PRESENT = tuple(
    bytes((mask >> i) & 1 for i in range(len(SLOTS))) for mask in range(1 << len(SLOTS))
)


@dataclass(frozen=True)
class Staged:
    """People ready to stage: `count` fixed-width records in `packed` (see `pack`)."""

    packed: bytes
    count: int

    def __post_init__(self) -> None:
        """Refuse a torn buffer: the database would read past its end without complaint."""
        if len(self.packed) != self.count * _RECORD_WIDTH:
            msg = f"{len(self.packed)} bytes do not hold {self.count} staged records"
            raise ValueError(msg)

    @classmethod
    def pack(cls, rows: Iterable[tuple[bytes, int, Slots]]) -> Staged:
        """Pack (person key, STAYS/LEAVES/NO_CONSENT, slots) rows, in order.

        A later row of a person wins.
        """
        out = bytearray()
        count = 0
        for person, remove, slots in rows:
            if len(person) != _KEY_WIDTH:
                msg = f"a person key is {_KEY_WIDTH} bytes, not {len(person)}"
                raise ValueError(msg)
            mask = 0
            fields = []
            for i, digest in enumerate(slots):
                if digest is None:
                    fields.append(_ABSENT[i])
                elif len(digest) == _SLOT_WIDTHS[i]:
                    mask |= 1 << i
                    fields.append(digest)
                else:
                    msg = f"a {SLOTS[i]} digest is {_SLOT_WIDTHS[i]} bytes, not {len(digest)}"
                    raise ValueError(msg)
            if len(fields) != len(SLOTS):
                msg = f"a person has {len(SLOTS)} slots, not {len(fields)}"
                raise ValueError(msg)
            out += person
            out += _REMOVE[remove]
            out += _PRESENT[mask]
            out += b"".join(fields)
            count += 1
        return cls(bytes(out), count)

    @property
    def has_leavers(self) -> bool:
        """Whether a record removes its person (its remove byte is set)."""
        return 1 in self.packed[_KEY_WIDTH::_RECORD_WIDTH]


def _unpack_sql(db: Backend) -> str:
    """INSERT INTO staged the records of `:packed` (`:rows` of them), in order, for `:a`."""
    width = _RECORD_WIDTH

    def field(offset: int, length: int) -> str:
        return f"substr(:packed, i * {width} + {offset + 1}, {length})"

    def flag(offset: int) -> str:
        return db.words["flag_at"].format(blob=":packed", at=f"i * {width} + {offset}")

    slots = ", ".join(
        f"CASE WHEN {flag(_FLAGS_AT + i)} = 1 THEN {field(offset, length)} END"
        for i, (offset, length) in enumerate(zip(_SLOT_OFFSETS, _SLOT_WIDTHS, strict=True))
    )
    return (
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :rows) "
        f"INSERT INTO staged (audience, person, remove, no_consent, {SLOT_LIST}) "
        f"SELECT :a, {field(0, _KEY_WIDTH)}, {flag(_KEY_WIDTH)}, {flag(_KEY_WIDTH + 1)}, "
        f"{slots} FROM n ORDER BY i"
    )


def suppressed(alias: str) -> str:
    """SQL: the row `alias` (of people's slots) holds a hash on the suppression list.

    True or false, never null (a slot without a hash is not in the list), so that it can be
    negated.
    """
    return " OR ".join(
        f"({alias}.{c} IS NOT NULL AND {alias}.{c} IN "
        f"(SELECT hash FROM suppressions WHERE slot = {i}))"
        for i, c in enumerate(SLOT_COLUMNS)
    )


class Staging(Audiences):
    """The staged people of a run, per audience (or source group), in a temporary table."""

    @cached_property
    def _unpack(self) -> str:
        """The statement that stages a `Staged` buffer, in this backend's words."""
        return _unpack_sql(self._db)

    def _staging(self, group: int) -> None:
        """Rows are about to be staged in `group`: retired rows (`retire_staged`) go first.

        All of them at once when nobody reads what is staged; else the group's own.
        """
        staged = self._in_temp["staged"]
        if staged and staged <= self._retired:
            self._truncate("staged")
        elif group in self._retired:
            self._retired.discard(group)
            self._leaving.discard(group)
            self._db.execute("DELETE FROM staged WHERE audience = ?", (group,))
        staged.add(group)

    def _unindex_staged(self) -> None:
        """Appending to an unindexed table is twice as fast as keeping a key in order."""
        if self._staged_indexed:
            self._db.execute("DROP INDEX IF EXISTS staged_person")
            self._staged_indexed = False

    def stage(self, audience: int, people: Staged) -> None:
        """Record people seen in the input, in order (the last row of a person wins).

        They are appended in bulk to an unindexed table, unpacked there in one statement; the
        index is built, and repeated people reduced to their last row, when planning.
        """
        if not people.count:
            return
        self._unindex_staged()
        self._staging(audience)
        # One statement: all of it or nothing, and no lock on the store (a temporary table).
        self._db.execute(
            self._unpack, {"a": audience, "packed": people.packed, "rows": people.count}
        )
        if people.has_leavers:
            self._leaving.add(audience)

    def stages_leavers(self, group: int) -> bool:
        """Whether a staged row of `group` removes its person (a look only where one was staged)."""
        return group in self._leaving and (
            self._db.execute(
                "SELECT 1 FROM staged WHERE audience = ? AND remove = 1 LIMIT 1", (group,)
            ).fetchone()
            is not None
        )

    def _index_staged(self, audience: int) -> None:
        """Index what was staged and keep only each person's last row."""
        if not self._staged_indexed:
            self._db.execute(
                # Every column a query reads: "is this member still staged?", the counts, a
                # source's rows and the diff are answered from the index alone, in person
                # order, not from a random place in the table for each person.
                "CREATE INDEX IF NOT EXISTS staged_person ON staged "
                f"(audience, person, remove, no_consent, fresh, split, {SLOT_LIST})"
            )
            self._db.analyze("staged")
            self._staged_indexed = True
        repeated = self._db.execute(
            "SELECT 1 FROM staged WHERE audience = ? GROUP BY person HAVING COUNT(*) > 1 LIMIT 1",
            (audience,),
        ).fetchone()
        if repeated:
            self._db.execute(
                "DELETE FROM staged WHERE audience = :a AND EXISTS (SELECT 1 FROM staged later "
                "WHERE later.audience = :a AND later.person = staged.person "
                "AND later.seq > staged.seq)",
                {"a": audience},
            )

    def staged_people(self, audience: int) -> tuple[int, int, int]:
        """(people, leavers, leavers for want of consent) staged, once `hold` ran.

        `hold` (and `plan` with confirmed members) reduces each person's rows to the last one;
        a first sync's `plan` does not, and counts in its summary instead.
        """
        people, leaving, no_consent = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(remove), 0), COALESCE(SUM(no_consent), 0) "
            "FROM staged WHERE audience = ?",
            (audience,),
        ).fetchone()
        return people, leaving, no_consent

    def staged_count(self, audience: int) -> int:
        """Records staged for an audience and not yet planned."""
        return self._db.execute(
            "SELECT COUNT(*) FROM staged WHERE audience = ?", (audience,)
        ).fetchone()[0]

    def clear_staged(self, audience: int) -> None:
        """Forget what was staged and planned for an audience.

        A table it has no rows in is not touched: rows retired there wait (`retire_staged`).
        """
        self._retired.discard(audience)
        self._leaving.discard(audience)
        self._planned_first.pop(audience, None)
        self._planned_from_sources.discard(audience)
        self._repeats.pop(audience, None)
        for table, audiences in self._in_temp.items():
            if audience not in audiences:
                continue
            audiences.discard(audience)
            if audiences - self._retired if table == "staged" else audiences:
                self._db.execute(f"DELETE FROM {table} WHERE audience = ?", (audience,))
            else:
                self._truncate(table)

    def retire_staged(self, group: int) -> None:
        """Nobody reads what is staged in `group` again: its rows may wait for a truncate.

        Deleting one group's rows from a large table costs seconds at 1M people, and even a
        truncate frees every page: the rows stay, unseen (every query names its group),
        until rows are staged or cleared next (`_staging`, `clear_staged`), which then
        truncates once every staged group is retired, or the connection closes with them.
        """
        self._retired.add(group)

    def _truncate(self, table: str) -> None:
        """Empty a temporary table at once (a truncate, not a scan)."""
        self._db.execute(f"DELETE FROM {table}")
        self._db.reclaim(table)
        self._in_temp[table].clear()
        if table == "staged":
            self._retired.clear()
            self._leaving.clear()

    # The suppression list (`tiktok-audiences erase --suppress`)

    def suppressing(self) -> bool:
        """Whether the store's suppression list holds any hash (one look at its first row)."""
        return self._db.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone() is not None

    def withhold_suppressed(self, audience: int) -> int:
        """Unstage every person with a suppressed hash in a staged row; return the rows unstaged.

        Such a person is withheld with all of their hashes and rows, removals too: erasure
        dropped them from the store, and the list keeps them out of every audience. An empty
        list costs one look.
        """
        if not self.suppressing():
            return 0
        return self._db.execute(
            "DELETE FROM staged WHERE audience = :a AND person IN "
            f"(SELECT st.person FROM staged st WHERE st.audience = :a AND ({suppressed('st')}))",
            {"a": audience},
        ).rowcount

    # Holding back a first upload

    def hold(self, audience: int, *, snapshot: bool) -> int:
        """Move staged people into `pending` (replacing it for a snapshot); return its size.

        A composed first sync planned from its sources stages nobody: its planned adds,
        each person once, are the people held (nobody was held before: it is a first sync).
        """
        if audience in self._planned_from_sources:
            with self.transaction() as db:
                db.execute(
                    f"INSERT INTO pending (audience, person, {SLOT_LIST}) SELECT audience, "
                    f"person, {SLOT_LIST} FROM plan WHERE audience = ? AND action = 'add'",
                    (audience,),
                )
            return self.count_pending(audience)
        self._index_staged(audience)
        with self.transaction() as db:
            if snapshot:
                db.execute("DELETE FROM pending WHERE audience = ?", (audience,))
            db.execute(
                "DELETE FROM pending WHERE audience = :a AND person IN "
                "(SELECT person FROM staged WHERE audience = :a AND remove = 1)",
                {"a": audience},
            )
            db.execute(
                f"INSERT INTO pending (audience, person, {SLOT_LIST}) "
                f"SELECT audience, person, {SLOT_LIST} FROM staged "
                "WHERE audience = ? AND remove = 0 ON CONFLICT (audience, person) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in SLOT_COLUMNS),
                (audience,),
            )
        return self.count_pending(audience)

    def release_pending(self, audience: int) -> None:
        """Stage every held person, so the first upload sends them all.

        Staged removals stay staged: `hold` took their people out of `pending`, and a person
        TikTok already confirmed (a first upload that died part-way) must still be removed.
        """
        self._unindex_staged()
        self._staging(audience)
        self._db.execute("DELETE FROM staged WHERE audience = ? AND remove = 0", (audience,))
        self._db.execute(
            f"INSERT INTO staged (audience, person, remove, {SLOT_LIST}) "
            f"SELECT audience, person, 0, {SLOT_LIST} FROM pending WHERE audience = ? "
            "ORDER BY person",
            (audience,),
        )

    def people_after(self, audience: int, *, snapshot: bool) -> int:
        """People the audience will hold once the staged changes apply."""
        if snapshot:
            return self._db.execute(
                "SELECT COUNT(*) FROM staged WHERE audience = ? AND remove = 0", (audience,)
            ).fetchone()[0]
        return self._db.execute(
            "SELECT (SELECT COUNT(*) FROM members m WHERE m.audience = :a AND NOT EXISTS "
            "  (SELECT 1 FROM staged st WHERE st.audience = :a AND st.person = m.person)) + "
            "(SELECT COUNT(*) FROM staged WHERE audience = :a AND remove = 0)",
            {"a": audience},
        ).fetchone()[0]
