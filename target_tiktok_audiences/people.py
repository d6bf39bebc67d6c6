"""Who each record is: a person key and identifier hashes, computed off the reading thread.

Parsing, normalising and hashing are most of a sync's local cost, so large streams hand them to
worker processes in chunks while the main process goes on reading; results come back in input
order, so the outcome is exactly that of doing it inline. Raw identifiers cross to the workers
in memory only, and only hashes come back.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from singer_sdk.exceptions import MissingKeyPropertiesError

from target_tiktok_audiences.errors import InputError
from target_tiktok_audiences.identifiers import IdentifierExtractor, NormalizationOptions
from target_tiktok_audiences.reader import long_number, parse_line, record_of
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


class MissingKeyError(InputError, MissingKeyPropertiesError):
    """A record lacks one of its stream's key properties."""

    def __init__(self, stream: str, keys: list[str]) -> None:
        super().__init__(
            f"a record of stream {stream!r} has no value for its key properties "
            f"{', '.join(keys)}: the tap must send every key (or declare none)"
        )
        self.stream, self.keys = stream, keys

    def __reduce__(self) -> tuple[type, tuple[str, list[str]]]:
        """Raised in a worker, it comes back to the reader whole."""
        return MissingKeyError, (self.stream, self.keys)


@dataclass(frozen=True)
class RecordSpec:
    """How a stream's records are read: all a worker needs to turn them into people."""

    stream: str
    key_properties: tuple[str, ...]
    membership_field: str | None
    consent_field: str | None
    identifier_fields: tuple[tuple[str, str | None], ...]
    options: NormalizationOptions

    def key_values(self, record: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The record key's values (None without key properties).

        A record without its key is malformed input, not a person to skip: in a snapshot,
        skipping would remove whoever that record was.
        """
        keys = self.key_properties
        if not keys:
            return None
        if len(keys) == 1:  # the common case, without a generator per record
            value = record.get(keys[0])
            if value is None:
                raise MissingKeyError(self.stream, list(keys))
            return (value,)
        values = tuple(record.get(k) for k in keys)
        if None in values:
            raise MissingKeyError(self.stream, list(keys))
        return values

    def is_leaving(self, record: Mapping[str, Any]) -> bool:
        """Deleted in the source, membership false, or consent not given."""
        if record.get("_sdc_deleted_at"):
            return True
        if self.membership_field and _field(record, self.membership_field) is False:
            return True
        return bool(self.consent_field and _field(record, self.consent_field) is not True)

    def extractor(self) -> IdentifierExtractor:
        """The stream's extractor, built once per process."""
        extract = _EXTRACTORS.get(self)
        if extract is None:
            extract = _EXTRACTORS[self] = IdentifierExtractor(
                dict(self.identifier_fields), self.options
            )
        return extract

    def reader(self) -> Callable[[Mapping[str, Any]], Pending]:
        """What is read from a record, the costly hashing left for later; built once per use."""
        key_values, is_leaving, values = self.key_values, self.is_leaving, self.extractor().values

        def read(record: Mapping[str, Any]) -> Pending:
            return key_values(record), is_leaving(record), values(record)

        return read


def _field(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


_EXTRACTORS: dict[RecordSpec, IdentifierExtractor] = {}


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


def hash_chunk(spec: RecordSpec, chunk: list[Pending]) -> Hashed:
    """Turn read records into people to stage; skipped records are counted by reason."""
    hash_values = spec.extractor().hash_values
    rows: list[tuple[bytes, int, Slots]] = []
    skipped: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    for key_values, leaving, values in chunk:
        slots, reasons = hash_values(values)
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


def hash_lines(spec: RecordSpec, pieces: list[tuple[int, bytes]]) -> Hashed:
    """Parse RECORD lines of the spec's stream, then hash them like :func:`hash_chunk`.

    Each piece is (number of its first line, one or more whole lines). Each line is parsed
    and checked as the reader would; the first fault raises its error.
    """
    read = spec.reader()
    chunk: list[Pending] = []
    for first, piece in pieces:
        long_numbers = long_number(piece)  # one scan of the piece, not one a line
        for number, line in enumerate(piece.splitlines(), first):
            message = parse_line(line, number, long_numbers=long_numbers)
            if message.get("type") != "RECORD" or message.get("stream") != spec.stream:
                msg = (
                    f"input line {number} repeats its type or stream key with another value: "
                    "the tap's output is ambiguous; fix the tap"
                )
                raise InputError(msg)
            chunk.append(read(record_of(message)[1]))
    return hash_chunk(spec, chunk)


# Records hashed per task.
CHUNK = 4096
# Hashed inline until a stream has sent this many records: small runs never start workers.
PARALLEL_AFTER = 3 * CHUNK


class PeopleQueue:
    """One stream's chunks in flight, collected strictly in the order they were read.

    A chunk holds either records the reader parsed or RECORD lines it did not.
    """

    def __init__(self, workers: Workers, spec: RecordSpec) -> None:
        self._workers = workers
        self.spec = spec
        self._read = spec.reader()
        self._chunk: list[Pending] = []
        self._pieces: list[tuple[int, bytes]] = []
        self._piece_lines = 0
        self._futures: deque[Future[Hashed]] = deque()
        self._seen = 0
        self.pending = 0  # records read and not yet collected

    def add(self, record: Mapping[str, Any]) -> Hashed | None:
        """Queue one parsed record; return the oldest finished chunk if too many are in flight."""
        if self._pieces:
            self._flush()
        self._chunk.append(self._read(record))
        return self._added(1, len(self._chunk))

    def add_lines(self, first: int, lines: bytes, count: int) -> Hashed | None:
        """Queue `count` unparsed RECORD lines of the stream, the first numbered `first`."""
        if self._chunk:
            self._flush()
        self._pieces.append((first, lines))
        self._piece_lines += count
        return self._added(count, self._piece_lines)

    def _added(self, count: int, size: int) -> Hashed | None:
        self.pending += count
        if size < CHUNK:
            return None
        self._flush()
        if len(self._futures) > 2 * self._workers.count:
            return self._take()
        return None

    def _flush(self) -> None:
        size = len(self._chunk) + self._piece_lines
        if not size:
            return
        self._seen += size
        parallel = self._seen >= PARALLEL_AFTER
        if self._pieces:
            task = self._workers.submit(hash_lines, self.spec, self._pieces, parallel=parallel)
            self._pieces, self._piece_lines = [], 0
        else:
            task = self._workers.submit(hash_chunk, self.spec, self._chunk, parallel=parallel)
            self._chunk = []
        self._futures.append(task)

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
