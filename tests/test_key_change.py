"""A stream whose key properties changed since its last sync, on SQLite and on PostgreSQL.

Person keys are digests of the key values, so under new keys everyone looks new: the change is
refused with one line naming both keys, or, with `allow_key_change`, people are re-matched by
their identifier hashes and only real changes are sent.
"""

from __future__ import annotations

import sqlite3

import pytest

from target_tiktok_audiences.store import KeyPropertiesChangedError, MembershipStore
from tests.conftest import TargetRunner, downgrade_sql, record, schema, state
from tests.store_sql import confirm_rows, member_hashes
from tests.test_end_to_end import mapping_requests, members, only_audience, sent_rows
from tests.test_end_to_end_postgres import PostgresTargetRunner
from tests.test_store import ADVERTISER, FIRST, confirm_plan, person, slots, stage


def contacts(ids, key: str = "id", email=lambda i: f"person{i}@example.com") -> list[dict]:
    """People 1..n, keyed by `key` (the value differs per key name, as a real new key would)."""
    out = []
    for i in ids:
        fields = {"email": email(i)}
        if key:
            fields[key] = i if key == "id" else f"{key}-{i}"
        out.append(record(**fields))
    return out


def keyed(key: str | None) -> dict:
    return schema(key_properties=[key] if key else [])


@pytest.fixture(params=["sqlite", "postgresql"])
def runner(request, tmp_path, fake) -> TargetRunner:
    if request.param == "postgresql":
        return PostgresTargetRunner(tmp_path, fake, request.getfixturevalue("postgres_server"))
    return TargetRunner(tmp_path, fake)


def synced(runner: TargetRunner, fake, key: str | None, ids=range(1, 31), **config):
    run = runner.run([keyed(key), *contacts(ids, key or ""), state({"at": key})], **config)
    assert run.returncode == 0, run.stderr
    return run


def test_new_keys_are_refused_with_one_line_naming_both(runner, fake):
    synced(runner, fake, "id")
    before = sorted(runner.store_rows("members"))
    fake.reset_log()
    run = runner.run([keyed("cid"), *contacts(range(1, 31), "cid"), state({"at": 2})])
    assert run.returncode == 1, run.stderr
    assert run.states == []
    assert len(run.errors) == 1, run.stderr
    line = run.errors[0]
    assert "from [id] to [cid]" in line and "`allow_key_change: true`" in line
    assert "Traceback" not in run.stderr
    assert fake.requests_log("segment/mapping/", bodies=False) == []
    assert sorted(runner.store_rows("members")) == before


def test_same_people_under_new_keys_send_nothing_with_allow_key_change(runner, fake):
    synced(runner, fake, "id")
    audience = only_audience(fake)
    fake.reset_log()
    run = synced(runner, fake, "cid", allow_key_change=True)
    assert mapping_requests(fake) == []
    assert "added 0, removed 0, changed 0, unchanged 30" in run.stderr
    assert "30 of 30 stored people re-matched" in run.stderr
    assert run.states == [{"at": "cid"}]
    # The new keys are remembered: the next run needs no allow_key_change and sends nothing.
    run = synced(runner, fake, "cid")
    assert mapping_requests(fake) == []
    assert len(members(fake, audience)) == 30


@pytest.mark.parametrize(("old", "new"), [(None, "id"), ("id", None)], ids=["to-keys", "to-none"])
def test_no_keys_to_keys_and_back_is_a_key_change(runner, fake, old, new):
    synced(runner, fake, old)
    fake.reset_log()
    refused = runner.run([keyed(new), *contacts(range(1, 31), new or "")])
    assert refused.returncode == 1
    assert len(refused.errors) == 1 and "allow_key_change" in refused.errors[0]
    assert "none (people known by their identifier hashes)" in refused.errors[0]
    synced(runner, fake, new, allow_key_change=True)
    assert mapping_requests(fake) == []


def test_with_allow_key_change_only_real_changes_are_sent(runner, fake):
    synced(runner, fake, "id")
    audience = only_audience(fake)
    fake.reset_log()
    # Person 1 changed email, person 30 left, person 31 joined; 2..29 are the same people.
    messages = [keyed("cid")]
    for i in range(1, 30):
        email = "moved1@example.com" if i == 1 else f"person{i}@example.com"
        messages.append(record(cid=f"cid-{i}", email=email))
    messages.append(record(cid="cid-31", email="person31@example.com"))
    run = runner.run(messages, allow_key_change=True)
    assert run.returncode == 0, run.stderr
    added = sorted(row["EMAIL_SHA256"] for row in sent_rows(fake, "add"))
    deleted = sorted(row["EMAIL_SHA256"] for row in sent_rows(fake, "delete"))
    on_tiktok = {h for _, h in members(fake, audience)}
    assert len(added) == 2 and len(deleted) == 2  # person 1's new email and person 31
    assert set(added) <= on_tiktok and not set(deleted) & on_tiktok
    assert len(on_tiktok) == 30


# The store's side, without HTTP


def test_rematch_rekeys_exact_matches_only(tmp_path):
    store = MembershipStore(str(tmp_path / "m.sqlite"))
    try:
        aud = store.audience("contacts", "k", [ADVERTISER]).id
        assert store.key_change(aud, ("id",), allow=False, stream="contacts", label="C") is False
        twin = slots(email="twin@example.com")
        old = {"a": FIRST["same"], "b": FIRST["email"], "t1": twin, "t2": twin}
        stage(store, aud, old)
        store.plan(aud, snapshot=True, complete=True)
        confirm_plan(store, aud)
        with pytest.raises(KeyPropertiesChangedError, match=r"from \[id\] to \[cid\]"):
            store.key_change(aud, ("cid",), allow=False, stream="contacts", label="C")
        assert store.key_change(aud, ("cid",), allow=True, stream="contacts", label="C")
        new = {"A": FIRST["same"], "B": slots(email="changed@example.com"), "T": twin}
        stage(store, aud, new)
        assert store.rematch(aud, ("cid",)) == (1, 4)  # a: b changed, the twins are ambiguous
        assert store.get_audience(aud).key_properties == ("cid",)
        keys = {row[0] for row in member_hashes(store, aud)}
        assert keys == {person("A"), person("b"), person("t1"), person("t2")}
        summary = store.plan(aud, snapshot=True, complete=True)
        assert (summary.unchanged, summary.joined, summary.left) == (1, 2, 3)
        assert store.key_change(aud, ("cid",), allow=False, stream="contacts", label="C") is False
    finally:
        store.close()


def test_a_store_from_before_key_properties_learns_them_on_first_sight(tmp_path):
    path = tmp_path / "m.sqlite"
    store = MembershipStore(str(path))
    aud = store.audience("contacts", "k", [ADVERTISER]).id
    store.close()
    db = sqlite3.connect(path)
    for statement in downgrade_sql(2):
        db.execute(statement)
    db.commit()
    db.close()
    store = MembershipStore(str(path))
    try:
        assert store.get_audience(aud).key_properties is None
        assert store.key_change(aud, (), allow=False, stream="contacts", label="C") is False
        assert store.get_audience(aud).key_properties == ()
        confirm_rows(store, aud, "add", [(person("a"), FIRST["same"])])
        with pytest.raises(KeyPropertiesChangedError):
            store.key_change(aud, ("id",), allow=False, stream="contacts", label="C")
    finally:
        store.close()


def test_keys_of_an_audience_nobody_is_stored_in_yet_may_change(tmp_path):
    store = MembershipStore(str(tmp_path / "m.sqlite"))
    try:
        aud = store.audience("contacts", "k", [ADVERTISER]).id
        assert store.key_change(aud, ("id",), allow=False, stream="contacts", label="C") is False
        assert store.key_change(aud, ("cid",), allow=False, stream="contacts", label="C") is False
        assert store.get_audience(aud).key_properties == ("cid",)
    finally:
        store.close()
