"""`status`'s rows: one audience, from the store's row and TikTok's details, as JSON prints it.

Every row has exactly the keys of `STATUS_KEYS` (plus `last_error`, for the table's notes),
None where neither the store nor TikTok knows the value; times are ISO 8601 in UTC. The status
word is decided here, by the contract's rules, first match wins (`STATUS_WORDS`' order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from target_tiktok_audiences.settings import AudienceDefinition
from target_tiktok_audiences.store import AudienceRow

CALCULATING_SECONDS = 48 * 3600  # TikTok matches within 24-48 hours of a change
MIN_MATCHED = 1000  # TikTok will not serve an audience with fewer matched users
STATUS_KEYS = (
    "stream",
    "audience_id",
    "name",
    "advertiser_ids",
    "confirmed",
    "pending",
    "last_sync_at",
    "last_result",
    "matched",
    "match_rate",
    "valid",
    "expires_at",
    "status",
    "split_value",
    "streams",
    "shared_with",
    "lookalike_audience_id",
    "stale_streams",
)
# Every status word, in the order the first that applies wins.
STATUS_WORDS = (
    "FAILED",
    "SYNCING",
    "PENDING",
    "CALCULATING",
    "TOO_SMALL",
    "EXPIRING",
    "STALE",
    "ACTIVE",
)


def status_word(
    *,
    last_result: str | None,
    syncing: bool,
    stale: bool,
    pending: int,
    uploaded: bool,
    valid: bool | None,
    last_change_at: float | None,
    matched: int | None,
    expiring: bool | None,
    now: float,
) -> str | None:
    """The audience's state in one word; the first rule that applies wins.

    `syncing`: a run holds the audience's lock now; `stale`: its last successful sync is older
    than `stale_after_hours`. None when nothing the store knows decides it and TikTok's side
    is unknown (no token, or no TikTok audience yet): guessing ACTIVE there would hide exactly
    what `status` is for. STALE, known from the store alone, is still given then.
    """
    if last_result == "failed":
        return "FAILED"
    if syncing:
        return "SYNCING"
    if pending > 0 and not uploaded:
        return "PENDING"
    if valid is None and matched is None and expiring is None:
        return "STALE" if stale else None
    recent = last_change_at is not None and now - last_change_at < CALCULATING_SECONDS
    if valid is False and recent:
        return "CALCULATING"
    if matched is not None and matched < MIN_MATCHED:
        return "TOO_SMALL"
    if expiring:
        return "EXPIRING"
    if stale:
        return "STALE"
    return "ACTIVE"


def is_stale(at: float | None, now: float, stale_after: float) -> bool:
    """Whether `at` (a time, None: never) is more than `stale_after` seconds ago (0: never)."""
    return stale_after > 0 and at is not None and now - at > stale_after


def stale_streams(
    watched: Sequence[str] | None,
    delivered: Mapping[str, float],
    now: float,
    stale_after: float,
) -> list[dict[str, str | None]] | None:
    """The streams of `watched` that have sent nothing for over `stale_after` seconds.

    Each as `{"stream", "last_snapshot_at"}`, `last_snapshot_at` None for a stream that never
    delivered one; `delivered` holds each stream's last delivery. None when nothing is watched
    (`stale_after_hours` is 0, or the audience is not in the config).
    """
    if watched is None or stale_after <= 0:
        return None
    return [
        {"stream": stream, "last_snapshot_at": utc_time(delivered.get(stream))}
        for stream in watched
        if delivered.get(stream) is None or is_stale(delivered[stream], now, stale_after)
    ]


def utc_time(ts: float | None) -> str | None:
    """A store's time (Unix seconds) as the commands' JSON writes it: ISO 8601, UTC."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tiktok_time(value: Any) -> str | None:
    """TikTok's `YYYY-MM-DD HH:MM:SS` (UTC) as ISO 8601; anything else passes through."""
    if value in (None, ""):
        return None
    try:
        parsed = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return str(value)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def as_int(value: Any) -> int | None:
    """TikTok's number (an int or its text) as an int; None when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_bool(value: Any) -> bool | None:
    """TikTok's flag when it is a boolean; None otherwise (absent, or not one)."""
    return value if isinstance(value, bool) else None


def shared_with(row: AudienceRow, definition: AudienceDefinition | None) -> list[str] | None:
    """The advertisers the audience is shared with, as `status` prints them.

    None for an audience that is not shared and whose spec names no
    `share_with_advertiser_ids`; otherwise the shares made so far (`[]` before the first).
    """
    if row.shared_with or (definition is not None and definition.share_with_advertiser_ids):
        return list(row.shared_with)
    return None


@dataclass(frozen=True)
class Watch:
    """What `status` knows of an audience beyond its row: its lock, its shares, its streams.

    `shared` is `shared_with`'s answer, `stale` `stale_streams`'; `stale_after` is
    `stale_after_hours` in seconds (0: never stale).
    """

    syncing: bool
    shared: list[str] | None
    stale_after: float
    stale: list[dict[str, str | None]] | None


def status_row(
    row: AudienceRow,
    confirmed: int,
    pending: int,
    details: Mapping[str, Any] | None,
    now: float,
    watch: Watch,
) -> dict[str, Any]:
    """One audience as `status --format json` prints it (plus `last_error` for the table).

    Values come from the row, `watch` and TikTok's `details`, None where none knows them.
    """
    details = details or {}
    matched = as_int(details.get("cover_num"))
    valid = as_bool(details.get("is_valid"))
    expiring = as_bool(details.get("is_expiring"))
    return {
        "stream": row.stream,
        "audience_id": row.audience_id,
        "name": details.get("name") or row.name,
        "advertiser_ids": list(row.advertiser_ids),
        "confirmed": confirmed,
        "pending": pending,
        "last_sync_at": utc_time(row.last_sync_at),
        "last_result": row.last_result,
        "matched": matched,
        "match_rate": round(matched / confirmed, 4) if matched is not None and confirmed else None,
        "valid": valid,
        "expires_at": tiktok_time(details.get("expired_time")),
        "status": status_word(
            last_result=row.last_result,
            syncing=watch.syncing,
            stale=row.last_result == "ok" and is_stale(row.last_sync_at, now, watch.stale_after),
            pending=pending,
            uploaded=row.uploaded_at is not None,
            valid=valid,
            last_change_at=row.last_change_at,
            matched=matched,
            expiring=expiring,
            now=now,
        ),
        "split_value": row.split_value,
        "streams": None if row.streams is None else list(row.streams),
        "shared_with": watch.shared,
        "lookalike_audience_id": row.lookalike_audience_id,
        "stale_streams": watch.stale,
        "last_error": row.last_error,
    }
