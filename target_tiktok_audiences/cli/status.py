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
from collections.abc import Sequence
from dataclasses import replace

from target_tiktok_audiences.cli.config import (
    add_config_command,
    err,
    load_config,
    make_client,
)
from target_tiktok_audiences.cli.status_rows import STATUS_KEYS, shared_with, status_row
from target_tiktok_audiences.cli.status_table import render_table
from target_tiktok_audiences.composed import composed_settings
from target_tiktok_audiences.errors import StoreError, TikTokAPIError
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.settings import AudienceDefinition, Definitions, resolve_definitions
from target_tiktok_audiences.store import AudienceRow, MembershipStore, StoreMissingError
from target_tiktok_audiences.tiktok.audiences import AudienceCalls
from target_tiktok_audiences.tiktok.codes import NO_PERMISSION, NOT_FOUND
from target_tiktok_audiences.tiktok.dry_run import DRY_RUN_PREFIX


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


def _read_store(location: str, timeout: float) -> list[tuple[AudienceRow, int, int]]:
    """Every audience with its confirmed and pending counts (none when there is no store yet).

    Opened with `create=False`: looking must not leave an empty store behind. `timeout` is
    the `store_timeout` a run uses: a database that stops answering ends `status` too.
    """
    try:
        store = MembershipStore.open(location, create=False, timeout=timeout)
    except StoreMissingError as exc:
        err(f"{mask_url(str(exc))}; a dry run never stores anything")
        return []
    try:
        return [
            (row, store.count_members(row.id), store.count_pending(row.id))
            for row in store.list_audiences()
        ]
    except store.errors as exc:
        msg = (
            f"membership store {mask_url(location)!r} cannot be read ({mask_url(str(exc))}): "
            "check `membership_store`"
        )
        raise StoreError(msg) from None
    finally:
        store.close()


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


def run(args: argparse.Namespace) -> int:
    """Print one row per audience the store knows, joined with TikTok's view when possible."""
    config = load_config(args.config)
    # Everything but the token, which status can do without.
    definitions = resolve_definitions({**config, "dry_run": True})
    location = str(config["membership_store"])
    stored = _read_store(location, float(config["store_timeout"]))
    specs = {row.id: configured(definitions, row) for row, _, _ in stored}
    audiences = [
        (with_configured_identity(row, specs[row.id]), confirmed, pending)
        for row, confirmed, pending in stored
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
            details, problems = fetch_details(client, [row for row, _, _ in audiences])
            for problem in problems:
                err(problem)
        except TikTokAPIError as exc:
            failure = f"TikTok's columns are unknown: {exc}"
        finally:
            client.close()
    now = time.time()
    rows = [
        status_row(
            row,
            confirmed,
            pending,
            details.get(str(row.audience_id)),
            now,
            shared_with(row, specs[row.id]),
        )
        for row, confirmed, pending in audiences
    ]
    if args.format == "json":
        print(json.dumps([{k: r[k] for k in STATUS_KEYS} for r in rows], indent=2))
    elif rows:
        print(render_table(rows))
    if failure:
        err(failure)
        return 1
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`status [--config FILE]... [--format table|json]`."""
    parser = add_config_command(
        commands,
        "status",
        run,
        help="one row per audience: members, last sync, TikTok's matched size, status",
        description="One row per audience in the membership store, with TikTok's matched size, "
        "validity and expiry when a token is set. Status words, first that applies: FAILED, "
        "PENDING, CALCULATING, TOO_SMALL, EXPIRING, ACTIVE.",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
