"""A warehouse tap under Meltano: `meltanolabs-tap-postgres` from PyPI into the target.

The tap reads a contacts table from the suite's own PostgreSQL server in FULL_TABLE mode, with
its ACTIVATE_VERSION messages on, and `meltano run` sends it into the target against the fake
TikTok; the membership store is on the same server. Run twice, with a row deleted in between:
that person leaves the audience and nobody else changes. Needs PyPI, like tests/test_meltano.py,
whose Meltano install it shares. A fast test replays what such a tap sends without Meltano.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.conftest import ADVERTISER, TOKEN, activate, record, schema, sha, state
from tests.fake_tiktok import FakeTikTok
from tests.postgres import PostgresServer
from tests.test_meltano import LOADER, REPO, Project, meltano, meltano_env

__all__ = ["meltano"]  # the shared fixture, imported for pytest

TAP = "tap-postgres"
TAP_PACKAGE = "meltanolabs-tap-postgres==0.10.0"


def rows(ids: range) -> list[tuple[int, str, str | None, bool]]:
    """(id, email, phone, consent): every third person has not consented."""
    return [
        (i, f" Person.{i}@Example.COM", f"+1 415 555 {i:04d}" if i % 2 else None, i % 3 != 0)
        for i in ids
    ]


def expected_members(people: list[tuple[int, str, str | None, bool]]) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {"EMAIL_SHA256": set(), "PHONE_SHA256": set()}
    for i, email, phone, consent in people:
        if consent:
            members["EMAIL_SHA256"].add(sha(email.strip().lower()))
            if phone:
                members["PHONE_SHA256"].add(sha(f"+1415555{i:04d}"))
    return members


def project_file(pg_schema: str, store: str) -> dict[str, Any]:
    """The repository's loader, installed from this checkout, behind tap-postgres."""
    repo = yaml.safe_load((REPO / "meltano.yml").read_text())
    [loader] = [p for p in repo["plugins"]["loaders"] if p["name"] == LOADER]
    stream = f"{pg_schema}-contacts"
    loader = {
        **loader,
        "pip_url": f"-e {REPO}",
        "config": {
            "audiences": {stream: {"audience_name": "Warehouse contacts"}},
            "consent_field": "marketing_consent",
            "membership_store": store,
        },
    }
    tap = {
        "name": TAP,
        "variant": "meltanolabs",
        "namespace": "tap_postgres",
        "pip_url": TAP_PACKAGE,
        "executable": TAP,
        "capabilities": ["catalog", "discover", "state", "about", "stream-maps"],
        "settings": [
            {"name": "sqlalchemy_url", "kind": "password", "sensitive": True},
            {"name": "filter_schemas", "kind": "array"},
            {"name": "emit_activate_version_messages", "kind": "boolean"},
        ],
        "config": {"filter_schemas": [pg_schema], "emit_activate_version_messages": True},
        "select": [f"{stream}.*"],
        "metadata": {stream: {"replication-method": "FULL_TABLE"}},
    }
    return {
        "default_environment": "dev",
        "send_anonymous_usage_stats": False,
        "project_id": "target-tiktok-audiences-postgres",
        "environments": [{"name": "dev"}],
        "plugins": {"extractors": [tap], "loaders": [loader]},
    }


def contacts_table(server: PostgresServer) -> tuple[str, str]:
    """A schema of this test's own with a contacts table; its name and the tap's URL."""
    pg_schema = f"w_{uuid.uuid4().hex[:12]}"
    with server.connect() as db:
        db.execute(f"CREATE SCHEMA {pg_schema}")
        db.execute(
            f"CREATE TABLE {pg_schema}.contacts (id integer PRIMARY KEY, email text, phone text, "
            "marketing_consent boolean NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
        )
        with db.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {pg_schema}.contacts (id, email, phone, marketing_consent) "
                "VALUES (%s, %s, %s, %s)",
                rows(range(1, 41)),
            )
    # The tap wants a password in the URL; the test server trusts every local connection.
    url = server.url().replace("postgres@", "postgres:unused@", 1)
    return pg_schema, url


def test_tap_postgres_full_table_under_meltano_removes_a_deleted_row(
    tmp_path: Path, meltano: Path, postgres_server: PostgresServer, pg_url: str
):
    pg_schema, tap_url = contacts_table(postgres_server)
    root = tmp_path / "project"
    root.mkdir()
    (root / "meltano.yml").write_text(
        yaml.safe_dump(project_file(pg_schema, pg_url), sort_keys=False)
    )
    fake = FakeTikTok().start()
    try:
        fake.add_advertiser(ADVERTISER, name="Main account")
        fake.add_token(TOKEN, [ADVERTISER])
        project = Project(root, meltano, meltano_env(fake, TAP_POSTGRES_SQLALCHEMY_URL=tap_url))
        project("install", timeout=600)

        first = project("run", TAP, LOADER)
        assert "1 activate version messages" in first.stderr, first.stderr[-3000:]
        [audience] = fake.audiences()
        assert audience["name"] == "Warehouse contacts"
        audience_id = str(audience["audience_id"])
        assert fake.members(audience_id) == expected_members(rows(range(1, 41)))
        sent = len(fake.requests_log("segment/mapping/"))

        # Person 7 (consenting, with a phone) is deleted from the warehouse.
        with psycopg.connect(postgres_server.url(), autocommit=True) as db:
            db.execute(f"DELETE FROM {pg_schema}.contacts WHERE id = 7")
        project("run", TAP, LOADER)
        left = [r for r in rows(range(1, 41)) if r[0] != 7]
        assert fake.members(audience_id) == expected_members(left)
        removed = fake.requests_log("segment/mapping/")[sent:]
        assert [r["body"]["action"] for r in removed] == ["delete"]
    finally:
        fake.stop()


def test_an_sdk_taps_leading_activate_version_under_snapshot_end_activate_version(target):
    """What tap-postgres sends for a FULL_TABLE stream: one ACTIVATE_VERSION, before the records.

    Nothing closes that snapshot, so under `snapshot_end: activate_version` nobody is removed,
    and the warning says why and what to set.
    """
    messages = [
        schema(),
        activate(version=1764580000),
        state({"bookmarks": {"contacts": {}}}),
        *(record(id=i, email=f"p{i}@example.com") for i in range(1, 4)),
    ]
    run = target.run(messages, snapshot_end="activate_version")
    assert run.returncode == 0, run.stderr
    assert (
        "Stream contacts ended without ACTIVATE_VERSION after its records (its tap sends one only "
        "before them, as singer-sdk taps do: set snapshot_end to end_of_input for it) and "
        "snapshot_end is activate_version: adding new people but removing nobody."
    ) in run.stderr
    # A tap that sends none at all gets the plain warning.
    plain = target.run(
        [schema(), record(id=9, email="p9@example.com")], snapshot_end="activate_version"
    )
    assert (
        "Stream contacts ended without ACTIVATE_VERSION and snapshot_end is activate_version"
    ) in plain.stderr
