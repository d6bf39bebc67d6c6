"""Operator commands: `tiktok-audiences check | status | auth`.

The target does the syncing; these commands answer what a person running it asks: will it be
able to (`check`), what did it do and how does TikTok see the result (`status`), and how do I get
a token (`auth`). They read the same config file and `TARGET_TIKTOK_AUDIENCES_*` environment
variables as the target, and end an expected failure with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import requests
from singer_sdk.plugin_base import JSONSchemaValidator

from target_tiktok_audiences.console import (
    SIGPIPE_EXIT,
    discard_stdout,
    install_stderr_scrubber,
    stdout_is_closed,
)
from target_tiktok_audiences.errors import ConfigError, StoreError, TargetError, TikTokAPIError
from target_tiktok_audiences.identifiers import NormalizationOptions
from target_tiktok_audiences.redaction import mask_url, remember_secret
from target_tiktok_audiences.settings import (
    DEFAULT_API_URL,
    check_global_settings,
    check_setting_names,
    prepare_config,
    read_config_files,
    resolve_settings,
    store_passwords,
)
from target_tiktok_audiences.store import (
    AudienceRow,
    MembershipStore,
    StoreMissingError,
    copy_store,
)
from target_tiktok_audiences.target import TargetTikTokAudiences, redact_config_error
from target_tiktok_audiences.tiktok.codes import (
    ADVERTISER_NOT_FOUND,
    INVALID_AUTH_CODE,
    NO_PERMISSION,
    NOT_FOUND,
    TOKEN_CODES,
)
from target_tiktok_audiences.tiktok.dry_run import DRY_RUN_PREFIX
from target_tiktok_audiences.tiktok.http import TikTokClient

PROG = "tiktok-audiences"
DISTRIBUTION = "target-tiktok-audiences"
ENV_PREFIX = "TARGET_TIKTOK_AUDIENCES_"
CHECK_RETRIES = 2  # an operator waiting at a terminal wants an answer, not minutes of backoff
CALCULATING_SECONDS = 48 * 3600  # TikTok matches within 24-48 hours of a change
MIN_MATCHED = 1000  # TikTok will not serve an audience with fewer matched users
STATUS_KEYS = (
    "stream",
    "audience_id",
    "name",
    "advertiser_ids",
    "confirmed",
    "pending",
    "last_sync_at",
    "last_result",
    "matched",
    "match_rate",
    "valid",
    "expires_at",
    "status",
)

AUTH_HELP = """\
Exchange a one-time auth code for a long-term access token, and print the token and the
advertiser ids (ad accounts) it may use.

Before running this, get an auth code:
  1. In the TikTok API for Business developer portal (https://business-api.tiktok.com/portal),
     open My Apps, pick your app (it needs the Audience Management scope) and copy the
     "Advertiser authorization URL" from its Basic Information.
  2. Open that URL in a browser, signed in as someone who manages the ad accounts; select the
     accounts and confirm.
  3. TikTok then redirects to the app's redirect URL with `?auth_code=...` (also `code=...`)
     in the address bar. That value is the auth code: it works once, and only for an hour.

Put the token in `access_token`, preferably through the environment
(TARGET_TIKTOK_AUDIENCES_ACCESS_TOKEN) or, with Meltano, `meltano config set
target-tiktok-audiences access_token TOKEN` (which writes it to .env); never in a committed
file. Long-term tokens do not expire; they stop working when the advertiser revokes the
authorisation.
"""


# Configuration, read as the target reads it


def load_config(sources: Sequence[str]) -> dict[str, Any]:
    """The target's config: files merged in order, then `TARGET_TIKTOK_AUDIENCES_*` variables.

    Prepared, name-checked and validated against the target's schema (which also fills in
    defaults) as the target does it, so a command sees the same values a run would. `ENV` as
    a source is accepted (the target's own spelling for "environment only"); the environment
    is always read.
    """
    config = read_config_files(sources)
    config.update(TargetTikTokAudiences.env_settings())
    config = prepare_config(config)
    schema = copy.deepcopy(TargetTikTokAudiences.config_jsonschema)
    TargetTikTokAudiences.append_builtin_config(schema)
    for warning in check_setting_names(config, schema):
        err(warning)
    errors = [_schema_error(e) for e in JSONSchemaValidator(schema).iter_errors(config)]
    if errors:
        hint = "" if sources else f" (no --config given: settings come from {ENV_PREFIX}*)"
        raise ConfigError(f"invalid settings{hint}: {redact_config_error(errors)}")
    return config


def _schema_error(error: Any) -> str:
    """One schema error as the SDK words it, with where in the config it is."""
    where = "][".join(repr(p) for p in error.path)
    return f"{error.message} in config[{where}]" if where else error.message


def make_client(config: Mapping[str, Any], access_token: str | None) -> TikTokClient:
    """A client paced like the target's, but with few retries: a person is waiting."""
    return TikTokClient(
        api_url=str(config.get("api_url") or DEFAULT_API_URL),
        access_token=access_token,
        timeout=float(config.get("request_timeout", 60)),
        max_retries=min(CHECK_RETRIES, int(config.get("max_retries", CHECK_RETRIES))),
        max_requests_per_second=float(config.get("max_requests_per_second", 10)),
        max_parallel_requests=1,
        backoff_base=float(config.get("retry_backoff_seconds", 1)),
    )


# check


@dataclass(frozen=True)
class CheckResult:
    """One line of `check`'s report."""

    ok: bool
    text: str

    def line(self) -> str:
        """`ok   ...` or `FAIL ...`, aligned."""
        return f"{'ok  ' if self.ok else 'FAIL'} {self.text}"


def _advertisers_to_check(config: Mapping[str, Any]) -> list[str]:
    """Top-level advertisers, then any an audience spec adds, each once."""
    ids = list(config.get("advertiser_ids") or [])
    for spec in (config.get("audiences") or {}).values():
        ids.extend((spec or {}).get("advertiser_ids") or [])
    return list(dict.fromkeys(ids))


def _configured_audience_ids(config: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(stream, audience_id, advertiser the target will use for it) for each `audience_id`."""
    for stream, spec in (config.get("audiences") or {}).items():
        spec = spec or {}
        if spec.get("audience_id"):
            advertisers = spec.get("advertiser_ids") or config.get("advertiser_ids") or [""]
            yield stream, str(spec["audience_id"]), advertisers[0]


def _code_cause(exc: TikTokAPIError, causes: Mapping[int, tuple[str, str]]) -> str:
    """`cause (code): fix` worded for what was checked; otherwise the client's own message."""
    if exc.code is not None and exc.code in causes:
        cause, fix = causes[exc.code]
        return f"{cause} ({exc.code}): {fix}"
    return str(exc).removeprefix(f"{exc.path}: ")


def _tiktok_said(exc: TikTokAPIError) -> str:
    """What TikTok answered (`TikTok answered code N: message`), without the generic fix."""
    if exc.code is None:
        return str(exc)
    detail = f": {exc.tiktok_message}" if exc.tiktok_message else ""
    return f"TikTok answered code {exc.code}{detail}"


def run_checks(config: Mapping[str, Any], client: TikTokClient) -> Iterator[CheckResult]:
    """Token, then each advertiser, then each configured audience_id; one result each."""
    token_causes = {
        code: ("rejected", f"re-authorise with `{PROG} auth` and update `access_token`")
        for code in TOKEN_CODES
    }
    try:
        user = client.request("GET", "user/info/")
    except TikTokAPIError as exc:
        yield CheckResult(False, f"token: {_code_cause(exc, token_causes)}")
        return  # every later request would fail the same way
    who = user.get("display_name") or user.get("email") or user.get("id") or "unknown"
    yield CheckResult(True, f"token works (user: {who})")

    reachable: set[str] = set()
    for advertiser in _advertisers_to_check(config):
        causes = {
            NO_PERMISSION: (
                "not usable by this token",
                f"authorise this ad account for the app (run `{PROG} auth` again and choose "
                "it), or remove it from `advertiser_ids`",
            ),
            ADVERTISER_NOT_FOUND: (
                "does not exist",
                "check `advertiser_ids` (the id shown in TikTok Ads Manager)",
            ),
        }
        try:
            data = client.request(
                "GET", "advertiser/info/", params={"advertiser_ids": json.dumps([advertiser])}
            )
        except TikTokAPIError as exc:
            yield CheckResult(False, f"advertiser {advertiser}: {_code_cause(exc, causes)}")
            continue
        reachable.add(advertiser)
        info: dict[str, Any] = next(iter(data.get("list") or []), {})
        detail = ", ".join(str(v) for v in (info.get("name"), info.get("status")) if v)
        yield CheckResult(True, f"advertiser {advertiser} reachable ({detail or 'no details'})")

    for stream, audience_id, advertiser in _configured_audience_ids(config):
        label = f"audience {audience_id} (stream {stream})"
        if advertiser not in reachable:
            yield CheckResult(False, f"{label}: not checked, advertiser {advertiser} failed above")
            continue
        causes = {
            NOT_FOUND: (
                f"does not exist in advertiser {advertiser}",
                f"check `audiences.{stream}.audience_id`, or use `audience_name` to have the "
                "target create one",
            ),
            NO_PERMISSION: (
                f"belongs to another advertiser, not {advertiser}",
                f"set `audiences.{stream}.advertiser_ids` to the audience's ad account",
            ),
        }
        try:
            details = next(client.read_audiences(advertiser, [audience_id]), None)
        except TikTokAPIError as exc:
            yield CheckResult(False, f"{label}: {_code_cause(exc, causes)}")
            continue
        if details is None:
            cause, fix = causes[NOT_FOUND]
            yield CheckResult(False, f"{label}: {cause} (TikTok returned nothing): {fix}")
            continue
        name = details.get("name")
        yield CheckResult(
            True, f"{label} exists in advertiser {advertiser}" + (f" ({name})" if name else "")
        )


def cmd_check(args: argparse.Namespace) -> int:
    """Print one line per check; exit 1 when any failed."""
    config = load_config(args.config)
    if not config.get("access_token"):
        msg = (
            "`access_token` is not set, so there is nothing to check: add a token (see "
            f"`{PROG} auth`), in the config or as {ENV_PREFIX}ACCESS_TOKEN"
        )
        raise ConfigError(msg)
    check_global_settings(config)
    client = make_client(config, config["access_token"])
    failed = False
    try:
        for result in run_checks(config, client):
            print(result.line(), flush=True)
            failed = failed or not result.ok
    finally:
        client.close()
    return 1 if failed else 0


# status


def status_word(
    *,
    last_result: str | None,
    pending: int,
    uploaded: bool,
    valid: bool | None,
    last_change_at: float | None,
    matched: int | None,
    expiring: bool | None,
    now: float,
) -> str | None:
    """The audience's state in one word; the first rule that applies wins.

    None when nothing the store knows decides it and TikTok's side is unknown (no token, or
    no TikTok audience yet): guessing ACTIVE there would hide exactly what `status` is for.
    """
    if last_result == "failed":
        return "FAILED"
    if pending > 0 and not uploaded:
        return "PENDING"
    if valid is None and matched is None and expiring is None:
        return None
    recent = last_change_at is not None and now - last_change_at < CALCULATING_SECONDS
    if valid is False and recent:
        return "CALCULATING"
    if matched is not None and matched < MIN_MATCHED:
        return "TOO_SMALL"
    if expiring:
        return "EXPIRING"
    return "ACTIVE"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tiktok_time(value: Any) -> str | None:
    """TikTok's `YYYY-MM-DD HH:MM:SS` (UTC) as ISO 8601; anything else passes through."""
    if value in (None, ""):
        return None
    try:
        parsed = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return str(value)
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def status_row(
    row: AudienceRow, confirmed: int, pending: int, details: Mapping[str, Any] | None, now: float
) -> dict[str, Any]:
    """One audience as `status --format json` prints it (plus `last_error` for the table)."""
    details = details or {}
    matched = _as_int(details.get("cover_num"))
    valid = _as_bool(details.get("is_valid"))
    expiring = _as_bool(details.get("is_expiring"))
    return {
        "stream": row.stream,
        "audience_id": row.audience_id,
        "name": details.get("name") or row.name,
        "advertiser_ids": list(row.advertiser_ids),
        "confirmed": confirmed,
        "pending": pending,
        "last_sync_at": _iso(row.last_sync_at),
        "last_result": row.last_result,
        "matched": matched,
        "match_rate": round(matched / confirmed, 4) if matched is not None and confirmed else None,
        "valid": valid,
        "expires_at": _tiktok_time(details.get("expired_time")),
        "status": status_word(
            last_result=row.last_result,
            pending=pending,
            uploaded=row.uploaded_at is not None,
            valid=valid,
            last_change_at=row.last_change_at,
            matched=matched,
            expiring=expiring,
            now=now,
        ),
        "last_error": row.last_error,
    }


def _on_tiktok(row: AudienceRow) -> bool:
    return bool(row.audience_id) and not str(row.audience_id).startswith(DRY_RUN_PREFIX)


def fetch_details(
    client: TikTokClient, rows: Sequence[AudienceRow]
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


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Aligned columns a person can read at a glance; unknown values are `-`."""

    def num(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    def short(text: str | None, width: int = 32) -> str:
        text = text or "-"
        return text if len(text) <= width else text[: width - 1] + "…"

    header = (
        "STREAM",
        "AUDIENCE ID",
        "NAME",
        "CONFIRMED",
        "PENDING",
        "LAST SYNC (UTC)",
        "RESULT",
        "MATCHED",
        "MATCH RATE",
        "VALID",
        "EXPIRES",
        "STATUS",
    )
    right = {3, 4, 7, 8}
    cells = [header]
    for r in rows:
        valid = {True: "yes", False: "no", None: "-"}[r["valid"]]
        cells.append(
            (
                r["stream"],
                r["audience_id"] or "-",
                short(r["name"]),
                num(r["confirmed"]),
                num(r["pending"]),
                (r["last_sync_at"] or "-").replace("T", " ").rstrip("Z"),
                r["last_result"] or "-",
                num(r["matched"]),
                "-" if r["match_rate"] is None else f"{r['match_rate']:.1%}",
                valid,
                (r["expires_at"] or "-")[:10],
                r["status"] or "-",
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cell, widths, strict=True))
        ).rstrip()
        for cell in cells
    ]
    lines.extend(
        f"{r['stream']}: last sync failed: {r['last_error']}"
        for r in rows
        if r["last_result"] == "failed" and r["last_error"]
    )
    return "\n".join(lines)


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


def with_configured_identity(
    row: AudienceRow, config: Mapping[str, Any], normalization: NormalizationOptions
) -> AudienceRow:
    """Fill in the id or name the config gives an audience that TikTok has not seen yet.

    A held audience (or one whose stream has sent nobody) has no id and no name in the store;
    the current config says which audience it will be, as long as it still names the same ad
    accounts (otherwise the row is from an older config and is shown as stored).
    """
    if row.audience_id and row.name:
        return row
    settings = resolve_settings(config, row.stream, normalization)
    if settings is None or settings.advertiser_ids != row.advertiser_ids:
        return row
    return replace(
        row,
        audience_id=row.audience_id or settings.audience_id,
        name=row.name or settings.audience_name,
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Print one row per audience the store knows, joined with TikTok's view when possible."""
    config = load_config(args.config)
    # Everything but the token, which status can do without.
    normalization = check_global_settings({**config, "dry_run": True})
    location = str(config["membership_store"])
    audiences = [
        (with_configured_identity(row, config, normalization), confirmed, pending)
        for row, confirmed, pending in _read_store(location, float(config["store_timeout"]))
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
        status_row(row, confirmed, pending, details.get(str(row.audience_id)), now)
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


# auth


def cmd_auth(args: argparse.Namespace) -> int:
    """Exchange the auth code; print the token and its advertisers on stdout."""
    remember_secret(args.secret)
    remember_secret(args.auth_code)
    api_url = args.api_url or os.environ.get(f"{ENV_PREFIX}API_URL") or DEFAULT_API_URL
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"--api-url must start with http:// or https://, got {api_url!r}")
    client = TikTokClient(api_url, None, max_retries=CHECK_RETRIES)
    body = {"app_id": args.app_id, "secret": args.secret, "auth_code": args.auth_code}
    try:
        data = client.request("POST", "oauth2/access_token/", body=body, idempotent=False)
    except TikTokAPIError as exc:
        if exc.code == INVALID_AUTH_CODE:
            msg = (
                f"the auth code is invalid, expired or already used ({INVALID_AUTH_CODE}): open "
                "the app's advertiser authorization URL again and use the new auth_code within "
                "the hour"
            )
        elif exc.code is not None:
            msg = (
                f"TikTok refused the exchange ({_tiktok_said(exc)}): check --app-id and "
                "--secret (the app's credentials in the developer portal)"
            )
        else:
            msg = str(exc)
        raise TikTokAPIError(msg, code=exc.code) from None
    finally:
        client.close()
    token = data.get("access_token")
    if not token:
        msg = "TikTok answered without an access_token: check --api-url and try a new auth code"
        raise TikTokAPIError(msg)
    print(f"access_token: {token}")
    print(f"advertiser_ids: {json.dumps([str(a) for a in data.get('advertiser_ids') or []])}")
    err(
        f"Keep the token secret: set {ENV_PREFIX}ACCESS_TOKEN, or run `meltano config set "
        "target-tiktok-audiences access_token TOKEN` (it goes to .env); never commit it."
    )
    return 0


# Entry point


def err(message: str) -> None:
    """One line for a person on stderr, never mixed into stdout's data."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def cmd_store_copy(args: argparse.Namespace) -> int:
    """Copy a membership store to another database (`tiktok-audiences store copy`)."""
    for location in (args.source, args.dest):
        for password in store_passwords(location):
            remember_secret(password)
    counts = copy_store(args.source, args.dest, force=args.force)
    print(
        f"copied {counts['audiences']} audiences, {counts['members']} members and "
        f"{counts['pending']} held people"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `tiktok-audiences` command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operator commands for target-tiktok-audiences: check a connection, see "
        "audiences, get a token.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {metadata.version(DISTRIBUTION)}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = (
        "the target's config JSON (repeatable; later files win). "
        f"{ENV_PREFIX}<SETTING> environment variables override it; without --config "
        "settings come from them alone, as under `meltano invoke`."
    )
    check = commands.add_parser(
        "check",
        help="check the token, each advertiser and each configured audience_id",
        description="Check that the token works, each advertiser is reachable with it, and "
        "each configured audience_id exists and belongs to its advertiser. One line per "
        "check; exit status 1 if any failed.",
    )
    check.add_argument("--config", action="append", default=[], metavar="FILE", help=config_help)
    check.set_defaults(func=cmd_check)
    status = commands.add_parser(
        "status",
        help="one row per audience: members, last sync, TikTok's matched size, status",
        description="One row per audience in the membership store, with TikTok's matched size, "
        "validity and expiry when a token is set. Status words, first that applies: FAILED, "
        "PENDING, CALCULATING, TOO_SMALL, EXPIRING, ACTIVE.",
    )
    status.add_argument("--config", action="append", default=[], metavar="FILE", help=config_help)
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.set_defaults(func=cmd_status)
    auth = commands.add_parser(
        "auth",
        help="exchange an auth code for a long-term access token",
        description=AUTH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    auth.add_argument("--app-id", required=True, help="the app's id (developer portal)")
    auth.add_argument("--secret", required=True, help="the app's secret (developer portal)")
    auth.add_argument("--auth-code", required=True, help="the auth_code from the redirect URL")
    auth.add_argument(
        "--api-url",
        help=f"API base URL (default: ${ENV_PREFIX}API_URL, then {DEFAULT_API_URL})",
    )
    auth.set_defaults(func=cmd_auth)
    store = commands.add_parser(
        "store",
        help="manage the membership store",
        description="Manage the membership store that `membership_store` names.",
    )
    store_commands = store.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    copy_command = store_commands.add_parser(
        "copy",
        help="copy a membership store to another database (SQLite <-> PostgreSQL)",
        description="Copy every audience (ids, names, times, last results), confirmed member "
        "and held person from one membership store to another, in one transaction on the "
        "destination. A destination that already holds data is refused unless --force. Pause "
        "the pipelines while copying, then point membership_store at the new store.",
    )
    copy_command.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="STORE",
        help="the store to copy: a SQLite file path or a postgresql:// URL",
    )
    copy_command.add_argument(
        "--to",
        dest="dest",
        required=True,
        metavar="STORE",
        help="where to copy it: a SQLite path or a postgresql:// URL (created if need be)",
    )
    copy_command.add_argument(
        "--force", action="store_true", help="replace everything a non-empty destination holds"
    )
    copy_command.set_defaults(func=cmd_store_copy)
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


if __name__ == "__main__":
    sys.exit(main())
