"""Composed audiences against a model: after every run, TikTok holds the set the contract defines.

Hypothesis draws a small population whose emails and phones come from small pools, so people
share hashes. Streams `a` and `b` feed one audience, `x` is its exclusion stream. Each of three
runs brings a random subset of the streams, each brought stream a random subset of the people
(joins, leaves, changed identifiers), possibly with no records at all. After each run the
fake TikTok's membership must equal the model's (design.md, "Audiences, composed"):

    the union of the hashes of the people in a's and b's latest snapshots,
    less every hash of each of those people who has a hash in x's latest snapshot.

A stream absent from a run, or present with no records (and no ACTIVATE_VERSION), keeps its
latest snapshot. The target runs in this process, as in tests/test_accounting.py.
`test_harness_simple_form_matches_its_model` runs the same machinery on the simple form, which
the previous release has, to prove the harness right.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_tiktok_audiences.target import TargetTikTokAudiences
from tests.conftest import ADVERTISER, TOKEN, record, schema, sha
from tests.fake_tiktok import FakeTikTok

EMAILS = ("e0@x.io", "e1@x.io", "e2@x.io", "e3@x.io")
PHONES = ("+14155550100", "+14155550101", "+14155550102")
INCLUDED, EXCLUDED = ("a", "b"), "x"

Hash = tuple[str, str]
Identifiers = tuple[str | None, str | None]  # (email, phone), at least one of them
Snapshot = dict[int, Identifiers]  # key -> identifiers: one stream's records in one run
Run = dict[str, Snapshot | None]  # stream -> its snapshot, or None when the run lacks it

identifiers = st.tuples(st.sampled_from((None, *EMAILS)), st.sampled_from((None, *PHONES))).filter(
    lambda ids: ids != (None, None)
)


@st.composite
def runs_of(draw: st.DrawFn, streams: tuple[str, ...]) -> list[Run]:
    """Three runs over one population: each stream absent, or a subset of the people in it.

    A key is one person in every stream. A person drawn into a stream may change identifiers
    there, and keeps the new ones from then on, in every stream.
    """
    population = draw(st.dictionaries(st.integers(1, 8), identifiers, min_size=1, max_size=6))
    keys = sorted(population)
    runs = []
    for _ in range(3):
        run: Run = {}
        for stream in streams:
            if draw(st.booleans()):
                run[stream] = None
                continue
            snapshot: Snapshot = {}
            for key in draw(st.lists(st.sampled_from(keys), unique=True)):
                if draw(st.integers(0, 3)) == 0:
                    population[key] = draw(identifiers)
                snapshot[key] = population[key]
            run[stream] = snapshot
        runs.append(run)
    return runs


def hashes(ids: Identifiers) -> frozenset[Hash]:
    email, phone = ids
    out = set()
    if email is not None:
        out.add(("EMAIL_SHA256", sha(email)))
    if phone is not None:
        out.add(("PHONE_SHA256", sha(phone)))
    return frozenset(out)


def remember(latest: dict[str, Snapshot], run: Run) -> None:
    """Move each stream's latest snapshot past `run` (an absent or empty stream keeps its own)."""
    for stream, snapshot in run.items():
        if snapshot:
            latest[stream] = snapshot


def model(latest: dict[str, Snapshot], excluded: str | None) -> set[Hash]:
    """What TikTok should hold: included people's hashes, less all hashes of excluded people."""
    suppressed = {h for ids in latest.get(excluded, {}).values() for h in hashes(ids)}
    people = [hashes(ids) for s in INCLUDED for ids in latest.get(s, {}).values()]
    kept = [p for p in people if not p & suppressed]
    withheld = [p for p in people if p & suppressed]
    return set().union(*kept) - set().union(*withheld)


def on_tiktok(fake: FakeTikTok, name: str) -> set[Hash]:
    """The membership of the audience called `name`; none yet holds nobody."""
    ids = [str(a["audience_id"]) for a in fake.audiences() if a["name"] == name]
    assert len(ids) <= 1, f"{name} was created {len(ids)} times"
    members = fake.members(ids[0]) if ids else {}
    return {(kind, h) for kind, hs in members.items() for h in hs}


def sync(config: dict[str, Any], run: Run) -> None:
    """One run of the target in this process over `run`'s streams (absent ones not sent)."""
    messages: list[dict] = []
    for stream, snapshot in run.items():
        if snapshot is None:
            continue
        messages.append(schema(stream))
        for key, (email, phone) in snapshot.items():
            ids = {k: v for k, v in (("email", email), ("phone", phone)) if v is not None}
            messages.append(record(stream, id=key, **ids))
    target = TargetTikTokAudiences(config=config)
    target.listen(io.StringIO("".join(json.dumps(m) + "\n" for m in messages)))


def base_config(fake: FakeTikTok, store: Path) -> dict[str, Any]:
    return {
        "access_token": TOKEN,
        "advertiser_ids": [ADVERTISER],
        "api_url": fake.url,
        "membership_store": str(store),
        "min_audience_size": 0,
        "max_removal_fraction": 1.0,
        "max_requests_per_second": 500,
        "identifier_fields": {"idfa": None, "aaid": None},
    }


def check_runs(
    fake: FakeTikTok, config: dict[str, Any], name: str, runs: list[Run], excluded: str | None
) -> None:
    latest: dict[str, Snapshot] = {}
    for number, run in enumerate(runs, 1):
        sync(config, run)
        remember(latest, run)
        assert on_tiktok(fake, name) == model(latest, excluded), f"after run {number}: {runs}"


_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(_SETTINGS, max_examples=30)
@given(runs=runs_of((*INCLUDED, EXCLUDED)))
def test_composed_membership_matches_the_model_after_every_run(fake, tmp_path, runs):
    name = f"composed-{uuid.uuid4().hex[:12]}"
    spec = {"audience_name": name, "streams": list(INCLUDED), "exclude_streams": [EXCLUDED]}
    config = {**base_config(fake, tmp_path / f"{name}.sqlite"), "audiences": {"c": spec}}
    check_runs(fake, config, name, runs, EXCLUDED)


@settings(_SETTINGS, max_examples=10)
@given(runs=runs_of(("a",)))
def test_harness_simple_form_matches_its_model(fake, tmp_path, runs):
    name = f"simple-{uuid.uuid4().hex[:12]}"
    config = {
        **base_config(fake, tmp_path / f"{name}.sqlite"),
        "audiences": {"a": {"audience_name": name}},
    }
    check_runs(fake, config, name, runs, None)
