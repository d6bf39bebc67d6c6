"""`tiktok-audiences status`: what the target did, and how TikTok sees the result.

One row per audience the membership store knows, in the store's order, joined with TikTok's
details (matched size, validity, expiry) when a token is set and dry run is off. Looking never
writes: a missing store stays missing. A TikTok failure still prints the store's rows, then
one line, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from target_tiktok_audiences.cli.config import (
    add_config_command,
    err,
    load_config,
    make_client,
)
from target_tiktok_audiences.cli.status_rows import (
    STATUS_KEYS,
    STATUS_WORDS,
    Watch,
    shared_with,
    stale_streams,
    status_row,
)
from target_tiktok_audiences.cli.status_table import render_table
from target_tiktok_audiences.composed import composed_settings
from target_tiktok_audiences.errors import StoreError, TargetError, TikTokAPIError
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.settings import AudienceDefinition, Definitions, resolve_definitions
from target_tiktok_audiences.store import AudienceRow, MembershipStore, StoreMissingError
from target_tiktok_audiences.tiktok.audiences import AudienceCalls
from target_tiktok_audiences.tiktok.codes import NO_PERMISSION, NOT_FOUND
from target_tiktok_audiences.tiktok.dry_run import DRY_RUN_PREFIX

T = TypeVar("T")


def _on_tiktok(row: AudienceRow) -> bool:
    return bool(row.audience_id) and not str(row.audience_id).startswith(DRY_RUN_PREFIX)


def fetch_details(
    client: AudienceCalls, rows: Sequence[AudienceRow]
) -> tuple[dict[str, dict], list[str]]:
    """TikTok's details by audience id, read per advertiser 100 ids a call; plus problems.

    One audience deleted on TikTok (NOT_FOUND) fails its whole batch, so that batch is re-read id
    by id to show the others. Any other error (a bad token, TikTok down) is raised.
    """
    wanted: dict[str, list[str]] = {}
    for row in rows:
        if _on_tiktok(row):
            ids = wanted.setdefault(row.advertiser_ids[0], [])
            if row.audience_id not in ids:
                ids.append(str(row.audience_id))
    details: dict[str, dict] = {}
    problems: list[str] = []
    for advertiser, ids in wanted.items():
        try:
            found = list(client.read_audiences(advertiser, ids))
        except TikTokAPIError as exc:
            if exc.code == NO_PERMISSION:
                problems.append(
                    f"advertiser {advertiser} is not usable by this token ({NO_PERMISSION}): "
                    "its audiences show no TikTok columns; run `tiktok-audiences check`"
                )
                continue
            if exc.code != NOT_FOUND:
                raise
            found = []
            for audience_id in ids:
                try:
                    found.extend(client.read_audiences(advertiser, [audience_id]))
                except TikTokAPIError as one:
                    if one.code != NOT_FOUND:
                        raise
                    problems.append(
                        f"audience {audience_id} no longer exists on TikTok ({NOT_FOUND}): "
                        "remove it from `audiences`, or re-create it"
                    )
        for item in found:
            details[str(item.get("audience_id"))] = item
    return details, problems


@dataclass(frozen=True)
class Stored:
    """What `status` reads of the store: each audience with its counts and lock, and streams.

    `audiences`: (row, confirmed, pending, syncing) in the store's order; `snapshots`: per
    stream, when a run last changed one of its sources.
    """

    audiences: list[tuple[AudienceRow, int, int, bool]]
    snapshots: dict[str, float]


def read_store(location: str, timeout: float, read: Callable[[MembershipStore], T]) -> T:
    """What `read` finds in the store; `StoreMissingError` when there is no store yet.

    Opened with `create=False`: looking must not leave an empty store behind. `timeout` is
    the `store_timeout` a run uses: a database that stops answering ends the command too.
    """
    store = MembershipStore.open(location, create=False, timeout=timeout)
    try:
        return read(store)
    except store.errors as exc:
        msg = (
            f"membership store {mask_url(location)!r} cannot be read ({mask_url(str(exc))}): "
            "check `membership_store`"
        )
        raise StoreError(msg) from None
    finally:
        store.close()


def _stored(store: MembershipStore) -> Stored:
    """Every audience with its counts and whether a run holds it, and the streams' times."""
    audiences = [
        (row, store.count_members(row.id), store.count_pending(row.id), store.syncing(row.id))
        for row in store.list_audiences()
    ]
    return Stored(audiences, store.snapshot_times())


def delivered_at(
    snapshots: dict[str, float],
    audiences: Sequence[tuple[AudienceRow, AudienceDefinition | None]],
) -> dict[str, float]:
    """Per stream, when it last sent its records.

    Its sources' newest snapshot or, for the stream of a simple audience (a source may
    stay as it was when its records change nothing), that audience's last successful sync,
    whichever is later. `audiences`: each stored row with its spec (None: not configured).
    """
    delivered = dict(snapshots)
    for row, definition in audiences:
        simple = definition.simple if definition is not None else row.streams is None
        if simple and row.last_result == "ok" and row.last_sync_at is not None:
            delivered[row.stream] = max(delivered.get(row.stream, 0.0), row.last_sync_at)
    return delivered


def watched_streams(
    definition: AudienceDefinition | None, delivered: dict[str, float]
) -> list[str] | None:
    """The configured streams an audience is made of (and excludes), for `stale_streams`.

    A simple audience's own stream that never synced successfully is left out: its row is
    FAILED or has not run, and says so. None for an audience the config no longer has.
    """
    if definition is None:
        return None
    streams = [*definition.streams, *definition.exclude_streams]
    if definition.simple:
        streams = [s for s in streams if s != definition.key or s in delivered]
    return streams


def configured(definitions: Definitions, row: AudienceRow) -> AudienceDefinition | None:
    """The spec of a stored audience, if the config still has it (same key, same ad accounts)."""
    if row.stream in definitions.audiences or not definitions.audiences:
        definitions.audiences_of(row.stream)  # the implicit form makes a stream's on first use
    definition = definitions.audiences.get(row.stream)
    if definition is None or definition.advertiser_ids != row.advertiser_ids:
        return None
    return definition


def with_configured_identity(
    row: AudienceRow, definition: AudienceDefinition | None
) -> AudienceRow:
    """Fill in the id or name the config gives an audience that TikTok has not seen yet.

    A held audience (or one whose stream has sent nobody) has no id and no name in the store;
    the current config says which audience it will be (under `split_by`, the name of its
    value), as long as it still names the same ad accounts (otherwise the row is from an
    older config and is shown as stored).
    """
    if (row.audience_id and row.name) or definition is None:
        return row
    return replace(
        row,
        audience_id=row.audience_id or definition.audience_id,
        name=row.name or composed_settings(definition, row.split_value).audience_name,
    )


class UnknownStatusWordError(TargetError):
    """`--fail-on` names a word that is not a status word."""


def fail_on_words(text: str | None) -> frozenset[str]:
    """The words of `--fail-on WORD[,WORD...]` (none without it); an unknown one is refused."""
    if text is None:
        return frozenset()
    words = {w.strip().upper() for w in text.split(",") if w.strip()}
    unknown = sorted(words - set(STATUS_WORDS))
    if unknown or not words:
        msg = (
            f"--fail-on: unknown status word(s) {', '.join(unknown) or repr(text)}: give one or "
            f"more of {', '.join(STATUS_WORDS)}, separated by commas"
        )
        raise UnknownStatusWordError(msg)
    return frozenset(words)


def run(args: argparse.Namespace) -> int:
    """Print one row per audience the store knows, joined with TikTok's view when possible.

    Exit status: 2 when an audience has a word of `--fail-on`, else 1 when TikTok's columns
    could not be read, else 0.
    """
    fail_on = fail_on_words(args.fail_on)
    config = load_config(args.config)
    # Everything but the token, which status can do without.
    definitions = resolve_definitions({**config, "dry_run": True})
    location = str(config["membership_store"])
    try:
        stored = read_store(location, float(config["store_timeout"]), _stored)
    except StoreMissingError as exc:
        err(f"{mask_url(str(exc))}; a dry run never stores anything")
        stored = Stored([], {})
    specs = {row.id: configured(definitions, row) for row, *_ in stored.audiences}
    audiences = [
        (with_configured_identity(row, specs[row.id]), confirmed, pending, syncing)
        for row, confirmed, pending, syncing in stored.audiences
    ]
    token = None if config.get("dry_run") else config.get("access_token")
    details: dict[str, dict] = {}
    failure: str | None = None
    if not token:
        why = "dry_run is on" if config.get("dry_run") else "no access_token is set"
        err(f"{why}: showing the store only; matched, match rate, validity and expiry need a token")
    elif audiences:
        client = make_client(config, token)
        try:
            details, problems = fetch_details(client, [a[0] for a in audiences])
            for problem in problems:
                err(problem)
        except TikTokAPIError as exc:
            failure = f"TikTok's columns are unknown: {exc}"
        finally:
            client.close()
    now = time.time()
    stale_after = float(config["stale_after_hours"]) * 3600
    delivered = delivered_at(stored.snapshots, [(a[0], specs[a[0].id]) for a in audiences])
    rows = [
        status_row(
            row,
            confirmed,
            pending,
            details.get(str(row.audience_id)),
            now,
            Watch(
                syncing=syncing,
                shared=shared_with(row, specs[row.id]),
                stale_after=stale_after,
                stale=stale_streams(
                    watched_streams(specs[row.id], delivered),
                    delivered,
                    now,
                    stale_after,
                ),
            ),
        )
        for row, confirmed, pending, syncing in audiences
    ]
    if args.format == "json":
        print(json.dumps([{k: r[k] for k in STATUS_KEYS} for r in rows], indent=2))
    elif rows:
        print(render_table(rows))
    if failure:
        err(failure)
    alarming = [r for r in rows if r["status"] in fail_on]
    if alarming:
        found = ", ".join(f"{r['stream']} {r['status']}" for r in alarming)
        err(f"--fail-on {','.join(sorted(fail_on))}: {len(alarming)} audience(s): {found}")
        return 2
    return 1 if failure else 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`status [--config FILE]... [--format table|json]`."""
    parser = add_config_command(
        commands,
        "status",
        run,
        help="one row per audience: members, last sync, TikTok's matched size, status",
        description="One row per audience in the membership store, with TikTok's matched size, "
        "validity and expiry when a token is set. Status words, first that applies: "
        f"{', '.join(STATUS_WORDS)}.",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--fail-on",
        metavar="WORD[,WORD...]",
        help="exit with status 2 when any audience has one of these status words "
        "(for cron or an orchestrator)",
    )
