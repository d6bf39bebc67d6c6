"""Every record is counted once: the report's counts, and the sum they keep.

What a stream's records became in one run (added, changed, unchanged, held, removed, or
skipped by reason) is tallied here from what the store planned; composed audiences count
theirs in `composed.py` from the same progress of their streams.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from target_tiktok_audiences.people import NO_CONSENT_REASON
from target_tiktok_audiences.store import PlanSummary

DUPLICATE = "duplicate"
# Left out by an exclusion stream or the suppression list.
EXCLUDED = "excluded"


@dataclass
class StreamProgress:
    """One stream's progress through a run; outlives a sink replaced by a new SCHEMA.

    `totals` counts for the report, where every record read is counted once (see
    `stream_report`). `staged_rows`: records staged since the last apply.
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
    # Records each selection of the stream (by its text) did not pick: `filtered`.
    filtered: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def count_apply(
    progress: StreamProgress,
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
    totals, skipped = progress.totals, progress.skipped
    people, leavers, no_consent = tally
    duplicates = progress.staged_rows - people
    if no_consent:
        skipped[NO_CONSENT_REASON] += no_consent
    totals["removed"] += leavers - no_consent
    totals["removal_records"] += leavers - no_consent
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


def stream_report(progress: StreamProgress) -> dict[str, Any]:
    """A simple audience's counts for the run report and the store's last-sync record.

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
    totals = progress.totals
    return {
        "records": totals["records"],
        "added": totals["added"],
        "removed": totals["removed"],
        "changed": totals["changed"],
        "unchanged": totals["unchanged"],
        "held": totals["held"],
        "absent": totals["absent"],
        "carried": totals["carried"],
        "skipped": dict(progress.skipped),
        "invalid_values": dict(progress.invalid),
        "requests": totals["requests"],
        "seconds": round(progress.seconds, 3),
    }
