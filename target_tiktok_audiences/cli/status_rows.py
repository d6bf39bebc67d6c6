"""`status`'s rows: one audience, from the store's row and TikTok's details, as JSON prints it.

Every row has exactly the keys of `STATUS_KEYS` (plus `last_error`, for the table's notes),
None where neither the store nor TikTok knows the value; times are ISO 8601 in UTC. The status
word is decided here, by the contract's rules, first match wins.
"""

from __future__ import annotations

from collections.abc import Mapping
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
)


def status_word(
    *,
    last_result: str | None,
    pending: int,
    uploaded: bool,
    valid: bool | None,
    last_change_at: float | None,
    matched: int | None,
    expiring: bool | None,
    now: float,
) -> str | None:
    """The audience's state in one word; the first rule that applies wins.

    None when nothing the store knows decides it and TikTok's side is unknown (no token, or
    no TikTok audience yet): guessing ACTIVE there would hide exactly what `status` is for.
    """
    if last_result == "failed":
        return "FAILED"
    if pending > 0 and not uploaded:
        return "PENDING"
    if valid is None and matched is None and expiring is None:
        return None
    recent = last_change_at is not None and now - last_change_at < CALCULATING_SECONDS
    if valid is False and recent:
        return "CALCULATING"
    if matched is not None and matched < MIN_MATCHED:
        return "TOO_SMALL"
    if expiring:
        return "EXPIRING"
    return "ACTIVE"


def utc_time(ts: float | None) -> str | None:
    """A store's time (Unix seconds) as the commands' JSON writes it: ISO 8601, UTC."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tiktok_time(value: Any) -> str | None:
    """TikTok's `YYYY-MM-DD HH:MM:SS` (UTC) as ISO 8601; anything else passes through."""
    if value in (None, ""):
        return None
    try:
        parsed = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return str(value)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def shared_with(row: AudienceRow, definition: AudienceDefinition | None) -> list[str] | None:
    """The advertisers the audience is shared with, as `status` prints them.

    None for an audience that is not shared and whose spec names no
    `share_with_advertiser_ids`; otherwise the shares made so far (`[]` before the first).
    """
    if row.shared_with or (definition is not None and definition.share_with_advertiser_ids):
        return list(row.shared_with)
    return None


def status_row(
    row: AudienceRow,
    confirmed: int,
    pending: int,
    details: Mapping[str, Any] | None,
    now: float,
    shared: list[str] | None,
) -> dict[str, Any]:
    """One audience as `status --format json` prints it (plus `last_error` for the table).

    `shared` is `shared_with`'s answer for the row; every other value comes from the row and
    TikTok's `details`, None where neither knows it.
    """
    details = details or {}
    matched = _as_int(details.get("cover_num"))
    valid = _as_bool(details.get("is_valid"))
    expiring = _as_bool(details.get("is_expiring"))
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
        "expires_at": _tiktok_time(details.get("expired_time")),
        "status": status_word(
            last_result=row.last_result,
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
        "shared_with": shared,
        "lookalike_audience_id": row.lookalike_audience_id,
        "last_error": row.last_error,
    }
