"""What one `segment/mapping/` request carries: a batch of people and its body.

A batch is a value: the client sends it and halves it, the store says which rows it holds and
confirms them by their range. Nothing here reads the store itself; a batch whose rows are not
with it carries a function that reads them. A row is one person: the slots of one audience's
planned row, sent to the request's audience, or a `MergedRow` of several audiences, each of
whose entries names the audiences its hash is sent to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import orjson

from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.identifiers import SLOTS

MAPPING = "segment/mapping/"

# One person's hashes, one per slot of SLOTS (None where the person lacks it or keeps it).
Slots = tuple[bytes | None, ...]
# A hash and the TikTok ids of the audiences it is sent to.
Entry = tuple[bytes, tuple[str, ...]]


class MergedRow(tuple[Entry | None, ...]):
    """One person sent to several audiences at once: an entry per slot (None: nothing sent).

    Entries of one row may name different audiences: a hash that one audience keeps (another
    of its people sends it) is not sent to that audience.
    """

    __slots__ = ()


# A row of a request: a batch holds rows of one kind only.
Row = Slots | MergedRow


@dataclass(frozen=True)
class Batch:
    """People sent in one request: `size` planned rows with a hash to send.

    They are the plan's rows from seq `first` to `last`, and confirmed by that range. Their
    slots come with the batch (`rows`) or are read where its body is built (`source`).
    """

    first: int
    last: int
    size: int
    rows: Sequence[Row] | None = None
    source: Callable[[int, int], Sequence[Row]] | None = None

    @classmethod
    def of(cls, rows: Sequence[Row]) -> Batch:
        """A batch of rows not read from a plan (a half of a batch), numbered from 0."""
        return cls(0, len(rows) - 1, len(rows), rows=rows)

    def slots(self) -> Sequence[Row]:
        """One row per person, in plan order; a kept hash is None."""
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
    action: str, advertiser_ids: Sequence[str], audience_id: str, rows: Sequence[Row]
) -> dict:
    """A `segment/mapping/` body: one row per person, slots aligned with `id_schema`.

    `id_schema` lists only the identifier types some row of this batch has, in a fixed order;
    a person lacking one gets `{}` in its slot, so no hash ever lands under the wrong type.
    Rows of slots send every hash to `audience_id`; merged rows name each entry's audiences.
    """
    used = [i for i in range(len(SLOTS)) if any(row[i] is not None for row in rows)]
    if rows and isinstance(rows[0], MergedRow):
        batch_data = _merged_data(cast("Sequence[MergedRow]", rows), used)
    else:
        plain = cast("Sequence[Slots]", rows)
        audience_ids = [audience_id]
        batch_data = [
            [
                {"id": slot.hex(), "audience_ids": audience_ids}
                if (slot := row[i]) is not None
                else {}
                for i in used
            ]
            for row in plain
        ]
    return {
        "advertiser_ids": list(advertiser_ids),
        "action": action,
        "id_schema": [SLOTS[i] for i in used],
        "batch_data": batch_data,
    }


def _merged_data(rows: Sequence[MergedRow], used: Sequence[int]) -> list[list[dict]]:
    """`batch_data` of merged rows: each entry with its own `audience_ids`."""
    lists: dict[tuple[str, ...], list[str]] = {}  # one list per set of audiences, shared
    return [
        [
            {"id": entry[0].hex(), "audience_ids": lists.setdefault(entry[1], list(entry[1]))}
            if (entry := row[i]) is not None
            else {}
            for i in used
        ]
        for row in rows
    ]


def mapping_json(
    action: str, advertiser_ids: Sequence[str], audience_id: str, rows: Sequence[Row]
) -> bytes:
    """The body of `mapping_body`, serialised."""
    return orjson.dumps(mapping_body(action, advertiser_ids, audience_id, rows))


def batch_json(action: str, advertiser_ids: Sequence[str], audience_id: str, batch: Batch) -> bytes:
    """A batch's body, serialised: what a worker process builds while earlier batches go.

    Where the batch has a source rather than rows, the worker reads the rows itself.
    """
    return mapping_json(action, advertiser_ids, audience_id, batch.slots())
