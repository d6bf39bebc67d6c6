"""Composed audiences: what one should hold, staged from its sources by set algebra over hashes.

The hashes TikTok should hold are the union of the included sources' hashes, less every hash
of a person who shares any hash with an excluded source. Two streams' people never merge: each
included source after the first gives its people keys of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from target_tiktok_audiences.store.connection import Found, Query
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
        *,
        plan_now: bool = False,
    ) -> tuple[int, int]:
        """Stage what a composed audience should hold, from its sources as they last were.

        `split`: the audience of one `split_by` value holds only the people of that value.
        `plan_now`: `plan` comes next. A first sync (nobody confirmed or held) whose
        included sources all came whole in this run is then planned here, straight from the
        sources into `plan`: its people are all this run's records, and staging them first
        would copy them once more for nothing. Held under `min_audience_size`, they move
        from the plan into `pending` (`hold`).

        The hashes TikTok should hold are the union of the included people's hashes, less
        every hash of an excluded person: an included person that has any hash of a person
        of an excluded source. A person with a hash on the suppression list is not staged
        either. Each remaining person is staged with the hashes it has left (none left: not
        staged). People of the first included source keep their keys; those
        of the others get keys of their own (`mix_person`), so two streams' people never
        merge. A staged row is `fresh` when its record came in this run. Returns (fresh
        people staged, fresh people withheld: excluded, or left with no hash).

        Each included person is looked up once per slot among the excluded hashes; the
        hashes of the few people matched are then the only ones withheld from the others.
        """
        db = self._db
        self.clear_staged(audience)
        self._composed.add(audience)
        first = (
            plan_now
            and all(source.id in self._whole_fresh for source in included)
            and not self.count_members(audience)
            and not self.count_pending(audience)
        )
        if first:  # `clear_staged` removed any plan rows of the audience
            self._in_temp["plan"].add(audience)
        else:
            self._unindex_staged()
            self._staging(audience)
        of_value = "" if split is None else " AND p.split = :v"
        sizes = [
            db.execute(
                f"SELECT COUNT(*) FROM source_people p WHERE p.source = :s{of_value}",
                {"s": source.id, "v": split},
            ).fetchone()[0]
            for source in included
        ]
        matching = self._match_start(included, excluded, of_value, split, rows=sum(sizes))
        if first:
            # Sought in worker processes while this one matches and plans (where they can).
            found = self._start_beside(
                [_repeated_among(included, of_value, split, slot) for slot in SLOT_COLUMNS],
                rows=sum(sizes),
            )
            if found is not None:
                self._repeats[audience] = found
        shared = self._match_end(matching)
        # A person not matched has no excluded hash, but may share a matched person's.
        kept = ", ".join(
            f"CASE WHEN p.{column} IN (SELECT hash FROM withheld WHERE slot = {slot} "
            f"AND tier = 1) THEN NULL ELSE p.{column} END AS {column}"
            if shared
            else f"p.{column}"
            for slot, column in enumerate(SLOT_COLUMNS)
        )
        unmatched = (
            " AND p.person NOT IN (SELECT person FROM matched WHERE source = :s)"
            if excluded
            else ""
        )
        came = staged = 0
        suppressing = self.suppressing()
        for position, (source, size) in enumerate(zip(included, sizes, strict=True)):
            person = self._key("p.person", position)
            args = {"a": audience, "s": source.id, "v": split}
            if source.id in self._whole_fresh:
                is_fresh = "1"
                came += size
            else:
                is_fresh = (
                    "CASE WHEN EXISTS (SELECT 1 FROM fresh f WHERE f.source = :s "
                    "AND f.person = p.person) THEN 1 ELSE 0 END"
                )
                came += db.execute(
                    f"SELECT COALESCE(SUM({is_fresh}), 0) FROM source_people p "
                    f"WHERE p.source = :s{of_value}",
                    args,
                ).fetchone()[0]
            rows = (
                f"SELECT {person} AS person, p.person AS own_key, {is_fresh} AS fresh, {kept} "
                f"FROM source_people p WHERE p.source = :s{of_value}{unmatched}"
            )
            if suppressing:
                rows += f" AND NOT ({suppressed('p')})"
            # In the audience's person order within each source, which the plan keeps
            # (`plan`), so that confirming appends to `members` rather than inserting at
            # random. `mix_person` keeps a source's order: it is the source's, read in key
            # order, with no sort.
            into = (
                f"plan (audience, action, person, {SLOT_LIST}) SELECT :a, 'add', person"
                if first
                else f"staged (audience, person, remove, fresh, {SLOT_LIST}) "
                "SELECT :a, person, 0, fresh"
            )
            staged += db.execute(
                f"INSERT INTO {into}, {SLOT_LIST} FROM ({rows}) AS r "
                f"WHERE {ANY_SLOT} ORDER BY own_key",
                args,
            ).rowcount
        if first:
            self._planned_first[audience] = staged
            fresh = staged
        else:
            fresh = db.execute(
                "SELECT COUNT(*) FROM staged WHERE audience = ? AND fresh = 1", (audience,)
            ).fetchone()[0]
        db.execute("DELETE FROM withheld")
        db.execute("DELETE FROM matched")
        return fresh, came - fresh

    def _match_start(
        self,
        included: Sequence[SourceRow],
        excluded: Sequence[SourceRow],
        of_value: str,
        split: str | None,
        *,
        rows: int,
    ) -> _Matching | None:
        """Withhold the excluded sources' hashes, and start looking the included people up.

        `rows`: the included people, each looked up (in worker processes, where they can).
        `withheld` tier 0: every hash of an excluded source's people. None: nothing to match.
        """
        db = self._db
        db.execute("DELETE FROM withheld")
        db.execute("DELETE FROM matched")
        if not excluded:
            return None
        for source in excluded:
            self._withhold("source_people p", f"p.source = {int(source.id)} AND ", tier=0)
        slots = [
            slot
            for slot in range(len(SLOT_COLUMNS))
            if db.execute("SELECT 1 FROM withheld WHERE slot = ? LIMIT 1", (slot,)).fetchone()
        ]
        if not slots:
            return None
        # Uncorrelated: each set is built once, then probed, not a subquery run per person.
        any_excluded = " OR ".join(
            f"p.{SLOT_COLUMNS[slot]} IN (SELECT hash FROM withheld WHERE slot = {slot})"
            for slot in slots
        )
        people = (
            f"SELECT p.source, p.person, {SLOT_LIST} FROM source_people p "
            f"WHERE p.source = :s{of_value} AND ({any_excluded})"
        )
        queries = [(people, {"s": source.id, "v": split}) for source in included]
        return _Matching(queries, self._start_beside(queries, rows=rows))

    def _match_end(self, matching: _Matching | None) -> bool:
        """The included people excluded (`matched`), and the hashes withheld with them.

        `matched`: each included person with a tier-0 hash, with all their hashes; tier 1:
        the matched people's other hashes. True when there is a tier-1 hash, which other
        included people may also have.
        """
        if matching is None:
            return False
        db = self._db
        columns = ("source", "person", *SLOT_COLUMNS)
        if matching.found is None:
            for sql, args in matching.queries:
                db.execute(f"INSERT INTO matched ({', '.join(columns)}) {sql}", args)
        for task in matching.found or ():
            db.load("matched", columns, task.result())
        self._withhold("matched p", "", tier=1)
        return db.execute("SELECT 1 FROM withheld WHERE tier = 1 LIMIT 1").fetchone() is not None

    def fresh_leavers(self, audience: int, included: Sequence[SourceRow]) -> int:
        """People a composed audience's plan removes whose records came in this run.

        They leave by a record of theirs (filtered, a removal, no consent, another
        `split_by` value), unlike the people a snapshot no longer has. Read while the plan
        and what was staged are still there.
        """
        db = self._db
        count = 0
        for position, source in enumerate(included):
            came = (
                "EXISTS (SELECT 1 FROM fresh f WHERE f.source = :s "
                f"AND {self._key('f.person', position)} = pl.person)"
            )
            if source.id in self._whole_fresh:
                came += (
                    " OR EXISTS (SELECT 1 FROM source_people sp WHERE sp.source = :s "
                    f"AND {self._key('sp.person', position)} = pl.person)"
                )
            count += db.execute(
                "SELECT COUNT(*) FROM plan pl WHERE pl.audience = :a AND pl.action = 'delete' "
                "AND NOT EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                f"AND st.person = pl.person) AND ({came})",
                {"a": audience, "s": source.id},
            ).fetchone()[0]
        return count

    def _key(self, column: str, position: int) -> str:
        """SQL: the key in the audience of the person keyed `column` in its `position`th source.

        The first included source's people keep their keys; the others' are prefixed with the
        position (`mix_person`), so two streams' people never merge, and each source's people
        keep their order.
        """
        if not position:
            return column
        return self._db.words["mix_person"].format(person=column, index=position)

    def _withhold(self, people: str, where: str, *, tier: int) -> None:
        """Add every hash of `people` (rows as `p`, with a `where` prefix) to `withheld`.

        In hash order, so that each slot's hashes are appended to the key of `withheld`
        rather than inserted at random; a repeated hash is kept once.
        """
        for slot, column in enumerate(SLOT_COLUMNS):
            self._db.execute(
                f"INSERT INTO withheld (slot, hash, tier) SELECT {slot}, p.{column}, {tier} "
                f"FROM {people} WHERE {where}p.{column} IS NOT NULL ORDER BY p.{column} "
                "ON CONFLICT (slot, hash) DO NOTHING"
            )


@dataclass(frozen=True)
class _Matching:
    """The look-ups of included people among the excluded hashes: run here, or started."""

    queries: Sequence[Query]
    found: Sequence[Future[Found]] | None


def _repeated_among(
    included: Sequence[SourceRow], of_value: str, split: str | None, slot: str
) -> Query:
    """A slot's hashes that several of the included sources' people have.

    The hashes repeated in a first sync's plan are among them: it plans these people, some
    of them and some of their hashes withheld.
    """
    sources = ", ".join(str(int(source.id)) for source in included)
    return (
        f"SELECT p.{slot} FROM source_people p WHERE p.source IN ({sources}){of_value} "
        f"AND p.{slot} IS NOT NULL GROUP BY p.{slot} HAVING COUNT(*) > 1",
        {"v": split},
    )
