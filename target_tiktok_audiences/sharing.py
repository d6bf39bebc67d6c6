"""What is made of an audience once it is synced: shares with other ad accounts, a lookalike.

Each is made once and remembered in the store, so a re-run sends nothing: advertisers added to
`share_with_advertiser_ids` are shared with on the next run, advertisers taken out have their
share cancelled, and a lookalike is created in the first run after an upload in which the
audience has at least `LOOKALIKE_SEED` confirmed people. They come after membership is
confirmed: a refusal never holds back a sync, it ends the run once the tap's STATE is written.
"""

from __future__ import annotations

from collections.abc import Sequence

from target_tiktok_audiences.audiences import find_audiences_named
from target_tiktok_audiences.errors import TargetError, TikTokAPIError
from target_tiktok_audiences.settings import AudienceDefinition
from target_tiktok_audiences.settings.definitions import SPLIT_PLACEHOLDER
from target_tiktok_audiences.settings.resolve import tiktok_audience_name
from target_tiktok_audiences.store import AudienceRow, MembershipStore
from target_tiktok_audiences.tiktok.http import TikTokClient

# TikTok makes a lookalike only of an audience with at least this many people.
LOOKALIKE_SEED = 100


class SharingError(TargetError):
    """A share, a cancelled share or a lookalike that TikTok refused (membership is synced)."""


def share_and_extend(
    client: TikTokClient,
    store: MembershipStore,
    definition: AudienceDefinition,
    rows: Sequence[AudienceRow],
) -> list[str]:
    """Give each synced audience of `definition` (one per split value) its shares, lookalike.

    Returns the one-line reason of each refusal, in order (none: all made).
    """
    failures: list[str] = []
    for row in rows:
        if row.audience_id is None or row.uploaded_at is None:
            continue  # not on TikTok yet (held, or never synced)
        for attempt in (_share, _lookalike):
            try:
                attempt(client, store, definition, row)
            except TikTokAPIError as exc:
                failures.append(f"audience {row.name or row.audience_id}: {exc}")
            row = store.get_audience(row.id)
    return failures


def _share(
    client: TikTokClient, store: MembershipStore, definition: AudienceDefinition, row: AudienceRow
) -> None:
    """Share with the advertisers the spec adds, cancel those it no longer lists."""
    wanted = definition.share_with_advertiser_ids
    owner, audience_id = definition.advertiser_ids[0], str(row.audience_id)
    new = [a for a in wanted if a not in row.shared_with]
    gone = [a for a in row.shared_with if a not in wanted]
    if gone:
        client.cancel_share(owner, [audience_id], gone)
        store.set_shared(row.id, tuple(a for a in row.shared_with if a not in gone))
    if new:
        client.share_audiences(owner, [audience_id], new)
        kept = tuple(a for a in row.shared_with if a not in gone)
        store.set_shared(row.id, (*kept, *new))


def _lookalike(
    client: TikTokClient, store: MembershipStore, definition: AudienceDefinition, row: AudienceRow
) -> None:
    """Create the spec's lookalike once the audience has enough confirmed people.

    One of its name that TikTok already has (made from a store since lost) is adopted, not
    made twice.
    """
    spec = definition.lookalike
    if spec is None or row.lookalike_audience_id is not None:
        return
    if store.count_members(row.id) < LOOKALIKE_SEED:
        return
    name = spec.audience_name
    if row.split_value is not None:  # one lookalike per value: named by it, as its audience is
        name = tiktok_audience_name(name.replace(SPLIT_PLACEHOLDER, row.split_value))
    made = find_audiences_named(client, definition.advertiser_ids[0], name)
    if len(made) == 1:  # made by a store since lost: adopted, as its audience is
        store.set_lookalike(row.id, str(made[0]["audience_id"]))
        return
    lookalike_id = client.create_lookalike(
        definition.advertiser_ids[0],
        name,
        str(row.audience_id),
        location_ids=spec.location_ids,
        audience_size=spec.audience_size,
        mobile_os=spec.mobile_os,
        placements=spec.placements,
        include_source=spec.include_source,
    )
    store.set_lookalike(row.id, lookalike_id)
