"""Synthetic Singer input for the benchmark: n people, written fast with plain string formatting.

Every person has an email (mixed case and whitespace variants); 60% a phone in mixed national
(US, the target's default region) and international formats; 20% an IDFA; 10% an AAID. Every
identifier encodes the person's index, so all normalised values are distinct and valid by
construction, and the expected number of ids per TikTok id type is known without hashing.

Two files per (n, seed): the first snapshot, and the same snapshot with 1% of people changed
(half of them a new email for an existing id, half brand-new ids appended). A third, on request,
feeds one composed audience (see Composed).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GENERATOR_VERSION = 1
STREAM = "people"

_SCHEMA = {
    "type": "SCHEMA",
    "stream": STREAM,
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "first_name": {"type": ["string", "null"]},
            "last_name": {"type": ["string", "null"]},
            "email": {"type": ["string", "null"]},
            "phone": {"type": ["string", "null"]},
            "idfa": {"type": ["string", "null"]},
            "aaid": {"type": ["string", "null"]},
            "updated_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "key_properties": ["id"],
}

_FIRST = ("Ana", "Kofi", "Hiro", "Emeka", "Lena", "Omar", "Sofia", "Jin", "Maya", "Luca")
_LAST = ("Tanaka", "Dubois", "Okafor", "Novak", "Silva", "Kim", "Rossi", "Haddad", "Berg", "Lopez")
_DOMAINS = ("example.com", "Example.COM", "mail.example.org", "EXAMPLE.net", "corp.example.io")
_AREAS = ("212", "415", "312", "617", "718", "305", "512", "206", "303", "702", "917", "646")
# JSON-escaped email templates: {l} local part, {d} domain. Leading/trailing whitespace and case.
_EMAIL_FORMATS = (
    "{l}@{d}",
    "  {l}@{d}",
    "{L}@{D}",
    "{l}@{d}\\t",
    "\\u00a0{l}@{D} ",
    "{C}@{d}",
)


@dataclass
class Expected:
    """What a correct target must send for a generated file: ids per TikTok id type."""

    people: int
    email: int
    phone: int
    idfa: int
    aaid: int

    @property
    def total_ids(self) -> int:
        """All identifiers, over every id type."""
        return self.email + self.phone + self.idfa + self.aaid

    def by_schema(self) -> dict[str, int]:
        """Expected counts keyed by TikTok `id_schema` name (zero counts left out)."""
        counts = {
            "EMAIL_SHA256": self.email,
            "PHONE_SHA256": self.phone,
            "IDFA_SHA256": self.idfa,
            "AAID_SHA256": self.aaid,
        }
        return {k: v for k, v in counts.items() if v}


@dataclass
class Change:
    """The 1% change between the first snapshot and the changed one."""

    changed_emails: int
    new_people: int
    new_ids: int  # identifiers of the new people, all types

    @property
    def delete_rows(self) -> int:
        """People with something to delete: each changed email loses its old hash."""
        return self.changed_emails

    @property
    def add_rows(self) -> int:
        """People with something to add: changed emails and new people."""
        return self.changed_emails + self.new_people


@dataclass
class Dataset:
    """Paths and expectations of one generated data set."""

    n: int
    seed: int
    first: Path
    changed: Path
    expected: Expected
    expected_changed: Expected
    change: Change
    seconds: float


def _phone(i: int, r: float) -> str:
    """A phone for person i, unique to i, in one of several national/international formats."""
    area = _AREAS[(i // 8_000_000) % len(_AREAS)]
    nxx = 200 + (i // 10_000) % 800
    line = i % 10_000
    kind = int(r * 12)
    if kind == 0:
        return f"({area}) {nxx}-{line:04d}"
    if kind == 1:
        return f"{area}-{nxx}-{line:04d}"
    if kind == 2:
        return f"{area}.{nxx}.{line:04d}"
    if kind == 3:
        return f"{area}{nxx}{line:04d}"
    if kind == 4:
        return f"1 {area} {nxx} {line:04d}"
    if kind == 5:
        return f" +1 {area} {nxx} {line:04d}"
    if kind == 6:
        return f"+1-{area}-{nxx}-{line:04d}"
    if kind == 7:
        return f"+44 20 {i // 10_000 % 10_000:04d} {line:04d}"
    if kind == 8:
        return f"+49 30 {i:08d}"
    if kind == 9:
        pairs = (i // 1_000_000 % 100, i // 10_000 % 100, i // 100 % 100, i % 100)
        return "+33 6 {:02d} {:02d} {:02d} {:02d}".format(*pairs)
    if kind == 10:
        return f"+91 9{i // 100_000 % 10_000:04d} {i % 100_000:05d}"
    return f"+81 90 {i // 10_000 % 10_000:04d} {line:04d}"


def _uuid(i: int, rng: random.Random, upper: bool) -> str:
    """A random-looking version-4 UUID whose last group is i (so unique per person)."""
    bits = rng.getrandbits(64)
    s = (
        f"{bits >> 32:08x}-{bits >> 16 & 0xFFFF:04x}-4{bits >> 4 & 0xFFF:03x}-"
        f"{0x8000 | (bits & 0x3FFF):04x}-{i:012x}"
    )
    return s.upper() if upper else s


def _email(i: int, first: str, last: str, fmt: str, domain: str, moved: bool) -> str:
    local = f"{first}.{last}{i}" if not moved else f"moved.{first}{i}"
    lower = local.lower()
    return fmt.format(l=lower, L=lower.upper(), C=local, d=domain.lower(), D=domain)


def _person(i: int, rng: random.Random, moved: bool, counts: list[int]) -> str:
    """One RECORD line for person i; counts gets email/phone/idfa/aaid tallies."""
    rnd = rng.random
    first = _FIRST[i % 10]
    last = _LAST[i // 10 % 10]
    email = _email(i, first, last, _EMAIL_FORMATS[int(rnd() * 6)], _DOMAINS[int(rnd() * 5)], moved)
    counts[0] += 1
    r = rnd()
    if r < 0.6:
        phone = '"' + _phone(i, r / 0.6) + '"'
        counts[1] += 1
    else:
        phone = "null"
    if rnd() < 0.2:
        idfa = '"' + _uuid(i, rng, upper=True) + '"'
        counts[2] += 1
    else:
        idfa = "null"
    if rnd() < 0.1:
        aaid = '"' + _uuid(i, rng, upper=False) + '"'
        counts[3] += 1
    else:
        aaid = "null"
    day = 1 + i % 28
    return (
        f'{{"type":"RECORD","stream":"{STREAM}","record":{{"id":{i},"first_name":"{first}",'
        f'"last_name":"{last}","email":"{email}","phone":{phone},"idfa":{idfa},'
        f'"aaid":{aaid},"updated_at":"2026-11-{day:02d}T12:00:00Z"}}}}\n'
    )


def _write(path: Path, n: int, seed: int, *, moved_every: int = 0, extra: int = 0) -> Expected:
    """Write a snapshot of people 0..n-1 (and n..n+extra-1); every moved_every-th has moved."""
    rng = random.Random(seed)
    counts = [0, 0, 0, 0]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", buffering=1 << 20) as out:
        out.write(json.dumps(_SCHEMA, separators=(",", ":")) + "\n")
        chunk: list[str] = []
        for i in range(n + extra):
            moved = bool(moved_every) and i < n and i % moved_every == 0
            chunk.append(_person(i, rng, moved, counts))
            if len(chunk) >= 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
        state = {"type": "STATE", "value": {"bookmarks": {STREAM: {"last_id": n + extra - 1}}}}
        out.write(json.dumps(state, separators=(",", ":")) + "\n")
    tmp.replace(path)
    return Expected(n + extra, *counts)


COMPOSED_STREAMS = ("a", "b")  # the two included streams of the composed scenario
COMPOSED_EXCLUDE = "x"  # its exclusion stream
EXCLUDED_EVERY = 20  # every 20th person of a and b is also in x: half of x's n/10 people


@dataclass
class Composed:
    """One audience from streams a (people 0..n/2-1) and b (n/2..n-1), less stream x.

    x holds n/10 people: every EXCLUDED_EVERY-th person of a and b (the same record) and as
    many people found nowhere else. The people of a and b are those of `dataset(n, seed)`'s
    first snapshot, record for record, so a composed sync reads the same people as a simple
    one plus the exclusion stream. `expected` counts the members: a and b less x.
    """

    n: int
    path: Path
    expected: Expected
    excluded: int  # people of a and b that x excludes
    records: int  # every RECORD in the file
    seconds: float


def _schema_line(stream: str) -> str:
    return json.dumps({**_SCHEMA, "stream": stream}, separators=(",", ":")) + "\n"


def composed_dataset(n: int, seed: int, cache_dir: Path) -> Composed:
    """The composed scenario's Singer file for (n, seed), generated unless already cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"composed-v{GENERATOR_VERSION}-n{n}-s{seed}.singer"
    meta_path = path.with_suffix(".json")
    started = time.monotonic()
    if not (meta_path.exists() and path.exists()):
        rng = random.Random(seed)
        members, excluded_counts = [0, 0, 0, 0], [0, 0, 0, 0]
        to_x: list[str] = []
        retag = '"stream":"' + STREAM + '"'
        tmp = path.with_suffix(".tmp")
        half = n // 2
        with tmp.open("w", encoding="utf-8", buffering=1 << 20) as out:
            for stream in (*COMPOSED_STREAMS, COMPOSED_EXCLUDE):
                out.write(_schema_line(stream))
            for i in range(n):
                excluded = i % EXCLUDED_EVERY == 0
                line = _person(i, rng, False, excluded_counts if excluded else members)
                stream = COMPOSED_STREAMS[i >= half]
                out.write(line.replace(retag, f'"stream":"{stream}"', 1))
                if excluded:
                    to_x.append(line.replace(retag, f'"stream":"{COMPOSED_EXCLUDE}"', 1))
            outsiders = max(0, n // 10 - len(to_x))
            scratch = [0, 0, 0, 0]
            to_x += [
                _person(i, rng, False, scratch).replace(retag, f'"stream":"{COMPOSED_EXCLUDE}"', 1)
                for i in range(n, n + outsiders)
            ]
            out.write("".join(to_x))
            state = {"type": "STATE", "value": {"bookmarks": {"composed": {"last_id": n - 1}}}}
            out.write(json.dumps(state, separators=(",", ":")) + "\n")
        tmp.replace(path)
        excluded_people = len(range(0, n, EXCLUDED_EVERY))
        meta = {
            "expected": asdict(Expected(n - excluded_people, *members)),
            "excluded": excluded_people,
            "records": n + len(to_x),
        }
        meta_path.write_text(json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    return Composed(
        n,
        path,
        Expected(**meta["expected"]),
        meta["excluded"],
        meta["records"],
        time.monotonic() - started,
    )


def dataset(n: int, seed: int, cache_dir: Path) -> Dataset:
    """The data set for (n, seed), generated into cache_dir unless already there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"people-v{GENERATOR_VERSION}-n{n}-s{seed}"
    first, changed = cache_dir / f"{stem}.singer", cache_dir / f"{stem}-changed.singer"
    meta_path = cache_dir / f"{stem}.json"
    half = max(1, n // 200)  # 1% of people change: half move email, half are new
    moved_every = max(1, n // half)
    started = time.monotonic()
    if meta_path.exists() and first.exists() and changed.exists():
        meta = json.loads(meta_path.read_text())
        expected, expected_changed = Expected(**meta["first"]), Expected(**meta["changed"])
    else:
        # The same seed makes the same random draws, so unchanged people are identical lines.
        expected = _write(first, n, seed)
        expected_changed = _write(changed, n, seed, moved_every=moved_every, extra=half)
        meta_path.write_text(
            json.dumps({"first": asdict(expected), "changed": asdict(expected_changed)})
        )
    moved = len(range(0, n, moved_every))
    change = Change(
        changed_emails=moved,
        new_people=half,
        new_ids=expected_changed.total_ids - expected.total_ids,
    )
    return Dataset(
        n, seed, first, changed, expected, expected_changed, change, time.monotonic() - started
    )
