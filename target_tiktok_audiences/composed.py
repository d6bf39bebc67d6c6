"""Composed audiences: planned from their sources, the union of streams less exclusions.

A stream that feeds a composed audience (or excludes people from one) is read into its source:
its sink stages the records, and `SourceSync` remembers them as the stream's latest snapshot
(or, incremental, changes it). Once the input has ended, `ComposedSync` stages what each
affected audience should hold, from its sources as they now are, and syncs that like any
snapshot: hold, guard, send, confirm. An audience is affected when one of its streams came in
this run, or when its last sync did not finish (it is dirty).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from target_tiktok_audiences.people import NO_CONSENT_REASON
from target_tiktok_audiences.settings import (
    AudienceDefinition,
    AudienceSettings,
    SourceDefinition,
)
from target_tiktok_audiences.store import PlanSummary, SourceRow
from target_tiktok_audiences.sync import (
    DUPLICATE,
    POLICIES,
    AudienceSync,
    Policy,
    RunContext,
    StreamProgress,
)

EXCLUDED = "excluded"


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


def composed_settings(definition: AudienceDefinition) -> AudienceSettings:
    """What the sync of a composed audience needs of its definition.

    Its people are staged as a whole snapshot, whatever the modes of its streams.
    """
    return AudienceSettings(
        stream=definition.key,
        audience_id=definition.audience_id,
        audience_name=definition.audience_name,
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
    ) -> None:
        """`reading`: how the stream is read; `dependents`: the audiences planned from it."""
        self.run = run
        self.store = run.store
        self.source = source
        self.reading = reading
        self.policy: Policy = POLICIES[reading.sync_mode]
        self.progress = progress
        self.dependents = tuple(dependents)
        self.awaits_audiences = False
        # Whether every snapshot of this stream in the run was complete: removals wait for it.
        self.complete = True
        self.label = f"(the audiences of stream {source.stream})"

    @property
    def group(self) -> int:
        """Where the sink stages the stream's people: the source's own group."""
        return self.source.group

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
        store.remember_staged(self.source, group, whole=whole, dirty=self.dependents)
        store.note_fresh(self.source, group)
        people, leavers, no_consent = store.staged_people(group)
        progress = self.progress
        if progress.staged_rows > people:
            progress.skipped[DUPLICATE] += progress.staged_rows - people
        if no_consent:
            progress.skipped[NO_CONSENT_REASON] += no_consent
        progress.totals["removal_records"] += leavers - no_consent
        store.clear_staged(group)
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
    ) -> None:
        """Find and lock the audience; remember which streams it is the union of.

        `streams`: the included streams' progress in this run, for the report;
        `composition`: their names, for `status`.
        """
        super().__init__(run, settings, StreamProgress(), lock_timeout=lock_timeout)
        self.store.set_composition(self.row.id, tuple(composition))
        self.included = tuple(included)
        self.excluded = tuple(excluded)
        self.streams = tuple(streams)
        self._fresh = 0
        self._excluded = 0

    def sync(self, *, complete: bool) -> None:
        """Stage what the audience should hold now, then sync it as a snapshot."""
        self._fresh, self._excluded = self.store.stage_composed(
            self.row.id, self.included, self.excluded
        )
        self.apply(complete=complete)

    def _count_apply(
        self,
        tally: tuple[int, int, int],
        *,
        held: int | None = None,
        summary: PlanSummary | None = None,
    ) -> None:
        """Count this apply: people sent or held, and which of them are this run's records."""
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
        if self._excluded:
            skipped[EXCLUDED] += self._excluded
        # People who left without a removal record of theirs in this run.
        absent = max(totals["left"] - removals, 0)
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
