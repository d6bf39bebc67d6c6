"""Where settings come from: config files, `TARGET_TIKTOK_AUDIENCES_*` variables, secrets.

Both console scripts read the same files and variables (a variable overrides the file), and
register every secret a config carries with `redaction` before anything is printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from target_tiktok_audiences.errors import ConfigError
from target_tiktok_audiences.redaction import remember_secret


def read_config_files(sources: Sequence[str]) -> dict[str, Any]:
    """The config files merged in order (later files win); `ENV` names no file and is skipped."""
    config: dict[str, Any] = {}
    for source in sources:
        if source != "ENV":
            config.update(_read_config_file(Path(source)))
    return config


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"config file {path} does not exist: pass the target's config JSON with --config"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"config file {path} cannot be read ({exc.strerror}): check its permissions"
        raise ConfigError(msg) from None
    except ValueError as exc:
        line = getattr(exc, "lineno", "?")
        msg = f"config file {path} is not valid JSON (line {line}): fix the file"
        raise ConfigError(msg) from None
    if not isinstance(data, dict):
        msg = f"config file {path} must hold a JSON object of settings"
        raise ConfigError(msg)
    return data


def prepare_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The merged config as both console scripts use it: the token trimmed, secrets remembered.

    A token read from a secret file keeps its trailing newline; TikTok would refuse it. The
    token (as given and trimmed) and any password in `membership_store` are registered with
    `redaction.remember_secret`, so that no later text carries them.
    """
    prepared = dict(config)
    token = prepared.get("access_token")
    if isinstance(token, str):
        remember_secret(token)
        prepared["access_token"] = token.strip()
    store = prepared.get("membership_store")
    if isinstance(store, str):
        for password in store_passwords(store):
            remember_secret(password)
    return prepared


def store_passwords(location: str) -> Iterator[str]:
    """Every password a store URL holds (user info, `password=`), as written and decoded."""
    if "://" not in location:
        return
    parts = urlsplit(location)
    written = [parts.netloc.rpartition("@")[0].partition(":")[2]] if parts.password else []
    written += [
        raw.partition("=")[2]
        for raw in parts.query.split("&")
        if raw.partition("=")[0].lower() == "password"
    ]
    decoded = [value for key, value in parse_qsl(parts.query) if key.lower() == "password"]
    for password in (*written, *(unquote(w) for w in written), *decoded):
        if password:
            yield password


ENV_PREFIX = "TARGET_TIKTOK_AUDIENCES_"
_UNESCAPED_DOT = re.compile(r"(?<!\\)\.")
ENV_TRUE = ("true", "1", "yes", "on")  # the singer-sdk's spellings of true
ENV_FALSE = ("false", "0", "no", "off")
_WHOLE_NUMBER = re.compile(r"\s*[+-]?\d+\s*")


def check_env_values(schema: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Refuse a variable that the SDK would misread, naming it.

    The SDK takes every boolean spelling but true's as false (`DRY_RUN=ture` would sync for
    real), and fails on a bad integer or object with a bare ValueError that names nothing.
    """
    for name, spec in schema.get("properties", {}).items():
        variable = ENV_PREFIX + name.upper()
        if variable not in environ:
            continue
        value = environ[variable]
        types = spec.get("type")
        types = types if isinstance(types, list) else [types]
        if "boolean" in types and value.strip().lower() not in (*ENV_TRUE, *ENV_FALSE):
            msg = f"{variable} is {value!r}, neither true nor false: set it to true or false"
            raise ConfigError(msg)
        if "integer" in types and not _WHOLE_NUMBER.fullmatch(value):
            msg = f"{variable} is {value!r}, not a whole number: fix the variable"
            raise ConfigError(msg)
        if "object" in types:
            try:
                json.loads(value)
            except ValueError as exc:
                msg = f"{variable} is not valid JSON ({exc}): fix the variable"
                raise ConfigError(msg) from None


def coerce_env_settings(raw: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Finish what the SDK's environment parsing leaves undone.

    It leaves `number` settings as text (Meltano writes `0.5`), which the schema then refuses,
    and takes Meltano's flattened object settings (`{"contacts.audience_name": "X"}`) as they
    are; both are turned into what a config file would hold.
    """
    config = dict(raw)
    properties = schema.get("properties", {})
    for name, value in config.items():
        types = properties.get(name, {}).get("type")
        if isinstance(value, dict):
            config[name] = nest_meltano_object(value)
        elif isinstance(value, str) and "number" in (types if isinstance(types, list) else [types]):
            try:
                config[name] = float(value)
            except ValueError:
                msg = f"{ENV_PREFIX}{name.upper()} is {value!r}, not a number: fix the variable"
                raise ConfigError(msg) from None
    return config


def nest_meltano_object(value: dict[str, Any]) -> dict[str, Any]:
    r"""Undo Meltano's flattening of an object setting in its environment variables.

    Meltano exports `{"contacts": {"audience_name": "X"}}` as `{"contacts.audience_name": "X"}`
    (a literal dot escaped as `\.`). Such a value has dotted keys and no object values; one
    written by hand has object values, and is left as it is.
    """
    if any(isinstance(v, dict) for v in value.values()):
        return value
    if not any(_UNESCAPED_DOT.search(key) for key in value):
        return value
    nested: dict[str, Any] = {}
    for key, leaf in value.items():
        *parents, last = (part.replace("\\.", ".") for part in _UNESCAPED_DOT.split(key))
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    return nested
