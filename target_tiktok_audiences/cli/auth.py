"""`tiktok-audiences auth`: exchange a one-time auth code for a long-term access token.

Needs no config: the app's id and secret and the code come from the command line, the API
URL from `--api-url`, then the environment, then production. The secret and the code are
registered with the stderr scrubber before any request; the token goes to stdout only.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

from target_tiktok_audiences.cli.config import CHECK_RETRIES, err
from target_tiktok_audiences.errors import ConfigError, TikTokAPIError
from target_tiktok_audiences.redaction import remember_secret
from target_tiktok_audiences.settings import ENV_PREFIX, RunSettings, setting_default
from target_tiktok_audiences.tiktok.codes import INVALID_AUTH_CODE
from target_tiktok_audiences.tiktok.http import TikTokClient

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


def _tiktok_said(exc: TikTokAPIError) -> str:
    """What TikTok answered (`TikTok answered code N: message`), without the generic fix."""
    if exc.code is None:
        return str(exc)
    detail = f": {exc.tiktok_message}" if exc.tiktok_message else ""
    return f"TikTok answered code {exc.code}{detail}"


def run(args: argparse.Namespace) -> int:
    """Exchange the auth code; print the token and its advertisers on stdout."""
    remember_secret(args.secret)
    remember_secret(args.auth_code)
    api_url = args.api_url or os.environ.get(f"{ENV_PREFIX}API_URL") or setting_default("api_url")
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"--api-url must start with http:// or https://, got {api_url!r}")
    options = replace(RunSettings.from_config({}).client_options(), max_retries=CHECK_RETRIES)
    client = TikTokClient(api_url, None, options)
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


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`auth --app-id ID --secret S --auth-code CODE [--api-url URL]`."""
    parser = commands.add_parser(
        "auth",
        help="exchange an auth code for a long-term access token",
        description=AUTH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--app-id", required=True, help="the app's id (developer portal)")
    parser.add_argument("--secret", required=True, help="the app's secret (developer portal)")
    parser.add_argument("--auth-code", required=True, help="the auth_code from the redirect URL")
    parser.add_argument(
        "--api-url",
        help=f"API base URL (default: ${ENV_PREFIX}API_URL, then {setting_default('api_url')})",
    )
    parser.set_defaults(func=run)
