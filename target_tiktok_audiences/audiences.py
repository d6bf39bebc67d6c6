"""A stream's TikTok audience in the store: resolve it, create it once by name, adopt a lost one.

The TikTok side of each step is a client call (`tiktok.audiences`); this module keeps the store
in step with what TikTok answered.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from target_tiktok_audiences.errors import (
    AudienceDeletedError,
    ConfigError,
    TargetError,
    TikTokAPIError,
)
from target_tiktok_audiences.tiktok.codes import NOT_FOUND

if TYPE_CHECKING:
    from target_tiktok_audiences.settings import AudienceSettings
    from target_tiktok_audiences.store import AudienceRow, MembershipStore
    from target_tiktok_audiences.tiktok.http import TikTokClient


def resolve_audience(
    client: TikTokClient, store: MembershipStore, settings: AudienceSettings, row: AudienceRow
) -> str:
    """The TikTok audience id for a stream, creating the audience on its first sync."""
    if settings.audience_id:
        if row.audience_id != settings.audience_id:
            store.set_tiktok_audience(row.id, settings.audience_id, None)
            row.audience_id = settings.audience_id
        return settings.audience_id
    if row.audience_id:
        return row.audience_id
    return create_audience(client, store, settings, row, settings.audience_name or settings.stream)


def create_audience(
    client: TikTokClient,
    store: MembershipStore,
    settings: AudienceSettings,
    row: AudienceRow,
    name: str,
) -> str:
    """Create a partner audience and commit its id to the store at once.

    Creating is not idempotent: it is never retried after a timeout, and the id is stored as
    soon as TikTok returns it, so no later run (or re-run after a crash) creates it again.
    Only an id TikTok sent is ever stored: a confirmed create without one fails the run, and
    the next run finds the audience by its name (`check_unknown_audience`).
    """
    audience_id = client.create_audience(settings.advertiser_ids[0], name)
    store.set_tiktok_audience(row.id, audience_id, name)
    row.audience_id, row.name = audience_id, name
    return audience_id


def find_audiences_named(client: TikTokClient, advertiser_id: str, name: str) -> list[dict]:
    """Audiences of an advertiser with exactly this name (TikTok allows several)."""
    return [a for a in client.list_audiences(advertiser_id) if a.get("name") == name]


def check_unknown_audience(
    client: TikTokClient,
    store: MembershipStore,
    settings: AudienceSettings,
    row: AudienceRow,
    logger: logging.Logger,
    *,
    rebuild: bool,
) -> None:
    """Before an audience's first upload from this store, find out if TikTok already has it.

    A lost store (a new worker, a deleted file) knows nobody in an audience that TikTok still
    fills; syncing on would add newcomers but never remove anyone who left meanwhile. Adopt an
    audience of the configured name rather than create a second one, and say so; with
    `rebuild`, upload to a fresh audience instead and leave the old one for the user to retire.
    """
    advertiser = settings.advertiser_ids[0]
    audience_id = settings.audience_id or row.audience_id
    name = settings.audience_name or settings.stream
    if audience_id is None:
        same_name = find_audiences_named(client, advertiser, name)
        if len(same_name) > 1:
            ids = ", ".join(str(a.get("audience_id")) for a in same_name)
            msg = (
                f"{len(same_name)} TikTok audiences are named {name!r} ({ids}) and the store "
                "knows none of them: set `audience_id` for this stream to the one to keep"
            )
            raise ConfigError(msg)
        if not same_name:
            return
        details = same_name[0]
        audience_id = str(details.get("audience_id"))
        logger.warning(
            "Audience %r already exists on TikTok (%s) but the store did not know it (a lost or "
            "new membership store?): using it rather than creating a second one.",
            name,
            audience_id,
        )
        store.set_tiktok_audience(row.id, audience_id, name)
        row.audience_id = audience_id
    else:
        try:
            details = next(client.read_audiences(advertiser, [audience_id]), {})
        except TikTokAPIError as exc:
            if exc.code == NOT_FOUND:
                raise audience_deleted(settings, audience_id) from None
            raise
    matched = int(details.get("cover_num") or 0)
    if matched == 0:
        return
    if rebuild and not settings.audience_id:
        fresh = f"{name} (rebuilt {time.strftime('%Y-%m-%d')})"
        logger.warning(
            "Audience %s has %d matched people on TikTok that the store does not know: "
            "rebuilding it as a new audience %r (rebuild_when_store_empty). The old audience is "
            "left as it was: point your ad groups at the new one, then delete the old one.",
            audience_id,
            matched,
            fresh,
        )
        row.audience_id = None
        create_audience(client, store, settings, row, fresh)
        return
    logger.warning(
        "Audience %s already has %d matched people on TikTok, but this membership store knows "
        "none of them (a lost or new store?): people who left the source before now will never "
        "be removed. Fix: restore the store, or set rebuild_when_store_empty: true with "
        "audience_name to upload to a fresh audience.",
        audience_id,
        matched,
    )


def audience_deleted(settings: AudienceSettings, audience_id: str) -> TargetError:
    """The error for an audience TikTok no longer has (NOT_FOUND for its id).

    One configured by `audience_id` is the user's to replace: a one-line ConfigError naming
    it and the fix. One created by name is the target's to create again
    (`AudienceDeletedError`, which the sync handles).
    """
    if settings.audience_id:
        msg = (
            f"audience {audience_id} (stream {settings.stream}) no longer exists on TikTok "
            f"(deleted?): set `audiences.{settings.stream}.audience_id` to an existing audience "
            "(TikTok Ads Manager lists them under Audiences), or use `audience_name` to have the "
            "target create one"
        )
        return ConfigError(msg)
    msg = (
        f"audience {settings.label!r} ({audience_id}, stream {settings.stream}) no longer exists "
        "on TikTok (deleted?), and creating it again did not help: re-run later, or check "
        "the audience in TikTok Ads Manager"
    )
    return AudienceDeletedError(msg, audience_id=audience_id)
