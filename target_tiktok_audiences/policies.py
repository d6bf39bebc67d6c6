"""How a stream's records become changes: one small class per `sync_mode`.

In a snapshot the records are the whole audience; in an incremental stream each record is a
change. The sink and the sync ask the stream's policy rather than branching on the mode.
"""

from __future__ import annotations

import logging
from typing import Protocol

from target_tiktok_audiences.accounting import StreamProgress


class Applies(Protocol):
    """What a stream's policy drives: the sync its sink stages for."""

    @property
    def label(self) -> str:
        """How logs name what is synced."""

    def apply(self, *, complete: bool) -> None:
        """Sync what is staged (`complete`: the snapshot is whole)."""


class SnapshotPolicy:
    """A stream's records in one run are the whole audience, once the snapshot is complete.

    Nothing is sent before then: removals come only from a whole snapshot, and the removal
    guard can refuse the sync before anything is sent.
    """

    snapshot = True
    applies_on_drain = False

    def whole(self, *, complete: bool) -> bool:
        """Whether people absent from the staged records leave."""
        return complete

    def on_version(self, sync: Applies, progress: StreamProgress, version: int) -> None:
        """ACTIVATE_VERSION closes the snapshot when records came since the last, or repeats.

        A repeat of the version just before, with no record in between, closes an empty
        snapshot; a leading one before any record only opens a version.
        """
        repeat = progress.seen_version and progress.last_version == version
        if progress.records_since_version or repeat:
            sync.apply(complete=True)
        progress.records_since_version = 0
        progress.seen_version = True
        progress.last_version = version

    def on_end(
        self,
        sync: Applies,
        progress: StreamProgress,
        logger: logging.Logger,
        stream: str,
        *,
        end_proves: bool,
    ) -> None:
        """The end of input: apply an open snapshot, or say why the audience is left alone."""
        if progress.records_since_close:
            if end_proves:
                sync.apply(complete=True)
                return
            logger.warning(
                "Stream %s ended without ACTIVATE_VERSION%s and snapshot_end is "
                "activate_version: adding new people but removing nobody.",
                stream,
                " after its records (its tap sends one only before them, as singer-sdk "
                "taps do: set snapshot_end to end_of_input for it)"
                if progress.seen_version
                else "",
            )
            sync.apply(complete=False)
        elif not progress.closed_any:
            logger.warning(
                "Stream %s sent no records and no closing ACTIVATE_VERSION: audience %s left "
                "alone (an incremental tap with nothing new looks like this; an empty snapshot "
                "must end with ACTIVATE_VERSION).",
                stream,
                sync.label,
            )


class IncrementalPolicy:
    """Each record is a change for one person; a drain's changes are sent at once."""

    snapshot = False
    applies_on_drain = True

    def whole(self, *, complete: bool) -> bool:
        """Absent people never leave: removals are explicit records."""
        return False

    def on_version(self, sync: Applies, progress: StreamProgress, version: int) -> None:
        """A version means nothing to changes: each drain was sent already."""

    def on_end(
        self,
        sync: Applies,
        progress: StreamProgress,
        logger: logging.Logger,
        stream: str,
        *,
        end_proves: bool,
    ) -> None:
        """Nothing is left open at the end: the last drain was sent."""


Policy = SnapshotPolicy | IncrementalPolicy
POLICIES: dict[str, Policy] = {"snapshot": SnapshotPolicy(), "incremental": IncrementalPolicy()}
