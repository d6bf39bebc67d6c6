"""What both console scripts set up first: a scrubbed stderr, and stdout's two ways of ending.

`install_stderr_scrubber` runs at each script's entry, before logging is configured, so every
log handler, warning and traceback writes through `ScrubbedStream` and no registered secret
(`redaction.remember_secret`) or URL password reaches the terminal or a log collector.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from typing import Any, TextIO, cast

from target_tiktok_audiences.redaction import scrub

SIGPIPE_EXIT = 141  # 128 + SIGPIPE: how a Unix tool ends when its reader has gone


class ScrubbedStream:
    """A text stream that writes `redaction.scrub` of each complete line to the stream it wraps.

    Text is held until its line ends (or until `flush`), so a secret written in two pieces is
    still seen whole. It has no `buffer`: nothing can write past the scrubbing in bytes.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        """Hold `text`; write the complete lines so far, scrubbed."""
        if not isinstance(text, str):
            msg = f"write() argument must be str, not {type(text).__name__}"
            raise TypeError(msg)
        self._pending += text
        end = self._pending.rfind("\n") + 1
        if end:
            lines, self._pending = self._pending[:end], self._pending[end:]
            self._stream.write(scrub(lines))
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        """Write each of `lines`."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Write what is held, scrubbed, and flush the wrapped stream."""
        if self._pending:
            text, self._pending = self._pending, ""
            self._stream.write(scrub(text))
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        """Everything else (`fileno`, `isatty`, `encoding`, ...) is the wrapped stream's."""
        if name == "buffer":
            raise AttributeError(name)
        return getattr(self._stream, name)


def install_stderr_scrubber() -> None:
    """Make `sys.stderr` a `ScrubbedStream` (once); a closed stderr stays closed."""
    if sys.stderr is not None and not isinstance(sys.stderr, ScrubbedStream):
        sys.stderr = cast("TextIO", ScrubbedStream(sys.stderr))


def stdout_is_closed() -> bool:
    """Whether the script was started with no stdout (`>&-`): Python then sets it to None."""
    return sys.stdout is None


def discard_stdout() -> None:
    """After a broken pipe: send what stdout still holds to /dev/null, so exit is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def store_driver_errors() -> tuple[type[Exception], ...]:
    """The database drivers' exception classes: a dropped connection is no traceback."""
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    if "psycopg" in sys.modules:  # only loaded for a PostgreSQL store
        errors += (sys.modules["psycopg"].Error,)
    return errors
