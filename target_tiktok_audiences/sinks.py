"""The sink: SDK glue that reads one stream and stages its people for its audience's sync.

Per record: map and hash the identifiers (in worker processes), key the person, decide member
or leaver. Per drain: stage them in the store. When the stream's policy says so (each drain in
incremental mode; a complete snapshot: ACTIVATE_VERSION or the end of input), the audience's
sync (`sync.py`) plans, guards, sends and confirms what was staged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink

from target_tiktok_audiences.composed import SourceSync
from target_tiktok_audiences.people import Hashed, PeopleQueue, RecordSpec
from target_tiktok_audiences.reporting import Progress
from target_tiktok_audiences.sync import StreamSync
from target_tiktok_audiences.workers import Workers

if TYPE_CHECKING:
    from target_tiktok_audiences.target import TargetTikTokAudiences


@dataclass(frozen=True)
class StreamContext:
    """Everything a sink works with, handed to it by the target when the SDK makes it."""

    sync: StreamSync | SourceSync  # what the sink stages for
    workers: Workers
    progress: Progress  # the run's progress lines
    line_number: Callable[[], int | None]  # the input line being read


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
        self.context = context = target.stream_context(
            stream_name, tuple(self.key_properties or ())
        )
        self.sync = context.sync
        self.policy = self.sync.policy
        self.store = self.sync.store
        settings = self.sync.reading
        spec = RecordSpec(
            stream_name,
            tuple(self.key_properties or ()),
            settings.membership_field,
            settings.consent_field,
            tuple(sorted(settings.identifier_fields.items())),
            settings.normalization,
            self.sync.selections,
        )
        self.progress = self.sync.progress
        # Builds the extractor: a bad identifier_fields mapping fails here, before any record.
        self.people = PeopleQueue(context.workers, spec, self.progress.totals["records"])

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
        """True while records have come that TikTok has not confirmed.

        An open snapshot, records still hashing, or sources applied for composed audiences
        that are synced only once the input has ended.
        """
        return (
            self.progress.records_since_close > 0
            or self.people.pending > 0
            or self.sync.awaits_audiences
        )

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
        return self.policy.applies_on_drain and super().is_full

    def process_record(self, record: dict, context: dict) -> None:
        """Read one record's key, exit signals and identifier values; hashing comes later."""
        self._count_records(1)
        hashed = self.people.add(record, self.context.line_number())
        if hashed is not None:
            self._stage(hashed)

    def takes_lines(self, count: int) -> bool:
        """Whether `count` more records fit before the next drain is due (a snapshot: always)."""
        return not self.policy.applies_on_drain or self.current_size + count <= self.max_size

    def process_lines(self, first: int, lines: bytes, count: int) -> None:
        """Take RECORD lines of this stream unparsed: the workers parse them with the rest."""
        self._count_records(count)
        hashed = self.people.add_lines(first, lines, count)
        if hashed is not None:
            self._stage(hashed)

    def _count_records(self, count: int) -> None:
        self.context.progress.records_read(count)
        progress = self.progress
        progress.records_since_close += count
        progress.records_since_version += count
        progress.totals["records"] += count

    def _stage(self, hashed: Hashed) -> None:
        people, skipped, invalid, selected = hashed
        self.store.stage(self.sync.group, people)
        for group, rows in zip(self.sync.selection_groups, selected, strict=True):
            self.store.stage_rows(group, rows)
        self.progress.staged_rows += people.count
        self.progress.skipped.update(skipped)
        self.progress.invalid.update(invalid)
        self.record_counter_metric.increment(people.count + sum(skipped.values()))

    def process_batch(self, context: dict) -> None:
        """Stage the people read since the last drain; in incremental mode send them now."""
        for hashed in self.people.drain():
            self._stage(hashed)
        if self.policy.applies_on_drain and self.store.staged_count(self.sync.group):
            self.sync.apply(complete=False)

    # Snapshot boundaries

    def activate_version(self, new_version: int) -> None:
        """An ACTIVATE_VERSION of the stream: what it means is the stream's policy's."""
        self.policy.on_version(self.sync, self.progress, new_version)

    def finish_input(self, *, end_proves_snapshot: bool) -> None:
        """The end of the input: what it means is the stream's policy's."""
        self.policy.on_end(
            self.sync, self.progress, self.logger, self.stream_name, end_proves=end_proves_snapshot
        )
