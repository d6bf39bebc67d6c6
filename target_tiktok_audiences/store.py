"""The membership store: per audience, each person's identifier hashes as TikTok confirmed them.

Only hashes live here (raw 32- or 16-byte digests, and a 16-byte digest of the record key), never
a raw identifier. A run stages what its input says (`staged`), plans the difference against the
confirmed members (`plan`), and records each change only once TikTok confirmed it. Staging and
planning are SQL over temporary tables, so memory stays flat however large the audience.

Deletes are planned and applied before adds: a person whose email changed loses the old hash,
then gains the new one, so a run that dies between the two leaves the store exactly in step
with TikTok and the next run sends only what is missing.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from target_tiktok_audiences.errors import ConfigError, StoreError
from target_tiktok_audiences.identifiers import SLOTS

SCHEMA_VERSION = 2
# What upgrades a store written at version N-1 to version N, run in one transaction.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE audiences ADD COLUMN last_change_at REAL",),
}
SLOT_COLUMNS = tuple(f"s{i}" for i in range(len(SLOTS)))
API_COLUMNS = tuple(f"a{i}" for i in range(len(SLOTS)))

# A staged or planned person: (person key digest, *one hash or None per slot).
Row = tuple[bytes, ...]
Slots = tuple[bytes | None, ...]

_SLOTS_DDL = ", ".join(f"{c} BLOB" for c in SLOT_COLUMNS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audiences (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    target_key TEXT NOT NULL,
    audience_id TEXT,
    name TEXT,
    advertiser_ids TEXT NOT NULL,
    created_by_target INTEGER NOT NULL DEFAULT 0,
    uploaded_at REAL,
    last_change_at REAL,
    last_sync_at REAL,
    last_result TEXT,
    last_error TEXT,
    last_counts TEXT,
    UNIQUE (stream, target_key)
);
CREATE TABLE IF NOT EXISTS members (
    audience INTEGER NOT NULL,
    person BLOB NOT NULL,
    {_SLOTS_DDL},
    PRIMARY KEY (audience, person)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    audience INTEGER NOT NULL,
    person BLOB NOT NULL,
    {_SLOTS_DDL},
    PRIMARY KEY (audience, person)
) WITHOUT ROWID;
"""

_TEMP_SCHEMA = f"""
CREATE TEMP TABLE IF NOT EXISTS staged (
    audience INTEGER NOT NULL,
    person BLOB NOT NULL,
    remove INTEGER NOT NULL,
    {_SLOTS_DDL}
);
CREATE TEMP TABLE IF NOT EXISTS plan (
    seq INTEGER PRIMARY KEY,
    audience INTEGER NOT NULL,
    action TEXT NOT NULL,
    person BLOB NOT NULL,
    {_SLOTS_DDL},
    {", ".join(f"{c} BLOB" for c in API_COLUMNS)}
);
"""


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


def _slot_changes(new: str, old: str) -> str:
    """SQL select list: store and API slots where `new` has a hash that `old` lacks."""
    cases = [
        f"CASE WHEN {new}.{c} IS NOT NULL AND {new}.{c} IS NOT {old}.{c} THEN {new}.{c} END"
        for c in SLOT_COLUMNS
    ]
    return ", ".join(
        [f"{case} AS {c}" for case, c in zip(cases, SLOT_COLUMNS, strict=True)]
        + [f"{case} AS {c}" for case, c in zip(cases, API_COLUMNS, strict=True)]
    )


_DIFFERS = " OR ".join(f"st.{c} IS NOT m.{c}" for c in SLOT_COLUMNS)
_ANY_SLOT = " OR ".join(f"{c} IS NOT NULL" for c in SLOT_COLUMNS)
_SLOT_LIST = ", ".join(SLOT_COLUMNS)
_PLAN_COLUMNS = f"audience, action, person, {_SLOT_LIST}, {', '.join(API_COLUMNS)}"


class MembershipStore:
    """SQLite-backed store of confirmed membership, one connection per run."""

    def __init__(self, path: str, *, copy_of: str | None = None) -> None:
        """Open (creating it, private to the user) the SQLite file at `path`.

        With `copy_of`, `path` should be ":memory:": the store starts as a copy of that file,
        so a dry run plans exactly like a real run and changes nothing on disk.
        """
        self.path = copy_of or path
        self._throwaway = copy_of is not None
        self._locks: dict[int, int] = {}
        self._staged_indexed = False
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            if copy_of and Path(copy_of).exists():
                uri = Path(copy_of).resolve().as_uri() + "?mode=ro"
                source = sqlite3.connect(uri, uri=True)
                source.backup(self._db)
                source.close()
            version = self._stored_version()  # before any change: a newer store is not touched
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")
            self._upgrade(version)
            self._db.executescript(_TEMP_SCHEMA)
        except sqlite3.Error as exc:
            msg = (
                f"membership store {self.path!r} cannot be opened ({exc}): check "
                "`membership_store` points at a writable SQLite file."
            )
            raise StoreError(msg) from None

    @classmethod
    def open(cls, location: str, *, throwaway: bool = False) -> MembershipStore:
        """Open the store a `membership_store` setting names (a copy in memory if `throwaway`)."""
        if location.startswith(("postgresql://", "postgres://")):
            msg = (
                "`membership_store` is a PostgreSQL URL, which this version does not support "
                "yet: use a SQLite file path."
            )
            raise ConfigError(msg)
        if throwaway:
            return cls(":memory:", copy_of=location)
        return cls(location)

    def close(self) -> None:
        """Close the connection (temporary staging tables go with it) and release locks."""
        self._db.close()
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()

    def lock_audience(self, audience: int, label: str, timeout: float) -> None:
        """Keep other runs off this audience until this run ends (or dies: the OS frees it).

        Runs on different audiences of one store proceed side by side; a second run on the
        same audience waits up to `timeout` seconds, then fails with a clear message.
        """
        if audience in self._locks or self.path == ":memory:" or self._throwaway:
            return
        lock_dir = Path(self.path + ".locks")
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"audience-{audience}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    msg = (
                        f"audience {label} is being synced by another run on store "
                        f"{self.path!r} (waited {timeout:g} s): let it finish, or raise "
                        "`store_lock_timeout`"
                    )
                    raise StoreError(msg) from None
                time.sleep(0.2)
        self._locks[audience] = fd

    def _stored_version(self) -> int | None:
        """The file's schema version (None: a new store); refuse one newer than this program."""
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        row = has_meta and self._db.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone()
        if not row:
            return None
        version = int(row[0])
        if version > SCHEMA_VERSION:
            msg = (
                f"membership store {self.path!r} has schema version {version}, newer than this "
                f"program's {SCHEMA_VERSION}: upgrade target-tiktok-audiences."
            )
            raise StoreError(msg)
        return version

    def _upgrade(self, version: int | None) -> None:
        """Create a new store at the current schema, or migrate an older one in place."""
        with self.transaction() as db:
            if version is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            else:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        db.execute(statement)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: a run that dies inside leaves the store as it was before."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Audiences

    def audience(self, stream: str, target_key: str, advertiser_ids: Sequence[str]) -> AudienceRow:
        """The store's row for a stream's audience, created on first use."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO audiences (stream, target_key, advertiser_ids) "
                "VALUES (?, ?, ?)",
                (stream, target_key, json.dumps(list(advertiser_ids))),
            )
        row = self._db.execute(
            "SELECT id FROM audiences WHERE stream = ? AND target_key = ?", (stream, target_key)
        ).fetchone()
        return self.get_audience(row[0])

    def get_audience(self, audience: int) -> AudienceRow:
        """Read one audience row back."""
        row = self._db.execute(
            "SELECT id, stream, audience_id, name, advertiser_ids, uploaded_at, last_change_at, "
            "last_sync_at, last_result, last_error, last_counts FROM audiences WHERE id = ?",
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
        )

    def list_audiences(self) -> list[AudienceRow]:
        """Every audience the store knows, in creation order."""
        ids = [r[0] for r in self._db.execute("SELECT id FROM audiences ORDER BY id")]
        return [self.get_audience(i) for i in ids]

    def set_tiktok_audience(self, audience: int, audience_id: str, name: str | None) -> None:
        """Remember which TikTok audience this is; committed at once so it is never recreated."""
        with self.transaction() as db:
            db.execute(
                "UPDATE audiences SET audience_id = ?, name = COALESCE(?, name), "
                "created_by_target = created_by_target OR ? WHERE id = ?",
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

    def member_hashes(self, audience: int) -> Iterator[Row]:
        """Every confirmed person of an audience (for tests and inspection)."""
        yield from self._db.execute(
            f"SELECT person, {_SLOT_LIST} FROM members WHERE audience = ? ORDER BY person",
            (audience,),
        )

    # Staging: what this run's input says

    def stage(self, audience: int, rows: Iterable[tuple[bytes, int, Slots]]) -> None:
        """Record people seen in the input: (person, remove flag, slots); the last one wins.

        Rows are appended to an unindexed table (twice as fast as keeping a key in order);
        the index is built, and repeated people reduced to their last row, when planning.
        """
        if self._staged_indexed:
            self._db.execute("DROP INDEX IF EXISTS temp.staged_person")
            self._staged_indexed = False
        self._db.executemany(
            f"INSERT INTO staged (audience, person, remove, {_SLOT_LIST}) "
            f"VALUES (?, ?, ?, {', '.join('?' * len(SLOT_COLUMNS))})",
            ((audience, person, remove, *slots) for person, remove, slots in rows),
        )

    def _index_staged(self, audience: int) -> None:
        """Index what was staged and keep only each person's last row."""
        if not self._staged_indexed:
            self._db.execute("CREATE INDEX IF NOT EXISTS temp.staged_person ON staged "
                             "(audience, person)")
            self._staged_indexed = True
        repeated = self._db.execute(
            "SELECT 1 FROM staged WHERE audience = ? GROUP BY person HAVING COUNT(*) > 1 LIMIT 1",
            (audience,),
        ).fetchone()
        if repeated:
            self._db.execute(
                "DELETE FROM staged WHERE audience = :a AND rowid NOT IN "
                "(SELECT MAX(rowid) FROM staged WHERE audience = :a GROUP BY person)",
                {"a": audience},
            )

    def staged_count(self, audience: int) -> int:
        """Records staged for an audience and not yet planned."""
        return self._db.execute(
            "SELECT COUNT(*) FROM staged WHERE audience = ?", (audience,)
        ).fetchone()[0]

    def clear_staged(self, audience: int) -> None:
        """Forget what was staged and planned for an audience."""
        self._db.execute("DELETE FROM staged WHERE audience = ?", (audience,))
        self._db.execute("DELETE FROM plan WHERE audience = ?", (audience,))

    # Holding back a first upload

    def hold(self, audience: int, *, snapshot: bool) -> int:
        """Move staged people into `pending` (replacing it for a snapshot); return its size."""
        self._index_staged(audience)
        with self.transaction() as db:
            if snapshot:
                db.execute("DELETE FROM pending WHERE audience = ?", (audience,))
            db.execute(
                "DELETE FROM pending WHERE audience = ? AND person IN "
                "(SELECT person FROM staged WHERE audience = ? AND remove = 1)",
                (audience, audience),
            )
            db.execute(
                f"INSERT OR REPLACE INTO pending (audience, person, {_SLOT_LIST}) "
                f"SELECT audience, person, {_SLOT_LIST} FROM staged "
                "WHERE audience = ? AND remove = 0",
                (audience,),
            )
        return self.count_pending(audience)

    def release_pending(self, audience: int) -> None:
        """Stage every held person, so the first upload sends them all."""
        self._db.execute("DELETE FROM staged WHERE audience = ?", (audience,))
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
        has are not sent (a shared household phone stays), but still leave the person's row.
        """
        db = self._db
        args = {"a": audience}
        self._index_staged(audience)
        db.execute("DELETE FROM plan WHERE audience = :a", args)
        summary = PlanSummary(confirmed=self.count_members(audience))
        # Leavers, then people whose identifiers changed lose their old hashes.
        if snapshot and complete:
            leavers = (
                "NOT EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                "AND st.person = m.person AND st.remove = 0)"
            )
        else:
            leavers = (
                "EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                "AND st.person = m.person AND st.remove = 1)"
            )
        cur = db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT :a, 'delete', m.person, "
            f"{_SLOT_LIST}, {_SLOT_LIST} FROM members m WHERE m.audience = :a AND {leavers}",
            args,
        )
        summary.left = cur.rowcount
        changed = (
            f"FROM staged st JOIN members m ON m.audience = :a AND m.person = st.person "
            f"WHERE st.audience = :a AND st.remove = 0 AND ({_DIFFERS})"
        )
        db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT * FROM (SELECT :a, 'delete', m.person, "
            f"{_slot_changes('m', 'st')} {changed}) WHERE {_ANY_SLOT}",
            args,
        )
        summary.changed = db.execute(f"SELECT COUNT(*) {changed}", args).fetchone()[0]
        db.execute(
            f"INSERT INTO plan ({_PLAN_COLUMNS}) SELECT * FROM (SELECT :a, 'add', st.person, "
            f"{_slot_changes('st', 'm')} FROM staged st LEFT JOIN members m "
            f"ON m.audience = :a AND m.person = st.person "
            f"WHERE st.audience = :a AND st.remove = 0 AND (m.person IS NULL OR {_DIFFERS})) "
            f"WHERE {_ANY_SLOT}",
            args,
        )
        summary.joined = db.execute(
            "SELECT COUNT(*) FROM staged st WHERE st.audience = :a AND st.remove = 0 AND NOT "
            "EXISTS (SELECT 1 FROM members m WHERE m.audience = :a AND m.person = st.person)",
            args,
        ).fetchone()[0]
        summary.people = self.people_after(audience, snapshot=snapshot and complete)
        summary.unchanged = summary.people - summary.joined - summary.changed
        self._keep_shared_hashes(audience, snapshot=snapshot and complete)
        summary.delete_rows = self._count_plan(audience, "delete", api_only=True)
        summary.add_rows = self._count_plan(audience, "add", api_only=True)
        return summary

    def _keep_shared_hashes(self, audience: int, *, snapshot: bool) -> None:
        """Do not send the delete of a hash that another person of the audience keeps."""
        if not self._count_plan(audience, "delete", api_only=True):
            return
        for slot, api in zip(SLOT_COLUMNS, API_COLUMNS, strict=True):
            kept = f"SELECT {slot} FROM staged WHERE audience = :a AND remove = 0"
            if not snapshot:
                kept += (
                    f" UNION ALL SELECT m.{slot} FROM members m WHERE m.audience = :a AND NOT "
                    "EXISTS (SELECT 1 FROM staged st WHERE st.audience = :a "
                    "AND st.person = m.person)"
                )
            self._db.execute(
                f"UPDATE plan SET {api} = NULL WHERE audience = :a AND action = 'delete' "
                f"AND {api} IS NOT NULL AND {api} IN ({kept})",
                {"a": audience},
            )

    def _count_plan(self, audience: int, action: str, *, api_only: bool) -> int:
        cond = f" AND ({' OR '.join(f'{c} IS NOT NULL' for c in API_COLUMNS)})" if api_only else ""
        return self._db.execute(
            f"SELECT COUNT(*) FROM plan WHERE audience = ? AND action = ?{cond}",
            (audience, action),
        ).fetchone()[0]

    def planned(
        self, audience: int, action: str, page: int = 2000
    ) -> Iterator[tuple[int, bytes, Slots, Slots]]:
        """Planned rows in order: (seq, person, slots for the store, slots to send).

        Read a page at a time, each query finished before rows are yielded: a statement left
        open would pin an old snapshot of the file, and the confirmations written in between
        would then fail with "database is locked" once another run has written.
        """
        n = len(SLOTS)
        last = -1
        while True:
            rows = self._db.execute(
                f"SELECT seq, person, {_SLOT_LIST}, {', '.join(API_COLUMNS)} FROM plan "
                "WHERE audience = ? AND action = ? AND seq > ? ORDER BY seq LIMIT ?",
                (audience, action, last, page),
            ).fetchall()
            for row in rows:
                yield row[0], row[1], tuple(row[2 : 2 + n]), tuple(row[2 + n :])
            if len(rows) < page:
                return
            last = rows[-1][0]

    # Confirmation: TikTok said code 0

    def confirm(self, audience: int, action: str, rows: Sequence[tuple[bytes, Slots]]) -> None:
        """Apply confirmed changes to `members` in one transaction."""
        placeholders = ", ".join("?" * len(SLOT_COLUMNS))
        with self.transaction() as db:
            db.execute(
                "UPDATE audiences SET last_change_at = ? WHERE id = ?", (time.time(), audience)
            )
            if action == "add":
                updates = ", ".join(f"{c} = COALESCE(excluded.{c}, {c})" for c in SLOT_COLUMNS)
                db.executemany(
                    f"INSERT INTO members (audience, person, {_SLOT_LIST}) "
                    f"VALUES (?, ?, {placeholders}) "
                    f"ON CONFLICT (audience, person) DO UPDATE SET {updates}",
                    ((audience, person, *slots) for person, slots in rows),
                )
            else:
                clears = ", ".join(
                    f"{c} = CASE WHEN {c} = ? THEN NULL ELSE {c} END" for c in SLOT_COLUMNS
                )
                db.executemany(
                    f"UPDATE members SET {clears} WHERE audience = ? AND person = ?",
                    ((*slots, audience, person) for person, slots in rows),
                )
                db.executemany(
                    f"DELETE FROM members WHERE audience = ? AND person = ? AND NOT ({_ANY_SLOT})",
                    ((audience, person) for person, _ in rows),
                )

    def finish_upload(self, audience: int) -> None:
        """The audience has been uploaded: held people are members now, holding is over."""
        with self.transaction() as db:
            db.execute("DELETE FROM pending WHERE audience = ?", (audience,))
            db.execute(
                "UPDATE audiences SET uploaded_at = COALESCE(uploaded_at, ?) WHERE id = ?",
                (time.time(), audience),
            )
