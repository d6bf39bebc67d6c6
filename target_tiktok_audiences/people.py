"""Who each record is: a person key and identifier hashes, computed off the reading thread.

Normalising and hashing is a large part of a sync's local cost, so large streams hand it to
worker processes in chunks while the main process goes on reading; results come back in input
order, so the outcome is exactly that of doing it inline. Raw identifiers cross to the workers
in memory only, and only hashes come back.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from target_tiktok_audiences.identifiers import IdentifierExtractor, NormalizationOptions
from target_tiktok_audiences.store import Staged

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


class HashPool:
    """Hashes chunks in worker processes (inline while a run is small), in input order."""

    CHUNK = 4096
    # Inline until a stream has sent this many records: small runs never start workers.
    PARALLEL_AFTER = 3 * CHUNK

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # forkserver: workers never inherit a lock held by another thread of this process.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["target_tiktok_audiences.people"])
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._executor

    def submit(
        self,
        fields: Mapping[str, str | None],
        options: NormalizationOptions,
        chunk: list[Pending],
        *,
        seen: int,
    ) -> Future[Hashed]:
        """Hash a chunk: in a worker once `seen` records make it worth it, else right here."""
        frozen = tuple(sorted(fields.items()))
        if self.workers > 1 and seen >= self.PARALLEL_AFTER:
            return self._pool().submit(hash_chunk, frozen, options, chunk)
        done: Future[Hashed] = Future()
        done.set_result(hash_chunk(frozen, options, chunk))
        return done

    def close(self) -> None:
        """Stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None


class PeopleQueue:
    """One stream's chunks in flight, collected strictly in the order they were read."""

    def __init__(
        self, pool: HashPool, fields: Mapping[str, str | None], options: NormalizationOptions
    ) -> None:
        self._pool = pool
        self._fields = fields
        self._options = options
        self._chunk: list[Pending] = []
        self._futures: deque[Future[Hashed]] = deque()
        self._seen = 0
        self.pending = 0  # records read and not yet collected

    def add(self, item: Pending) -> Hashed | None:
        """Queue one record; return the oldest finished chunk when too many are in flight."""
        self._chunk.append(item)
        self.pending += 1
        if len(self._chunk) < HashPool.CHUNK:
            return None
        self._flush()
        if len(self._futures) > 2 * self._pool.workers:
            return self._take()
        return None

    def _flush(self) -> None:
        if self._chunk:
            self._seen += len(self._chunk)
            self._futures.append(
                self._pool.submit(self._fields, self._options, self._chunk, seen=self._seen)
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
