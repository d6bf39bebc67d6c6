"""Generate the bundled example: synthetic contacts with messy, mixed-format identifiers.

Writes `contacts.jsonl` (one contact a line, as a CRM export would be), `suppressions.jsonl`
(people who asked not to be advertised to: some are contacts, written in another case or
format than in the contacts, some are not contacts at all), and `contacts.singer` (both, as a
Singer tap's output: the stream `suppressions`, then the stream `contacts`, then a STATE).
Each contact has a `segment` (`vip`, `regular`, `lapsed`, or null). Deterministic: re-running
with the same arguments gives the same files.

    python examples/generate_contacts.py [--n 3000] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from pathlib import Path

HERE = Path(__file__).parent
FIRST = [
    "Ana",
    "Ben",
    "Chloé",
    "Dmitri",
    "Emeka",
    "Fatima",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
]
LAST = [
    "Smith",
    "García",
    "Müller",
    "Okafor",
    "Tanaka",
    "Novak",
    "Silva",
    "Khan",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Jensen",
    "Haddad",
    "Nguyen",
    "O'Brien",
    "Petrov",
]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com"]
SEGMENTS = [("vip", 0.12), ("regular", 0.55), ("lapsed", 0.25), (None, 0.08)]
SUPPRESSION_REASONS = ["unsubscribed", "privacy_request", "complaint"]


def email(rng: random.Random, first: str, last: str, i: int) -> str | None:
    roll = rng.random()
    local = f"{first}.{last}{i}".lower().replace("'", "").replace("é", "e").replace("ü", "u")
    value = f"{local}@{rng.choice(DOMAINS)}"
    if roll < 0.03:
        return rng.choice([f"{local}@", f"{local}.example.com", "n/a", f"{local}@@example.com"])
    if roll < 0.06:
        return None
    if roll < 0.20:
        value = value.upper() if rng.random() < 0.5 else value.title()
    if roll > 0.90:
        value = f"  {value} "
    if 0.85 < roll <= 0.90:
        user, domain = value.split("@")
        value = f"{user}+news@{domain}"
    return value


def phone(rng: random.Random) -> str | None:
    if rng.random() >= 0.6:
        return None
    area, line = rng.choice(["212", "312", "415", "617", "718"]), rng.randint(2000000, 9999999)
    digits = f"{area}{line}"
    style = rng.randrange(8)
    if style == 0:
        return f"+1 {area} {digits[3:6]} {digits[6:]}"
    if style == 1:
        return f"({area}) {digits[3:6]}-{digits[6:]}"
    if style == 2:
        return f"{area}.{digits[3:6]}.{digits[6:]}"
    if style == 3:
        return f"1{digits}"
    if style == 4:
        return f"+44 20 7946 {rng.randint(0, 9999):04d}"
    if style == 5:
        return f"+49 30 {rng.randint(1000000, 9999999)}"
    if style == 6:
        return rng.choice(["12", "555", "not a phone", "+1 000"])
    return digits


def maid(rng: random.Random, share: float) -> str | None:
    if rng.random() >= share:
        return None
    if rng.random() < 0.05:
        return "00000000-0000-0000-0000-000000000000"
    value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return value.upper() if rng.random() < 0.3 else value


def segment(rng: random.Random) -> str | None:
    roll = rng.random()
    for value, share in SEGMENTS:
        if roll < share:
            return value
        roll -= share
    return None


def contacts(n: int, seed: int) -> list[dict]:
    """`n` contacts; segments come from a generator of their own and change no other field."""
    rng = random.Random(seed)
    segments = random.Random(f"{seed}-segments")
    people = []
    for i in range(1, n + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        people.append(
            {
                "id": i,
                "first_name": first,
                "last_name": last,
                "email": email(rng, first, last, i),
                "phone": phone(rng),
                "idfa": maid(rng, 0.2),
                "aaid": maid(rng, 0.1),
                "marketing_consent": rng.random() < 0.95,
                "segment": segment(segments),
                "updated_at": f"2026-11-{rng.randint(1, 20):02d}T{rng.randint(0, 23):02d}:00:00Z",
            }
        )
    return people


def reformat_email(rng: random.Random, value: str) -> str:
    """The same address as a person types it on an opt-out form: another case, stray spaces."""
    value = value.strip().lower()
    return rng.choice([value.upper(), value.title(), f" {value}", value])


def reformat_phone(value: str) -> str | None:
    """The same number in another format than the contact's (None: not a number we can reshape)."""
    digits = "".join(c for c in value if c.isdigit())
    if value.startswith("+") and not value.startswith("+1"):
        return f"+{digits}"
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        return None
    return f"+1 ({digits[:3]}) {digits[3:6]}-{digits[6:]}"


def suppressions(people: list[dict], seed: int, of_contacts: int, others: int) -> list[dict]:
    """`of_contacts` opt-outs of contacts (by email, phone or both), then `others` of strangers."""
    rng = random.Random(f"{seed}-suppressions")
    rows = []
    reachable = [person for person in people if person["email"] or person["phone"]]
    for person in rng.sample(reachable, of_contacts):
        email, phone = person["email"], person["phone"]
        by = rng.choice(["email", "email", "phone", "both"])
        by = "phone" if not email else "email" if not phone else by
        rows.append(
            {
                "email": reformat_email(rng, email) if email and by != "phone" else None,
                "phone": (reformat_phone(phone) or phone) if phone and by != "email" else None,
            }
        )
    for k in range(1, others + 1):
        email = f"opt.out{k}@{rng.choice(DOMAINS)}" if rng.random() < 0.8 else None
        phone = f"+1 646 555 {rng.randint(0, 9999):04d}"
        rows.append({"email": email, "phone": phone if not email or rng.random() < 0.4 else None})
    rng.shuffle(rows)
    return [
        {
            "id": f"S{i:04d}",
            **row,
            "reason": rng.choice(SUPPRESSION_REASONS),
            "requested_at": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T12:00:00Z",
        }
        for i, row in enumerate(rows, start=1)
    ]


SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "first_name": {"type": ["string", "null"]},
        "last_name": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"]},
        "phone": {"type": ["string", "null"]},
        "idfa": {"type": ["string", "null"]},
        "aaid": {"type": ["string", "null"]},
        "marketing_consent": {"type": ["boolean", "null"]},
        "segment": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
SUPPRESSIONS_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "email": {"type": ["string", "null"]},
        "phone": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]},
        "requested_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def singer_stream(name: str, schema: dict, rows: list[dict], version: int) -> list[dict]:
    """One stream as a full-table tap sends it: SCHEMA, then a version closed around its rows."""
    return [
        {"type": "SCHEMA", "stream": name, "schema": schema, "key_properties": ["id"]},
        {"type": "ACTIVATE_VERSION", "stream": name, "version": version},
        *({"type": "RECORD", "stream": name, "record": row, "version": version} for row in rows),
        {"type": "ACTIVATE_VERSION", "stream": name, "version": version},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    people = contacts(args.n, args.seed)
    opted_out = suppressions(people, args.seed, of_contacts=args.n // 15, others=args.n // 30)
    write_jsonl(HERE / "contacts.jsonl", people)
    write_jsonl(HERE / "suppressions.jsonl", opted_out)
    version = 1763683200000
    bookmark = {"replication_key": "updated_at", "replication_key_value": "2026-11-20T23:00:00Z"}
    messages = [
        *singer_stream("suppressions", SUPPRESSIONS_SCHEMA, opted_out, version),
        *singer_stream("contacts", SCHEMA, people, version),
        {"type": "STATE", "value": {"bookmarks": {"contacts": bookmark}}},
    ]
    write_jsonl(HERE / "contacts.singer", messages)


if __name__ == "__main__":
    main()
