"""`tiktok-audiences history`: what each past run did to each audience, with TikTok's receipts.

Read from the membership store, newest run first, one row per run and audience (a run that
synced no audience is one row without one). `--limit N` counts runs; `--audience KEY` keeps
one key of `audiences` (every split value's audience under it). A failed sync shows its
one-line cause. Looking never writes: a missing store stays missing. The JSON keys are
`HISTORY_KEYS`, public interface.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from target_tiktok_audiences.cli.config import add_config_command, err, load_config
from target_tiktok_audiences.cli.status_rows import utc_time
from target_tiktok_audiences.cli.status_table import UNKNOWN, Column, aligned
from target_tiktok_audiences.errors import StoreError
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.store import HistoryEntry, MembershipStore, StoreMissingError

HISTORY_KEYS = (
    "run_id",
    "started_at",
    "finished_at",
    "audience",
    "audience_id",
    "result",
    "added",
    "removed",
    "changed",
    "unchanged",
    "skipped",
    "skipped_by_reason",
    "held",
    "requests",
    "request_ids",
)


def history_row(entry: HistoryEntry) -> dict[str, Any]:
    """One entry as `--format json` prints it: exactly `HISTORY_KEYS`, times in UTC.

    A failed sync's `result` carries its one-line cause: `failed: <cause>`.
    """
    row = {key: getattr(entry, key) for key in HISTORY_KEYS}
    if entry.error:
        row["result"] = f"{entry.result}: {entry.error}"
    row["started_at"] = utc_time(entry.started_at)
    row["finished_at"] = utc_time(entry.finished_at)
    row["request_ids"] = list(entry.request_ids)
    return row


def _num(value: int | None) -> str:
    return UNKNOWN if value is None else f"{value:,}"


def _count(key: str, header: str) -> Column:
    return Column(header, lambda r: _num(r[key]), right=True)


COLUMNS = (
    Column("RUN", lambda r: str(r["run_id"]), right=True),
    Column("STARTED (UTC)", lambda r: r["started_at"].replace("T", " ").rstrip("Z")),
    Column("AUDIENCE", lambda r: r["audience"] or UNKNOWN),
    Column("AUDIENCE ID", lambda r: r["audience_id"] or UNKNOWN),
    Column("RESULT", lambda r: (r["result"] or "unfinished").split(":")[0]),
    _count("added", "ADDED"),
    _count("removed", "REMOVED"),
    _count("changed", "CHANGED"),
    _count("unchanged", "UNCHANGED"),
    _count("skipped", "SKIPPED"),
    _count("held", "HELD"),
    _count("requests", "REQUESTS"),
    Column("RECEIPTS", lambda r: _num(len(r["request_ids"])), right=True),
)


def render_table(entries: list[HistoryEntry]) -> str:
    """Aligned columns, then one line per failed sync with its cause."""
    lines = aligned(COLUMNS, [history_row(e) for e in entries])
    lines.extend(
        f"run {e.run_id}{f' {e.audience}' if e.audience else ''}: {e.result}: {e.error}"
        for e in entries
        if e.error
    )
    return "\n".join(lines)


def read_history(
    location: str, timeout: float, *, key: str | None, limit: int | None
) -> list[HistoryEntry]:
    """The store's history (none when there is no store yet); opened without creating one."""
    try:
        store = MembershipStore.open(location, create=False, timeout=timeout)
    except StoreMissingError as exc:
        err(f"{mask_url(str(exc))}; a dry run never stores anything")
        return []
    try:
        return store.history(key=key, limit=limit)
    except store.errors as exc:
        msg = (
            f"the history of membership store {mask_url(location)!r} cannot be read "
            f"({mask_url(str(exc))}): check `membership_store`"
        )
        raise StoreError(msg) from None
    finally:
        store.close()


def run(args: argparse.Namespace) -> int:
    """Print the store's history, newest run first."""
    config = load_config(args.config)
    entries = read_history(
        str(config["membership_store"]),
        float(config["store_timeout"]),
        key=args.audience,
        limit=args.limit,
    )
    if args.format == "json":
        print(json.dumps([history_row(e) for e in entries], indent=2))
    elif entries:
        print(render_table(entries))
    else:
        err("no run recorded" + (f" for audience {args.audience!r}" if args.audience else ""))
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        msg = f"{text!r} is not a whole number of runs of at least 1"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`history [--config FILE]... [--audience KEY] [--limit N] [--format table|json]`."""
    parser = add_config_command(
        commands,
        "history",
        run,
        help="past runs per audience: counts, result, TikTok's request ids (receipts)",
        description="What each run did to each audience, newest first: when, the result (a "
        "failed one with its cause), added, removed, changed, unchanged, skipped, held, "
        "requests, and the TikTok request_id of every confirmed mapping request. Kept "
        "history_days; a dry run records nothing.",
    )
    parser.add_argument("--audience", metavar="KEY", help="only this key of `audiences`")
    parser.add_argument("--limit", type=_positive, metavar="N", help="only the newest N runs")
    parser.add_argument("--format", choices=("table", "json"), default="table")
