"""Operator commands: check, status, list, history, erase, auth and store copy.

The target does the syncing; these commands answer what a person running it asks: will it be
able to (`check`), what did it do and how does TikTok see the result (`status`), which
audiences exist on TikTok (`list`), what did each run do, with TikTok's receipts (`history`),
how do I remove someone everywhere (`erase`), how do I get a token (`auth`), and how do I move
the store (`store copy`). Each command is one module with `add_parser` and `run`; this one only
parses and runs, and turns an expected failure into one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

import requests

from target_tiktok_audiences.cli import auth, check, erase, history, status, store_copy
from target_tiktok_audiences.cli import list as list_command
from target_tiktok_audiences.cli.config import PROG, err
from target_tiktok_audiences.console import (
    SIGPIPE_EXIT,
    discard_stdout,
    install_stderr_scrubber,
    stdout_is_closed,
)
from target_tiktok_audiences.errors import TargetError

DISTRIBUTION = "target-tiktok-audiences"


def build_parser() -> argparse.ArgumentParser:
    """The `tiktok-audiences` command line; `--version` is the installed distribution's."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operator commands for target-tiktok-audiences: check a connection, see "
        "audiences, list the audiences on TikTok, get a token.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {metadata.version(DISTRIBUTION)}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (check, status, list_command, history, erase, auth, store_copy):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; expected failures are one line on stderr and exit status 1.

    stderr is scrubbed of secrets before anything is written to it. A reader that stops
    reading stdout (`| head -1`) ends the command quietly, as it ends any Unix tool.
    """
    install_stderr_scrubber()
    args = build_parser().parse_args(argv)
    if stdout_is_closed():
        err(
            f"{args.command}: stdout is closed, and the answer goes there: redirect it "
            "(> FILE, or > /dev/null) instead of closing it"
        )
        return 1
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, so that a reader gone early is a quiet end, not a traceback
        return code
    except BrokenPipeError:
        discard_stdout()
        return SIGPIPE_EXIT
    except TargetError as exc:
        err(f"{args.command}: {exc}")
    except requests.RequestException as exc:
        err(f"{args.command}: cannot talk to TikTok ({type(exc).__name__}): check `api_url`")
    except KeyboardInterrupt:
        err(f"{args.command}: interrupted")
        return 130
    return 1
