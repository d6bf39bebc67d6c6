"""The floor: parse each line and normalise and hash the same fields; nothing else.

    python bench/bare_loop.py OPTIONS_JSON < input.singer

OPTIONS_JSON: the normalisation options (`NormalizationOptions`' fields), which bench.py takes
from the settings' defaults, so that the floor loads no more than the identifiers. Prints the
number of records read to stdout.
"""

from __future__ import annotations

import json
import sys

from target_tiktok_audiences.identifiers import (
    DEFAULT_IDENTIFIER_FIELDS,
    IdentifierExtractor,
    NormalizationOptions,
)


def main() -> int:
    """Read stdin line by line; hash the identifiers of every RECORD."""
    options = NormalizationOptions(**json.loads(sys.argv[1]))
    extract = IdentifierExtractor(DEFAULT_IDENTIFIER_FIELDS, options)
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
