"""The floor: parse each line and normalise and hash the same fields; nothing else.

    python bench/bare_loop.py < input.singer

Prints the number of records read to stdout.
"""

from __future__ import annotations

import json
import sys

from target_tiktok_audiences.identifiers import DEFAULT_IDENTIFIER_FIELDS, IdentifierExtractor
from target_tiktok_audiences.settings import normalization_options


def main() -> int:
    """Read stdin line by line; hash the identifiers of every RECORD."""
    extract = IdentifierExtractor(DEFAULT_IDENTIFIER_FIELDS, normalization_options({}))
    loads = json.loads
    records = 0
    for line in sys.stdin.buffer:
        message = loads(line)
        if message.get("type") == "RECORD":
            extract(message["record"])
            records += 1
    print(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
