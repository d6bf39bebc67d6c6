"""Audiences: the store's row for each one, what TikTok and the config said of it, its counts.

An audience row is created once per (stream, target key): two workers creating it at once get
the same row. Its TikTok id is committed as soon as it is known, so an audience is never
created twice on TikTok.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from target_tiktok_audiences.store.connection import Connection


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
    # Its sources changed since its members last matched them: plan it again in full.
    dirty: bool = False
    # Composed audiences: the `split_by` value this audience is for (None outside split_by),
    # the streams that feed it (None: not known), the advertisers it is shared with, and the
    # id of its lookalike (None: none made).
    split_value: str | None = None
    streams: tuple[str, ...] | None = None
    shared_with: tuple[str, ...] = ()
    lookalike_audience_id: str | None = None


class Audiences(Connection):
    """The audiences of a store: created on first use, read back, remembered."""

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
            "last_sync_at, last_result, last_error, last_counts, key_properties, dirty, "
            "split_value, streams, shared_with, lookalike_audience_id FROM audiences WHERE id = ?",
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
            dirty=bool(row[12]),
            split_value=row[13],
            streams=None if row[14] is None else tuple(json.loads(row[14])),
            shared_with=tuple(json.loads(row[15])) if row[15] else (),
            lookalike_audience_id=row[16],
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

    def syncing(self, audience: int) -> bool:
        """Whether a run holds the audience's lock (see `lock_audience`) now; takes nothing."""
        return self._db.lock_held(audience)

    def audiences_of_key(self, key: str) -> list[AudienceRow]:
        """The audiences the store has under one key of `audiences` (one per split value)."""
        ids = self._db.execute(
            "SELECT id FROM audiences WHERE stream = ? ORDER BY id", (key,)
        ).fetchall()
        return [self.get_audience(row[0]) for row in ids]

    def set_composition(
        self, audience: int, streams: tuple[str, ...], split_value: str | None
    ) -> None:
        """Remember, for `status`, a composed audience's streams and `split_by` value."""
        with self.transaction() as db:
            db.execute(
                "UPDATE audiences SET streams = ?, split_value = ? WHERE id = ?",
                (json.dumps(streams), split_value, audience),
            )

    def set_shared(self, audience: int, advertiser_ids: tuple[str, ...]) -> None:
        """Remember the advertisers TikTok confirmed the audience is shared with."""
        with self.transaction() as db:
            db.execute(
                "UPDATE audiences SET shared_with = ? WHERE id = ?",
                (json.dumps(list(advertiser_ids)), audience),
            )

    def set_lookalike(self, audience: int, lookalike_id: str) -> None:
        """Remember the audience's lookalike, so it is never created twice."""
        with self.transaction() as db:
            db.execute(
                "UPDATE audiences SET lookalike_audience_id = ? WHERE id = ?",
                (lookalike_id, audience),
            )

    def is_dirty(self, key: str) -> bool:
        """Whether an audience of this key has a sync that did not finish (see `mark_dirty`)."""
        row = self._db.execute(
            "SELECT 1 FROM audiences WHERE stream = ? AND dirty = 1 LIMIT 1", (key,)
        ).fetchone()
        return row is not None

    def mark_dirty(self, audience: int) -> None:
        """The audience's members may no longer be what its source holds: plan it in full."""
        with self.transaction() as db:
            db.execute("UPDATE audiences SET dirty = 1 WHERE id = ?", (audience,))
