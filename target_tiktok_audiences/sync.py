"""The sync of one audience: plan from what is staged, hold, guard, send, confirm.

A sink stages its stream's people; the sync of the stream's audience turns them into confirmed
changes. It remembers the stream's source (its latest snapshot, in hashes) in the same step, so
that the audience's members and its source agree whenever the audience is clean. Everything it
needs comes in a `RunContext`; how removals are found is the stream's `Policy`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from target_tiktok_audiences.accounting import EXCLUDED, StreamProgress, count_apply, stream_report
from target_tiktok_audiences.audiences import (
    audience_deleted,
    check_unknown_audience,
    resolve_audience,
)
from target_tiktok_audiences.errors import (
    AudienceDeletedError,
    RemovalGuardError,
    TargetError,
    TikTokAPIError,
)
from target_tiktok_audiences.people import Selection
from target_tiktok_audiences.policies import POLICIES
from target_tiktok_audiences.reporting import Progress
from target_tiktok_audiences.settings import AudienceSettings
from target_tiktok_audiences.store import MembershipStore, PlanSummary, SourceRow
from target_tiktok_audiences.tiktok.answers import RequestIds
from target_tiktok_audiences.tiktok.codes import NOT_FOUND
from target_tiktok_audiences.tiktok.http import TikTokClient
from target_tiktok_audiences.tiktok.mapping import Batch
from target_tiktok_audiences.workers import Workers


@dataclass(frozen=True)
class RunContext:
    """What every sync of a run shares: the store, the client, workers, progress, the log.

    Made by `run.open_run`; `close` ends them all (the store last: its locks go with it).
    """

    store: MembershipStore
    client: TikTokClient
    workers: Workers
    progress: Progress
    logger: logging.Logger
    dry_run: bool
    rebuild_when_store_empty: bool

    def close(self) -> None:
        """The run ended well: record it, stop the workers, close the client, then the store."""
        self.store.finish_run()
        self.workers.close()
        self.client.close()
        self.store.close()


def should_hold(people: int, min_audience_size: int, *, uploaded: bool) -> bool:
    """Hold a first upload until the audience has `min_audience_size` people."""
    return not uploaded and people < min_audience_size


def removal_refusal(
    summary: PlanSummary, max_removal_fraction: float, *, first_sync: bool, label: str
) -> str | None:
    """The one-line reason to refuse a snapshot sync that removes too many, or None.

    The guard counts people who leave, against the audience's confirmed people. It does not
    apply to an audience's first sync (nobody is confirmed yet).
    """
    if first_sync or summary.confirmed == 0 or summary.left == 0:
        return None
    fraction = summary.left / summary.confirmed
    if fraction <= max_removal_fraction:
        return None
    return (
        f"refusing to sync audience {label}: the snapshot would remove {summary.left} of "
        f"{summary.confirmed} people ({fraction * 100:.1f}%), over max_removal_fraction "
        f"{max_removal_fraction:g}. If the source really shrank, raise max_removal_fraction "
        "(1.0 turns the guard off) and re-run; nothing was sent."
    )


class AudienceSync:
    """Keeps one TikTok audience in step with the people staged for it.

    What is staged under `group` is planned against the audience's confirmed members, then
    held, guarded, sent and confirmed. `StreamSync` stages one stream's records there;
    `ComposedSync` (composed.py) stages what the audience's sources say it should hold.
    """

    def __init__(
        self,
        run: RunContext,
        settings: AudienceSettings,
        progress: StreamProgress,
        *,
        lock_timeout: float,
    ) -> None:
        """Find (or create) the audience's row in the store, and lock it for this run."""
        self.run = run
        self.settings = settings
        self.policy = POLICIES[settings.sync_mode]
        self.progress = progress
        store = self.store = run.store
        self.row = store.audience(settings.stream, settings.target_key, settings.advertiser_ids)
        store.lock_audience(self.row.id, settings.label, lock_timeout)
        self.row = store.get_audience(self.row.id)  # another run may have synced meanwhile

    @property
    def group(self) -> int:
        """Where the audience's people are staged: under the audience's own id."""
        return self.row.id

    @property
    def label(self) -> str:
        """How logs name the audience."""
        return self.settings.label

    def apply(self, *, complete: bool) -> None:
        """Plan, guard, hold or send, and confirm: everything staged for this audience.

        Every way this can end the run is recorded as the audience's last result, `failed`
        (`status` then says FAILED). An audience created by name that TikTok no longer has is
        created again once, and filled with everyone it should hold.
        """
        started = time.monotonic()
        requests_before = self.run.client.requests_sent
        audience = self.row.id
        try:
            try:
                self._apply(audience, complete=complete)
            except AudienceDeletedError as exc:
                self._forget_deleted(exc.audience_id)
                self._apply(audience, complete=complete)
            finally:  # counted before the result is recorded, whichever it is
                self.progress.totals["requests"] += self.run.client.requests_sent - requests_before
                self.progress.seconds += time.monotonic() - started
        except BaseException as exc:
            self._record_failure(audience, exc)
            raise
        finally:
            self.store.clear_staged(audience)
            self.progress.staged_rows = 0
            self.progress.records_since_close = 0
            self.progress.closed_any = True
        self.store.record_sync(audience, "ok", None, self.report_counts())

    def _record_failure(self, audience: int, exc: BaseException) -> None:
        """Record the failed sync; a store that fails too must not hide why the run ended."""
        if isinstance(exc, TargetError):
            error = str(exc)
        else:
            error = f"the run ended ({type(exc).__name__}) before this sync was confirmed"
        with contextlib.suppress(Exception):
            self.store.record_sync(audience, "failed", error, self.report_counts())

    def _forget_deleted(self, audience_id: str) -> None:
        """TikTok no longer has the audience: hold its people for a new one (see the store)."""
        held = self.store.forget_deleted_audience(self.row.id)
        self.row = self.store.get_audience(self.row.id)
        self.run.logger.warning(
            "Audience %s (%s, stream %s) no longer exists on TikTok (deleted?): creating it "
            "again and filling it with the %d people the store had confirmed, with this run's "
            "changes. Point your ad groups at the new audience.",
            self.settings.label,
            audience_id,
            self.settings.stream,
            held,
        )

    def _apply(self, audience: int, *, complete: bool) -> None:
        store, settings = self.store, self.settings
        self._before_plan()
        snapshot = self.policy.whole(complete=complete)
        self.row = store.get_audience(audience)
        uploaded = self.row.uploaded_at is not None
        remembered = False
        summary: PlanSummary | None = None
        # This apply's records as people (see `_count_apply`), when `hold` reduced them first.
        tally: tuple[int, int, int] | None = None
        # People held for a first upload: below min_audience_size, or of a deleted audience.
        if not uploaded and (settings.min_audience_size or store.count_pending(audience)):
            if store.count_pending(audience) or store.count_members(audience):
                people = store.hold(audience, snapshot=snapshot)  # with those held before
                tally = store.staged_people(audience)
                self._remember(None, whole=snapshot)
                remembered = True
            else:
                # Nobody held before: the plan counts the people, who then need not be moved
                # into `pending` and back (seconds, at a million people).
                summary = store.plan(audience, snapshot=self.policy.snapshot, complete=complete)
                people, tally = summary.people, _tally(summary)
                self._remember(summary, whole=snapshot)
                remembered = True
            if should_hold(people, settings.min_audience_size, uploaded=False):
                if summary is not None:
                    store.hold(audience, snapshot=snapshot)
                self._count_apply(tally, held=people)
                self.run.logger.info(
                    "Audience %s holds %d people, under min_audience_size %d: nothing sent yet.",
                    settings.label,
                    people,
                    settings.min_audience_size,
                )
                return
            if summary is None:
                store.release_pending(audience)
        if not uploaded and not self.run.dry_run and not store.count_members(audience):
            check_unknown_audience(
                self.run.client,
                store,
                settings,
                self.row,
                self.run.logger,
                rebuild=self.policy.snapshot and self.run.rebuild_when_store_empty,
            )
        if summary is None:
            summary = store.plan(audience, snapshot=self.policy.snapshot, complete=complete)
        if not remembered:
            self._remember(summary, whole=snapshot)
        refusal = (
            removal_refusal(
                summary,
                settings.max_removal_fraction,
                first_sync=not uploaded,
                label=settings.label,
            )
            if snapshot
            else None
        )
        if refusal:
            raise RemovalGuardError(refusal)
        self.run.progress.changes_planned(summary.add_rows + summary.delete_rows)
        self._send(audience, summary)
        self._count_apply(tally or _tally(summary), summary=summary)

    def _before_plan(self) -> None:
        """What must happen to the store before this apply is planned (nothing, here)."""

    def _remember(self, summary: PlanSummary | None, *, whole: bool) -> None:
        """Remember what this apply says of the audience's sources (nothing, here)."""

    def _count_apply(
        self,
        tally: tuple[int, int, int],
        *,
        held: int | None = None,
        summary: PlanSummary | None = None,
    ) -> None:
        """Count one apply's records (see `accounting.count_apply`)."""
        count_apply(self.progress, tally, held=held, summary=summary)

    def _send(self, audience: int, summary: PlanSummary) -> None:
        """Deletes, then adds, each confirmed in the store batch by batch."""
        client, store = self.run.client, self.store
        audience_id = ""
        if summary.add_rows or summary.delete_rows:
            audience_id = resolve_audience(client, store, self.settings, self.row)
        for action in ("delete", "add"):

            def confirmed(batch: Batch, request_ids: RequestIds, act: str = action) -> None:
                store.confirm_planned(audience, act, batch.first, batch.last, request_ids.answered)
                self.run.progress.changes_confirmed(batch.size)

            batches = self._batches(audience, action)
            try:
                client.map_all(
                    action, self.settings.advertiser_ids, audience_id, batches, confirmed
                )
            except TikTokAPIError as exc:
                if exc.code == NOT_FOUND:
                    raise audience_deleted(self.settings, audience_id) from None
                raise
            if action == "add" or summary.left or summary.changed:  # what plans kept rows
                store.confirm_kept(audience, action)
        store.finish_upload(audience)
        self.row = store.get_audience(audience)

    def _batches(self, audience: int, action: str) -> Iterator[Batch]:
        """Planned rows with a hash to send, in plan order, a batch at a time.

        A batch is a run of planned rows, confirmed in the store by its first and last seq.
        Its size is the client's at the time, which shrinks if TikTok says a batch is too
        large.
        """
        after = -1
        while True:
            size = self.run.client.batch_size
            batch = self.store.next_batch(audience, action, after, size)
            if batch is None:
                return
            self.run.progress.changes_sent(batch.size)
            yield batch
            if batch.size < size:
                return
            after = batch.last

    # Reporting

    def report_counts(self) -> dict[str, Any]:
        """Counts for the run report and the store's last-sync record (see `accounting`)."""
        return stream_report(self.progress)


class StreamSync(AudienceSync):
    """The simple form: one stream's records, staged by its sink, are the audience.

    Its confirmed and held people are what the stream last said, so its stream needs no source
    of its own, until a composed audience plans from the stream too (`dependents`): then the
    sync remembers the stream's source in the same step as it plans, so that the audience's
    members and its source agree whenever the audience is clean.
    """

    def __init__(
        self,
        run: RunContext,
        settings: AudienceSettings,
        progress: StreamProgress,
        *,
        lock_timeout: float,
        key_properties: tuple[str, ...],
        allow_key_change: bool,
        dependents: Sequence[int] = (),
    ) -> None:
        """Also check the stream's key properties; `dependents`: composed audiences it feeds.

        Other key properties than at the last sync are refused here, before any record, or
        (`allow_key_change`) the stored people are re-matched by their hashes when applying.
        """
        super().__init__(run, settings, progress, lock_timeout=lock_timeout)
        self.key_properties = key_properties
        self.dependents = tuple(dependents)
        # Only a stream that composed audiences plan from too keeps a source of its own.
        self.source: SourceRow | None = (
            self.store.source(settings.stream) if self.dependents else None
        )
        self.rematch = self.store.key_change(
            self.row.id,
            key_properties,
            allow=allow_key_change,
            stream=settings.stream,
            label=settings.label,
        )
        self.awaits_audiences = False
        self.reading = settings  # how the stream is read: the spec says
        # A simple audience's stream stages no selection (composed.py's streams do).
        self.selections: tuple[Selection, ...] = ()
        self.selection_groups: tuple[int, ...] = ()

    def _before_plan(self) -> None:
        """Withhold suppressed people (`excluded`); re-match to new key properties, once."""
        store, settings, audience = self.store, self.settings, self.row.id
        withheld = store.withhold_suppressed(audience)
        if withheld:
            self.progress.skipped[EXCLUDED] += withheld
            self.progress.staged_rows -= withheld
        if self.rematch:
            matched, stored = store.rematch(audience, self.key_properties)
            store.mark_dirty(audience)
            self.rematch = False
            self.run.logger.warning(
                "Audience %s: key properties changed (allow_key_change): %d of %d stored "
                "people re-matched by their identifier hashes; the others had other hashes or "
                "are not in this run.",
                settings.label,
                matched,
                stored,
            )

    def _remember(self, summary: PlanSummary | None, *, whole: bool) -> None:
        """Remember the stream's source as this apply leaves it, before anything is sent.

        From the plan where it says exactly how the source changes (`summary`: made
        against the confirmed members; see the store's `remember_*`), else from what is
        staged. The audience is dirty from then until its plan is confirmed.
        """
        if self.source is None:  # the audience itself is what its stream last said
            return
        store, audience, dirty = self.store, self.row.id, [self.row.id, *self.dependents]
        if summary is not None and not summary.confirmed:
            store.remember_first_plan(self.source, audience, whole=whole, dirty=dirty)
        elif summary is not None and self.row.uploaded_at is not None and not self.row.dirty:
            store.remember_planned(self.source, audience, dirty)
        else:
            store.remember_staged(self.source, audience, whole=whole, dirty=dirty)
        store.note_fresh(self.source, audience, whole=whole)  # this run's people: records
        self.awaits_audiences = True


def _tally(summary: PlanSummary) -> tuple[int, int, int]:
    """(people, leavers, leavers for want of consent) a plan found staged."""
    return summary.staged, summary.removals, summary.no_consent
