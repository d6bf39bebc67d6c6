"""Pure decisions about a planned sync: what to hold and what to refuse.

No I/O here: the store counts, these functions decide.
"""

from __future__ import annotations

from target_tiktok_audiences.store import PlanSummary


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
