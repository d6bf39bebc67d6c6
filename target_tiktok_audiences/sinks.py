"""The sink: one stream's records become staged people, then confirmed changes to its audience.

Per record: map and hash the identifiers, key the person, decide member or leaver, buffer.
Per drain: stage the buffer in the store; in incremental mode apply it at once. A snapshot is
applied when it is complete (ACTIVATE_VERSION, or the end of input), so removals come only from
a whole snapshot, and the removal guard can refuse the sync before anything is sent.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink

from target_tiktok_audiences.audiences import resolve_audience
from target_tiktok_audiences.errors import RemovalGuardError, TargetError
from target_tiktok_audiences.identifiers import IdentifierExtractor
from target_tiktok_audiences.planning import removal_refusal, should_hold
from target_tiktok_audiences.store import PlanSummary, Slots

if TYPE_CHECKING:
    from target_tiktok_audiences.settings import AudienceSettings
    from target_tiktok_audiences.target import TargetTikTokAudiences

_KEY_PREFIX = b"tiktok-audiences/person-key\x00"
_IDS_PREFIX = b"tiktok-audiences/person-ids\x00"
_KEY_SEPARATOR = "\x1f"


def person_key(key_values: tuple[Any, ...] | None, slots: Slots) -> bytes | None:
    """A 16-byte digest that identifies a person: of the record key, else of its hashes."""
    if key_values is not None:
        text = _KEY_SEPARATOR.join(str(v) for v in key_values)
        return hashlib.sha256(_KEY_PREFIX + text.encode()).digest()[:16]
    if not any(slots):
        return None
    joined = b"|".join(s or b"" for s in slots)
    return hashlib.sha256(_IDS_PREFIX + joined).digest()[:16]


def _field(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


@dataclass
class StreamProgress:
    """One stream's progress through a run; outlives a sink replaced by a new SCHEMA."""

    records_since_close: int = 0
    records_since_version: int = 0
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
        self.extract = IdentifierExtractor(settings.identifier_fields, settings.normalization)
        self.snapshot = settings.sync_mode == "snapshot"
        self.store = target.store
        self.row = self.store.audience(stream_name, settings.target_key, settings.advertiser_ids)
        self.store.lock_audience(
            self.row.id, settings.label, float(target.config.get("store_lock_timeout", 60))
        )
        self._buffer: list[tuple[bytes, int, Slots]] = []
        self.progress = target.stream_progress(stream_name)
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
        return self.progress.records_since_close > 0 or bool(self._buffer)

    @property
    def current_size(self) -> int:
        """Records buffered since the last drain."""
        return len(self._buffer)

    def process_record(self, record: dict, context: dict) -> None:
        """Hash one record's identifiers and buffer the person as member or leaver."""
        self.progress.records_since_close += 1
        self.progress.records_since_version += 1
        self.progress.totals["records"] += 1
        slots, reasons = self.extract(record)
        leaving = self._is_leaving(record)
        key_values = self._key_values(record)
        if key_values is False:
            self.progress.skipped["missing_key"] += 1
            return
        if not leaving and not any(slots):
            self.progress.skipped[reasons[0] if reasons else "missing"] += 1
            return
        self.progress.invalid.update(reasons)
        person = person_key(key_values or None, slots)
        if person is None:  # leaving, no key, and no identifier to know them by
            self.progress.skipped[reasons[0] if reasons else "missing"] += 1
            return
        self._buffer.append((person, 1 if leaving else 0, slots))

    def _key_values(self, record: Mapping[str, Any]) -> tuple[Any, ...] | bool | None:
        """The record key's values; None without key properties; False when one is missing."""
        if not self.key_properties:
            return None
        values = tuple(record.get(k) for k in self.key_properties)
        if any(v is None or v == "" for v in values):
            return False
        return values

    def _is_leaving(self, record: Mapping[str, Any]) -> bool:
        """Deleted in the source, membership false, or consent not given."""
        if record.get("_sdc_deleted_at"):
            return True
        settings = self.settings
        if settings.membership_field and _field(record, settings.membership_field) is False:
            return True
        return bool(settings.consent_field and _field(record, settings.consent_field) is not True)

    def process_batch(self, context: dict) -> None:
        """Stage the buffered people; in incremental mode send the changes now."""
        buffer, self._buffer = self._buffer, []
        if buffer:
            self.store.stage(self.row.id, buffer)
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
                    "Stream %s ended without ACTIVATE_VERSION and snapshot_end is "
                    "activate_version: adding new people but removing nobody.",
                    self.stream_name,
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
        """Plan, guard, hold or send, and confirm: everything staged for this audience."""
        started = time.monotonic()
        requests_before = self.owner.client.requests_sent
        audience = self.row.id
        try:
            self._apply(audience, complete=complete)
        except TargetError as exc:
            self.store.record_result(audience, "failed", str(exc), None)
            raise
        finally:
            self.store.clear_staged(audience)
            self.progress.records_since_close = 0
            self.progress.closed_any = True
            self.progress.totals["requests"] += self.owner.client.requests_sent - requests_before
            self.progress.seconds += time.monotonic() - started
        self.store.record_result(audience, "ok", None, self.report_counts())

    def _apply(self, audience: int, *, complete: bool) -> None:
        store, settings = self.store, self.settings
        snapshot = self.snapshot and complete
        uploaded = self.row.uploaded_at is not None
        if not uploaded and settings.min_audience_size:
            people = store.hold(audience, snapshot=snapshot)
            if should_hold(people, settings.min_audience_size, uploaded=False):
                self.progress.totals["held"] = people
                self.owner.logger.info(
                    "Audience %s holds %d people, under min_audience_size %d: nothing sent yet.",
                    settings.label,
                    people,
                    settings.min_audience_size,
                )
                return
            store.release_pending(audience)
        summary = store.plan(audience, snapshot=self.snapshot, complete=complete)
        refusal = (
            removal_refusal(
                summary,
                self.owner.config.get("max_removal_fraction", 0.5),
                first_sync=not uploaded,
                label=settings.label,
            )
            if snapshot
            else None
        )
        if refusal:
            raise RemovalGuardError(refusal)
        self.progress.totals["held"] = 0
        self._send(audience, summary)

    def _send(self, audience: int, summary: PlanSummary) -> None:
        """Deletes, then adds, each confirmed in the store batch by batch."""
        client, store = self.owner.client, self.store
        audience_id = ""
        if summary.add_rows or summary.delete_rows:
            audience_id = resolve_audience(client, store, self.settings, self.row)
        for action in ("delete", "add"):
            store_only: list[tuple[bytes, Slots]] = []

            def confirmed(
                batch: list[tuple[tuple[bytes, Slots], Slots]], act: str = action
            ) -> None:
                store.confirm(audience, act, [tag for tag, _ in batch])

            batches = self._batches(audience, action, store_only)
            client.map_all(action, self.settings.advertiser_ids, audience_id, batches, confirmed)
            if store_only:
                store.confirm(audience, action, store_only)
        store.finish_upload(audience)
        self.row = store.get_audience(audience)
        self.progress.totals["added"] += summary.joined
        self.progress.totals["removed"] += summary.left
        self.progress.totals["changed"] += summary.changed
        self.progress.totals["unchanged"] = summary.unchanged

    def _batches(
        self, audience: int, action: str, store_only: list[tuple[bytes, Slots]]
    ) -> Iterator[list[tuple[tuple[bytes, Slots], Slots]]]:
        """Planned rows in batches of the client's current batch size.

        Each item is ((person, slots for the store), slots to send). A row whose every hash is
        kept for another person changes only the store: it goes to `store_only`.
        """
        batch: list[tuple[tuple[bytes, Slots], Slots]] = []
        for _, person, store_slots, api_slots in self.store.planned(audience, action):
            if not any(api_slots):
                store_only.append((person, store_slots))
                continue
            batch.append(((person, store_slots), api_slots))
            if len(batch) >= self.owner.client.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    # Reporting

    def report_counts(self) -> dict[str, Any]:
        """Counts for the run report and the store's last-sync record."""
        return {
            "records": self.progress.totals["records"],
            "added": self.progress.totals["added"],
            "removed": self.progress.totals["removed"],
            "changed": self.progress.totals["changed"],
            "unchanged": self.progress.totals["unchanged"],
            "held": self.progress.totals["held"],
            "skipped": dict(self.progress.skipped),
            "invalid_values": dict(self.progress.invalid),
            "requests": self.progress.totals["requests"],
            "seconds": round(self.progress.seconds, 3),
        }
