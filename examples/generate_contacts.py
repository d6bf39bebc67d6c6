"""Generate the bundled example: synthetic contacts with messy, mixed-format identifiers.

Writes `contacts.jsonl` (one contact a line, as a CRM export would be) and `contacts.singer`
(the same contacts as a Singer tap's output). Deterministic: re-running gives the same files.

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


def contacts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
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
                "updated_at": f"2026-11-{rng.randint(1, 20):02d}T{rng.randint(0, 23):02d}:00:00Z",
            }
        )
    return people


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
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    people = contacts(args.n, args.seed)
    with (HERE / "contacts.jsonl").open("w", encoding="utf-8") as out:
        for person in people:
            out.write(json.dumps(person, ensure_ascii=False) + "\n")
    version = 1763683200000
    with (HERE / "contacts.singer").open("w", encoding="utf-8") as out:

        def emit(message: dict) -> None:
            out.write(json.dumps(message, ensure_ascii=False) + "\n")

        emit({"type": "SCHEMA", "stream": "contacts", "schema": SCHEMA, "key_properties": ["id"]})
        emit({"type": "ACTIVATE_VERSION", "stream": "contacts", "version": version})
        for person in people:
            emit({"type": "RECORD", "stream": "contacts", "record": person, "version": version})
        emit({"type": "ACTIVATE_VERSION", "stream": "contacts", "version": version})
        emit(
            {
                "type": "STATE",
                "value": {
                    "bookmarks": {
                        "contacts": {
                            "replication_key": "updated_at",
                            "replication_key_value": "2026-11-20T23:00:00Z",
                        }
                    }
                },
            }
        )


if __name__ == "__main__":
    main()
