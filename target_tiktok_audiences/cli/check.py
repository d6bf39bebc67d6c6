"""`tiktok-audiences check`: whether a run can reach everything its config names.

Checked in order, one line each: the token, each advertiser, each configured `audience_id`.
A token that fails ends the checks (every later request would fail the same way); an
advertiser that fails skips the audiences that use it. Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from target_tiktok_audiences.cli.config import (
    PROG,
    add_config_command,
    load_config,
    make_client,
)
from target_tiktok_audiences.errors import ConfigError, TikTokAPIError
from target_tiktok_audiences.settings import ENV_PREFIX, resolve_definitions
from target_tiktok_audiences.tiktok.codes import (
    ADVERTISER_NOT_FOUND,
    NO_PERMISSION,
    NOT_FOUND,
    TOKEN_CODES,
)
from target_tiktok_audiences.tiktok.http import TikTokClient


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


def run(args: argparse.Namespace) -> int:
    """Print one line per check; exit 1 when any failed."""
    config = load_config(args.config)
    if not config.get("access_token"):
        msg = (
            "`access_token` is not set, so there is nothing to check: add a token (see "
            f"`{PROG} auth`), in the config or as {ENV_PREFIX}ACCESS_TOKEN"
        )
        raise ConfigError(msg)
    resolve_definitions(config)  # refuses at start what a run would
    client = make_client(config, config["access_token"])
    failed = False
    try:
        for result in run_checks(config, client):
            print(result.line(), flush=True)
            failed = failed or not result.ok
    finally:
        client.close()
    return 1 if failed else 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`check [--config FILE]...`."""
    add_config_command(
        commands,
        "check",
        run,
        help="check the token, each advertiser and each configured audience_id",
        description="Check that the token works, each advertiser is reachable with it, and "
        "each configured audience_id exists and belongs to its advertiser. One line per "
        "check; exit status 1 if any failed.",
    )
