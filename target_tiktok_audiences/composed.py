"""Composed audiences: planned from their sources, the union of streams less exclusions.

A stream that feeds a composed audience (or excludes people from one) is read into its source:
its sink stages the records, and `SourceSync` remembers them as the stream's latest snapshot
(or, incremental, changes it). Once the input has ended, `ComposedSync` stages what each
affected audience should hold, from its sources as they now are, and syncs that like any
snapshot: hold, guard, send, confirm. An audience is affected when one of its streams came in
this run, or when its last sync did not finish (it is dirty). Each is planned first (`plan`);
their changes are then sent together (merged.py), and each sync ends once they are confirmed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from target_tiktok_audiences.accounting import DUPLICATE, EXCLUDED, StreamProgress
from target_tiktok_audiences.audiences import resolve_audience
from target_tiktok_audiences.errors import AudienceDeletedError
from target_tiktok_audiences.people import NO_CONSENT_REASON, Selection
from target_tiktok_audiences.policies import POLICIES, Policy
from target_tiktok_audiences.settings import (
    AudienceDefinition,
    AudienceSettings,
    SourceDefinition,
)
from target_tiktok_audiences.store import PlanSummary, SourceRow
from target_tiktok_audiences.sync import AudienceSync, RunContext

FILTERED = "filtered"


def is_plain(definition: AudienceDefinition) -> bool:
    """The simple form at its simplest: one stream, read by this spec, nothing composed.

    Such an audience is synced straight from its stream's sink (`sync.StreamSync`).
    """
    return (
        definition.simple
        and not definition.exclude_streams
        and not definition.where
        and definition.split_by is None
    )


def selection_of(definition: AudienceDefinition) -> Selection:
    """The records of its streams that an audience picks: its `where` and `split_by`."""
    return Selection(definition.where, definition.split_by)


def selection_text(definition: AudienceDefinition) -> str:
    """Its selection as the store names it ("" when it picks every record)."""
    if not definition.where and definition.split_by is None:
        return ""
    return json.dumps(
        {"where": [[p, list(v)] for p, v in definition.where], "split_by": definition.split_by},
        sort_keys=True,
        separators=(",", ":"),
    )


def composed_settings(definition: AudienceDefinition, split: str | None) -> AudienceSettings:
    """What the sync of a composed audience (of one `split_by` value) needs of its definition.

    Its people are staged as a whole snapshot, whatever the modes of its streams.
    """
    name = definition.audience_name if split is None else definition.name_for(split)
    return AudienceSettings(
        stream=definition.key,
        audience_id=definition.audience_id,
        audience_name=name,
        advertiser_ids=definition.advertiser_ids,
        identifier_fields={},
        sync_mode="snapshot",
        membership_field=None,
        consent_field=None,
        min_audience_size=definition.min_audience_size,
        max_removal_fraction=definition.max_removal_fraction,
    )


class SourceSync:
    """One stream read into its source, for the composed audiences planned from it.

    Each apply (a complete snapshot, or an incremental drain) changes the source at once and
    marks its audiences dirty; they are synced when the input has ended. Until then the
    stream's records are not confirmed: `awaits_audiences` holds the tap's STATE back.
    """

    def __init__(
        self,
        run: RunContext,
        source: SourceRow,
        reading: SourceDefinition,
        progress: StreamProgress,
        dependents: Sequence[int],
        selections: Sequence[tuple[Selection, str, SourceRow]] = (),
    ) -> None:
        """`reading`: how the stream is read; `dependents`: the audiences planned from it.

        `selections`: the stream's records that filtered or fanned-out audiences pick, each
        with its text and its source of its own.
        """
        self.run = run
        self.store = run.store
        self.source = source
        self.reading = reading
        self.selections = tuple(selection for selection, _, _ in selections)
        self._selected = tuple((text, row) for _, text, row in selections)
        self.selection_groups = tuple(row.group for _, row in self._selected)
        self.policy: Policy = POLICIES[reading.sync_mode]
        self.progress = progress
        self.dependents = tuple(dependents)
        self.awaits_audiences = False
        # Whether every snapshot of this stream in the run was complete: removals wait for it.
        self.complete = True

    @property
    def group(self) -> int:
        """Where the sink stages the stream's people: the source's own group."""
        return self.source.group

    @property
    def label(self) -> str:
        """How logs name what the stream is synced into."""
        return f"(the audiences of stream {self.source.stream})"

    def apply(self, *, complete: bool) -> None:
        """Remember what is staged as the stream's source, and count its records' fate.

        Of the staged records, each person's last one counts; the earlier ones are
        `duplicate`. Leavers for want of consent are `no_consent`; other leavers are removal
        records, counted in each audience's `removed`.
        """
        store, group = self.store, self.group
        whole = self.policy.whole(complete=complete)
        if self.policy.snapshot and not complete:
            self.complete = False
        people, leavers, no_consent = store.remember_staged(
            self.source, group, whole=whole, dirty=self.dependents
        )
        store.note_fresh(self.source, group, whole=whole)
        progress = self.progress
        if progress.staged_rows > people:
            progress.skipped[DUPLICATE] += progress.staged_rows - people
        if no_consent:
            progress.skipped[NO_CONSENT_REASON] += no_consent
        progress.totals["removal_records"] += leavers - no_consent
        store.retire_staged(group)
        for text, selected in self._selected:
            store.remember_staged(selected, selected.group, whole=whole, dirty=self.dependents)
            store.note_fresh(selected, selected.group, whole=whole)
            progress.filtered[text] += store.filtered_people(selected.group)
            store.retire_staged(selected.group)
        progress.staged_rows = 0
        progress.records_since_close = 0
        progress.closed_any = True
        self.awaits_audiences = True


class ComposedSync(AudienceSync):
    """A composed audience: its included sources' people, less every excluded person.

    Its report counts the records of its included streams in this run: each as the person it
    adds, changes, leaves unchanged or holds, as a removal, or as skipped (by its stream's
    reasons, or `excluded`). People from sources as they last were are not records: the
    report carries them (`carried`), as it does the people who leave (`absent`).
    """

    def __init__(
        self,
        run: RunContext,
        settings: AudienceSettings,
        *,
        lock_timeout: float,
        included: Sequence[SourceRow],
        excluded: Sequence[SourceRow],
        streams: Sequence[StreamProgress],
        composition: Sequence[str],
        selection: str = "",
        split: str | None = None,
    ) -> None:
        """Find and lock the audience; remember which streams it is the union of.

        `streams`: the included streams' progress in this run, for the report (none for the
        audience of one `split_by` value, which counts the records of its own people);
        `composition`: their names, for `status`; `selection`: the text of the records it
        picks; `split`: its `split_by` value.
        """
        super().__init__(run, settings, StreamProgress(), lock_timeout=lock_timeout)
        self.store.set_composition(self.row.id, tuple(composition), split)
        self.selection = selection
        self.split = split
        self.included = tuple(included)
        self.excluded = tuple(excluded)
        self.streams = tuple(streams)
        self._fresh = 0
        self._excluded = 0
        # The plan whose changes wait for the merged send, and the TikTok audience they go to.
        self.planned: PlanSummary | None = None
        self.audience_id = ""
        self._complete = True
        self._merging = False  # planning for a merged send: `_send` waits
        self._counted: tuple[tuple[int, int, int], PlanSummary] | None = None

    def plan(self, *, complete: bool) -> bool:
        """Stage what the audience should hold now, plan it, hold or guard it, resolve it.

        Returns whether changes wait in `planned` for the merged send (merged.py), which then
        ends the sync (`finish`). Otherwise the sync ends here: held, nothing to send, or an
        audience TikTok deleted, created again and filled on its own (as `apply` does). A
        failure, a removal guard's refusal too, is recorded as this sync's and raised.
        """
        audience = self.row.id
        self._stage(plan_now=True)
        self._complete = complete
        self._merging = True
        try:
            with self._measured():
                self._apply(audience, complete=complete)
        except AudienceDeletedError as exc:
            self._merging = False
            self._forget_deleted(exc.audience_id)
            self.apply(complete=complete)
            return False
        except BaseException as exc:
            self._end(exc)
            raise
        finally:
            self._merging = False
        if self.planned is None:
            self._end(None)
        return self.planned is not None

    def _stage(self, *, plan_now: bool) -> None:
        """Stage what the audience should hold (`stage_composed`; `plan_now`: plan comes next)."""
        self._fresh, self._excluded = self.store.stage_composed(
            self.row.id, self.included, self.excluded, self.split, plan_now=plan_now
        )

    def apply(self, *, complete: bool) -> None:
        """Sync on its own, as any audience does, from its people staged again.

        A first plan may have staged nobody (`stage_composed` planned it from the sources).
        """
        self._stage(plan_now=False)
        super().apply(complete=complete)

    def _send(self, audience: int, summary: PlanSummary) -> None:
        """Send now; or, planning for a merged send, resolve the audience and keep the plan."""
        if not self._merging or not (summary.add_rows or summary.delete_rows):
            super()._send(audience, summary)
            return
        self.audience_id = resolve_audience(self.run.client, self.store, self.settings, self.row)
        self.planned = summary

    def send_planned(self) -> None:
        """Send what `plan` planned on its own, as any audience's sync does, and end the sync."""
        if self.planned is None:
            return
        try:
            with self._measured():
                super()._send(self.row.id, self.planned)
        except AudienceDeletedError as exc:
            self.planned = None
            self._forget_deleted(exc.audience_id)
            self.apply(complete=self._complete)
            return
        except BaseException as exc:
            self._end(exc)
            raise
        self._confirmed()

    def send_alone(self) -> None:
        """Sync on its own after all: a merged send met an audience that TikTok deleted.

        Planned again against what is confirmed now, so nothing a merged batch confirmed is
        sent again. The report keeps the first plan's counts, unless this audience is the
        deleted one: created again, it counts that sync (as `apply` does).
        """
        self.planned = None
        self.apply(complete=self._complete)

    def _forget_deleted(self, audience_id: str) -> None:
        """As any sync does; what the first plan counted no longer stands."""
        self._counted = None
        super()._forget_deleted(audience_id)

    def finish(self) -> None:
        """The merged send confirmed every planned change: the sync ends well."""
        self.store.finish_upload(self.row.id)
        self.row = self.store.get_audience(self.row.id)
        self._confirmed()

    def _confirmed(self) -> None:
        """Count the plan whose changes TikTok confirmed, and end the sync well."""
        if self._counted is not None:
            tally, summary = self._counted
            self._counted = None
            self._count_apply(tally, summary=summary)
        self._end(None)

    def abandon(self, exc: BaseException) -> None:
        """The run ends before the planned changes were confirmed: the sync failed."""
        if self.planned is not None:
            self._end(exc)

    def _end(self, failure: BaseException | None) -> None:
        """End the sync, as `apply` ends it: its result recorded, what it staged forgotten."""
        self.planned = None
        if failure is not None:
            self._record_failure(self.row.id, failure)
        self.store.clear_staged(self.row.id)
        self.progress.staged_rows = 0
        self.progress.records_since_close = 0
        self.progress.closed_any = True
        if failure is None:
            self.store.record_sync(self.row.id, "ok", None, self.report_counts())

    @contextlib.contextmanager
    def _measured(self) -> Iterator[None]:
        """Count the seconds and requests of what runs inside in the audience's report."""
        started, before = time.monotonic(), self.run.client.requests_sent
        try:
            yield
        finally:
            self.progress.totals["requests"] += self.run.client.requests_sent - before
            self.progress.seconds += time.monotonic() - started

    def _count_apply(
        self,
        tally: tuple[int, int, int],
        *,
        held: int | None = None,
        summary: PlanSummary | None = None,
    ) -> None:
        """Count this apply: people sent or held, and which of them are this run's records.

        A plan whose changes wait for the merged send is counted once they are confirmed;
        planned again to send alone (`send_alone`), the first plan still counts.
        """
        if summary is not None:
            if self._merging and self.planned is not None:
                self._counted = (tally, summary)
                return
            if self._counted is not None:
                tally, summary = self._counted
                self._counted = None
        totals = self.progress.totals
        if summary is None:
            totals["held"] = held or 0
            totals["carried"] += (held or 0) - self._fresh
            return
        totals["held"] = 0
        totals["added"] += summary.joined
        totals["changed"] += summary.changed
        totals["unchanged"] += self._fresh - summary.fresh_joined - summary.fresh_changed
        totals["carried"] += (
            summary.joined - summary.fresh_joined + summary.changed - summary.fresh_changed
        )
        totals["left"] += summary.left
        if summary.left:
            totals["absent"] += summary.left - self.store.fresh_leavers(self.row.id, self.included)

    def report_counts(self) -> dict[str, Any]:
        """The report's counts (see `AudienceSync.report_counts` for the sum they keep)."""
        totals = self.progress.totals
        skipped: Counter[str] = Counter()
        invalid: Counter[str] = Counter()
        records = removals = 0
        for stream in self.streams:
            records += stream.totals["records"]
            removals += stream.totals["removal_records"]
            skipped.update(stream.skipped)
            invalid.update(stream.invalid)
            if self.selection and stream.filtered[self.selection]:
                skipped[FILTERED] += stream.filtered[self.selection]
        if not self.streams:  # one split value's audience: its own people's records
            records = self._fresh + self._excluded
        if self._excluded:
            skipped[EXCLUDED] += self._excluded
        absent = totals["absent"]  # people who left without a record of theirs in this run
        return {
            "records": records,
            "added": totals["added"],
            "removed": removals + absent,
            "changed": totals["changed"],
            "unchanged": totals["unchanged"],
            "held": totals["held"],
            "absent": absent,
            "carried": totals["carried"],
            "skipped": dict(skipped),
            "invalid_values": dict(invalid),
            "requests": totals["requests"],
            "seconds": round(self.progress.seconds, 3),
        }
