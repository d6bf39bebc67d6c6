"""The floor: parse each line and normalise and hash the same fields; nothing else.

    python bench/bare_loop.py OPTIONS_JSON < input.singer

OPTIONS_JSON: the normalisation options (`NormalizationOptions`' fields), which bench.py takes
from the settings' defaults, so that the floor loads no more than the identifiers. Prints the
number of records read to stdout.

What the target cannot skip, done the fastest way it can be done in Python: one process, each
line parsed with the parser the target uses (orjson, and the standard library for a line that
may hold an integer over 64 bits, found as the target finds it), each record's identifiers
read, normalised and hashed by the package's own `IdentifierExtractor`. Neither keys nor
flags are read, nothing is kept, staged, planned or written.
"""

from __future__ import annotations

import json
import sys

import orjson

from target_tiktok_audiences.identifiers import (
    DEFAULT_IDENTIFIER_FIELDS,
    IdentifierExtractor,
    NormalizationOptions,
)

# As the target's reader: digits to "0", anything else to ".", then one substring search.
_LONG_RUN = b"0" * 19
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))


def main() -> int:
    """Read stdin line by line; hash the identifiers of every RECORD."""
    options = NormalizationOptions(**json.loads(sys.argv[1]))
    extract = IdentifierExtractor(DEFAULT_IDENTIFIER_FIELDS, options)
    loads = orjson.loads
    records = 0
    for line in sys.stdin.buffer:
        message = loads(line)
        if message.get("type") == "RECORD":
            if _LONG_RUN in line.translate(_DIGITS_TO_ZERO):
                message = json.loads(line)
            extract(message["record"])
            records += 1
    print(records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
