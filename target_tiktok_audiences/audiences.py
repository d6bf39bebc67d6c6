"""TikTok audiences: resolve a stream's audience, create it once by name, read audiences back."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from target_tiktok_audiences.errors import TikTokAPIError

if TYPE_CHECKING:
    from target_tiktok_audiences.client import TikTokClient
    from target_tiktok_audiences.settings import AudienceSettings
    from target_tiktok_audiences.store import AudienceRow, MembershipStore

DRY_RUN_PREFIX = "dry-run:"
READ_BATCH = 100  # dmp/custom_audience/get/ takes at most 100 ids per call


def resolve_audience(
    client: TikTokClient, store: MembershipStore, settings: AudienceSettings, row: AudienceRow
) -> str:
    """The TikTok audience id for a stream, creating the audience on its first sync.

    A created id is committed to the store as soon as TikTok returns it, so a later run (or a
    re-run after a crash) reuses it instead of creating a second audience of the same name.
    """
    if settings.audience_id:
        if row.audience_id != settings.audience_id:
            store.set_tiktok_audience(row.id, settings.audience_id, None)
            row.audience_id = settings.audience_id
        return settings.audience_id
    if row.audience_id:
        return row.audience_id
    name = settings.audience_name or settings.stream
    try:
        data = client.request(
            "POST",
            "segment/audience/",
            body={
                "advertiser_id": settings.advertiser_ids[0],
                "action": "create",
                "custom_audience_name": name,
            },
            idempotent=False,
        )
    except TikTokAPIError as exc:
        msg = f"creating audience {name!r} failed: {exc}"
        raise TikTokAPIError(msg, code=exc.code, path=exc.path) from None
    audience_id = str(data.get("audience_id") or f"{DRY_RUN_PREFIX}{name}")
    store.set_tiktok_audience(row.id, audience_id, name)
    row.audience_id, row.name = audience_id, name
    return audience_id


def read_audiences(
    client: TikTokClient, advertiser_id: str, audience_ids: Sequence[str]
) -> Iterator[dict]:
    """TikTok's details (`cover_num`, `is_valid`, ...) for audiences, 100 ids per request."""
    ids = list(audience_ids)
    for start in range(0, len(ids), READ_BATCH):
        data = client.request(
            "GET",
            "dmp/custom_audience/get/",
            params={
                "advertiser_id": advertiser_id,
                "custom_audience_ids": json.dumps(ids[start : start + READ_BATCH]),
            },
        )
        for item in data.get("list") or []:
            yield item.get("audience_details") or item
