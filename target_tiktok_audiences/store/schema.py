"""The store's tables: the schema, its temporary tables, migrations and the version check.

A store records its schema version in `meta`. A location is this target's store only if its
tables of the store's names have every column of that version; anything else is refused before
a single change, so another application's data is never touched. A newer store than this
program is refused too; an older one is migrated in place, in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.store.backend import Backend

SCHEMA_VERSION = 5
# What upgrades a store written at version N-1 to version N, run in one transaction. The words
# in braces are the backend's (`Backend.words`), so one list serves SQLite and PostgreSQL.
# Version 4 remembers sources for composed audiences. A simple audience's confirmed and held
# people are what its stream last said, so an upgraded store plans exactly as before.
# Version 5 adds tables only (a run's history and receipts; erasure's suppression list, empty:
# nothing is excluded, and its receipts): nothing stored before changes.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE audiences ADD COLUMN last_change_at {real}",),
    3: ("ALTER TABLE audiences ADD COLUMN key_properties TEXT",),
    4: (
        "ALTER TABLE audiences ADD COLUMN dirty INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE audiences ADD COLUMN split_value TEXT",
        "ALTER TABLE audiences ADD COLUMN streams TEXT",
        "ALTER TABLE audiences ADD COLUMN shared_with TEXT",
        "ALTER TABLE audiences ADD COLUMN lookalike_audience_id TEXT",
        "{sources_schema}",
    ),
    5: ("{history_schema}", "{erase_schema}"),
}
SLOT_COLUMNS = tuple(f"s{i}" for i in range(len(SLOTS)))
# In `diff`, a person's confirmed slots beside the staged ones.
OLD_COLUMNS = tuple(f"o{i}" for i in range(len(SLOTS)))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audiences (
    id {id_pk},
    stream TEXT NOT NULL,
    target_key TEXT NOT NULL,
    audience_id TEXT,
    name TEXT,
    advertiser_ids TEXT NOT NULL,
    created_by_target INTEGER NOT NULL DEFAULT 0,
    uploaded_at {real},
    last_change_at {real},
    last_sync_at {real},
    last_result TEXT,
    last_error TEXT,
    last_counts TEXT,
    key_properties TEXT,
    dirty INTEGER NOT NULL DEFAULT 0,
    split_value TEXT,
    streams TEXT,
    shared_with TEXT,
    lookalike_audience_id TEXT,
    UNIQUE (stream, target_key)
);
{sources_schema};
{history_schema};
CREATE TABLE IF NOT EXISTS members (
    audience INTEGER NOT NULL,
    person {blob} NOT NULL,
    {slots},
    PRIMARY KEY (audience, person)
){table_suffix};
CREATE TABLE IF NOT EXISTS pending (
    audience INTEGER NOT NULL,
    person {blob} NOT NULL,
    {slots},
    PRIMARY KEY (audience, person)
){table_suffix};
{erase_schema};
"""

# A source: one stream's latest snapshot (or, incremental, its people as changed so far), in
# hashes; audiences are planned from sources.
_SOURCES_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    id {id_pk},
    stream TEXT NOT NULL,
    selection TEXT NOT NULL DEFAULT '',
    key_properties TEXT,
    snapshot_at {real},
    UNIQUE (stream, selection)
);
CREATE TABLE IF NOT EXISTS source_people (
    source INTEGER NOT NULL,
    person {blob} NOT NULL,
    split TEXT,
    {slots},
    PRIMARY KEY (source, person)
){table_suffix}"""

# Each run (`history_runs`), what it did to each audience it synced (`history_audiences`: the
# report's counts, its result and a failure's one-line cause), and the receipts: the TikTok
# request id of every confirmed mapping request and the rows it carried. Kept `history_days`.
# Prefixed names: a schema shared with other applications may well hold a `runs` table.
_HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS history_runs (
    id {id_pk},
    started_at {real} NOT NULL,
    finished_at {real},
    result TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS history_audiences (
    run INTEGER NOT NULL,
    audience INTEGER NOT NULL,
    audience_id TEXT,
    finished_at {real} NOT NULL,
    result TEXT NOT NULL,
    error TEXT,
    added INTEGER NOT NULL,
    removed INTEGER NOT NULL,
    changed INTEGER NOT NULL,
    unchanged INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    skipped_by_reason TEXT NOT NULL,
    held INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (run, audience)
);
CREATE TABLE IF NOT EXISTS history_receipts (
    id {id_pk},
    run INTEGER NOT NULL,
    audience INTEGER NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT NOT NULL,
    rows INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_receipts_by_run ON history_receipts (run, audience)"""

# Erasure (`tiktok-audiences erase`): the suppression list, hashes every audience excludes; and a
# receipt per erasure: the hashes (hex, by slot), when, each audience's counts and the TikTok
# request ids of its confirmed deletes. Never a raw identifier.
_ERASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    slot INTEGER NOT NULL,
    hash {blob} NOT NULL,
    PRIMARY KEY (slot, hash)
);
CREATE TABLE IF NOT EXISTS erasures (
    receipt TEXT PRIMARY KEY,
    erased_at {real} NOT NULL,
    hashes TEXT NOT NULL,
    audiences TEXT NOT NULL,
    request_ids TEXT NOT NULL,
    complete INTEGER NOT NULL
)"""

_AUDIENCE_COLUMNS = (
    "id",
    "stream",
    "target_key",
    "audience_id",
    "name",
    "advertiser_ids",
    "created_by_target",
    "uploaded_at",
    "last_change_at",
    "last_sync_at",
    "last_result",
    "last_error",
    "last_counts",
    "key_properties",
    "dirty",
    "split_value",
    "streams",
    "shared_with",
    "lookalike_audience_id",
)
_PERSON_COLUMNS = ("audience", "person", *SLOT_COLUMNS)
# Everything a store holds, in the order a copy loads it.
TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "audiences": _AUDIENCE_COLUMNS,
    "members": _PERSON_COLUMNS,
    "pending": _PERSON_COLUMNS,
    "sources": ("id", "stream", "selection", "key_properties", "snapshot_at"),
    "source_people": ("source", "person", "split", *SLOT_COLUMNS),
    "history_runs": ("id", "started_at", "finished_at", "result", "error"),
    "history_audiences": (
        "run",
        "audience",
        "audience_id",
        "finished_at",
        "result",
        "error",
        "added",
        "removed",
        "changed",
        "unchanged",
        "skipped",
        "skipped_by_reason",
        "held",
        "requests",
    ),
    "history_receipts": ("id", "run", "audience", "action", "request_id", "rows"),
    "suppressions": ("slot", "hash"),
    "erasures": ("receipt", "erased_at", "hashes", "audiences", "request_ids", "complete"),
}
# The tables whose ids a store generates: a copy that loads them explicitly moves the
# generator past them.
GENERATED_IDS = ("audiences", "sources", "history_runs", "history_receipts")
# The columns a store of each schema version has, table by table: a location whose tables of
# these names lack some of them is not this target's store.
_COLUMNS_ADDED = {
    2: {"audiences": {"last_change_at"}},
    3: {"audiences": {"key_properties"}},
    4: {"audiences": {"dirty", "split_value", "streams", "shared_with", "lookalike_audience_id"}},
}
_TABLES_ADDED = {
    4: {"sources", "source_people"},
    5: {"history_runs", "history_audiences", "history_receipts", "suppressions", "erasures"},
}


def _columns_at(version: int) -> dict[str, set[str]]:
    """Each table's columns at schema `version` (1 to SCHEMA_VERSION)."""
    columns = {table: set(names) for table, names in TABLES.items()}
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for table, added in _COLUMNS_ADDED.get(step, {}).items():
            columns[table] -= added
        for table in _TABLES_ADDED.get(step, ()):
            del columns[table]
    return columns


def in_words(template: str, db: Backend) -> list[str]:
    """A template's statements in the backend's words."""
    blob = db.words["blob"]
    fields = {
        "slots": ", ".join(f"{c} {blob}" for c in SLOT_COLUMNS),
        "old_slots": ", ".join(f"{c} {blob}" for c in OLD_COLUMNS),
        **db.words,
    }
    text = template.format(
        sources_schema=_SOURCES_SCHEMA.format(**fields),
        history_schema=_HISTORY_SCHEMA.format(**fields),
        erase_schema=_ERASE_SCHEMA.format(**fields),
        **fields,
    )
    return [statement for statement in text.split(";") if statement.strip()]


def _names(names: Iterable[str]) -> str:
    """Table or column names for a message, at most five of them."""
    names = list(names)
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


ANY_SLOT = " OR ".join(f"{c} IS NOT NULL" for c in SLOT_COLUMNS)
# A plan row with a hash to send: one not kept for another person.
SENDABLE = " OR ".join(
    f"({c} IS NOT NULL AND (kept & {1 << i}) = 0)" for i, c in enumerate(SLOT_COLUMNS)
)
SLOT_LIST = ", ".join(SLOT_COLUMNS)


def stored_version(db: Backend, path: str) -> int | None:
    """The schema version of the store in `db` (None: a new or empty location, ours to set up).

    Reads only. Refuses a store newer than this program, and a location that holds
    something else: tables but no schema version, a version that is not a number, or the
    store's own table names with columns missing. Nothing is changed before that verdict.
    """
    tables = db.tables()
    own = sorted(set(tables) & set(TABLES))
    if "meta" not in tables:
        if own or (tables and not db.shares_namespace):
            raise _foreign(
                db,
                path,
                f"it holds tables ({_names(own or sorted(tables))}) without "
                "this target's schema version",
            )
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if not row:
        raise _foreign(db, path, "its `meta` table has no schema_version")
    text = str(row[0])
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise _foreign(
            db, path, f"its schema version {shown!r} is not a version this target writes"
        )
    version = int(text)
    if version > SCHEMA_VERSION:
        msg = (
            f"membership store {path!r} has schema version {version}, newer than this "
            f"program's {SCHEMA_VERSION}: upgrade target-tiktok-audiences."
        )
        raise StoreError(msg)
    for table, columns in _columns_at(version).items():
        missing = columns - tables.get(table, set())
        if missing:
            what = "is missing" if table not in tables else f"lacks {_names(sorted(missing))}"
            raise _foreign(db, path, f"its table {table!r} {what} (schema version {version})")
    return version


def _foreign(db: Backend, path: str, why: str) -> StoreError:
    """The one-line refusal of a location that holds another application's data."""
    return StoreError(
        f"membership store {path!r} is not this target's store: {why}; it was left "
        f"untouched: point `membership_store` at {db.elsewhere}, or restore the "
        "store from a backup"
    )


def upgrade(db: Backend, path: str, version: int | None) -> None:
    """Create a new store at the current schema, or migrate an older one in place.

    `version`: what `stored_version` said. Under the schema lock the version is read again:
    another worker may have created or upgraded the store in the meantime, and then there is
    nothing left to do.
    """
    if version == SCHEMA_VERSION:
        return
    with db.transaction():
        db.lock_schema()
        version = stored_version(db, path)
        if version is None:
            db.create_namespace()
            for statement in in_words(_SCHEMA, db):
                db.execute(statement)
        else:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for template in _MIGRATIONS[step]:
                    for statement in in_words(template, db):
                        db.execute(statement)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
