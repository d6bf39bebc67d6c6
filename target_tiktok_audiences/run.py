"""One run's audiences: which sync each stream stages for, and the composed ones at the end.

A simple audience's stream is synced by that audience (`sync.StreamSync`) as its snapshots
close; any other stream is read into its source (`composed.SourceSync`), and the composed
audiences it feeds or excludes from are synced once the input has ended: all planned first,
then their changes sent together (`merged.py`), then shared and extended (`sharing.py`). The
report has one line per audience.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from target_tiktok_audiences.accounting import StreamProgress
from target_tiktok_audiences.composed import (
    FILTERED,
    ComposedSync,
    SourceSync,
    composed_settings,
    is_plain,
    selection_of,
    selection_text,
)
from target_tiktok_audiences.errors import RemovalGuardError, TargetError
from target_tiktok_audiences.merged import send_planned
from target_tiktok_audiences.reporting import Progress, audience_line
from target_tiktok_audiences.settings import (
    AudienceDefinition,
    AudienceSettings,
    Definitions,
    RunSettings,
)
from target_tiktok_audiences.sharing import share_and_extend
from target_tiktok_audiences.store import AudienceRow, MembershipStore
from target_tiktok_audiences.sync import RunContext, StreamSync
from target_tiktok_audiences.tiktok.dry_run import DryRunClient
from target_tiktok_audiences.tiktok.http import TikTokClient
from target_tiktok_audiences.workers import Workers


def open_run(settings: RunSettings, logger: logging.Logger) -> RunContext:
    """Open what the run's syncs share, as the settings say.

    A real run is recorded in the store's history from here. A dry run plans on a throwaway
    copy of the store and writes each request it would send to `dry_run_output`, with a
    client that sends nothing.
    """
    workers = Workers()
    store = MembershipStore.open(
        settings.membership_store,
        throwaway=settings.dry_run,
        timeout=settings.store_timeout,
        workers=workers,
    )
    # A dry run confirms nothing: no history (nor the schema lock `start_run` takes, which a
    # PostgreSQL dry run, one long transaction, would hold until it ends).
    if not settings.dry_run:
        store.start_run(settings.history_days)
    options = settings.client_options()
    client: TikTokClient
    if settings.dry_run:
        path = Path(settings.dry_run_output)
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        output = path.open("w", encoding="utf-8")
        client = DryRunClient(output, settings.api_url, None, options, workers=workers)
    else:
        client = TikTokClient(settings.api_url, settings.access_token, options, workers=workers)
    return RunContext(
        store=store,
        client=client,
        workers=workers,
        progress=Progress(logger),
        logger=logger,
        dry_run=settings.dry_run,
        rebuild_when_store_empty=settings.rebuild_when_store_empty,
    )


class AudienceRun:
    """The syncs of one run, by stream and by composed audience."""

    def __init__(
        self,
        context: RunContext,
        definitions: Definitions,
        settings: RunSettings,
        simple_settings: Callable[[str], AudienceSettings | None],
    ) -> None:
        """`simple_settings`: a simple audience's settings by its stream (None: not one)."""
        self.context = context
        self.definitions = definitions
        self.settings = settings
        self.simple_settings = simple_settings
        self._progress: dict[str, StreamProgress] = {}
        self._syncs: dict[str, StreamSync | SourceSync] = {}
        self._composed: dict[tuple[str, str | None], ComposedSync] = {}

    def sync_of(self, stream: str, key_properties: tuple[str, ...]) -> StreamSync | SourceSync:
        """What a new sink of `stream` stages for: its simple audience, or its source.

        A stream that is a simple audience's (its key, nothing composed, and no other
        audience filters it) is synced by that audience; any other stream is read into its
        source for the composed audiences it feeds or excludes from, synced once the input
        has ended. The stream's progress is shared by every sink it gets in this run.
        """
        definitions = self.definitions.audiences_of(stream)
        dependents = [
            row.id for d in definitions if not self._is_plain(d) for row in self._rows_of(d)
        ]
        progress = self._progress.setdefault(stream, StreamProgress())
        sync: StreamSync | SourceSync
        if any(self._is_plain(d) for d in definitions):
            settings = self.simple_settings(stream)
            if settings is None:
                msg = f"stream {stream!r} has no audience"
                raise TargetError(msg)
            sync = StreamSync(
                self.context,
                settings,
                progress,
                key_properties=key_properties,
                lock_timeout=self.settings.store_lock_timeout,
                allow_key_change=self.settings.allow_key_change,
                dependents=dependents,
            )
        else:
            selections = {
                selection_text(d): (selection_of(d), selection_text(d))
                for d in definitions
                if stream in d.streams and selection_text(d)
            }
            sync = SourceSync(
                self.context,
                self.context.store.source(stream),
                self.definitions.source(stream),
                progress,
                dependents,
                [
                    (sel, text, self.context.store.source(stream, text))
                    for sel, text in selections.values()
                ],
            )
        self._syncs[stream] = sync
        return sync

    def _is_plain(self, definition: AudienceDefinition) -> bool:
        """Synced straight from its stream's sink: simple, and its stream filtered by nobody."""
        if not is_plain(definition):
            return False
        stream = definition.streams[0]
        return not any(
            selection_text(d) and stream in d.streams for d in self.definitions.audiences_of(stream)
        )

    def _rows_of(self, definition: AudienceDefinition) -> list[Any]:
        """The store's audiences of a composed definition known so far (one per split value)."""
        if definition.split_by is None:
            return [self._composed_sync(definition, None).row]
        return self.context.store.audiences_of_key(definition.key)

    def _composed_sync(self, definition: AudienceDefinition, split: str | None) -> ComposedSync:
        """The sync of a composed audience (of one split value), made and locked on first use."""
        sync = self._composed.get((definition.key, split))
        if sync is None:
            text = selection_text(definition)
            sync = self._composed[(definition.key, split)] = ComposedSync(
                self.context,
                composed_settings(definition, split),
                lock_timeout=self.settings.store_lock_timeout,
                included=[self.context.store.source(s, text) for s in definition.streams],
                excluded=[self.context.store.source(s) for s in definition.exclude_streams],
                streams=[self._progress.setdefault(s, StreamProgress()) for s in definition.streams]
                if split is None
                else [],
                composition=definition.streams,
                selection=text,
                split=split,
            )
        return sync

    def sync_composed(self) -> None:
        """Once the input has ended: sync each composed audience that needs it.

        One needs it when one of its streams was applied in this run, or when its last
        sync did not finish (dirty). Removals wait for every snapshot of its streams in this
        run to be complete. Under `split_by`, each value its sources now have is an audience
        (created on first sight), and so is each value the store knows: one no longer seen
        is emptied, through the removal guard.

        Every such audience is planned (held, guarded, its TikTok audience resolved) before
        any is sent; their changes then go out together (`merged.send_planned`). An audience
        whose removal guard refuses sends nothing, the others are sent, and then the refusal
        ends the run. Any other failure ends it at once, every audience not yet confirmed
        recorded as failed.
        """
        planned: list[ComposedSync] = []
        refusal: RemovalGuardError | None = None
        try:
            for composed, complete in self._affected():
                try:
                    if composed.plan(complete=complete):
                        planned.append(composed)
                except RemovalGuardError as exc:
                    refusal = refusal or exc
            send_planned(self.context, planned)
        except BaseException as exc:
            for waiting in planned:
                waiting.abandon(exc)
            raise
        if refusal is not None:
            raise refusal
        for sync in self._syncs.values():
            sync.awaits_audiences = False

    def _affected(self) -> Iterator[tuple[ComposedSync, bool]]:
        """Each composed audience to sync now, and whether its streams' snapshots are complete."""
        for definition in self.definitions.audiences.values():
            if self._is_plain(definition):
                continue
            streams = (*definition.streams, *definition.exclude_streams)
            came = any(self._progress[s].closed_any for s in streams if s in self._progress)
            if not came and not self.context.store.is_dirty(definition.key):
                continue
            complete = all(
                sync.complete for s in streams if isinstance(sync := self._syncs.get(s), SourceSync)
            )
            values: Sequence[str | None] = [None]
            if definition.split_by is not None:
                text = selection_text(definition)
                seen = {
                    value
                    for s in definition.streams
                    for value in self.context.store.split_values(self.context.store.source(s, text))
                }
                known = {r.split_value for r in self.context.store.audiences_of_key(definition.key)}
                values = sorted(v for v in seen | known if v is not None)
            for value in values:
                yield self._composed_sync(definition, value), complete

    def share_and_extend(self) -> list[str]:
        """Shares and lookalikes of the audiences synced in this run; each refusal's reason."""
        synced: dict[str, list[AudienceRow]] = {}
        for sync in self._syncs.values():
            if isinstance(sync, StreamSync):
                synced.setdefault(sync.settings.stream, []).append(sync.row)
        for (key, _), composed in self._composed.items():
            synced.setdefault(key, []).append(composed.row)
        refused: list[str] = []
        for definition in self.definitions.audiences.values():
            if definition.share_with_advertiser_ids or definition.lookalike:
                rows = [
                    self.context.store.get_audience(r.id) for r in synced.get(definition.key, [])
                ]
                refused += share_and_extend(
                    self.context.client, self.context.store, definition, rows
                )
        return refused

    def report(self) -> None:
        """One line per audience on stderr: simple ones, then composed ones."""
        for stream, simple in self._syncs.items():
            if isinstance(simple, StreamSync):
                self._report_line(simple.settings.label, stream, simple.report_counts())
        for definition in self.definitions.audiences.values():
            synced = [
                sync
                for (key, _), sync in self._composed.items()
                if key == definition.key and sync.progress.closed_any
            ]
            for sync in synced:
                self._report_line(sync.settings.label, definition.key, sync.report_counts())
            if definition.split_by is not None and synced:
                streams = [
                    self._progress.setdefault(s, StreamProgress()) for s in definition.streams
                ]
                counts = [sync.report_counts() for sync in synced]
                rest = unassigned_counts(streams, selection_text(definition), counts)
                self._report_line(str(definition.audience_name), definition.key, rest)

    def _report_line(self, label: str, key: str, counts: dict[str, Any]) -> None:
        self.context.logger.info(audience_line(label, key, counts, dry_run=self.context.dry_run))


def unassigned_counts(
    streams: Sequence[StreamProgress], selection: str, values: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The report of a `split_by` audience's records that no value's audience counts.

    Each value's audience counts its own people's records; this counts the rest of its
    streams' records in this run: skipped ones (`filtered` among them: no value, or not
    picked by `where`) and removals.
    """
    skipped: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    records = removals = 0
    for stream in streams:
        records += stream.totals["records"]
        removals += stream.totals["removal_records"]
        skipped.update(stream.skipped)
        invalid.update(stream.invalid)
        if stream.filtered[selection]:
            skipped[FILTERED] += stream.filtered[selection]
    counted = sum(value["records"] for value in values)
    zero = dict.fromkeys(("added", "changed", "unchanged", "held", "absent", "carried"), 0)
    return {
        "records": records - counted,
        **zero,
        "removed": removals,
        "skipped": dict(skipped),
        "invalid_values": dict(invalid),
        "requests": 0,
        "seconds": 0.0,
    }
