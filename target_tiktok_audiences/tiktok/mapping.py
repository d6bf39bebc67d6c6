"""What one `segment/mapping/` request carries: a batch of people and its body.

A batch is a value: the client sends it and halves it, the store says which rows it holds and
confirms them by their range. Nothing here reads the store itself; a batch whose rows are not
with it carries a function that reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.identifiers import SLOTS

MAPPING = "segment/mapping/"

# One person's hashes, one per slot of SLOTS (None where the person lacks it or keeps it).
Slots = tuple[bytes | None, ...]


@dataclass(frozen=True)
class Batch:
    """People sent in one request: `size` planned rows with a hash to send.

    They are the plan's rows from seq `first` to `last`, and confirmed by that range. Their
    slots come with the batch (`rows`) or are read where its body is built (`source`).
    """

    first: int
    last: int
    size: int
    rows: Sequence[Slots] | None = None
    source: Callable[[int, int], Sequence[Slots]] | None = None

    @classmethod
    def of(cls, rows: Sequence[Slots]) -> Batch:
        """A batch of rows not read from a plan (a half of a batch), numbered from 0."""
        return cls(0, len(rows) - 1, len(rows), rows=rows)

    def slots(self) -> Sequence[Slots]:
        """One tuple of slots per person, in plan order; a kept hash is None."""
        if self.rows is not None:
            return self.rows
        if self.source is None:
            msg = "a batch needs its rows or a source to read them from"
            raise ValueError(msg)
        rows = self.source(self.first, self.last)
        if len(rows) != self.size:
            msg = (
                f"the plan changed under a batch (seq {self.first} to {self.last}: "
                f"{len(rows)} rows, not {self.size}): this is a bug, please report it"
            )
            raise StoreError(msg)
        return rows


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
