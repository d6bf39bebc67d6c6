"""The sink: one stream's records become staged people, then confirmed changes to its audience.

Per record: map and hash the identifiers, key the person, decide member or leaver, buffer.
Per drain: stage the buffer in the store; in incremental mode apply it at once. A snapshot is
applied when it is complete (ACTIVATE_VERSION, or the end of input), so removals come only from
a whole snapshot, and the removal guard can refuse the sync before anything is sent.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink

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
from target_tiktok_audiences.people import NO_CONSENT_REASON, Hashed, PeopleQueue, RecordSpec
from target_tiktok_audiences.planning import removal_refusal, should_hold
from target_tiktok_audiences.store import PlanSummary
from target_tiktok_audiences.tiktok.codes import NOT_FOUND
from target_tiktok_audiences.tiktok.mapping import Batch

if TYPE_CHECKING:
    from target_tiktok_audiences.settings import AudienceSettings
    from target_tiktok_audiences.target import TargetTikTokAudiences


DUPLICATE = "duplicate"


@dataclass
class StreamProgress:
    """One stream's progress through a run; outlives a sink replaced by a new SCHEMA.

    `totals` counts for the report, where every record read is counted once (see
    `AudienceSink.report_counts`). `staged_rows`: records staged since the last apply.
    """

    records_since_close: int = 0
    records_since_version: int = 0
    staged_rows: int = 0
    last_version: int | None = None
    seen_version: bool = False
    closed_any: bool = False
    skipped: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


class IgnoredStreamSink(BatchSink):
    """Receives a stream that `audiences` does not list, and drops it."""

    def process_record(self, record: dict, context: dict) -> None:
        """Drop the record."""

    def process_batch(self, context: dict) -> None:
        """Nothing to write."""


class AudienceSink(BatchSink):
    """Keeps one TikTok audience in step with one stream."""

    # Records per drain: each drain stages them (and in incremental mode sends them).
    MAX_SIZE_DEFAULT = 20000

    def __init__(
        self,
        target: TargetTikTokAudiences,
        stream_name: str,
        schema: dict,
        key_properties: list[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        self.owner = target
        settings = target.audience_settings(stream_name)
        if settings is None:  # the target routes unlisted streams to IgnoredStreamSink
            msg = f"stream {stream_name!r} has no audience"
            raise TargetError(msg)
        self.settings: AudienceSettings = settings
        self.snapshot = settings.sync_mode == "snapshot"
        self.store = target.store
        self.row = self.store.audience(stream_name, settings.target_key, settings.advertiser_ids)
        self.store.lock_audience(
            self.row.id, settings.label, float(target.config.get("store_lock_timeout", 60))
        )
        self.row = self.store.get_audience(self.row.id)  # another run may have synced meanwhile
        # Other key properties than at the last sync: refused here, before any record, or
        # (`allow_key_change`) the stored people are re-matched by their hashes when applying.
        self.rematch = self.store.key_change(
            self.row.id,
            tuple(self.key_properties or ()),
            allow=bool(target.config.get("allow_key_change")),
            stream=stream_name,
            label=settings.label,
        )
        spec = RecordSpec(
            stream_name,
            tuple(self.key_properties or ()),
            settings.membership_field,
            settings.consent_field,
            tuple(sorted(settings.identifier_fields.items())),
            settings.normalization,
        )
        self.progress = target.stream_progress(stream_name)
        # Builds the extractor: a bad identifier_fields mapping fails here, before any record.
        self.people = PeopleQueue(target.workers, spec, self.progress.totals["records"])
        # A new SCHEMA replaced an earlier sink of this stream: its records come first.
        for earlier in target.archived_sinks(stream_name):
            target.drain_one(earlier)

    # The SDK's defaults would drop `_sdc_deleted_at`, validate records we do not store and
    # parse timestamps we never read: we only look at identifier, key and flag fields.

    @property
    def include_sdc_metadata_properties(self) -> bool:
        """Keep `_sdc_deleted_at`, which marks a person who left the source."""
        return True

    def get_validator(self) -> None:
        """No JSON schema validation: bad identifier values are counted, not fatal."""
        return

    def _add_sdc_metadata_to_record(self, record: dict, message: dict, context: dict) -> None:
        """Read `_sdc_deleted_at` as the tap sent it; add nothing else."""

    def _parse_timestamps_in_record(self, record: dict, schema: dict, treatment: Any) -> None:
        """Timestamps are not read: nothing to parse."""

    # Records

    @property
    def has_unconfirmed_work(self) -> bool:
        """True while records have come that TikTok has not confirmed (an open snapshot)."""
        return self.progress.records_since_close > 0 or self.people.pending > 0

    @property
    def current_size(self) -> int:
        """Records read since the last drain."""
        return self.people.pending

    @property
    def is_full(self) -> bool:
        """Whether a drain is due: in incremental mode every `batch_size_rows` records.

        A snapshot is only applied once complete, and its records are staged as their hashes
        come back (the queue bounds what is in flight), so a drain would only make reading
        wait for the workers.
        """
        return not self.snapshot and super().is_full

    def process_record(self, record: dict, context: dict) -> None:
        """Read one record's key, exit signals and identifier values; hashing comes later."""
        self._count_records(1)
        hashed = self.people.add(record, self.owner.message_reader.line_number)
        if hashed is not None:
            self._stage(hashed)

    def takes_lines(self, count: int) -> bool:
        """Whether `count` more records fit before the next drain is due (a snapshot: always)."""
        return self.snapshot or self.current_size + count <= self.max_size

    def process_lines(self, first: int, lines: bytes, count: int) -> None:
        """Take RECORD lines of this stream unparsed: the workers parse them with the rest."""
        self._count_records(count)
        hashed = self.people.add_lines(first, lines, count)
        if hashed is not None:
            self._stage(hashed)

    def _count_records(self, count: int) -> None:
        self.owner.progress.records_read(count)
        progress = self.progress
        progress.records_since_close += count
        progress.records_since_version += count
        progress.totals["records"] += count

    def _stage(self, hashed: Hashed) -> None:
        people, skipped, invalid = hashed
        self.store.stage(self.row.id, people)
        self.progress.staged_rows += people.count
        self.progress.skipped.update(skipped)
        self.progress.invalid.update(invalid)
        self.record_counter_metric.increment(people.count + sum(skipped.values()))

    def process_batch(self, context: dict) -> None:
        """Stage the people read since the last drain; in incremental mode send them now."""
        for hashed in self.people.drain():
            self._stage(hashed)
        if not self.snapshot and self.store.staged_count(self.row.id):
            self.apply(complete=False)

    # Snapshot boundaries

    def activate_version(self, new_version: int) -> None:
        """Close the snapshot when records came since the last version, or it repeats."""
        if not self.snapshot:
            return
        repeat = self.progress.seen_version and self.progress.last_version == new_version
        if self.progress.records_since_version or repeat:
            self.apply(complete=True)
        self.progress.records_since_version = 0
        self.progress.seen_version = True
        self.progress.last_version = new_version

    def finish_input(self, *, end_proves_snapshot: bool) -> None:
        """End of input: apply an open snapshot, or say why the audience is left alone."""
        if not self.snapshot:
            return
        if self.progress.records_since_close:
            if end_proves_snapshot:
                self.apply(complete=True)
            else:
                self.owner.logger.warning(
                    "Stream %s ended without ACTIVATE_VERSION%s and snapshot_end is "
                    "activate_version: adding new people but removing nobody.",
                    self.stream_name,
                    " after its records (its tap sends one only before them, as singer-sdk "
                    "taps do: set snapshot_end to end_of_input for it)"
                    if self.progress.seen_version
                    else "",
                )
                self.apply(complete=False)
        elif not self.progress.closed_any:
            self.owner.logger.warning(
                "Stream %s sent no records and no closing ACTIVATE_VERSION: audience %s left "
                "alone (an incremental tap with nothing new looks like this; an empty snapshot "
                "must end with ACTIVATE_VERSION).",
                self.stream_name,
                self.settings.label,
            )

    # Applying staged people to the audience

    def apply(self, *, complete: bool) -> None:
        """Plan, guard, hold or send, and confirm: everything staged for this audience.

        Every way this can end the run is recorded as the audience's last result, `failed`
        (`status` then says FAILED). An audience created by name that TikTok no longer has is
        created again once, and filled with everyone it should hold.
        """
        started = time.monotonic()
        requests_before = self.owner.client.requests_sent
        audience = self.row.id
        try:
            try:
                self._apply(audience, complete=complete)
            except AudienceDeletedError as exc:
                self._forget_deleted(exc.audience_id)
                self._apply(audience, complete=complete)
        except BaseException as exc:
            self._record_failure(audience, exc)
            raise
        finally:
            self.store.clear_staged(audience)
            self.progress.staged_rows = 0
            self.progress.records_since_close = 0
            self.progress.closed_any = True
            self.progress.totals["requests"] += self.owner.client.requests_sent - requests_before
            self.progress.seconds += time.monotonic() - started
        self.store.record_result(audience, "ok", None, self.report_counts())

    def _record_failure(self, audience: int, exc: BaseException) -> None:
        """Record the failed sync; a store that fails too must not hide why the run ended."""
        if isinstance(exc, TargetError):
            error = str(exc)
        else:
            error = f"the run ended ({type(exc).__name__}) before this sync was confirmed"
        with contextlib.suppress(Exception):
            self.store.record_result(audience, "failed", error, None)

    def _forget_deleted(self, audience_id: str) -> None:
        """TikTok no longer has the audience: hold its people for a new one (see the store)."""
        held = self.store.forget_deleted_audience(self.row.id)
        self.row = self.store.get_audience(self.row.id)
        self.owner.logger.warning(
            "Audience %s (%s, stream %s) no longer exists on TikTok (deleted?): creating it "
            "again and filling it with the %d people the store had confirmed, with this run's "
            "changes. Point your ad groups at the new audience.",
            self.settings.label,
            audience_id,
            self.stream_name,
            held,
        )

    def _apply(self, audience: int, *, complete: bool) -> None:
        store, settings = self.store, self.settings
        if self.rematch:
            matched, stored = store.rematch(audience, tuple(self.key_properties or ()))
            self.rematch = False
            self.owner.logger.warning(
                "Audience %s: key properties changed (allow_key_change): %d of %d stored "
                "people re-matched by their identifier hashes; the others had other hashes or "
                "are not in this run.",
                settings.label,
                matched,
                stored,
            )
        snapshot = self.snapshot and complete
        uploaded = self.row.uploaded_at is not None
        summary: PlanSummary | None = None
        # This apply's records as people (see `_count_apply`), when `hold` reduced them first.
        tally: tuple[int, int, int] | None = None
        # People held for a first upload: below min_audience_size, or of a deleted audience.
        if not uploaded and (settings.min_audience_size or store.count_pending(audience)):
            if store.count_pending(audience) or store.count_members(audience):
                people = store.hold(audience, snapshot=snapshot)  # with those held before
                tally = store.staged_people(audience)
            else:
                # Nobody held before: the plan counts the people, who then need not be moved
                # into `pending` and back (seconds, at a million people).
                summary = store.plan(audience, snapshot=self.snapshot, complete=complete)
                people, tally = summary.people, _tally(summary)
            if should_hold(people, settings.min_audience_size, uploaded=False):
                if summary is not None:
                    store.hold(audience, snapshot=snapshot)
                self._count_apply(tally, held=people)
                self.owner.logger.info(
                    "Audience %s holds %d people, under min_audience_size %d: nothing sent yet.",
                    settings.label,
                    people,
                    settings.min_audience_size,
                )
                return
            if summary is None:
                store.release_pending(audience)
        if not uploaded and not self.owner.dry_run and not store.count_members(audience):
            check_unknown_audience(
                self.owner.client,
                store,
                settings,
                self.row,
                self.owner.logger,
                rebuild=self.snapshot and bool(self.owner.config.get("rebuild_when_store_empty")),
            )
        if summary is None:
            summary = store.plan(audience, snapshot=self.snapshot, complete=complete)
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
        self.owner.progress.changes_planned(summary.add_rows + summary.delete_rows)
        self._send(audience, summary)
        self._count_apply(tally or _tally(summary), summary=summary)

    def _count_apply(
        self,
        tally: tuple[int, int, int],
        *,
        held: int | None = None,
        summary: PlanSummary | None = None,
    ) -> None:
        """Count one apply's records: people held, or sent (`summary`), leavers, repeats.

        `tally` is (people, leavers, leavers for want of consent) among the records staged
        since the last apply, each person's last record only: the other records are
        duplicates. Leavers for want of consent count as `no_consent`, the other leavers as
        `removed`; a sent plan also removes its absent people. `carried` counts the people
        held or sent (in `held` or `added`) whose records came in an earlier run: the
        people placed less this apply's members and those held by an earlier apply of this
        run. A negative difference is people held earlier in this run whose records came
        again: duplicates too.
        """
        totals, skipped = self.progress.totals, self.progress.skipped
        people, leavers, no_consent = tally
        duplicates = self.progress.staged_rows - people
        if no_consent:
            skipped[NO_CONSENT_REASON] += no_consent
        totals["removed"] += leavers - no_consent
        if summary is None:
            placed = held or 0
        else:
            placed = summary.joined + summary.changed + summary.unchanged
            totals["added"] += summary.joined
            totals["changed"] += summary.changed
            totals["unchanged"] += summary.unchanged
            totals["removed"] += summary.absent
            totals["absent"] += summary.absent
        carried = placed - (people - leavers) - totals["held"]
        totals["held"] = held or 0
        if carried < 0:
            duplicates -= carried
        else:
            totals["carried"] += carried
        if duplicates:
            skipped[DUPLICATE] += duplicates

    def _send(self, audience: int, summary: PlanSummary) -> None:
        """Deletes, then adds, each confirmed in the store batch by batch."""
        client, store = self.owner.client, self.store
        audience_id = ""
        if summary.add_rows or summary.delete_rows:
            audience_id = resolve_audience(client, store, self.settings, self.row)
        for action in ("delete", "add"):

            def confirmed(batch: Batch, act: str = action) -> None:
                store.confirm_planned(audience, act, batch.first, batch.last)
                self.owner.progress.changes_confirmed(batch.size)

            batches = self._batches(audience, action)
            try:
                client.map_all(
                    action, self.settings.advertiser_ids, audience_id, batches, confirmed
                )
            except TikTokAPIError as exc:
                if exc.code == NOT_FOUND:
                    raise audience_deleted(self.settings, audience_id) from None
                raise
            if action == "delete" and (summary.left or summary.changed):
                store.confirm_kept_deletes(audience)  # only leavers and changes plan deletes
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
            size = self.owner.client.batch_size
            batch = self.store.next_batch(audience, action, after, size)
            if batch is None:
                return
            self.owner.progress.changes_sent(batch.size)
            yield batch
            if batch.size < size:
                return
            after = batch.last

    # Reporting

    def report_counts(self) -> dict[str, Any]:
        """Counts for the run report and the store's last-sync record.

        Every record read counts once, so that, with S the sum of `skipped`:

            records = added + changed + unchanged + held + removed + S - absent - carried

        `records`: the stream's RECORD messages this audience's sink received in this run.
        A record counts as the person it adds, changes, leaves unchanged or holds; as a
        removal (`_sdc_deleted_at`, membership false), in `removed`, whether or not the
        person was a member; or in `skipped` by reason (a person's earlier records in one
        apply as `duplicate`: the last one wins; consent false, missing or null as
        `no_consent`, even where it removes a member). Two counts in the report are people
        rather than records, and the sum takes them out again: `absent`, the people a
        complete snapshot removes because no record of theirs was staged (in `removed`; a
        skipped record stages nothing), and `carried`, the people held by an earlier run
        and now held again or sent (in `held` or `added`). `held` is the people waiting
        for `min_audience_size` after the last apply.
        """
        totals = self.progress.totals
        return {
            "records": totals["records"],
            "added": totals["added"],
            "removed": totals["removed"],
            "changed": totals["changed"],
            "unchanged": totals["unchanged"],
            "held": totals["held"],
            "absent": totals["absent"],
            "carried": totals["carried"],
            "skipped": dict(self.progress.skipped),
            "invalid_values": dict(self.progress.invalid),
            "requests": totals["requests"],
            "seconds": round(self.progress.seconds, 3),
        }


def _tally(summary: PlanSummary) -> tuple[int, int, int]:
    """(people, leavers, leavers for want of consent) a plan found staged."""
    return summary.staged, summary.removals, summary.no_consent
