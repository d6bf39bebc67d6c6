"""Pure decisions about a planned sync: what to hold, what to refuse, and what to send.

No I/O here: the store counts, these functions decide, and the client sends the bodies they build.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.store import Batch, PlanSummary, Slots


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


def mapping_body(
    action: str, advertiser_ids: Sequence[str], audience_id: str, rows: Sequence[Slots]
) -> dict:
    """A `segment/mapping/` body: one row per person, slots aligned with `id_schema`.

    `id_schema` lists only the identifier types some row of this batch has, in a fixed order;
    a person lacking one gets `{}` in its slot, so no hash ever lands under the wrong type.
    """
    used = [i for i in range(len(SLOTS)) if any(row[i] is not None for row in rows)]
    audience_ids = [audience_id]
    batch_data = [
        [
            {"id": slot.hex(), "audience_ids": audience_ids} if (slot := row[i]) is not None else {}
            for i in used
        ]
        for row in rows
    ]
    return {
        "advertiser_ids": list(advertiser_ids),
        "action": action,
        "id_schema": [SLOTS[i] for i in used],
        "batch_data": batch_data,
    }


def mapping_json(
    action: str, advertiser_ids: Sequence[str], audience_id: str, rows: Sequence[Slots]
) -> bytes:
    """The body of `mapping_body`, serialised."""
    return orjson.dumps(mapping_body(action, advertiser_ids, audience_id, rows))


def batch_json(action: str, advertiser_ids: Sequence[str], audience_id: str, batch: Batch) -> bytes:
    """A batch's body, serialised: what a worker process builds while earlier batches go.

    Where the batch has a source rather than rows, the worker reads the rows itself.
    """
    return mapping_json(action, advertiser_ids, audience_id, batch.slots())
