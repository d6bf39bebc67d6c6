"""The membership store: per audience, each person's identifier hashes as TikTok confirmed them.

Only hashes live here (raw 32- or 16-byte digests, and a 16-byte digest of the record key), never
a raw identifier. A run stages what its input says (`staged`), plans the difference against the
confirmed members (`plan`), and records each change only once TikTok confirmed it. Staging and
planning are SQL over temporary tables, so memory stays flat however large the audience. On
SQLite the plan is in a private work file of the run, from which worker processes read the
batches they build request bodies of.

Deletes are planned and applied before adds: a person whose email changed loses the old hash,
then gains the new one, so a run that dies between the two leaves the store exactly in step
with TikTok and the next run sends only what is missing.

The store lives in a SQLite file (one machine) or a PostgreSQL database (shared by workers).
All of its SQL is here, written once; `store_backend.py` says what differs between the two.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from target_tiktok_audiences.errors import InputError, StoreError
from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.store_backend import (
    DEFAULT_TIMEOUT,
    Backend,
    StoreMissingError,
    driver_cause,
)
from target_tiktok_audiences.store_sqlite import SQLiteBackend
from target_tiktok_audiences.tiktok.mapping import Batch, Slots

__all__ = [
    "DEFAULT_TIMEOUT",
    "SCHEMA_VERSION",
    "AudienceRow",
    "KeyPropertiesChangedError",
    "MembershipStore",
    "PlanRows",
    "PlanSummary",
    "Staged",
    "StoreMissingError",
    "copy_store",
    "is_postgres_url",
]

SCHEMA_VERSION = 3
# What upgrades a store written at version N-1 to version N, run in one transaction. The words
# in braces are the backend's (`Backend.words`), so one list serves SQLite and PostgreSQL.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE audiences ADD COLUMN last_change_at {real}",),
    3: ("ALTER TABLE audiences ADD COLUMN key_properties TEXT",),
}
SLOT_COLUMNS = tuple(f"s{i}" for i in range(len(SLOTS)))
# In `diff`, a person's confirmed slots beside the staged ones.
OLD_COLUMNS = tuple(f"o{i}" for i in range(len(SLOTS)))

# A staged or planned person: (person key digest, *one hash or None per slot).
Row = tuple[bytes, ...]

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
        f"INSERT INTO staged (audience, person, remove, no_consent, {_SLOT_LIST}) "
        f"SELECT :a, {field(0, _KEY_WIDTH)}, {flag(_KEY_WIDTH)}, {flag(_KEY_WIDTH + 1)}, "
        f"{slots} FROM n ORDER BY i"
    )


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
    UNIQUE (stream, target_key)
);
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
"""

# Per connection, gone when it closes. `confirming` holds one confirmed batch while it is applied.
# `plan` is in the run's work file where the backend has one (SQLite), for `PlanRows`.
# A plan row's `kept`: a bit per slot whose delete is not sent, another person keeping that hash.
_TEMP_SCHEMA = """
CREATE TEMP TABLE IF NOT EXISTS staged (
    seq {row_order},
    audience INTEGER NOT NULL,
    person {blob} NOT NULL,
    remove INTEGER NOT NULL,
    no_consent INTEGER NOT NULL DEFAULT 0,
    {slots}
);
CREATE {work_table} IF NOT EXISTS {work}plan (
    seq {id_pk},
    audience INTEGER NOT NULL,
    action TEXT NOT NULL,
    person {blob} NOT NULL,
    {slots},
    kept INTEGER NOT NULL DEFAULT 0
);
CREATE TEMP TABLE IF NOT EXISTS confirming (
    person {blob} NOT NULL,
    {slots}
);
CREATE TEMP TABLE IF NOT EXISTS rekey (
    old {blob} PRIMARY KEY,
    new {blob} NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS diff (
    person {blob} NOT NULL,
    joined INTEGER NOT NULL,
    {slots},
    {old_slots}
);
"""

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
)
_PERSON_COLUMNS = ("audience", "person", *SLOT_COLUMNS)
# Everything a store holds, in the order a copy loads it.
_TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "audiences": _AUDIENCE_COLUMNS,
    "members": _PERSON_COLUMNS,
    "pending": _PERSON_COLUMNS,
}
# The columns a store of each schema version has, table by table: a location whose tables of
# these names lack some of them is not this target's store.
_COLUMNS_ADDED = {2: {"audiences": {"last_change_at"}}, 3: {"audiences": {"key_properties"}}}


def _columns_at(version: int) -> dict[str, set[str]]:
    """Each table's columns at schema `version` (1 to SCHEMA_VERSION)."""
    columns = {table: set(names) for table, names in _TABLES.items()}
    for step in range(version + 1, SCHEMA_VERSION + 1):
        for table, added in _COLUMNS_ADDED.get(step, {}).items():
            columns[table] -= added
    return columns


def is_postgres_url(location: str) -> bool:
    """Whether `membership_store` names a PostgreSQL database rather than a SQLite file."""
    return location.startswith(("postgresql://", "postgres://"))


def _sql(template: str, db: Backend) -> list[str]:
    """A template's statements in the backend's words."""
    blob = db.words["blob"]
    text = template.format(
        slots=", ".join(f"{c} {blob}" for c in SLOT_COLUMNS),
        old_slots=", ".join(f"{c} {blob}" for c in OLD_COLUMNS),
        **db.words,
    )
    return [statement for statement in text.split(";") if statement.strip()]


class KeyPropertiesChangedError(InputError):
    """A stream's key properties are not those of its audience's last sync."""


def _keys_text(keys: Sequence[str]) -> str:
    """Key properties for a message: `[a, b]`, or that there are none."""
    return f"[{', '.join(keys)}]" if keys else "none (people known by their identifier hashes)"


def _remember_keys(db: Backend, audience: int, keys: Sequence[str]) -> None:
    """Inside a transaction: the key properties the audience is synced under from now on."""
    db.execute(
        "UPDATE audiences SET key_properties = ? WHERE id = ?", (json.dumps(list(keys)), audience)
    )


def _names(names: Iterable[str]) -> str:
    """Table or column names for a message, at most five of them."""
    names = list(names)
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


@dataclass
class AudienceRow:
    """The store's record of one stream's audience."""

    id: int
    stream: str
    audience_id: str | None
    name: str | None
    advertiser_ids: tuple[str, ...]
    uploaded_at: float | None
    last_change_at: float | None = None
    last_sync_at: float | None = None
    last_result: str | None = None
    last_error: str | None = None
    last_counts: dict | None = None
    # The stream's key properties at its last sync ((): none; None: not known yet).
    key_properties: tuple[str, ...] | None = None


@dataclass
class PlanSummary:
    """What a planned sync would do, in people (not hashes)."""

    joined: int = 0
    left: int = 0
    changed: int = 0
    unchanged: int = 0
    people: int = 0
    confirmed: int = 0
    held: int = 0
    add_rows: int = 0
    delete_rows: int = 0
    # For the run report, which accounts for every record; not part of what is planned.
    # People staged (each person's last row), members and leavers:
    staged: int = field(default=0, compare=False)
    # People whose last staged row removes them, confirmed or not, and those of them for
    # want of consent:
    removals: int = field(default=0, compare=False)
    no_consent: int = field(default=0, compare=False)
    # Leavers with no staged row at all (a complete snapshot's absent people):
    absent: int = field(default=0, compare=False)


def _slot_changes(new: Sequence[str], old: Sequence[str], differs: str) -> str:
    """SQL select list: the slots (named as in SLOT_COLUMNS) where `new` has a hash `old` lacks."""
    return ", ".join(
        f"CASE WHEN {n} IS NOT NULL AND {n} {differs} {o} THEN {n} END AS {c}"
        for n, o, c in zip(new, old, SLOT_COLUMNS, strict=True)
    )


_ANY_SLOT = " OR ".join(f"{c} IS NOT NULL" for c in SLOT_COLUMNS)
# A plan row with a hash to send: one not kept for another person.
_SENDABLE = " OR ".join(
    f"({c} IS NOT NULL AND (kept & {1 << i}) = 0)" for i, c in enumerate(SLOT_COLUMNS)
)
_SLOT_LIST = ", ".join(SLOT_COLUMNS)
# A plan row's slots as sent: a kept hash is not.
_SENT_SLOTS = ", ".join(
    f"CASE WHEN (kept & {1 << i}) = 0 THEN {c} END" for i, c in enumerate(SLOT_COLUMNS)
)
_PLAN_COLUMNS = f"audience, action, person, {_SLOT_LIST}"
_CONFIRMING_COLUMNS = ("person", *SLOT_COLUMNS)


@dataclass(frozen=True)
class PlanRows:
    """Reads batches of one audience's planned rows from a run's work file.

    Picklable, and on a connection of its own: a worker process reads the hashes it builds
    a body from, rather than the process that keeps the store reading them and passing them.
    """

    path: str
    audience: int
    action: str

    def __call__(self, first: int, last: int) -> list[Slots]:
        """The slots to send of the planned rows from seq `first` to `last`, in plan order."""
        # Read-only, and never creating the file: a body built after the run closed fails.
        db = sqlite3.connect(Path(self.path).as_uri() + "?mode=ro", uri=True)
        try:
            return db.execute(
                f"SELECT {_SENT_SLOTS} FROM plan WHERE audience = ? AND action = ? "
                f"AND seq BETWEEN ? AND ? AND ({_SENDABLE}) ORDER BY seq",
                (self.audience, self.action, first, last),
            ).fetchall()
        finally:
            db.close()


class MembershipStore:
    """Confirmed membership in SQLite or PostgreSQL, one connection per run."""

    def __init__(
        self,
        location: str,
        *,
        throwaway: bool = False,
        create: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Open the store at `location`: a SQLite path (or ":memory:") or a PostgreSQL URL.

        `throwaway`: a dry run's store; it plans exactly like a real run and nothing it
        writes outlives `close` (SQLite: a temporary copy; PostgreSQL: a transaction that is
        rolled back). `create=False`: fail with StoreMissingError rather than create a store.
        `timeout` (`store_timeout`): the longest any one store operation may take, connecting
        included; past it the run ends with a StoreError naming the store.
        """
        backend: Backend
        if is_postgres_url(location):
            # Imported here: psycopg takes a third of a second to import, SQLite users never pay.
            from target_tiktok_audiences.store_postgres import PostgresBackend

            backend = PostgresBackend(location, throwaway=throwaway, timeout=timeout)
        else:
            backend = SQLiteBackend(location, throwaway=throwaway, create=create, timeout=timeout)
        self._db: Backend = backend
        self.path = backend.location
        self._staged_indexed = False
        # Audiences with rows in each temporary table: clearing the only one is a truncate.
        self._in_temp: dict[str, set[int]] = {"staged": set(), "plan": set()}
        try:
            version = self._stored_version()  # before any change: a newer store is not touched
            if version is None and not create:
                raise backend.missing_error()
            backend.prepare()
            self._upgrade(version)
            for statement in _sql(_TEMP_SCHEMA, backend):
                backend.execute(statement)
        except backend.errors as exc:
            backend.close()
            raise backend.open_error(exc) from None
        except BaseException:
            backend.close()
            raise
        self._unpack = _unpack_sql(backend)
        differs = backend.words["differs"]
        self._differs = " OR ".join(f"st.{c} {differs} m.{c}" for c in SLOT_COLUMNS)
        self._adds = _slot_changes(SLOT_COLUMNS, OLD_COLUMNS, differs)
        self._drops = _slot_changes(OLD_COLUMNS, SLOT_COLUMNS, differs)

    @classmethod
    def open(
        cls,
        location: str,
        *,
        throwaway: bool = False,
        create: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> MembershipStore:
        """Open the store a `membership_store` setting names (see `__init__`)."""
        return cls(location, throwaway=throwaway, create=create, timeout=timeout)

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        """The database driver's exception classes, for callers that catch its failures."""
        return self._db.errors

    def close(self) -> None:
        """Close the connection (temporary tables and the work file go with it), release locks."""
        self._db.close()

    def lock_audience(self, audience: int, label: str, timeout: float) -> None:
        """Keep other runs off this audience until this run ends (or dies: the lock is freed).

        Runs on different audiences of one store proceed side by side; a second run on the
        same audience waits up to `timeout` seconds, then fails with a clear message.
        """
        self._db.lock_audience(audience, label, timeout)

    def _stored_version(self) -> int | None:
        """The store's schema version (None: a new or empty location, ours to initialise).

        Reads only. Refuses a store newer than this program, and a location that holds
        something else: tables but no schema version, a version that is not a number, or the
        store's own table names with columns missing. Nothing is changed before that verdict.
        """
        tables = self._db.tables()
        own = sorted(set(tables) & set(_TABLES))
        if "meta" not in tables:
            if own or (tables and not self._db.shares_namespace):
                raise self._foreign(
                    f"it holds tables ({_names(own or sorted(tables))}) without "
                    "this target's schema version"
                )
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if not row:
            raise self._foreign("its `meta` table has no schema_version")
        text = str(row[0])
        if not text.isascii() or not text.isdigit() or int(text) < 1:
            shown = text if len(text) <= 20 else text[:20] + "..."
            raise self._foreign(f"its schema version {shown!r} is not a version this target writes")
        version = int(text)
        if version > SCHEMA_VERSION:
            msg = (
                f"membership store {self.path!r} has schema version {version}, newer than this "
                f"program's {SCHEMA_VERSION}: upgrade target-tiktok-audiences."
            )
            raise StoreError(msg)
        for table, columns in _columns_at(version).items():
            missing = columns - tables.get(table, set())
            if missing:
                what = "is missing" if table not in tables else f"lacks {_names(sorted(missing))}"
                raise self._foreign(f"its table {table!r} {what} (schema version {version})")
        return version

    def _foreign(self, why: str) -> StoreError:
        """The one-line refusal of a location that holds another application's data."""
        return StoreError(
            f"membership store {self.path!r} is not this target's store: {why}; it was left "
            f"untouched: point `membership_store` at {self._db.elsewhere}, or restore the "
            "store from a backup"
        )

    def _upgrade(self, version: int | None) -> None:
        """Create a new store at the current schema, or migrate an older one in place.

        Under the schema lock the version is read again: another worker may have created or
        upgraded the store in the meantime, and then there is nothing left to do.
        """
        if version == SCHEMA_VERSION:
            return
        with self.transaction() as db:
            db.lock_schema()
            version = self._stored_version()
            if version is None:
                db.create_namespace()
                for statement in _sql(_SCHEMA, db):
                    db.execute(statement)
            else:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for template in _MIGRATIONS[step]:
                        for statement in _sql(template, db):
                            db.execute(statement)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    @contextmanager
    def transaction(self) -> Iterator[Backend]:
        """All or nothing: a run that dies inside leaves the store as it was before.

        Yields the backend, whose `execute` takes `?` and `:name` parameters on either database.
        """
        db = self._db
        for statement in db.begin:
            db.execute(statement)
        try:
            yield db
        except BaseException:
            # A failed rollback (a dead connection) must not hide why the transaction failed;
            # the database undoes an unfinished transaction itself.
            with contextlib.suppress(*db.errors, StoreError):
                for statement in db.rollback:
                    db.execute(statement)
            raise
        for statement in db.commit:
            db.execute(statement)

    # Audiences

    def audience(self, stream: str, target_key: str, advertiser_ids: Sequence[str]) -> AudienceRow:
        """The store's row for a stream's audience, created on first use.

        Two workers creating it at once get the same row: the unique key decides, and the
        loser's insert does nothing.
        """
        find = "SELECT id FROM audiences WHERE stream = ? AND target_key = ?"
        row = self._db.execute(find, (stream, target_key)).fetchone()
        if row is None:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO audiences (stream, target_key, advertiser_ids) VALUES (?, ?, ?) "
                    "ON CONFLICT (stream, target_key) DO NOTHING",
                    (stream, target_key, json.dumps(list(advertiser_ids))),
                )
            row = self._db.execute(find, (stream, target_key)).fetchone()
        return self.get_audience(row[0])

    def get_audience(self, audience: int) -> AudienceRow:
        """Read one audience row back."""
        row = self._db.execute(
            "SELECT id, stream, audience_id, name, advertiser_ids, uploaded_at, last_change_at, "
            "last_sync_at, last_result, last_error, last_counts, key_properties "
            "FROM audiences WHERE id = ?",
            (audience,),
        ).fetchone()
        return AudienceRow(
            id=row[0],
            stream=row[1],
            audience_id=row[2],
            name=row[3],
            advertiser_ids=tuple(json.loads(row[4])),
            uploaded_at=row[5],
            last_change_at=row[6],
            last_sync_at=row[7],
            last_result=row[8],
            last_error=row[9],
            last_counts=json.loads(row[10]) if row[10] else None,
            key_properties=None if row[11] is None else tuple(json.loads(row[11])),
        )

    def list_audiences(self) -> list[AudienceRow]:
        """Every audience the store knows, in creation order."""
        ids = [r[0] for r in self._db.execute("SELECT id FROM audiences ORDER BY id").fetchall()]
        return [self.get_audience(i) for i in ids]

    def set_tiktok_audience(self, audience: int, audience_id: str, name: str | None) -> None:
        """Remember which TikTok audience this is; committed at once so it is never recreated."""
        with self.transaction() as db:
            db.execute(
                "UPDATE audiences SET audience_id = ?, name = COALESCE(?, name), "
                "created_by_target = CASE WHEN ? THEN 1 ELSE created_by_target END WHERE id = ?",
                (audience_id, name, name is not None, audience),
            )

    def record_result(
        self, audience: int, result: str, error: str | None, counts: dict | None
    ) -> None:
        """Remember the last sync's time, outcome and counts for `status`."""
        with self.transaction() as db:
            db.execute(
                "UPDATE audiences SET last_sync_at = ?, last_result = ?, last_error = ?, "
                "last_counts = COALESCE(?, last_counts) WHERE id = ?",
                (time.time(), result, error, json.dumps(counts) if counts else None, audience),
            )

    def count_members(self, audience: int) -> int:
        """Confirmed people in an audience."""
        return self._db.execute(
            "SELECT COUNT(*) FROM members WHERE audience = ?", (audience,)
        ).fetchone()[0]

    def count_pending(self, audience: int) -> int:
        """People held back until the audience reaches `min_audience_size`."""
        return self._db.execute(
            "SELECT COUNT(*) FROM pending WHERE audience = ?", (audience,)
        ).fetchone()[0]

    def is_empty(self) -> bool:
        """No audience, member or held person: a new store, or one whose file was lost."""
        return not any(
            self._db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
            for table in ("audiences", "members", "pending")
        )

    def member_hashes(self, audience: int) -> Iterator[Row]:
        """Every confirmed person of an audience (for tests and inspection), streamed."""
        yield from self._db.dump(
            f"SELECT person, {_SLOT_LIST} FROM members WHERE audience = {int(audience)} "
            "ORDER BY person"
        )

    # Key properties: who a person is

    def key_change(
        self, audience: int, keys: Sequence[str], *, allow: bool, stream: str, label: str
    ) -> bool:
        """Compare a stream's key properties with those its audience was last synced under.

        Person keys are digests of the key values (of the hashes, without keys), so under
        other keys every person looks new. Returns True when the keys changed and `allow`
        (`allow_key_change`) is set: the staged people must then be re-matched by their
        hashes (`rematch`) before anything is planned. Unchanged: False. Not known yet (a new
        audience, or one from a store older than schema version 3), or nobody stored under
        the old keys: the keys are remembered now, False. Changed without `allow`:
        KeyPropertiesChangedError, before any record. Going from no keys to keys, or back, is
        a change.
        """
        keys = tuple(keys)
        known = self.get_audience(audience).key_properties
        if known == keys:
            return False
        if known is None or not (self.count_members(audience) or self.count_pending(audience)):
            with self.transaction() as db:
                _remember_keys(db, audience, keys)
            return False
        if allow:
            return True
        msg = (
            f"stream {stream!r} changed its key properties since audience {label} was last "
            f"synced, from {_keys_text(known)} to {_keys_text(keys)}: every person would look "
            "new and the confirmed ones would leave; set `allow_key_change: true` for one run "
            "to re-match people by their identifier hashes (or restore the old keys in the tap)"
        )
        raise KeyPropertiesChangedError(msg)

    def rematch(self, audience: int, keys: Sequence[str]) -> tuple[int, int]:
        """Re-key confirmed and held people to the staged people they are; remember `keys`.

        A staged member whose slots are exactly those of one confirmed (or held) person, and
        no other staged person has those slots, is that person: the stored row takes the
        staged person's key, so the plan sees only real changes. Ambiguous ones (several with
        the same hashes) and ones whose new key is already taken keep their old key, and so
        plan as a leaver and a joiner. Store-only (TikTok holds hashes, which do not change),
        in one transaction with the new keys. Returns (people re-keyed, people stored).
        """
        self._index_staged(audience)
        db = self._db
        same = " AND ".join(db.words["same"].format(a=f"t.{c}", b=f"st.{c}") for c in SLOT_COLUMNS)
        # Each stored person is probed by its hashes among the staged ones.
        db.execute(f"CREATE INDEX IF NOT EXISTS staged_slots ON staged (audience, {_SLOT_LIST})")
        rekeyed = 0
        try:
            with self.transaction():
                for table in ("members", "pending"):
                    db.execute("DELETE FROM rekey")
                    db.execute(
                        "INSERT INTO rekey (old, new) SELECT old, new FROM (SELECT t.person AS "
                        "old, st.person AS new, COUNT(*) OVER (PARTITION BY "
                        + ", ".join(f"t.{c}" for c in SLOT_COLUMNS)
                        + f") AS n FROM {table} t {db.words['probe_join']} staged st "
                        "ON st.audience = :a "
                        f"AND st.remove = 0 AND {same} WHERE t.audience = :a) AS j "
                        f"WHERE n = 1 AND old <> new AND NOT EXISTS (SELECT 1 FROM {table} t "
                        "WHERE t.audience = :a AND t.person = j.new)",
                        {"a": audience},
                    )
                    rekeyed += db.execute(
                        f"UPDATE {table} SET person = (SELECT new FROM rekey "
                        f"WHERE rekey.old = {table}.person) WHERE audience = :a "
                        "AND person IN (SELECT old FROM rekey)",
                        {"a": audience},
                    ).rowcount
                    db.execute("DELETE FROM rekey")
                _remember_keys(db, audience, keys)
        finally:
            db.execute("DROP INDEX IF EXISTS staged_slots")  # staging appends faster without
        return rekeyed, self.count_members(audience) + self.count_pending(audience)

    # Staging: what this run's input says

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
        self._in_temp["staged"].add(audience)
        # One statement: all of it or nothing, and no lock on the store (a temporary table).
        self._db.execute(
            self._unpack, {"a": audience, "packed": people.packed, "rows": people.count}
        )

    def _index_staged(self, audience: int) -> None:
        """Index what was staged and keep only each person's last row."""
        if not self._staged_indexed:
            self._db.execute(
                # `remove` too: "is this member still staged?" is answered from the index alone;
                # and the slots: the diff then reads staged people in person order from the
                # index, not each from a random place in the table (5.2 s -> 1.x s at 1M).
                "CREATE INDEX IF NOT EXISTS staged_person ON staged "
                f"(audience, person, remove, {_SLOT_LIST})"
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
        """Forget what was staged and planned for an audience."""
        for table, audiences in self._in_temp.items():
            audiences.discard(audience)
            if audiences:
                self._db.execute(f"DELETE FROM {table} WHERE audience = ?", (audience,))
            else:
                self._db.execute(f"DELETE FROM {table}")  # a truncate, not a scan
                self._db.reclaim(table)

    # Holding back a first upload

    def hold(self, audience: int, *, snapshot: bool) -> int:
        """Move staged people into `pending` (replacing it for a snapshot); return its size."""
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
                f"INSERT INTO pending (audience, person, {_SLOT_LIST}) "
                f"SELECT audience, person, {_SLOT_LIST} FROM staged "
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
        self._in_temp["staged"].add(audience)
        self._db.execute("DELETE FROM staged WHERE audience = ? AND remove = 0", (audience,))
        self._db.execute(
            f"INSERT INTO staged (audience, person, remove, {_SLOT_LIST}) "
            f"SELECT audience, person, 0, {_SLOT_LIST} FROM pending WHERE audience = ?",
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

    # Planning: the difference between what is staged and what is confirmed

    def plan(self, audience: int, *, snapshot: bool, complete: bool) -> PlanSummary:
        """Write this audience's changes into `plan` and count them in people.

        `snapshot` and `complete`: people confirmed but not staged as members leave. Otherwise
        only people staged with `remove` leave. Delete slots whose hash another member still
        has are marked `kept` and not sent, but still leave the person's row. Rows are
        planned in person order (free from the indexes in SQLite), so a dry run and the real
        run, on either database, send the very same batches.
        """
        db = self._db
        args = {"a": audience}
        whole = snapshot and complete
        self._in_temp["plan"].add(audience)
        db.execute("DELETE FROM plan WHERE audience = :a", args)
        summary = PlanSummary(confirmed=self.count_members(audience))
        if not summary.confirmed:
            self._plan_first_sync(audience, summary)
            db.analyze("plan")
            return summary
        self._index_staged(audience)
        summary.staged, summary.removals, summary.no_consent = self.staged_people(audience)
        # Who joined or changed, in one pass over the staged members: usually few people.
        db.execute("DELETE FROM diff")
        db.execute(
            f"INSERT INTO diff (person, joined, {_SLOT_LIST}, {', '.join(OLD_COLUMNS)}) "
            "SELECT st.person, CASE WHEN m.person IS NULL THEN 1 ELSE 0 END, "
            + ", ".join(f"st.{c}" for c in SLOT_COLUMNS)
            + ", "
            + ", ".join(f"m.{c}" for c in SLOT_COLUMNS)
            + " FROM staged st LEFT JOIN members m ON m.audience = :a AND m.person = st.person "
            f"WHERE st.audience = :a AND st.remove = 0 AND (m.person IS NULL OR {self._differs})",
            args,
        )
        summary.joined, summary.changed = db.execute(
            "SELECT COALESCE(SUM(joined), 0), COUNT(*) - COALESCE(SUM(joined), 0) FROM diff"
        ).fetchone()
        staying = summary.staged - summary.removals
        summary.people = staying if whole else self.people_after(audience, snapshot=False)
        summary.unchanged = staying - summary.joined - summary.changed
        # Leavers, then people whose identifiers changed lose their old hashes.
        if self._may_leave(audience, summary, snapshot=whole):
            if whole:
                leavers = (
                    "NOT EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                    "AND st.person = m.person AND st.remove = 0)"
                )
            else:
                leavers = (
                    "EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                    "AND st.person = m.person AND st.remove = 1)"
                )
            summary.left = db.execute(
                f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT :a, 'delete', m.person, "
                f"{_SLOT_LIST} FROM members m WHERE m.audience = :a AND {leavers} "
                "ORDER BY m.person",
                args,
            ).rowcount
            if whole:
                summary.absent = summary.left
                if summary.removals:
                    summary.absent -= db.execute(
                        "SELECT COUNT(*) FROM staged st JOIN members m ON m.audience = :a "
                        "AND m.person = st.person WHERE st.audience = :a AND st.remove = 1",
                        args,
                    ).fetchone()[0]
        db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT * FROM (SELECT :a, 'delete', person, "
            f"{self._drops} FROM diff WHERE joined = 0) AS x WHERE {_ANY_SLOT} ORDER BY person",
            args,
        )
        summary.add_rows = db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT * FROM (SELECT :a, 'add', person, "
            f"{self._adds} FROM diff) AS x WHERE {_ANY_SLOT} ORDER BY person",
            args,
        ).rowcount
        db.execute("DELETE FROM diff")
        db.analyze("plan")
        self._keep_shared_hashes(audience, snapshot=whole)
        summary.delete_rows = self._count_sendable(audience, "delete")
        return summary

    def _may_leave(self, audience: int, summary: PlanSummary, *, snapshot: bool) -> bool:
        """Whether anyone can leave, told without a pass over every member.

        In a snapshot, the confirmed members staged again are the staged members who did not
        join: if they are all the confirmed, nobody leaves (a re-run of the same snapshot
        skips a second of looking each member up at 1M). Otherwise only a staged `remove`
        makes a leaver.
        """
        if snapshot:
            return summary.confirmed > summary.people - summary.joined
        return bool(
            self._db.execute(
                "SELECT 1 FROM staged WHERE audience = ? AND remove = 1 LIMIT 1", (audience,)
            ).fetchone()
        )

    def _plan_first_sync(self, audience: int, summary: PlanSummary) -> None:
        """Plan a first sync (nobody confirmed): everyone staged joins; count them in `summary`.

        One sort, without the staged index: each person's rows become neighbours in `plan`,
        their last row last, so repeats are found by comparing each row with the next (a
        statement numbers its rows consecutively, in SQLite and PostgreSQL alike). Every
        staged member has a hash, or it would have been skipped.
        """
        args = {"a": audience}
        planned = self._db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT :a, CASE WHEN no_consent = 1 THEN "
            "'no-consent' WHEN remove = 1 THEN 'leave' ELSE 'add' END, person, "
            f"{_SLOT_LIST} FROM staged WHERE audience = :a ORDER BY person, seq",
            args,
        ).rowcount
        planned -= self._db.execute(
            "DELETE FROM plan WHERE seq IN (SELECT p.seq FROM plan p JOIN plan n "
            "ON n.seq = p.seq + 1 AND n.audience = :a AND n.person = p.person "
            "WHERE p.audience = :a)",
            args,
        ).rowcount
        # Someone whose last word is "leaving" has nothing to leave yet.
        summary.staged = planned
        summary.no_consent = self._db.execute(
            "DELETE FROM plan WHERE audience = :a AND action = 'no-consent'", args
        ).rowcount
        leave = self._db.execute("DELETE FROM plan WHERE audience = :a AND action = 'leave'", args)
        summary.removals = summary.no_consent + leave.rowcount
        summary.joined = summary.add_rows = summary.people = planned - summary.removals

    def _keep_shared_hashes(self, audience: int, *, snapshot: bool) -> None:
        """Do not send the delete of a hash that another person of the audience keeps."""
        if not self._count_sendable(audience, "delete"):
            return
        for bit, slot in enumerate(SLOT_COLUMNS):
            # The planned deletes are few next to the audience: look each member's hash up
            # among them, rather than gather every member's hash to look the deletes up in.
            deleted = (
                f"SELECT {slot} FROM plan WHERE audience = :a AND action = 'delete' "
                f"AND {slot} IS NOT NULL"
            )
            kept = (
                f"SELECT {slot} FROM staged WHERE audience = :a AND remove = 0 "
                f"AND {slot} IN ({deleted})"
            )
            if not snapshot:
                kept += (
                    f" UNION ALL SELECT m.{slot} FROM members m WHERE m.audience = :a "
                    f"AND m.{slot} IN ({deleted}) AND NOT EXISTS (SELECT 1 FROM staged st "
                    "WHERE st.audience = :a AND st.person = m.person)"
                )
            self._db.execute(
                f"UPDATE plan SET kept = kept | {1 << bit} WHERE audience = :a "
                f"AND action = 'delete' AND {slot} IS NOT NULL AND {slot} IN ({kept})",
                {"a": audience},
            )

    def _count_sendable(self, audience: int, action: str) -> int:
        return self._db.execute(
            f"SELECT COUNT(*) FROM plan WHERE audience = ? AND action = ? AND ({_SENDABLE})",
            (audience, action),
        ).fetchone()[0]

    def next_batch(self, audience: int, action: str, after: int, limit: int) -> Batch | None:
        """The next `limit` planned rows after seq `after` with a hash to send, as a batch.

        Where the plan is in a work file, only the batch's seq range is read here: a worker
        process reads its hashes (`PlanRows`) while this one confirms the batch before. Else
        its rows are read here, in one query finished before the batch is sent: a statement
        left open would pin an old snapshot of the file, and the confirmations written in
        between would then fail with "database is locked" once another run has written (and
        on PostgreSQL, the connection cannot run the confirmations while a result is open).
        """
        args = (audience, action, after, limit)
        sendable = (
            "FROM plan WHERE audience = ? AND action = ? AND seq > ? "
            f"AND ({_SENDABLE}) ORDER BY seq LIMIT ?"
        )
        if self._db.work_path:
            first, last, size = self._db.execute(
                f"SELECT MIN(seq), MAX(seq), COUNT(*) FROM (SELECT seq {sendable}) AS b", args
            ).fetchone()
            if not size:
                return None
            return Batch(first, last, size, source=PlanRows(self._db.work_path, audience, action))
        rows = self._db.execute(f"SELECT seq, {_SENT_SLOTS} {sendable}", args).fetchall()
        if not rows:
            return None
        return Batch(rows[0][0], rows[-1][0], len(rows), rows=[row[1:] for row in rows])

    def planned(
        self, audience: int, action: str, page: int = 2000
    ) -> Iterator[tuple[int, bytes, Slots, Slots]]:
        """Planned rows in order, for tests and inspection: (seq, person, store slots, sent).

        Read a page at a time, for the reason `next_batch` gives.
        """
        last = -1
        while True:
            rows = self._db.execute(
                f"SELECT seq, person, {_SLOT_LIST}, {_SENT_SLOTS} FROM plan "
                "WHERE audience = ? AND action = ? AND seq > ? ORDER BY seq LIMIT ?",
                (audience, action, last, page),
            ).fetchall()
            width = len(SLOT_COLUMNS)
            for row in rows:
                yield row[0], row[1], row[2 : 2 + width], row[2 + width :]
            if len(rows) < page:
                return
            last = rows[-1][0]

    # Confirmation: TikTok said code 0

    def confirm(self, audience: int, action: str, rows: Sequence[tuple[bytes, Slots]]) -> None:
        """Apply confirmed changes, given as (person, slots), to `members` in one transaction."""
        with self.transaction() as db:
            db.load("confirming", _CONFIRMING_COLUMNS, ((p, *slots) for p, slots in rows))
            self._merge(db, audience, action, "SELECT person, {slots} FROM confirming", {})
            db.execute("DELETE FROM confirming")
            db.reclaim("confirming")

    def confirm_planned(self, audience: int, action: str, first: int, last: int) -> None:
        """Apply the planned rows with a hash to send and seq from `first` to `last`.

        A batch TikTok confirmed is such a run of planned rows: they are applied from `plan`
        itself, in one set-based statement, without passing the hashes back in.
        """
        rows = (
            "SELECT person, {slots} FROM plan WHERE audience = :a AND action = :action "
            f"AND seq BETWEEN :first AND :last AND ({_SENDABLE})"
        )
        args = {"action": action, "first": first, "last": last}
        with self.transaction() as db:
            self._merge(db, audience, action, rows, args)

    def confirm_kept_deletes(self, audience: int) -> None:
        """Apply the planned deletes with nothing to send, once the sent ones are confirmed.

        Every hash of such a row is kept for another person: TikTok is not asked to remove
        it, and only the store forgets this person.
        """
        rows = (
            "SELECT person, {slots} FROM plan WHERE audience = :a AND action = 'delete' "
            f"AND NOT ({_SENDABLE})"
        )
        with self.transaction() as db:
            if db.execute(rows.format(slots=_SLOT_LIST) + " LIMIT 1", {"a": audience}).fetchone():
                self._merge(db, audience, "delete", rows, {})

    def _merge(
        self, db: Backend, audience: int, action: str, rows: str, args: dict[str, object]
    ) -> None:
        """Merge confirmed rows (a query of person and slots) into `members`, set-based.

        An add upserts; a delete clears each confirmed hash the member still has (an upsert
        that only ever meets existing rows: UPDATE ... FROM is newer than some SQLite builds),
        then a member left with no hash at all is gone.
        """
        args = {**args, "a": audience}
        source = rows.format(slots=_SLOT_LIST)
        db.execute("UPDATE audiences SET last_change_at = ? WHERE id = ?", (time.time(), audience))
        if action == "add":
            merge = ", ".join(f"{c} = COALESCE(excluded.{c}, members.{c})" for c in SLOT_COLUMNS)
            db.execute(
                f"INSERT INTO members (audience, person, {_SLOT_LIST}) "
                f"SELECT :a, person, {_SLOT_LIST} FROM ({source}) AS r WHERE true "
                f"ON CONFLICT (audience, person) DO UPDATE SET {merge}",
                args,
            )
            return
        clear = ", ".join(
            f"{c} = CASE WHEN members.{c} = excluded.{c} THEN NULL ELSE members.{c} END"
            for c in SLOT_COLUMNS
        )
        # Members are reached through their primary key, one probe per confirmed person,
        # whatever the planner believes about the audience's size.
        in_rows = db.words["in_rows"].format(rows=f"SELECT person FROM ({source}) AS p")
        db.execute(
            f"INSERT INTO members (audience, person, {_SLOT_LIST}) "
            f"SELECT :a, person, {_SLOT_LIST} FROM ({source}) AS r WHERE person IN "
            f"(SELECT person FROM members WHERE audience = :a AND person {in_rows}) "
            f"ON CONFLICT (audience, person) DO UPDATE SET {clear}",
            args,
        )
        db.execute(
            f"DELETE FROM members WHERE audience = :a AND person {in_rows} AND NOT ({_ANY_SLOT})",
            args,
        )

    def finish_upload(self, audience: int) -> None:
        """The audience has been uploaded: held people are members now, holding is over."""
        with self.transaction() as db:
            db.execute("DELETE FROM pending WHERE audience = ?", (audience,))
            db.execute(
                "UPDATE audiences SET uploaded_at = COALESCE(uploaded_at, ?) WHERE id = ?",
                (time.time(), audience),
            )

    # Moving a store between databases

    def _count(self, table: str) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def _lock_all(self, audiences: Iterable[AudienceRow], timeout: float, doing: str) -> None:
        """Hold every audience's lock, so no run writes while the store is copied."""
        for row in audiences:
            label = f"{row.name or row.stream} (stream {row.stream})"
            try:
                self.lock_audience(row.id, label, timeout)
            except StoreError:
                msg = (
                    f"cannot {doing}: audience {label} of store {self.path!r} is being synced "
                    "by another run; let it finish and try again"
                )
                raise StoreError(msg) from None

    def copy_into(
        self, dest: MembershipStore, *, force: bool, lock_timeout: float
    ) -> dict[str, int]:
        """Copy every audience, member and held person into `dest`, in one transaction there.

        The source is read in one consistent snapshot, with every audience locked, so no run
        can confirm a change that the copy would miss. Ids are kept: a copy is the same store.
        """
        audiences = self.list_audiences()
        if not audiences:
            msg = f"membership store {self.path!r} holds no audience: nothing to copy"
            raise StoreError(msg)
        self._lock_all(audiences, lock_timeout, "copy")
        existing = dest.list_audiences()
        if not dest.is_empty() and not force:
            msg = (
                f"membership store {dest.path!r} is not empty ({len(existing)} audiences): "
                "pass --force to replace everything in it with the copy"
            )
            raise StoreError(msg)
        dest._lock_all(existing, lock_timeout, "replace the destination")
        self._db.execute(self._db.begin_snapshot)
        try:
            counts = {table: self._count(table) for table in ("audiences", "members", "pending")}
            with dest.transaction() as db:
                for table in ("pending", "members", "audiences"):
                    db.execute(f"DELETE FROM {table}")
                db.execute("DELETE FROM meta WHERE key <> 'schema_version'")
                for table, columns in _TABLES.items():
                    query = f"SELECT {', '.join(columns)} FROM {table}"
                    if table == "meta":
                        query += " WHERE key <> 'schema_version'"
                    # Closed even when loading fails: an unfinished COPY out would block the
                    # source connection.
                    with contextlib.closing(self._db.dump(query)) as rows:
                        db.load(table, columns, rows)
                db.reset_ids("audiences")
                copied = {table: dest._count(table) for table in counts}
                if copied != counts:
                    msg = f"copy incomplete ({copied} of {counts}): nothing was written"
                    raise StoreError(msg)
        finally:
            with contextlib.suppress(*self._db.errors):  # only ends a read: nothing to lose
                self._db.execute("COMMIT")
        return counts

    # An audience deleted on TikTok

    def forget_deleted_audience(self, audience: int) -> int:
        """TikTok no longer has this audience: its confirmed people become held ones.

        In one transaction: every member moves to `pending` (a held person already there
        stays as held), the TikTok id is forgotten and the audience counts as never uploaded.
        The next upload then creates the audience again and sends everyone held, like any
        first upload; `finish_upload` clears `pending` only once TikTok confirmed it all, so a
        run that dies on the way leaves nobody behind. Returns the number of people held.
        """
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO pending (audience, person, {_SLOT_LIST}) "
                f"SELECT audience, person, {_SLOT_LIST} FROM members WHERE audience = ? "
                "ON CONFLICT (audience, person) DO NOTHING",
                (audience,),
            )
            db.execute("DELETE FROM members WHERE audience = ?", (audience,))
            db.execute(
                "UPDATE audiences SET audience_id = NULL, uploaded_at = NULL WHERE id = ?",
                (audience,),
            )
        return self.count_pending(audience)


def _identity(location: str) -> str:
    """What tells two `membership_store` values apart: the file, or the URL and schema."""
    if is_postgres_url(location):
        from target_tiktok_audiences.store_postgres import split_schema

        url, schema = split_schema(location)
        return f"{url.replace('postgres://', 'postgresql://', 1)}#{schema}"
    return str(Path(location).resolve())


def copy_store(
    source: str, dest: str, *, force: bool = False, lock_timeout: float = 60
) -> dict[str, int]:
    """Copy a whole store (SQLite or PostgreSQL) into another, for `tiktok-audiences store copy`.

    Everything goes: audiences with their ids, names, times and last results, confirmed
    members, held people. The destination is created if need be and written in one
    transaction; one that already holds data is refused unless `force`, which replaces it.
    Returns the number of audiences, members and pending people copied. Every expected failure
    is a StoreError with a one-line message, as the command line wants.
    """
    if _identity(source) == _identity(dest):
        msg = "--from and --to name the same membership store: nothing to copy"
        raise StoreError(msg)
    try:
        opened = MembershipStore.open(source, create=False)
    except StoreMissingError:
        msg = f"no membership store at {mask_url(source)!r} to copy from: check --from"
        raise StoreMissingError(msg) from None
    with contextlib.closing(opened) as src, contextlib.closing(MembershipStore.open(dest)) as dst:
        try:
            return src.copy_into(dst, force=force, lock_timeout=lock_timeout)
        except (*src.errors, *dst.errors) as exc:
            msg = (
                f"copying {src.path!r} to {dst.path!r} failed ({driver_cause(exc)}): nothing "
                "was written to "
                "the destination; fix the cause and run the copy again"
            )
            raise StoreError(msg) from None
