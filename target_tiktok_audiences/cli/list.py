"""`tiktok-audiences list`: the audiences that exist on TikTok, for picking one to use.

Every audience of each advertiser (the top level's, then those only specs name; or the one
`--advertiser` gives), read page after page of `dmp/custom_audience/list/`, in TikTok's order.
Each carries the configured key of `audiences` that uses it: by the id the store remembers for
that key, or by the spec's `audience_id`; None when no configured audience uses it. Looking
never writes: a missing store is no store. An advertiser TikTok refuses is one line on stderr,
the others are still listed, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from target_tiktok_audiences.cli.config import add_config_command, err, load_config, make_client
from target_tiktok_audiences.cli.status import configured, read_store
from target_tiktok_audiences.cli.status_rows import as_bool, as_int, tiktok_time
from target_tiktok_audiences.cli.status_table import (
    UNKNOWN,
    Column,
    aligned,
    day,
    number,
    short,
    yes_no,
)
from target_tiktok_audiences.errors import ConfigError, TikTokAPIError
from target_tiktok_audiences.settings import ENV_PREFIX, Definitions, resolve_definitions
from target_tiktok_audiences.store import StoreMissingError
from target_tiktok_audiences.tiktok.http import TikTokClient

COLUMNS = (
    Column("ADVERTISER", lambda r: r["advertiser_id"]),
    Column("AUDIENCE ID", lambda r: r["audience_id"] or UNKNOWN),
    Column("NAME", lambda r: short(r["name"], 40)),
    Column("TYPE", lambda r: r["type"] or UNKNOWN),
    Column("MATCHED", lambda r: number(r["matched"]), right=True),
    Column("VALID", lambda r: yes_no(r["valid"])),
    Column("EXPIRES", lambda r: day(r["expires_at"])),
    Column("KEY", lambda r: r["key"] or UNKNOWN),
)


def advertisers(config: Mapping[str, Any], definitions: Definitions) -> list[str]:
    """The top level's advertisers, then those only an audience spec names, each once."""
    ids = [str(a) for a in config["advertiser_ids"]]
    ids += [a for d in definitions.audiences.values() for a in d.advertiser_ids]
    return list(dict.fromkeys(ids))


def keys_by_id(config: Mapping[str, Any], definitions: Definitions) -> dict[str, str]:
    """TikTok audience id to the configured key that uses it.

    From the store's rows whose key the config still has (same ad accounts), then from the
    specs' `audience_id`, which wins: it is what the next run uses.
    """
    try:
        rows = read_store(
            str(config["membership_store"]),
            float(config["store_timeout"]),
            lambda store: store.list_audiences(),
        )
    except StoreMissingError:
        rows = []
    keys = {
        str(row.audience_id): row.stream
        for row in rows
        if row.audience_id and configured(definitions, row) is not None
    }
    keys.update({d.audience_id: key for key, d in definitions.audiences.items() if d.audience_id})
    return keys


def list_row(advertiser_id: str, item: Mapping[str, Any], keys: Mapping[str, str]) -> dict:
    """One audience as `list --format json` prints it (the contract's keys), None where unknown."""
    audience_id = str(item.get("audience_id") or "") or None
    return {
        "advertiser_id": advertiser_id,
        "audience_id": audience_id,
        "name": item.get("name"),
        "type": item.get("audience_type"),
        "matched": as_int(item.get("cover_num")),
        "valid": as_bool(item.get("is_valid")),
        "expires_at": tiktok_time(item.get("expired_time")),
        "key": keys.get(audience_id) if audience_id else None,
    }


def _listed(client: TikTokClient, ids: list[str], keys: Mapping[str, str]) -> tuple[list, bool]:
    """Every audience of each advertiser, and whether TikTok refused one of them."""
    rows: list[dict] = []
    refused = False
    for advertiser_id in ids:
        try:
            items = list(client.list_audiences(advertiser_id))
        except TikTokAPIError as exc:
            err(f"advertiser {advertiser_id}: listing its audiences failed: {exc}")
            refused = True
            continue
        rows.extend(list_row(advertiser_id, item, keys) for item in items)
    return rows, refused


def run(args: argparse.Namespace) -> int:
    """Print every audience of the advertisers; exit 1 when TikTok refused one."""
    config = load_config(args.config)
    token = config.get("access_token")
    if not token:
        msg = (
            "`access_token` is not set, and the audiences are TikTok's to list: add a token "
            f"(see `tiktok-audiences auth`), in the config or {ENV_PREFIX}ACCESS_TOKEN"
        )
        raise ConfigError(msg)
    definitions = resolve_definitions(config)
    ids = [args.advertiser] if args.advertiser else advertisers(config, definitions)
    keys = keys_by_id(config, definitions)
    client = make_client(config, token)
    try:
        rows, refused = _listed(client, ids, keys)
    finally:
        client.close()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif rows:
        print("\n".join(aligned(COLUMNS, rows)))
    else:
        err(f"no audiences on TikTok for advertiser(s) {', '.join(ids)}")
    return 1 if refused else 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`list [--config FILE]... [--advertiser ID] [--format table|json]`."""
    parser = add_config_command(
        commands,
        "list",
        run,
        help="every audience on TikTok of each advertiser, and the configured key using it",
        description="Every audience that exists on TikTok for each advertiser of the config "
        "(the top level's and those named in audience specs), with its type, matched size, "
        "validity, expiry and the key of `audiences` that uses it. For picking an existing "
        "audience to put in `audience_id`.",
    )
    parser.add_argument("--advertiser", metavar="ID", help="list this advertiser's only")
    parser.add_argument("--format", choices=("table", "json"), default="table")
