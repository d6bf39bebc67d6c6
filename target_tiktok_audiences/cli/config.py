"""What every operator command shares: its name in messages, the config, the client.

A command reads the same config file and `TARGET_TIKTOK_AUDIENCES_*` environment variables as
the target, prepared and validated as a run would, so it sees the values a run would see.
Messages for a person go to stderr, one line each, prefixed with the program's name; stdout
carries only the command's answer.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from singer_sdk.plugin_base import JSONSchemaValidator

from target_tiktok_audiences.errors import ConfigError
from target_tiktok_audiences.settings import (
    ENV_PREFIX,
    RunSettings,
    check_setting_names,
    prepare_config,
    read_config_files,
    redact_config_error,
)
from target_tiktok_audiences.target import TargetTikTokAudiences
from target_tiktok_audiences.tiktok.http import TikTokClient

PROG = "tiktok-audiences"
CHECK_RETRIES = 2  # an operator waiting at a terminal wants an answer, not minutes of backoff


def err(message: str) -> None:
    """One line for a person on stderr, never mixed into stdout's data."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def add_config_command(
    commands: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    **kw: Any,
) -> argparse.ArgumentParser:
    """The subcommand `name`, which reads the target's config (`--config FILE`, repeatable).

    `kw` is `add_parser`'s (help, description); `run` is what the command does.
    """
    parser: argparse.ArgumentParser = commands.add_parser(name, **kw)
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="the target's config JSON (repeatable; later files win). "
        f"{ENV_PREFIX}<SETTING> environment variables override it; without --config "
        "settings come from them alone, as under `meltano invoke`.",
    )
    parser.set_defaults(func=run)
    return parser


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
    run = RunSettings.from_config(config)
    options = run.client_options()
    few = replace(options, max_retries=min(CHECK_RETRIES, options.max_retries))
    return TikTokClient(run.api_url, access_token, replace(few, max_parallel_requests=1))
