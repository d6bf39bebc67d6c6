"""Who each record is: a person key and identifier hashes, computed off the reading thread.

Normalising and hashing is a large part of a sync's local cost, so large streams hand it to
worker processes in chunks while the main process goes on reading; results come back in input
order, so the outcome is exactly that of doing it inline. Raw identifiers cross to the workers
in memory only, and only hashes come back.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from target_tiktok_audiences.identifiers import IdentifierExtractor, NormalizationOptions
from target_tiktok_audiences.store import Staged

if TYPE_CHECKING:
    from target_tiktok_audiences.workers import Workers

_KEY_PREFIX = b"tiktok-audiences/person-key\x00"
_IDS_PREFIX = b"tiktok-audiences/person-ids\x00"
_KEY_SEPARATOR = "\x1f"

Slots = tuple[bytes | None, ...]
# One record as the reader sees it: (key values, or None without keys; leaving?; the raw
# identifier values the extractor read).
Pending = tuple[tuple[Any, ...] | None, bool, tuple[Any, ...]]
# What a chunk becomes: its people packed for the store, skips and rejected values.
Hashed = tuple[Staged, Counter, Counter]


def person_key(key_values: tuple[Any, ...] | None, slots: Slots) -> bytes | None:
    """A 16-byte digest that identifies a person: of the record key, else of its hashes."""
    if key_values is not None:
        if len(key_values) == 1:  # the usual key: no join to build
            text = str(key_values[0])
        else:
            text = _KEY_SEPARATOR.join(map(str, key_values))
        return hashlib.sha256(_KEY_PREFIX + text.encode()).digest()[:16]
    if not any(slots):
        return None
    joined = b"|".join(s or b"" for s in slots)
    return hashlib.sha256(_IDS_PREFIX + joined).digest()[:16]


_EXTRACTORS: dict[tuple, IdentifierExtractor] = {}


def hash_chunk(
    fields: tuple[tuple[str, str | None], ...], options: NormalizationOptions, chunk: list[Pending]
) -> Hashed:
    """Turn read records into people to stage; skipped records are counted by reason."""
    cache_key = (fields, options)
    extract = _EXTRACTORS.get(cache_key)
    if extract is None:
        extract = _EXTRACTORS[cache_key] = IdentifierExtractor(dict(fields), options)
    rows: list[tuple[bytes, int, Slots]] = []
    skipped: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    for key_values, leaving, values in chunk:
        slots, reasons = extract.hash_values(values)
        if not leaving and not any(slots):
            skipped[reasons[0]] += 1
            continue
        if reasons:
            invalid.update(reasons)
        person = person_key(key_values, slots)
        if person is None:  # leaving, no key, and no identifier to know them by
            skipped[reasons[0]] += 1
            continue
        rows.append((person, 1 if leaving else 0, slots))
    return Staged.pack(rows), skipped, invalid


# Records hashed per task.
CHUNK = 4096
# Hashed inline until a stream has sent this many records: small runs never start workers.
PARALLEL_AFTER = 3 * CHUNK


class PeopleQueue:
    """One stream's chunks in flight, collected strictly in the order they were read."""

    def __init__(
        self, workers: Workers, fields: Mapping[str, str | None], options: NormalizationOptions
    ) -> None:
        self._workers = workers
        self._fields = tuple(sorted(fields.items()))
        self._options = options
        self._chunk: list[Pending] = []
        self._futures: deque[Future[Hashed]] = deque()
        self._seen = 0
        self.pending = 0  # records read and not yet collected

    def add(self, item: Pending) -> Hashed | None:
        """Queue one record; return the oldest finished chunk when too many are in flight."""
        self._chunk.append(item)
        self.pending += 1
        if len(self._chunk) < CHUNK:
            return None
        self._flush()
        if len(self._futures) > 2 * self._workers.count:
            return self._take()
        return None

    def _flush(self) -> None:
        if self._chunk:
            self._seen += len(self._chunk)
            self._futures.append(
                self._workers.submit(
                    hash_chunk,
                    self._fields,
                    self._options,
                    self._chunk,
                    parallel=self._seen >= PARALLEL_AFTER,
                )
            )
            self._chunk = []

    def _take(self) -> Hashed:
        result = self._futures.popleft().result()
        self.pending -= sum(result[1].values()) + result[0].count
        return result

    def drain(self) -> list[Hashed]:
        """Every queued record, hashed, in the order read."""
        self._flush()
        results = []
        while self._futures:
            results.append(self._take())
        self.pending = 0
        return results
