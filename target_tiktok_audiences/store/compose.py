"""Composed audiences: what one should hold, staged from its sources by set algebra over hashes.

The hashes TikTok should hold are the union of the included sources' hashes, less every hash
of a person who shares any hash with an excluded source. Two streams' people never merge: each
included source after the first gives its people keys of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

from target_tiktok_audiences.store.schema import ANY_SLOT, SLOT_COLUMNS, SLOT_LIST
from target_tiktok_audiences.store.sources import SourceRow
from target_tiktok_audiences.store.staged import Staging, suppressed


class Composition(Staging):
    """Stages a composed audience from its sources, and counts its people who left by a record."""

    def stage_composed(
        self,
        audience: int,
        included: Sequence[SourceRow],
        excluded: Sequence[SourceRow],
        split: str | None = None,
    ) -> tuple[int, int]:
        """Stage what a composed audience should hold, from its sources as they last were.

        `split`: the audience of one `split_by` value holds only the people of that value.

        The hashes TikTok should hold are the union of the included people's hashes, less
        every hash of an excluded person: an included person that has any hash of a person
        of an excluded source. A person with a hash on the suppression list is not staged
        either. Each remaining person is staged with the hashes it has left (none left: not
        staged). People of the first included source keep their keys; those
        of the others get keys of their own (`mix_person`), so two streams' people never
        merge. A staged row is `fresh` when its record came in this run. Returns (fresh
        people staged, fresh people withheld: excluded, or left with no hash).
        """
        db = self._db
        self.clear_staged(audience)
        self._unindex_staged()
        self._in_temp["staged"].add(audience)
        self._composed.add(audience)
        db.execute("DELETE FROM withheld")
        # Tier 0: the excluded sources' hashes; tier 1: the other hashes of people matched.
        for source in excluded:
            self._withhold(f"FROM source_people p WHERE p.source = {int(source.id)}", tier=0)
        matched = " OR ".join(
            f"EXISTS (SELECT 1 FROM withheld w WHERE w.slot = {slot} AND w.hash = p.{column} "
            "AND w.tier = 0)"
            for slot, column in enumerate(SLOT_COLUMNS)
        )
        of_value = "" if split is None else " AND p.split = :v"
        for source in included if excluded else ():
            self._withhold(
                f"FROM source_people p WHERE p.source = {int(source.id)}{of_value} AND ({matched})",
                tier=1,
                args={"v": split},
            )
        kept = ", ".join(
            f"CASE WHEN EXISTS (SELECT 1 FROM withheld w WHERE w.slot = {slot} "
            f"AND w.hash = p.{column}) THEN NULL ELSE p.{column} END AS {column}"
            for slot, column in enumerate(SLOT_COLUMNS)
        )
        came = 0
        suppressing = self.suppressing()
        for position, source in enumerate(included):
            person = (
                db.words["mix_person"].format(person="p.person", index=position)
                if position
                else "p.person"
            )
            args = {"a": audience, "s": source.id, "v": split}
            is_fresh = "EXISTS (SELECT 1 FROM fresh f WHERE f.source = :s AND f.person = p.person)"
            rows = (
                f"SELECT {person} AS person, CASE WHEN {is_fresh} THEN 1 ELSE 0 END AS fresh, "
                f"{kept} FROM source_people p WHERE p.source = :s{of_value}"
            )
            if excluded:
                rows += f" AND NOT ({matched})"
            if suppressing:
                rows += f" AND NOT ({suppressed('p')})"
            db.execute(
                f"INSERT INTO staged (audience, person, remove, fresh, {SLOT_LIST}) "
                f"SELECT :a, person, 0, fresh, {SLOT_LIST} FROM ({rows}) AS r "
                f"WHERE {ANY_SLOT}",
                args,
            )
            came += db.execute(
                f"SELECT COUNT(*) FROM source_people p WHERE p.source = :s{of_value} "
                f"AND {is_fresh}",
                args,
            ).fetchone()[0]
        fresh = db.execute(
            "SELECT COUNT(*) FROM staged WHERE audience = ? AND fresh = 1", (audience,)
        ).fetchone()[0]
        withheld = came - fresh
        db.execute("DELETE FROM withheld")
        return fresh, withheld

    def fresh_leavers(self, audience: int, included: Sequence[SourceRow]) -> int:
        """People a composed audience's plan removes whose records came in this run.

        They leave by a record of theirs (filtered, a removal, no consent), unlike the people
        a snapshot no longer has. Read while the plan and what was staged are still there.
        """
        db = self._db
        count = 0
        for position, source in enumerate(included):
            person = (
                db.words["mix_person"].format(person="f.person", index=position)
                if position
                else "f.person"
            )
            count += db.execute(
                "SELECT COUNT(*) FROM plan pl WHERE pl.audience = :a AND pl.action = 'delete' "
                "AND NOT EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                "AND st.person = pl.person) AND EXISTS (SELECT 1 FROM fresh f "
                f"WHERE f.source = :s AND {person} = pl.person)",
                {"a": audience, "s": source.id},
            ).fetchone()[0]
        return count

    def _withhold(self, rows: str, *, tier: int, args: dict[str, object] | None = None) -> None:
        """Add every hash of the people `rows` (a FROM ... WHERE clause over `p`) to `withheld`."""
        for slot, column in enumerate(SLOT_COLUMNS):
            self._db.execute(
                f"INSERT INTO withheld (slot, hash, tier) SELECT DISTINCT {slot}, p.{column}, "
                f"{tier} "
                f"{rows} AND p.{column} IS NOT NULL ON CONFLICT (slot, hash) DO NOTHING",
                args or {},
            )
