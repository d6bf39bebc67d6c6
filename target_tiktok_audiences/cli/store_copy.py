"""`tiktok-audiences store copy`: move a membership store to another database.

Everything is copied in one transaction on the destination (`store.copy_store`), so a copy
that breaks off leaves the destination as it was. Passwords in either location are registered
with the stderr scrubber before the first connection.
"""

from __future__ import annotations

import argparse

from target_tiktok_audiences.redaction import remember_secret
from target_tiktok_audiences.settings import setting_default, store_passwords
from target_tiktok_audiences.store import copy_store


def run(args: argparse.Namespace) -> int:
    """Copy a membership store to another database; print what was copied."""
    for location in (args.source, args.dest):
        for password in store_passwords(location):
            remember_secret(password)
    counts = copy_store(
        args.source, args.dest, force=args.force, lock_timeout=setting_default("store_lock_timeout")
    )
    print(
        f"copied {counts['audiences']} audiences, {counts['members']} members and "
        f"{counts['pending']} held people"
    )
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`store copy --from STORE --to STORE [--force]`, under the `store` command group."""
    store = commands.add_parser(
        "store",
        help="manage the membership store",
        description="Manage the membership store that `membership_store` names.",
    )
    store_commands = store.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    parser = store_commands.add_parser(
        "copy",
        help="copy a membership store to another database (SQLite <-> PostgreSQL)",
        description="Copy every audience (ids, names, times, last results), confirmed member "
        "and held person from one membership store to another, in one transaction on the "
        "destination. A destination that already holds data is refused unless --force. Pause "
        "the pipelines while copying, then point membership_store at the new store.",
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="STORE",
        help="the store to copy: a SQLite file path or a postgresql:// URL",
    )
    parser.add_argument(
        "--to",
        dest="dest",
        required=True,
        metavar="STORE",
        help="where to copy it: a SQLite path or a postgresql:// URL (created if need be)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace everything a non-empty destination holds"
    )
    parser.set_defaults(func=run)
