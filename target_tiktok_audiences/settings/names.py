"""Strict setting names: an unknown name is refused with the closest known one.

The known names are the schema's, so a setting the schema gains is known here at once; the
singer-sdk's own target settings that do nothing here earn one warning each.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from singer_sdk.helpers.capabilities import (
    ACTIVATE_VERSION_CONFIG,
    ADD_RECORD_METADATA_CONFIG,
    BATCH_CONFIG,
    FLATTENING_CONFIG,
    TARGET_HARD_DELETE_CONFIG,
    TARGET_LOAD_METHOD_CONFIG,
    TARGET_SCHEMA_CONFIG,
    TARGET_VALIDATE_RECORDS_CONFIG,
)

from target_tiktok_audiences.errors import ConfigError
from target_tiktok_audiences.settings.schema import (
    AUDIENCE_SPEC,
    IDENTIFIER_FIELDS_TYPE,
    LOOKALIKE_SPEC,
    SOURCE_SPEC,
)

# The singer-sdk's built-in target settings: Meltano and SDK users pass them to any SDK target,
# but none of them changes what this target does (`batch_wait_limit_seconds` comes from other
# singer-sdk releases). `batch_size_rows` and the stream-map settings do work: they are in the
# schema.
SDK_INERT_SETTINGS: frozenset[str] = frozenset(
    name
    for builtin in (
        ADD_RECORD_METADATA_CONFIG,
        TARGET_LOAD_METHOD_CONFIG,
        TARGET_VALIDATE_RECORDS_CONFIG,
        TARGET_HARD_DELETE_CONFIG,
        TARGET_SCHEMA_CONFIG,
        FLATTENING_CONFIG,
        BATCH_CONFIG,
        ACTIVATE_VERSION_CONFIG,
    )
    for name in builtin["properties"]
) | {"batch_wait_limit_seconds"}
# The one of them that asks for something this target does not do: nested fields are read by
# dotted path, never flattened. Turned on, it is refused; off, it is inert like the others.
FLATTENING_ENABLED = "flattening_enabled"


def check_setting_names(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Refuse an unknown setting name; return one warning per inert singer-sdk setting.

    Names are checked at the top level, in each audience spec, its `lookalike`, each
    `sources.<stream>` and each `identifier_fields`. The known top-level names are `schema`'s
    (the target's with the SDK's built-ins appended). Values are the schema's business.
    """
    warnings = []
    known = schema.get("properties", {})
    for name in config:
        if name in known:
            continue
        if name not in SDK_INERT_SETTINGS:
            raise ConfigError(_unknown_setting(name, known, ""))
        if name == FLATTENING_ENABLED and str(config[name]).strip().lower() in ("true", "1"):
            raise ConfigError(
                "`flattening_enabled` asks for schema flattening, which this target does not do: "
                "it reads nested fields by dotted path (`identifier_fields`, `where`, "
                "`split_by`); remove the setting or set it to false"
            )
        warnings.append(
            f"`{name}` is a singer-sdk setting that has no effect on this target: it is ignored"
        )
    _check_reading(config, "")
    for key, spec in _entries(config.get("audiences")):
        prefix = f"audiences.{key}."
        _check_names(spec, _AUDIENCE_KEYS, prefix)
        _check_reading(spec, prefix)
        if isinstance(spec, Mapping):
            _check_names(spec.get("lookalike"), _LOOKALIKE_KEYS, f"{prefix}lookalike.")
    for stream, source in _entries(config.get("sources")):
        prefix = f"sources.{stream}."
        _check_names(source, _SOURCE_KEYS, prefix)
        _check_reading(source, prefix)
    return warnings


_AUDIENCE_KEYS = AUDIENCE_SPEC.to_dict()["properties"]
_SOURCE_KEYS = SOURCE_SPEC.to_dict()["properties"]
_LOOKALIKE_KEYS = LOOKALIKE_SPEC.to_dict()["properties"]
_FIELD_KEYS = IDENTIFIER_FIELDS_TYPE.to_dict()["properties"]


def _entries(value: Any) -> list[tuple[str, Any]]:
    return [(str(k), v) for k, v in value.items()] if isinstance(value, Mapping) else []


def _check_reading(value: Any, prefix: str) -> None:
    """The names inside the `identifier_fields` of `value` (a config, a spec or a source)."""
    if isinstance(value, Mapping):
        fields = value.get("identifier_fields")
        _check_names(fields, _FIELD_KEYS, f"{prefix}identifier_fields.")


def _check_names(value: Any, known: Collection[str], prefix: str) -> None:
    if not isinstance(value, Mapping):
        return
    for name in value:
        if name not in known:
            raise ConfigError(_unknown_setting(str(name), known, prefix))


def _unknown_setting(name: str, known: Collection[str], prefix: str) -> str:
    """`unknown setting `x`: did you mean `y`?`, or how to find the names when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"unknown setting `{prefix}{name}`: did you mean `{prefix}{close[0]}`?"
    return (
        f"unknown setting `{prefix}{name}`: remove it (`target-tiktok-audiences --about` lists "
        "every setting)"
    )


_SECRET_SETTINGS = ("access_token",)


def redact_config_error(errors: list[str]) -> str:
    """The first schema error, without echoing a secret's value."""
    first = errors[0] if errors else "the config does not match the settings schema"
    for secret in _SECRET_SETTINGS:
        if secret in first:
            return f"`{secret}` must be a string; see `target-tiktok-audiences --about`"
    return first + "; see `target-tiktok-audiences --about` for every setting"
