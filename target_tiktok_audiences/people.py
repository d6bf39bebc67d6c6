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
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from singer_sdk.exceptions import MissingKeyPropertiesError

from target_tiktok_audiences.errors import InputError
from target_tiktok_audiences.identifiers import IdentifierExtractor, NormalizationOptions
from target_tiktok_audiences.reader import long_number, parse_line, record_of
from target_tiktok_audiences.settings.definitions import split_text
from target_tiktok_audiences.store import LEAVES, NO_CONSENT, STAYS, Staged

if TYPE_CHECKING:
    from target_tiktok_audiences.workers import Workers

_KEY_PREFIX = b"tiktok-audiences/person-key\x00"
_IDS_PREFIX = b"tiktok-audiences/person-ids\x00"
_KEY_SEPARATOR = "\x1f"

Slots = tuple[bytes | None, ...]
# A record whose membership or consent field holds neither a boolean nor "true"/"false":
# skipped, never staged. The other statuses are the store's (STAYS, LEAVES, NO_CONSENT).
INVALID_FLAG = 3
INVALID_FLAG_REASON = "invalid_flag"
NO_CONSENT_REASON = "no_consent"
# One record as the reader sees it: (key values, or None without keys; its status; the raw
# identifier values the extractor read; what each of the stream's selections picks of it).
Pending = tuple[tuple[Any, ...] | None, int, tuple[Any, ...], tuple[str | None, ...]]
# A person staged for a selection: (person key, remove, no_consent, split value, slots).
SelectedRow = tuple[bytes, int, int, str | None, Slots]
# A member whose record a selection does not pick: it leaves that selection's source, and its
# no-consent byte says why (so it counts as `filtered`, not as a removal).
FILTERED = 2
# What a chunk becomes: its people packed for the store, skips and rejected values, and the
# people of each selection.
Hashed = tuple[Staged, Counter, Counter, tuple[list[SelectedRow], ...]]

_FLAG_WORDS: dict[str, bool] = {"true": True, "false": False}
_NOT_A_FLAG = object()


def read_flag(value: Any) -> Any:
    """A boolean field's value: True, False, None (missing or null), or `_NOT_A_FLAG`.

    JSON booleans and the strings "true"/"false" in any case (as CSV taps send them) are
    flags; anything else is not, and is never taken as true or false.
    """
    if value is True or value is False or value is None:
        return value
    if isinstance(value, str):
        flag = _FLAG_WORDS.get(value)
        if flag is None:
            flag = _FLAG_WORDS.get(value.lower())
        if flag is not None:
            return flag
    return _NOT_A_FLAG


class MissingKeyError(InputError, MissingKeyPropertiesError):
    """A record lacks one of its stream's key properties (missing, null or an empty string).

    Raised without a position where the key is read, then again with the record's number in
    its stream and its input line (`at`) by whoever knows them.
    """

    def __init__(
        self, stream: str, keys: list[str], record: int | None = None, line: int | None = None
    ) -> None:
        where = (
            f"record {record} of stream {stream!r}" if record else f"a record of stream {stream!r}"
        )
        if line:
            where += f" (input line {line})"
        super().__init__(
            f"{where} has no value for its key properties {', '.join(keys)} (missing, null or "
            "empty): the tap must send every key (or declare none); nothing was sent for it"
        )
        self.stream, self.keys, self.record, self.line = stream, keys, record, line

    def at(self, record: int, line: int | None) -> MissingKeyError:
        """The same error, naming the record's number in its stream and its input line."""
        return MissingKeyError(self.stream, self.keys, record, line)

    def __reduce__(self) -> tuple[type, tuple[str, list[str], int | None, int | None]]:
        """Raised in a worker, it comes back to the reader whole."""
        return MissingKeyError, (self.stream, self.keys, self.record, self.line)


def json_equal(value: Any, wanted: Any) -> bool:
    """JSON equality: booleans only equal booleans, numbers compare as numbers, strings exactly."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    if isinstance(value, (int, float, Decimal)) and isinstance(wanted, (int, float, Decimal)):
        return value == wanted
    return type(value) is type(wanted) and value == wanted


@dataclass(frozen=True)
class Selection:
    """Which records of a stream an audience takes (`where`), and its fan-out (`split_by`)."""

    where: tuple[tuple[str, tuple[Any, ...]], ...]
    split_by: str | None

    def pick(self, record: Mapping[str, Any]) -> str | None:
        """The record's split value as text ("" without `split_by`), or None: not picked.

        Every `where` field must equal one of its values; a missing, null or non-scalar
        split value is not picked either.
        """
        for path, values in self.where:
            value = _field(record, path)
            if not any(json_equal(value, wanted) for wanted in values):
                return None
        if self.split_by is None:
            return ""
        value = _field(record, self.split_by)
        if value is None or isinstance(value, (Mapping, list)):
            return None
        return split_text(value)


@dataclass(frozen=True)
class RecordSpec:
    """How a stream's records are read: all a worker needs to turn them into people."""

    stream: str
    key_properties: tuple[str, ...]
    membership_field: str | None
    consent_field: str | None
    identifier_fields: tuple[tuple[str, str | None], ...]
    options: NormalizationOptions
    selections: tuple[Selection, ...] = ()

    def key_values(self, record: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The record key's values (None without key properties).

        A record without its key (missing, null or "") is malformed input, not a person to
        skip: in a snapshot, skipping would remove whoever that record was; and "" keys
        would make every such record one person.
        """
        keys = self.key_properties
        if not keys:
            return None
        if len(keys) == 1:  # the common case, without a generator per record
            value = record.get(keys[0])
            if value is None or value == "":
                raise MissingKeyError(self.stream, list(keys))
            return (value,)
        values = tuple(record.get(k) for k in keys)
        if None in values or "" in values:
            raise MissingKeyError(self.stream, list(keys))
        return values

    def status(self, record: Mapping[str, Any]) -> int:
        """STAYS, LEAVES (deleted in the source, membership false), NO_CONSENT or INVALID_FLAG.

        Membership missing or null means member; consent must be true (missing, null or
        false: NO_CONSENT). A flag that is neither a boolean nor "true"/"false" makes the
        record INVALID_FLAG, whatever the other flag says, unless the record leaves anyway.
        """
        if record.get("_sdc_deleted_at"):
            return LEAVES
        if self.membership_field:
            member = read_flag(_field(record, self.membership_field))
            if member is False:
                return LEAVES
            if member is _NOT_A_FLAG:
                return INVALID_FLAG
        if self.consent_field:
            consent = read_flag(_field(record, self.consent_field))
            if consent is True:
                return STAYS
            return INVALID_FLAG if consent is _NOT_A_FLAG else NO_CONSENT
        return STAYS

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
        key_values, status, values = self.key_values, self.status, self.extractor().values
        selections = self.selections

        def read(record: Mapping[str, Any]) -> Pending:
            picks = tuple(s.pick(record) for s in selections) if selections else ()
            return key_values(record), status(record), values(record), picks

        return read


def _field(record: Mapping[str, Any], path: str) -> Any:
    if "." not in path:  # the usual flag: no list of parts to build
        return record.get(path)
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
    """Turn read records into people to stage; skipped records are counted by reason.

    Each record is staged once (a member, a leaver, or left out for want of consent) or
    counted once in `skipped`: an invalid flag; no usable identifier for a member (its first
    reason); a leaver with neither key nor identifier to know them by.
    """
    hash_values = spec.extractor().hash_values
    rows: list[tuple[bytes, int, Slots]] = []
    selected: tuple[list[SelectedRow], ...] = tuple([] for _ in spec.selections)
    skipped: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    for key_values, status, values, picks in chunk:
        if status == INVALID_FLAG:
            skipped[INVALID_FLAG_REASON] += 1
            continue
        slots, reasons = hash_values(values)
        if status == STAYS and not any(slots):
            skipped[reasons[0]] += 1
            continue
        if reasons:
            invalid.update(reasons)
        person = person_key(key_values, slots)
        if person is None:  # leaving, no key, and no identifier to know them by
            skipped[NO_CONSENT_REASON if status == NO_CONSENT else reasons[0]] += 1
            continue
        rows.append((person, status, slots))
        for people, pick in zip(selected, picks, strict=True) if selected else ():
            if status != STAYS:
                people.append((person, 1, int(status == NO_CONSENT), None, slots))
            elif pick is None:
                people.append((person, 1, FILTERED, None, slots))
            else:
                people.append((person, 0, 0, pick, slots))
    return Staged.pack(rows), skipped, invalid, selected


def hash_lines(spec: RecordSpec, pieces: list[Piece]) -> Hashed:
    """Parse RECORD lines of the spec's stream, then hash them like :func:`hash_chunk`.

    Each piece is (number of its first line, number of its first record in the stream, one
    or more whole lines). Each line is parsed and checked as the reader would; the first
    fault raises its error.
    """
    read = spec.reader()
    chunk: list[Pending] = []
    for first, first_record, piece in pieces:
        long_numbers = long_number(piece)  # one scan of the piece, not one a line
        for number, line in enumerate(piece.splitlines(), first):
            message = parse_line(line, number, long_numbers=long_numbers)
            if message.get("type") != "RECORD" or message.get("stream") != spec.stream:
                msg = (
                    f"input line {number} repeats its type or stream key with another value: "
                    "the tap's output is ambiguous; fix the tap"
                )
                raise InputError(msg)
            try:
                chunk.append(read(record_of(message)[1]))
            except MissingKeyError as exc:
                raise exc.at(first_record + number - first, number) from None
    return hash_chunk(spec, chunk)


# Unparsed RECORD lines: (number of the first line, number of the first record in its stream,
# the lines).
Piece = tuple[int, int, bytes]
# Records hashed per task.
CHUNK = 4096
# Hashed inline until a stream has sent this many records: small runs never start workers.
PARALLEL_AFTER = 3 * CHUNK


class PeopleQueue:
    """One stream's chunks in flight, collected strictly in the order they were read.

    A chunk holds either records the reader parsed or RECORD lines it did not.
    """

    def __init__(self, workers: Workers, spec: RecordSpec, records_before: int = 0) -> None:
        """`records_before`: the stream's records an earlier queue of this run took."""
        self._workers = workers
        self.spec = spec
        self._read = spec.reader()
        self._chunk: list[Pending] = []
        self._pieces: list[Piece] = []
        self._records = records_before  # the number in its stream of the last record queued
        self._piece_lines = 0
        self._futures: deque[Future[Hashed]] = deque()
        self._seen = 0
        self.pending = 0  # records read and not yet collected

    def add(self, record: Mapping[str, Any], line: int | None = None) -> Hashed | None:
        """Queue one parsed record (from input line `line`, if known).

        Return the oldest finished chunk if too many are in flight.
        """
        if self._pieces:
            self._flush()
        try:
            self._chunk.append(self._read(record))
        except MissingKeyError as exc:
            raise exc.at(self._records + 1, line) from None
        return self._added(1, len(self._chunk))

    def add_lines(self, first: int, lines: bytes, count: int) -> Hashed | None:
        """Queue `count` unparsed RECORD lines of the stream, the first numbered `first`."""
        if self._chunk:
            self._flush()
        self._pieces.append((first, self._records + 1, lines))
        self._piece_lines += count
        return self._added(count, self._piece_lines)

    def _added(self, count: int, size: int) -> Hashed | None:
        self._records += count
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
