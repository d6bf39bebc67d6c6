"""The planner's set algebra for composed audiences, on the store alone, on SQLite and PostgreSQL.

Each test drives `MembershipStore` as a run does (composed.py's `SourceSync` and `ComposedSync`,
sync.py's `_send`), without TikTok: streams are staged into their sources, each audience is
staged from its sources (`stage_composed`), planned, and its batches confirmed. What the batches
send is applied to a model of TikTok, a set of (slot, hash) per audience, and checked against
design.md's "Audiences, composed": the union of the included people's hashes, less every hash
of an excluded person; a hash leaves only when no included person still has it.

A run is one connection to the store: `fresh` (this run's records) lives and dies with it.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.people import FILTERED
from target_tiktok_audiences.store import (
    LEAVES,
    STAYS,
    MembershipStore,
    PlanSummary,
    SourceRow,
    Staged,
    connection,
)
from target_tiktok_audiences.tiktok.mapping import Slots
from target_tiktok_audiences.workers import Workers
from tests.test_store import ADVERTISER, person, sha, slots

EMAIL = SLOTS.index("EMAIL_SHA256")
PHONE = SLOTS.index("PHONE_SHA256")
# A batch as small as this makes every plan of more than two rows span several batches.
BATCH = 2
# The selection text of a `split_by` audience's sources (any text other than "").
SPLIT_SELECTION = '{"split_by":"tier","where":[]}'

Hash = tuple[int, bytes]  # (slot, digest): what TikTok holds of a person, one identifier
People = Mapping[str, Slots]  # a stream's people by record key


def identifiers(rows: Iterable[Slots]) -> list[Hash]:
    """Each (slot, digest) of some rows, once per row that has it."""
    return [(i, digest) for row in rows for i, digest in enumerate(row) if digest is not None]


def hashes(rows: Iterable[Slots]) -> set[Hash]:
    """Every (slot, digest) of some people."""
    return set(identifiers(rows))


def email(text: str) -> Hash:
    """An email's (slot, digest), as `slots` hashes it."""
    return EMAIL, sha(text)


def phone(text: str) -> Hash:
    """A phone's (slot, digest), as `slots` hashes it."""
    return PHONE, sha(text)


def withheld_by(included: Sequence[People], excluded: Sequence[People]) -> set[Hash]:
    """Every hash of an excluded person, by design.md, in Python.

    An excluded person is an included person with any hash of an excluded source's people.
    """
    barred = hashes(row for people in excluded for row in people.values())
    rows = [hashes([row]) for people in included for row in people.values()]
    return set().union(*(row for row in rows if row & barred))


def contract(included: Sequence[People], excluded: Sequence[People]) -> set[Hash]:
    """What TikTok should hold: the included people's hashes, less `withheld_by`."""
    every = hashes(row for people in included for row in people.values())
    return every - withheld_by(included, excluded)


@dataclass
class Synced:
    """One composed audience's sync: what `stage_composed` and `plan` said, and what was sent."""

    fresh: int
    withheld: int
    summary: PlanSummary
    fresh_leavers: int
    added: Counter[Hash] = field(default_factory=Counter)
    deleted: Counter[Hash] = field(default_factory=Counter)


class Run:
    """One run on the store: stage streams into sources, then sync composed audiences.

    `tiktok` is shared by the runs of a test: per audience, the hashes TikTok holds after
    the deletes and adds each sync sent.
    """

    def __init__(self, store: MembershipStore, tiktok: dict[int, set[Hash]]) -> None:
        """A run on `store` (a connection of its own) updating `tiktok`."""
        self.store = store
        self.tiktok = tiktok

    def audience(self, name: str) -> int:
        """A composed audience's row (created on first use)."""
        return self.store.audience(name, f"name:{name}", [ADVERTISER]).id

    def feed(
        self,
        source: SourceRow,
        people: People,
        *,
        whole: bool = True,
        leave: Iterable[str] = (),
    ) -> None:
        """A stream's records into its source, as `SourceSync.apply` does.

        `whole`: a complete snapshot, which replaces the source; else incremental changes,
        `leave` naming the people removed.
        """
        rows = [(person(k), STAYS, s) for k, s in people.items()]
        rows += [(person(k), LEAVES, (None,) * len(SLOTS)) for k in leave]
        self.store.stage(source.group, Staged.pack(rows))
        self._remember(source, whole=whole)

    def feed_selected(
        self,
        source: SourceRow,
        rows: Sequence[tuple[str, int, int, str | None, Slots]],
        *,
        whole: bool = True,
    ) -> int:
        """A selection's rows (key, remove, no_consent, split, slots) into its source.

        Returns `filtered_people`, read before the staged rows are cleared, as
        `SourceSync.apply` does.
        """
        self.store.stage_rows(
            source.group, [(person(k), remove, why, split, s) for k, remove, why, split, s in rows]
        )
        filtered = self.store.filtered_people(source.group)
        self._remember(source, whole=whole)
        return filtered

    def _remember(self, source: SourceRow, *, whole: bool) -> None:
        store = self.store
        store.remember_staged(source, source.group, whole=whole, dirty=())
        store.note_fresh(source, source.group, whole=whole)
        store.clear_staged(source.group)

    def sync(
        self,
        audience: int,
        included: Sequence[SourceRow],
        excluded: Sequence[SourceRow] = (),
        split: str | None = None,
        *,
        complete: bool = True,
    ) -> Synced:
        """Stage, plan, send and confirm one composed audience, as `ComposedSync` does.

        As without `min_audience_size`: a first sync of sources that came whole is planned
        straight from them.
        """
        store = self.store
        fresh, withheld = store.stage_composed(audience, included, excluded, split, plan_now=True)
        summary = store.plan(audience, snapshot=True, complete=complete)
        synced = Synced(fresh, withheld, summary, store.fresh_leavers(audience, included))
        held = self.tiktok.setdefault(audience, set())
        for action, sent in (("delete", synced.deleted), ("add", synced.added)):
            after = -1
            while (batch := store.next_batch(audience, action, after, BATCH)) is not None:
                rows = identifiers(batch.slots())
                sent.update(rows)
                if action == "delete":
                    held.difference_update(rows)
                else:
                    held.update(rows)
                store.confirm_planned(audience, action, batch.first, batch.last)
                after = batch.last
            store.confirm_kept(audience, action)
        store.finish_upload(audience)
        store.clear_staged(audience)
        return synced


@pytest.fixture(params=["sqlite", "postgresql"])
def new_location(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes locations of new stores of one backend: SQLite files, or PostgreSQL schemas."""
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        return server.new_url
    return lambda: str(tmp_path / f"{uuid.uuid4().hex}.sqlite")


@pytest.fixture
def runs(new_location: Callable[[], str]) -> Iterator[Callable[[], Run]]:
    """Starts runs on one store, one connection each; the previous run's closes first."""
    location = new_location()
    tiktok: dict[int, set[Hash]] = {}
    opened: list[MembershipStore] = []

    def start() -> Run:
        if opened:
            opened.pop().close()
        opened.append(MembershipStore(location))
        return Run(opened[-1], tiktok)

    yield start
    for store in opened:
        store.close()


def test_union_keys_each_streams_people_apart(runs: Callable[[], Run]) -> None:
    """Both streams' people are members; key "a" in two streams is two people."""
    run = runs()
    crm, shop = run.store.source("crm"), run.store.source("shop")
    aud = run.audience("All")
    run.feed(crm, {"a": slots(email="a@crm"), "b": slots(email="b@crm")})
    run.feed(shop, {"a": slots(email="a@shop"), "c": slots(phone="+14155550103")})
    synced = run.sync(aud, [crm, shop])
    assert (synced.fresh, synced.withheld) == (4, 0)
    assert synced.summary.joined == 4
    assert run.store.count_members(aud) == 4
    assert run.tiktok[aud] == {
        email("a@crm"),
        email("b@crm"),
        email("a@shop"),
        phone("+14155550103"),
    }

    # The shop's "a" leaves; the CRM's "a" stays, and the CRM, absent, counts as it last was.
    run = runs()
    run.feed(shop, {"c": slots(phone="+14155550103")})
    synced = run.sync(aud, [crm, shop])
    assert synced.summary.left == 1
    assert synced.deleted == Counter([email("a@shop")])
    assert not synced.added
    assert run.store.count_members(aud) == 3
    assert run.tiktok[aud] == {email("a@crm"), email("b@crm"), phone("+14155550103")}


@pytest.mark.parametrize("leaver", [False, True], ids=["members only", "with a removal"])
def test_a_snapshot_remembers_each_persons_last_row(runs: Callable[[], Run], leaver: bool) -> None:
    """A whole snapshot's source holds each person's last staged row, counted once.

    Without a removal row it is remembered in one sorted insert (no index of the staged
    rows); with one, through the index. Either way the counts are `staged_people`'s.
    """
    run = runs()
    crm = run.store.source("crm")
    aud = run.audience("All")
    rows = [
        (person("a"), STAYS, slots(email="old@crm")),
        (person("b"), STAYS, slots(email="b@crm")),
        (person("a"), STAYS, slots(email="new@crm")),
    ]
    if leaver:
        rows.append((person("c"), LEAVES, slots(email="c@crm")))
    run.store.stage(crm.group, Staged.pack(rows))
    counted = run.store.remember_staged(crm, crm.group, whole=True, dirty=())
    assert counted == ((3, 1, 0) if leaver else (2, 0, 0))
    run.store.clear_staged(crm.group)
    synced = run.sync(aud, [crm])
    assert synced.summary.joined == 2
    assert run.tiktok[aud] == {email("new@crm"), email("b@crm")}


def test_a_first_sync_plans_each_streams_people_in_their_audience_key_order(
    runs: Callable[[], Run],
) -> None:
    """Within each stream, the plan follows the people's keys in the audience, not the stream.

    A later stream's keys are mixed (`mix_person`), which reorders them; confirming in that
    order appends to `members` rather than inserting at random.
    """
    run = runs()
    crm, shop = run.store.source("crm"), run.store.source("shop")
    aud = run.audience("All")
    run.feed(crm, {f"c{i}": slots(email=f"c{i}@crm") for i in range(40)})
    run.feed(shop, {f"s{i}": slots(email=f"s{i}@shop") for i in range(40)})
    run.store.stage_composed(aud, [crm, shop], [])
    run.store.plan(aud, snapshot=True, complete=True)
    planned = [
        row[0]
        for row in run.store._db.execute(
            "SELECT person FROM plan WHERE audience = ? ORDER BY seq", (aud,)
        ).fetchall()
    ]
    first, second = planned[:40], planned[40:]
    assert first == sorted(first)
    assert second == sorted(second)
    assert {bytes(key[:2]) for key in second} == {b"\x00\x01"}


def shared_and_excluded(run: Run) -> tuple[int, list[SourceRow], list[SourceRow]]:
    """An audience of two streams sharing hashes, less one person excluded by a shared phone.

    Returns (the audience, its included sources, its excluded ones), each source fed.
    """
    crm, shop, blocked = (run.store.source(s) for s in ("crm", "shop", "blocked"))
    run.feed(crm, {f"c{i}": slots(email=f"p{i}@x", phone=f"+1415555{i:04d}") for i in range(30)})
    run.feed(shop, {f"s{i}": slots(email=f"p{i}@x") for i in range(10, 50)})
    run.feed(blocked, {"z": slots(phone="+14155550007")})
    return run.audience("All"), [crm, shop], [blocked]


def first_plan(
    store: MembershipStore,
    audience: int,
    included: Sequence[SourceRow],
    excluded: Sequence[SourceRow],
    *,
    plan_now: bool,
) -> tuple[tuple[int, int], PlanSummary, list[tuple[object, ...]], int, bool]:
    """Stage and plan a first sync; then forget it, as a sync that ends does.

    Returns what `stage_composed` and `plan` said, the planned rows in order (with their
    `kept` bits), the people staged, and whether worker processes sought repeated hashes.
    """
    counts = store.stage_composed(audience, included, excluded, plan_now=plan_now)
    beside = audience in store._repeats
    summary = store.plan(audience, snapshot=True, complete=True)
    rows = store._db.execute(
        "SELECT action, person, s0, s1, s2, s3, s4, s5, kept FROM plan WHERE audience = ? "
        "ORDER BY seq",
        (audience,),
    ).fetchall()
    staged = store.staged_count(audience)
    store.clear_staged(audience)
    rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    return counts, summary, rows, staged, beside


def test_a_first_sync_planned_from_the_sources_is_the_one_planned_from_staged_people(
    runs: Callable[[], Run],
) -> None:
    """Planned straight from the sources (`plan_now`), a first sync is the staged one, exactly.

    The same rows in the same order, the same hashes kept back, the same counts.
    """
    run = runs()
    aud, included, excluded = shared_and_excluded(run)
    staged = first_plan(run.store, aud, included, excluded, plan_now=False)
    direct = first_plan(run.store, aud, included, excluded, plan_now=True)
    assert direct[:3] == staged[:3]
    assert (staged[3], direct[3]) == (69, 0), "the direct plan staged nobody"
    assert staged[1].add_rows == 69  # 30 + 40 people, less the one excluded
    assert any(row[-1] for row in staged[2]), "shared hashes are kept back"


def test_a_first_sync_planned_from_the_sources_holds_the_people_staged_ones_would(
    new_location: Callable[[], str],
) -> None:
    """Held under `min_audience_size`, a first sync planned from its sources keeps its people.

    Nobody is staged for it: its planned adds are what `hold` moves into `pending`, the very
    people and hashes that holding the staged plan keeps.
    """
    held = []
    for plan_now in (False, True):
        store = MembershipStore(new_location())
        try:
            aud, included, excluded = shared_and_excluded(Run(store, {}))
            store.stage_composed(aud, included, excluded, plan_now=plan_now)
            assert store.staged_count(aud) == (0 if plan_now else 69)
            store.plan(aud, snapshot=True, complete=True)
            assert store.hold(aud, snapshot=True) == 69
            store.clear_staged(aud)
            rows = store._db.execute(
                "SELECT person, s0, s1, s2, s3, s4, s5 FROM pending WHERE audience = ? "
                "ORDER BY person",
                (aud,),
            ).fetchall()
        finally:
            store.close()
        held.append([tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows])
    staged, direct = held
    assert direct == staged


def test_look_ups_in_worker_processes_plan_as_those_run_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run side by side in worker processes, look-ups plan a first sync as they do here.

    The excluded people and the repeated hashes, found by worker processes reading the
    store's file and the run's work file, give the very plan that the same queries run on
    the run's own connection give: rows, order, hashes kept back, counts.
    """
    monkeypatch.setattr(connection, "BESIDE_ROWS", 0)  # a test's few people are worth it
    monkeypatch.chdir(tmp_path)  # a relative `membership_store`, as the default is
    workers = Workers(2)
    plans = []
    try:
        for beside in (None, workers):
            store = MembershipStore(f"{beside is None}.sqlite", workers=beside)
            try:
                aud, included, excluded = shared_and_excluded(Run(store, {}))
                plans.append(first_plan(store, aud, included, excluded, plan_now=True))
            finally:
                store.close()
    finally:
        workers.close()
    here, there = plans
    assert (here[-1], there[-1]) == (False, True), "the second sought them in workers"
    assert there[:4] == here[:4]
    assert any(row[-1] for row in there[2]), "shared hashes are kept back"


def test_a_person_excluded_by_phone_loses_email_too(runs: Callable[[], Run]) -> None:
    """Exclusion matches any one hash, and withholds all of that person's."""
    run = runs()
    crm, blocked = run.store.source("crm"), run.store.source("blocked")
    aud = run.audience("Customers")
    people = {
        "x": slots(email="x@crm", phone="+14155550101"),
        "y": slots(email="y@crm"),
    }
    run.feed(crm, people)
    run.sync(aud, [crm], [blocked])
    assert run.tiktok[aud] == contract([people], [])

    run = runs()
    run.feed(blocked, {"z": slots(phone="+14155550101")})
    synced = run.sync(aud, [crm], [blocked])
    assert synced.deleted == Counter([email("x@crm"), phone("+14155550101")])
    assert not synced.added
    assert synced.summary.left == 1
    assert run.store.count_members(aud) == 1
    assert run.tiktok[aud] == {email("y@crm")}

    # The exclusion lifted: x is back, with both hashes.
    run = runs()
    run.feed(blocked, {})
    synced = run.sync(aud, [crm], [blocked])
    assert synced.added == Counter([email("x@crm"), phone("+14155550101")])
    assert run.tiktok[aud] == contract([people], [])


def test_an_excluded_persons_hashes_are_withheld_from_everyone(runs: Callable[[], Run]) -> None:
    """A hash of an excluded person is sent for nobody; someone left with no hash is withheld."""
    run = runs()
    crm, shop, blocked = (run.store.source(s) for s in ("crm", "shop", "blocked"))
    aud = run.audience("Customers")
    run.feed(blocked, {"z": slots(phone="+14155550101")})
    crm_people = {
        "x": slots(email="shared@example.com", phone="+14155550101"),  # excluded by phone
        "w": slots(email="shared@example.com"),  # has only a hash of x's: nothing left
    }
    shop_people = {"y": slots(email="shared@example.com", phone="+14155550102")}
    run.feed(crm, crm_people)
    run.feed(shop, shop_people)
    synced = run.sync(aud, [crm, shop], [blocked])
    assert synced.added == Counter([phone("+14155550102")])
    assert (synced.fresh, synced.withheld) == (1, 2)
    assert run.store.count_members(aud) == 1
    assert run.tiktok[aud] == contract(
        [crm_people, shop_people], [{"z": slots(phone="+14155550101")}]
    )


def test_a_shared_hash_is_sent_once_and_leaves_with_its_last_holder(
    runs: Callable[[], Run],
) -> None:
    """Two streams' people with one email: one add of it; its delete waits for both to go."""
    shared = email("shared@example.com")
    run = runs()
    crm, shop = run.store.source("crm"), run.store.source("shop")
    aud = run.audience("All")
    run.feed(crm, {"x": slots(email="shared@example.com", phone="+14155550101")})
    run.feed(
        shop,
        {
            "y": slots(email="shared@example.com", phone="+14155550102"),
            "v": slots(email="shared@example.com"),
        },
    )
    synced = run.sync(aud, [crm, shop])
    assert synced.added == Counter([shared, phone("+14155550101"), phone("+14155550102")])
    assert run.store.count_members(aud) == 3

    # x goes (an incremental removal): its phone leaves, the email stays (y and v have it).
    run = runs()
    run.feed(crm, {}, whole=False, leave=["x"])
    synced = run.sync(aud, [crm, shop])
    assert synced.deleted == Counter([phone("+14155550101")])
    assert synced.summary.left == 1
    assert run.store.count_members(aud) == 2
    assert shared in run.tiktok[aud]

    # y and v go at once: the email is deleted, once.
    run = runs()
    run.feed(shop, {})
    synced = run.sync(aud, [crm, shop])
    assert synced.deleted == Counter([shared, phone("+14155550102")])
    assert synced.summary.left == 2
    assert run.store.count_members(aud) == 0
    assert run.tiktok[aud] == set()


def test_a_changed_hash_another_member_has_is_not_deleted(runs: Callable[[], Run]) -> None:
    """A person whose email changed keeps it in TikTok while another member has it."""
    run = runs()
    crm, shop = run.store.source("crm"), run.store.source("shop")
    aud = run.audience("All")
    run.feed(crm, {"x": slots(email="shared@example.com")})
    run.feed(shop, {"y": slots(email="shared@example.com", phone="+14155550102")})
    run.sync(aud, [crm, shop])

    run = runs()
    run.feed(crm, {"x": slots(email="x@new.example.com")})
    synced = run.sync(aud, [crm, shop])
    assert synced.summary.changed == 1
    assert not synced.deleted
    assert synced.added == Counter([email("x@new.example.com")])
    assert run.tiktok[aud] == {
        email("shared@example.com"),
        email("x@new.example.com"),
        phone("+14155550102"),
    }


def test_split_move_deletes_from_the_old_value_and_adds_to_the_new(
    runs: Callable[[], Run],
) -> None:
    """A person whose split value changes leaves A's audience and joins B's."""
    run = runs()
    tiers = run.store.source("contacts", SPLIT_SELECTION)
    gold, silver = run.audience("Tier gold"), run.audience("Tier silver")
    a, b = slots(email="a@example.com"), slots(email="b@example.com")
    run.feed_selected(tiers, [("a", 0, 0, "gold", a), ("b", 0, 0, "silver", b)])
    assert run.store.split_values(tiers) == ["gold", "silver"]
    run.sync(gold, [tiers], split="gold")
    run.sync(silver, [tiers], split="silver")
    assert run.tiktok == {gold: hashes([a]), silver: hashes([b])}

    run = runs()
    run.feed_selected(tiers, [("a", 0, 0, "silver", a), ("b", 0, 0, "silver", b)])
    assert run.store.split_values(tiers) == ["silver"]
    left = run.sync(gold, [tiers], split="gold")
    joined = run.sync(silver, [tiers], split="silver")
    assert left.deleted == Counter(hashes([a]))
    assert (left.summary.left, left.fresh_leavers, left.fresh) == (1, 1, 0)
    assert joined.added == Counter(hashes([a]))
    assert (joined.summary.joined, joined.summary.unchanged, joined.fresh) == (1, 1, 2)
    assert run.tiktok == {gold: set(), silver: hashes([a, b])}
    assert (run.store.count_members(gold), run.store.count_members(silver)) == (0, 2)


def test_fresh_counts_only_this_runs_records(runs: Callable[[], Run]) -> None:
    """`stage_composed` counts (fresh people staged, fresh people withheld) of this run only."""
    run = runs()
    crm, shop, blocked = (run.store.source(s) for s in ("crm", "shop", "blocked"))
    aud = run.audience("All")
    run.feed(crm, {"a": slots(email="a@example.com"), "b": slots(email="b@example.com")})
    run.feed(shop, {"c": slots(email="c@example.com")})
    assert run.sync(aud, [crm, shop], [blocked]).fresh == 3

    # Only the shop comes: its two people are this run's, the CRM's two are carried.
    run = runs()
    run.feed(shop, {"c": slots(email="c@example.com"), "d": slots(email="d@example.com")})
    synced = run.sync(aud, [crm, shop], [blocked])
    assert (synced.fresh, synced.withheld) == (2, 0)
    assert (synced.summary.people, synced.summary.joined) == (4, 1)
    assert (synced.summary.fresh_joined, synced.summary.fresh_changed) == (1, 0)

    # Only the exclusion comes: it withholds a (carried) and d (of the shop, also carried).
    run = runs()
    run.feed(blocked, {"z": slots(email="a@example.com"), "q": slots(email="d@example.com")})
    synced = run.sync(aud, [crm, shop], [blocked])
    assert (synced.fresh, synced.withheld) == (0, 0)
    assert (synced.summary.left, synced.fresh_leavers) == (2, 0)

    # The shop again, with d still excluded: c is staged, d withheld, both this run's.
    run = runs()
    run.feed(shop, {"c": slots(email="c@example.com"), "d": slots(email="d@example.com")})
    synced = run.sync(aud, [crm, shop], [blocked])
    assert (synced.fresh, synced.withheld) == (1, 1)
    assert run.tiktok[aud] == hashes([slots(email="b@example.com"), slots(email="c@example.com")])


@pytest.mark.parametrize("whole", [True, False], ids=["snapshot", "incremental"])
def test_filtered_rows_leave_the_selections_source(runs: Callable[[], Run], whole: bool) -> None:
    """A row its selection does not pick removes its person and counts as filtered."""
    run = runs()
    picked = run.store.source("contacts", '{"split_by":null,"where":[["plan",["pro"]]]}')
    aud = run.audience("Pro")
    a, b, c = (slots(email=f"{k}@example.com") for k in "abc")
    run.feed_selected(picked, [("a", 0, 0, None, a), ("b", 0, 0, None, b), ("c", 0, 0, None, c)])
    run.sync(aud, [picked])
    assert run.tiktok[aud] == hashes([a, b, c])

    run = runs()
    # b is not picked; c withdrew consent (its no-consent byte is 1).
    rows = [("b", 1, FILTERED, None, b), ("c", 1, 1, None, c)]
    if whole:
        rows.append(("a", 0, 0, None, a))
    assert run.feed_selected(picked, rows, whole=whole) == 1
    synced = run.sync(aud, [picked])
    assert synced.deleted == Counter(hashes([b, c]))
    assert (synced.summary.left, synced.fresh_leavers) == (2, 2)
    assert run.store.count_members(aud) == 1
    assert run.tiktok[aud] == hashes([a])


# Random compositions: people of a few keys, each with some of a small pool of emails and
# phones, so that streams share hashes and exclusions hit often.
_IDENTIFIERS = st.builds(
    lambda e, p: slots(
        email=None if e is None else f"p{e}@example.com",
        phone=None if p is None else f"+1415555010{p}",
    ),
    st.none() | st.integers(0, 4),
    st.none() | st.integers(0, 4),
).filter(any)
_SNAPSHOT = st.dictionaries(st.sampled_from("abcdef"), _IDENTIFIERS, max_size=5)
# A run: a new snapshot, or nothing (the stream is absent), for each of crm, shop and blocked.
_RUNS = st.lists(st.tuples(*(st.none() | _SNAPSHOT,) * 3), min_size=1, max_size=4)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=_RUNS)
def test_tiktok_holds_the_contracts_set_after_every_run(
    new_location: Callable[[], str],
    history: list[tuple[dict[str, Slots] | None, ...]],
) -> None:
    """For random sources, exclusions and runs, TikTok holds the set design.md defines.

    Also within each run: a hash is sent at most once per action, and never deleted while
    an included person still has it.
    """
    location = new_location()
    tiktok: dict[int, set[Hash]] = {}
    latest: list[dict[str, Slots]] = [{}, {}, {}]
    for snapshots in history:
        store = MembershipStore(location)
        try:
            run = Run(store, tiktok)
            sources = [store.source(s) for s in ("crm", "shop", "blocked")]
            aud = run.audience("All")
            for i, snapshot in enumerate(snapshots):
                if snapshot is not None:
                    run.feed(sources[i], snapshot)
                    latest[i] = snapshot
            synced = run.sync(aud, sources[:2], sources[2:])
            expected = contract(latest[:2], latest[2:])
            withheld = withheld_by(latest[:2], latest[2:])
            assert tiktok[aud] == expected
            # Each stream's people are people of their own, staged with the hashes they keep.
            left = [[hashes([row]) - withheld for row in people.values()] for people in latest[:2]]
            assert store.count_members(aud) == sum(map(bool, left[0] + left[1]))
            came = [row for i in (0, 1) if snapshots[i] is not None for row in left[i]]
            assert (synced.fresh, synced.withheld) == (sum(map(bool, came)), came.count(set()))
            assert max(synced.added.values(), default=1) == 1
            assert max(synced.deleted.values(), default=1) == 1
            assert not set(synced.deleted) & expected
        finally:
            store.close()
