"""Merged sending: the planned changes of a run's composed audiences, sent together.

Once every affected composed audience is planned, held or guarded, and has its TikTok audience
(`ComposedSync.plan`), their changes go out in groups of the same `advertiser_ids`: every
delete of the group's audiences, then every add. A person planned with the same hashes in the
same slots in several of them is one row, whose entries each name the audiences that hash is
sent to (`store.merging`); rows of one audience only go in the same requests, with its id
alone. A request holds at most `batch_size` rows and is halved as any is. A batch TikTok
confirmed is applied in each audience it carried, exactly the rows it carried, with a receipt
of each request in each; a failure leaves them unconfirmed in all of those audiences, and the
run ends (the next run sends what is left). An audience alone in its group is sent as any
audience is (`AudienceSync._send`).

TikTok's 40007 does not say which audience of a merged request it no longer has: each
audience of the group then syncs on its own (`ComposedSync.send_alone`), which creates the
deleted one again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence

from target_tiktok_audiences.composed import ComposedSync
from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.sync import RunContext
from target_tiktok_audiences.tiktok.answers import RequestIds
from target_tiktok_audiences.tiktok.codes import NOT_FOUND
from target_tiktok_audiences.tiktok.mapping import Batch

ACTIONS = ("delete", "add")


def by_advertisers(syncs: Sequence[ComposedSync]) -> list[list[ComposedSync]]:
    """The syncs in groups of identical `advertiser_ids`, in the order they come."""
    groups: dict[tuple[str, ...], list[ComposedSync]] = {}
    for sync in syncs:
        groups.setdefault(tuple(sync.settings.advertiser_ids), []).append(sync)
    return list(groups.values())


def send_planned(run: RunContext, syncs: Sequence[ComposedSync]) -> None:
    """Send the changes every sync planned, merged where they share advertisers, and end each.

    An exception leaves the syncs not ended for the caller to abandon.
    """
    groups = by_advertisers(syncs)
    for group in groups:
        if len(group) == 1:
            group[0].send_planned()
    merged = [group for group in groups if len(group) > 1]
    for action in ACTIONS:
        for group in merged:
            if group[0].planned is not None:
                _send_group(run, group, action)
    for group in merged:
        for sync in group:
            if sync.planned is not None:
                sync.finish()


def _send_group(run: RunContext, group: Sequence[ComposedSync], action: str) -> None:
    """One action of a group's audiences, merged; on 40007 each syncs on its own instead."""
    store, client = run.store, run.client
    by_id = {sync.row.id: sync for sync in group}
    ids = {sync.row.id: sync.audience_id for sync in group}
    merge = store.merge_planned(action, list(ids))
    started = time.monotonic()
    requests = 0

    def confirmed(batch: Batch, request_ids: RequestIds) -> None:
        nonlocal requests
        carried = store.confirm_merged(action, batch.first, batch.last, request_ids.answered)
        requests += len(request_ids.answered)
        for audience, receipts in carried.items():
            by_id[audience].progress.totals["requests"] += len(receipts)
            run.progress.changes_confirmed(sum(rows for _, rows in receipts))

    if merge.rows:
        alone = merge.requests_alone(client.batch_size)
        try:
            client.map_all(
                action, group[0].settings.advertiser_ids, "", _batches(run, ids), confirmed
            )
        except TikTokAPIError as exc:
            if exc.code != NOT_FOUND:
                raise
            for sync in group:
                sync.send_alone()
            return
        finally:
            for sync in group:
                sync.progress.seconds += time.monotonic() - started
        run.logger.info(
            "Sent together: %d planned %s rows of audiences %s, as %d rows in %d request(s) "
            "(%d if sent one audience at a time).",
            sum(merge.planned.values()),
            action,
            ", ".join(sync.settings.label for sync in group),
            merge.rows,
            requests,
            alone,
        )
    for sync in group:
        store.confirm_kept(sync.row.id, action)


def _batches(run: RunContext, audience_ids: Mapping[int, str]) -> Iterator[Batch]:
    """Merged rows in plan order, a batch at a time, of the client's batch size at the time."""
    after = -1
    while True:
        size = run.client.batch_size
        found = run.store.next_merged_batch(after, size, audience_ids)
        if found is None:
            return
        batch, planned = found
        run.progress.changes_sent(planned)
        yield batch
        if batch.size < size:
            return
        after = batch.last
