"""Reading the tap's input: never echoing a line, and handing audience records on unparsed.

Records are nearly every line of a sync, and parsing them is a large part of its cost. The input
is read in blocks of whole lines. A block whose every line begins the way taps write a RECORD of
one stream (`{"type":"RECORD","stream":"…"`, compact or with spaces), as a few scans in C tell,
is offered to that stream whole; so is each such line of any other block. An audience's sink
takes them unparsed and sends them, in order with its other records, to the worker processes
that parse and hash. A worker parses each line exactly as here and checks it is that stream's
record: a fault is the same error, naming the same line, as line by line, raised when its chunk
is collected (before any later STATE is written). Every other line is parsed here and
dispatched as the SDK does.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import IO, Any, cast

import orjson
from singer_sdk.singerlib.encoding import GenericSingerReader
from singer_sdk.singerlib.json import deserialize_json

from target_tiktok_audiences.errors import InputError

_PREFIXES = (b'{"type":"RECORD","stream":"', b'{"type": "RECORD", "stream": "')
_BLOCK = 1 << 20  # bytes asked of the input at a time
# An integer this long may not fit 64 bits, and orjson reads such a one as a float: two ids
# that differ only in their last digits would then be one person.
_LONG_RUN = b"0" * 19
# Every ASCII digit to "0", every other byte to ".": a run of 19 digits becomes `_LONG_RUN`,
# which one substring search finds (a regular expression scan costs some eight times as much).
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))

# Offered a stream's RECORD lines unparsed: (stream, number of the first, the lines, how many).
# True when the stream took them.
RecordLane = Callable[[str, int, bytes, int], bool]


def parse_line(line: bytes, number: int, *, long_numbers: bool = True) -> dict:
    """Parse one line; a malformed one is a one-line error naming its number only.

    A STATE keeps its decimals exact (Decimal), and NaN, Infinity and -Infinity as floats, so
    that it is written back as sent. Nesting too deep to read is an error naming the line.
    `long_numbers=False` promises the line holds no run of 19 digits, which spares a scan.
    """
    try:
        try:
            message = orjson.loads(line)
            if isinstance(message, dict):
                if message.get("type") == "STATE":
                    message = deserialize_json(line)  # bookmarks stay exact Decimals
                elif long_numbers and long_number(line):
                    message = json.loads(line)  # integers over 64 bits stay exact (orjson: floats)
        except orjson.JSONDecodeError:
            message = _parse_slowly(line, number)
    except RecursionError:
        raise too_deep(number) from None
    if not isinstance(message, dict):
        msg = f"input line {number} is not a Singer message (a JSON object)"
        raise InputError(msg)
    return message


def too_deep(number: int) -> InputError:
    """The error for a line nested too deep to read or to process."""
    return InputError(
        f"input line {number} is nested too deep to read (arrays or objects within each "
        "other, hundreds of levels deep): fix the tap's output, or flatten that field in the tap"
    )


def long_number(text: bytes) -> bool:
    """Whether `text` may hold an integer over 64 bits (see `parse_line`)."""
    return _LONG_RUN in text.translate(_DIGITS_TO_ZERO)


def _parse_slowly(line: bytes, number: int) -> Any:
    """Parse with the standard library: it takes integers over 64 bits, or names the fault.

    orjson also refuses NaN and Infinity, and nesting over 1024 levels (RecursionError here).
    """
    try:
        return deserialize_json(line)
    except ValueError as exc:
        msg = (
            f"input line {number} is not valid JSON ({type(exc).__name__} at column "
            f"{getattr(exc, 'colno', '?')}): the tap's output is corrupt; fix or re-run the tap"
        )
        raise InputError(msg) from None


def require_keys(line_dict: dict, requires: set[str]) -> None:
    """Name the missing keys, never the line's content."""
    if requires <= line_dict.keys():  # every line: no set of its keys to build
        return
    missing = requires - set(line_dict)
    kind = line_dict.get("type", "unknown")
    msg = (
        f"a {kind} message lacks required key(s) {', '.join(sorted(missing))}: the "
        "tap does not follow the Singer spec"
    )
    raise InputError(msg)


def record_of(message: dict) -> tuple[str, dict]:
    """A RECORD message's stream and record, or the error that says what is wrong with it."""
    try:
        stream, record = message["stream"], message["record"]
    except KeyError:
        require_keys(message, {"stream", "record"})
        raise
    if not isinstance(record, dict):
        msg = f"a record of stream {stream!r} is not a JSON object"
        raise InputError(msg)
    return stream, record


def read_blocks(source: IO[str] | IO[bytes]) -> Iterator[bytes]:
    """The input in blocks of whole lines, as they arrive (a tap's output is not waited for)."""
    binary = getattr(source, "buffer", source)
    if hasattr(binary, "read1"):
        read: Callable[[], bytes] = lambda: binary.read1(_BLOCK)  # noqa: E731
    else:  # a text stream without bytes beneath, as tests pass
        text = cast(IO[str], source)
        read = lambda: text.read(_BLOCK).encode()  # noqa: E731
    rest = b""
    while data := read():
        if rest:
            data = rest + data
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield data[:cut] if rest else data
    if rest:
        yield rest


def record_stream(line: bytes) -> tuple[str, bytes] | None:
    """(stream, the line's prefix up to the stream's name) if `line` begins like a RECORD.

    A claim for the workers to check, not proof.
    """
    for prefix in _PREFIXES:
        if line.startswith(prefix):
            start = len(prefix)
            end = line.find(b'"', start)
            name = line[start:end]
            if end < 0 or b"\\" in name:
                return None
            try:
                return name.decode(), line[: end + 1]
            except UnicodeDecodeError:
                return None
    return None


def one_stream_block(block: bytes) -> tuple[str, int] | None:
    """(stream, line count) if every line of `block` begins like a RECORD of that one stream."""
    claim = record_stream(block)
    if claim is None or not block.endswith(b"\n") or b"\r" in block:
        return None
    stream, prefix = claim
    lines = block.count(b"\n")
    # Every line starts with the prefix when the block does and so does each line after a
    # newline (the last newline ends the block): a few scans in C, no loop over lines.
    if block.count(b"\n" + prefix) + 1 != lines:
        return None
    return stream, lines


def _no_lane(stream: str, first: int, lines: bytes, count: int) -> bool:
    return False


class SafeSingerReader(GenericSingerReader[bytes]):
    """Reads Singer lines without ever echoing one: input lines carry personal data.

    It reads bytes: the binary stream beneath a text one (stdin, an `--input` file), read by
    `read_blocks`, which also takes a text stream with nothing beneath.
    """

    # stdin, bound at import as in the SDK's own reader: typed as text, but `read_blocks`
    # reads the bytes beneath it.
    default_input = sys.stdin  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.line_number = 0
        self.record_lane: RecordLane = _no_lane  # the target offers its audiences' records

    def process_lines(
        self,
        file_input: IO[str] | IO[bytes] | None,
        callbacks: dict[str, Callable[[dict], None]],
    ) -> Counter[str]:
        """The SDK's loop, in blocks: a block of one stream's records is offered whole first."""
        stats: Counter[str] = Counter()
        lane, taken = self.record_lane, 0
        for block in read_blocks(file_input or self.default_input):
            claim = one_stream_block(block)
            if claim is not None and lane(claim[0], self.line_number + 1, block, claim[1]):
                self.line_number += claim[1]
                taken += claim[1]
                continue
            for line in block.splitlines():
                self.line_number += 1
                single = record_stream(line)
                if single is not None and lane(single[0], self.line_number, line, 1):
                    taken += 1
                    continue
                self._process_line(line, callbacks, stats)
        stats["RECORD"] += taken
        return stats

    def _process_line(
        self, line: bytes, callbacks: dict[str, Callable[[dict], None]], stats: Counter[str]
    ) -> None:
        self._current_message = line
        line_dict = self.deserialize_json(line)
        self.assert_line_requires(line_dict, requires={"type"})
        kind = line_dict["type"]
        try:
            if callback := callbacks.get(kind):
                callback(line_dict)
            else:
                self._process_unknown_message(line_dict)
        except RecursionError:  # read, but too deep for the SDK (a SCHEMA it copies, say)
            raise too_deep(self.line_number) from None
        stats[kind] += 1

    def deserialize_json(self, line: bytes) -> dict:
        """Parse one line, named by its number in any error."""
        return parse_line(line, self.line_number)

    @staticmethod
    def assert_line_requires(line_dict: dict, requires: set[str]) -> None:
        """Name the missing keys, never the line's content."""
        require_keys(line_dict, requires)

    def _process_unknown_message(self, message_dict: dict) -> None:
        """Skip message types this target has no use for (e.g. BATCH from a newer tap)."""
