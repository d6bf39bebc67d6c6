"""The target's settings: their schema (for `--about` and Meltano) and their meaning per stream.

The JSON schema catches types and enums; `resolve_settings` adds the checks a schema cannot
express (a token unless `dry_run`, a known phone region, per-audience overrides) and turns the
config into one frozen `AudienceSettings` per stream, so the sink never reads raw config.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import phonenumbers
from singer_sdk import typing as th
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
from target_tiktok_audiences.identifiers import (
    DEFAULT_IDENTIFIER_FIELDS,
    FIELD_TYPES,
    NormalizationOptions,
)
from target_tiktok_audiences.redaction import remember_secret
from target_tiktok_audiences.tiktok.http import token_fault

DEFAULT_API_URL = "https://business-api.tiktok.com/open_api/v1.3/"
DEFAULT_STORE = ".tiktok-audiences/membership.sqlite"
DEFAULT_DRY_RUN_OUTPUT = "tiktok-audiences-dry-run.jsonl"
SYNC_MODES = ("snapshot", "incremental")
SNAPSHOT_ENDS = ("end_of_input", "activate_version")
PHONE_FORMATS = ("e164", "digits")
EMAIL_NORMALIZATIONS = ("standard", "strip_local")
# TikTok cuts longer names to 67 characters plus "...": we do it first so the stored name matches.
MAX_AUDIENCE_NAME = 70

_IDENTIFIER_FIELDS_TYPE = th.ObjectType(
    *(
        th.Property(
            id_type,
            th.StringType,
            description=f"Record field holding the {label} (dotted path for nested objects; "
            "null: not sent).",
        )
        for id_type, label in (
            ("email", "email address"),
            ("phone", "phone number"),
            ("idfa", "iOS advertising id (IDFA)"),
            ("aaid", "Android advertising id (AAID/GAID)"),
            ("idfa_md5", "IDFA already hashed with MD5 (32 hex)"),
            ("aaid_md5", "AAID already hashed with MD5 (32 hex)"),
        )
    ),
    additional_properties=False,
)

_AUDIENCE_SPEC = th.ObjectType(
    th.Property(
        "audience_id",
        th.StringType,
        description="An existing TikTok audience to keep in step with the stream.",
    ),
    th.Property(
        "audience_name",
        th.StringType,
        description="Name of an audience the target creates on first sync and remembers; "
        "it is never created twice.",
    ),
    th.Property(
        "advertiser_ids",
        th.ArrayType(th.StringType),
        description="Ad accounts for this audience (default: the top-level `advertiser_ids`).",
    ),
    th.Property(
        "identifier_fields",
        _IDENTIFIER_FIELDS_TYPE,
        description="Field mapping for this stream (default: the top-level one).",
    ),
    th.Property("sync_mode", th.StringType(allowed_values=list(SYNC_MODES))),
    th.Property("membership_field", th.StringType),
    th.Property("consent_field", th.StringType),
    th.Property("min_audience_size", th.IntegerType(minimum=0)),
    th.Property("max_removal_fraction", th.NumberType(minimum=0, maximum=1)),
    additional_properties=False,
)

config_schema = th.PropertiesList(
    th.Property(
        "access_token",
        th.StringType,
        secret=True,
        description="TikTok Marketing API long-term access token (get one with "
        "`tiktok-audiences auth`). Required unless `dry_run` is true.",
    ),
    th.Property(
        "advertiser_ids",
        th.ArrayType(th.StringType),
        required=True,
        description="TikTok ad account ids (advertiser ids) the audiences belong to.",
    ),
    th.Property(
        "api_url",
        th.StringType,
        default=DEFAULT_API_URL,
        description="Base URL of the TikTok Business API; tests point it at a local fake.",
    ),
    th.Property(
        "audiences",
        th.ObjectType(additional_properties=_AUDIENCE_SPEC),
        default={},
        description="Stream name to audience spec (`audience_id` or `audience_name`, plus "
        "optional overrides). Empty: every stream feeds an audience named after the stream. "
        "Otherwise streams not listed are ignored with a warning.",
    ),
    th.Property(
        "identifier_fields",
        _IDENTIFIER_FIELDS_TYPE,
        default=dict(DEFAULT_IDENTIFIER_FIELDS),
        description="Record field (dotted path for nested objects) holding each identifier "
        "type: `email`, `phone`, `idfa`, `aaid`. A type mapped to null is not sent.",
    ),
    th.Property(
        "sync_mode",
        th.StringType(allowed_values=list(SYNC_MODES)),
        default="snapshot",
        description="`snapshot`: each run's records are the whole audience; people missing "
        "from a complete snapshot are removed. `incremental`: each record is a change for "
        "one person.",
    ),
    th.Property(
        "snapshot_end",
        th.StringType(allowed_values=list(SNAPSHOT_ENDS)),
        default="end_of_input",
        description="What proves a snapshot complete before removals: `end_of_input` (or an "
        "ACTIVATE_VERSION) or only `activate_version`.",
    ),
    th.Property(
        "membership_field",
        th.StringType,
        description="Incremental mode: a boolean record field; an explicit false removes "
        "the person.",
    ),
    th.Property(
        "consent_field",
        th.StringType,
        description="A boolean record field; a person is a member only where it is true.",
    ),
    th.Property(
        "phone_default_region",
        th.StringType,
        default="US",
        description="Region (ISO 3166 code) for phone numbers written without a country code.",
    ),
    th.Property(
        "phone_format",
        th.StringType(allowed_values=list(PHONE_FORMATS)),
        default="e164",
        description="Hash phones as `e164` (`+14155550100`) or `digits` (`14155550100`).",
    ),
    th.Property(
        "email_normalization",
        th.StringType(allowed_values=list(EMAIL_NORMALIZATIONS)),
        default="standard",
        description="`standard`: trim and lowercase. `strip_local`: also drop a `+tag` and "
        "dots before the `@`.",
    ),
    th.Property(
        "membership_store",
        th.StringType,
        default=DEFAULT_STORE,
        secret=True,  # a postgresql:// URL may carry a password
        description="Where confirmed membership (hashes only) lives: a SQLite file path, or "
        "a `postgresql://` URL for a store shared by several workers.",
    ),
    th.Property(
        "min_audience_size",
        th.IntegerType(minimum=0),
        default=1000,
        description="Hold an audience's first upload until it has this many people "
        "(0: never hold).",
    ),
    th.Property(
        "max_removal_fraction",
        th.NumberType(minimum=0, maximum=1),
        default=0.5,
        description="Refuse a snapshot sync that would remove more than this fraction of an "
        "audience's people (1.0: no guard).",
    ),
    th.Property(
        "batch_size",
        th.IntegerType(minimum=1),
        default=10000,
        description="People per mapping request; halved automatically when TikTok says the "
        "batch is too large (a TikTok partner documents 10,000 per request).",
    ),
    th.Property(
        "max_requests_per_second",
        th.NumberType(exclusive_minimum=0),
        default=10,
        description="Client-side request pace, per process, across all threads.",
    ),
    th.Property(
        "max_parallel_requests",
        th.IntegerType(minimum=1),
        default=4,
        description="Requests in flight at once.",
    ),
    th.Property(
        "request_timeout",
        th.NumberType(exclusive_minimum=0),
        default=60,
        description="Seconds to wait for one HTTP request.",
    ),
    th.Property(
        "max_retries",
        th.IntegerType(minimum=0),
        default=8,
        description="Retries of a retryable failure (rate limit, server error, timeout) "
        "before the run fails.",
    ),
    th.Property(
        "rebuild_when_store_empty",
        th.BooleanType,
        default=False,
        description="When the store knows nobody in an audience that already has people on "
        "TikTok (a lost store), upload the snapshot to a new audience '<name> (rebuilt DATE)' "
        "instead, leaving the old one for you to retire. Audiences by `audience_name` only.",
    ),
    th.Property(
        "retry_backoff_seconds",
        th.NumberType(exclusive_minimum=0),
        default=1,
        description="First retry delay; it doubles (with jitter) on each retry, and a rate "
        "limit that persists waits minutes, as TikTok's per-minute limits need.",
    ),
    th.Property(
        "store_lock_timeout",
        th.NumberType(minimum=0),
        default=60,
        description="Seconds to wait for another run that is syncing the same audience on the "
        "same store before giving up with an error.",
    ),
    th.Property(
        "store_timeout",
        th.NumberType(exclusive_minimum=0),
        default=300,
        description="Seconds one store operation may take before the run ends with an error "
        "(a database that stops answering).",
    ),
    th.Property(
        "allow_key_change",
        th.BooleanType,
        default=False,
        description="One-off: when a stream's key properties changed since its last sync, "
        "re-match its people by their identifier hashes instead of refusing the sync.",
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        description="Send nothing and change no confirmed membership; write every request "
        "that would be sent to `dry_run_output`.",
    ),
    th.Property(
        "dry_run_output",
        th.StringType,
        default=DEFAULT_DRY_RUN_OUTPUT,
        description="Dry run: file that receives one JSON line per planned request "
        '(`{"method", "path", "body"}`).',
    ),
).to_dict()


@dataclass(frozen=True)
class AudienceSettings:
    """Everything one stream's sync needs to know, resolved from the top level and its spec."""

    stream: str
    audience_id: str | None
    audience_name: str | None
    advertiser_ids: tuple[str, ...]
    identifier_fields: Mapping[str, str | None]
    sync_mode: str
    membership_field: str | None
    consent_field: str | None
    min_audience_size: int
    max_removal_fraction: float
    normalization: NormalizationOptions = field(default_factory=NormalizationOptions)

    @property
    def target_key(self) -> str:
        """Which TikTok audience this is, for the store: by id, or by name and ad accounts."""
        if self.audience_id:
            return f"id:{self.audience_id}"
        return f"name:{','.join(sorted(self.advertiser_ids))}:{self.audience_name}"

    @property
    def tiktok_audience(self) -> tuple[str, ...]:
        """Which audience TikTok holds: its id, or its name in the advertiser that creates it.

        An audience by name is created in (and, after a lost store, adopted from) the first of
        its `advertiser_ids`; two specs equal here would sync one audience from two streams.
        """
        if self.audience_id:
            return ("id", self.audience_id)
        return ("name", self.advertiser_ids[0], self.audience_name or self.stream)

    def describe_tiktok_audience(self) -> str:
        """The TikTok audience, as a message names it."""
        if self.audience_id:
            return f"TikTok audience {self.audience_id}"
        return f"TikTok audience {self.audience_name!r} in advertiser {self.advertiser_ids[0]}"

    @property
    def label(self) -> str:
        """How logs name the audience."""
        return self.audience_id or self.audience_name or self.stream


def tiktok_audience_name(name: str) -> str:
    """The name TikTok will show: over 70 characters become the first 67 plus `...`."""
    if len(name) > MAX_AUDIENCE_NAME:
        return name[: MAX_AUDIENCE_NAME - 3] + "..."
    return name


_ADVERTISER_ID = re.compile(r"^\d{1,32}$")


def _check_advertisers(ids: Any, setting: str) -> tuple[str, ...]:
    if not isinstance(ids, list) or not ids:
        msg = f"`{setting}` is empty: list at least one TikTok advertiser id."
        raise ConfigError(msg)
    for advertiser in ids:
        if not isinstance(advertiser, str) or not _ADVERTISER_ID.match(advertiser):
            msg = (
                f"`{setting}` holds {advertiser!r}, which is not an advertiser id: "
                "use the numeric id shown in TikTok Ads Manager, as a string."
            )
            raise ConfigError(msg)
    return tuple(ids)


def check_global_settings(config: Mapping[str, Any]) -> NormalizationOptions:
    """Fail fast, with one line naming the setting, on what the JSON schema cannot catch."""
    _check_advertisers(config.get("advertiser_ids"), "advertiser_ids")
    if not config.get("dry_run") and not config.get("access_token"):
        msg = (
            "`access_token` is not set: add a TikTok long-term token (see `tiktok-audiences "
            "auth`), or set `dry_run: true` to plan requests without sending them."
        )
        raise ConfigError(msg)
    api_url = str(config.get("api_url") or DEFAULT_API_URL)
    if not api_url.startswith(("http://", "https://")):
        msg = f"`api_url` must start with http:// or https://, got {api_url!r}."
        raise ConfigError(msg)
    token = config.get("access_token")
    fault = token_fault(token.strip()) if isinstance(token, str) else None
    if fault:
        raise ConfigError(f"`access_token`: {fault}")
    region = str(config.get("phone_default_region") or "US").upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        msg = (
            f"`phone_default_region` is {region!r}, not a region phonenumbers knows: use an "
            "ISO 3166 code such as US, GB or DE."
        )
        raise ConfigError(msg)
    normalization = NormalizationOptions(
        phone_default_region=region,
        phone_format=config.get("phone_format", "e164"),
        email_normalization=config.get("email_normalization", "standard"),
    )
    check_distinct_audiences(config, normalization)
    return normalization


def _identifier_fields(value: Any, setting: str) -> dict[str, str | None]:
    fields: dict[str, str | None] = dict(DEFAULT_IDENTIFIER_FIELDS)
    fields.update(value or {})
    unknown = set(fields) - set(FIELD_TYPES)
    if unknown:
        msg = f"`{setting}` names {sorted(unknown)}: identifier types are {', '.join(FIELD_TYPES)}."
        raise ConfigError(msg)
    if not any(fields.values()):
        msg = f"`{setting}` maps every identifier type to null: nothing could be sent."
        raise ConfigError(msg)
    return fields


def resolve_settings(
    config: Mapping[str, Any], stream: str, normalization: NormalizationOptions
) -> AudienceSettings | None:
    """Settings for one stream's audience, or None when `audiences` does not list the stream."""
    audiences: Mapping[str, Any] = config.get("audiences") or {}
    if audiences and stream not in audiences:
        return None
    spec: Mapping[str, Any] = audiences.get(stream) or {}
    where = f"audiences.{stream}" if audiences else "audiences"
    audience_id = spec.get("audience_id")
    audience_name = spec.get("audience_name")
    if audience_id and audience_name:
        msg = f"`{where}` sets both audience_id and audience_name: keep one."
        raise ConfigError(msg)
    if not audience_id:
        audience_name = tiktok_audience_name(audience_name or stream)
    advertiser_ids = _check_advertisers(
        spec.get("advertiser_ids", config.get("advertiser_ids")),
        f"{where}.advertiser_ids" if "advertiser_ids" in spec else "advertiser_ids",
    )
    fields = _identifier_fields(
        spec.get("identifier_fields", config.get("identifier_fields")),
        f"{where}.identifier_fields" if "identifier_fields" in spec else "identifier_fields",
    )
    sync_mode = spec.get("sync_mode", config.get("sync_mode", "snapshot"))
    return AudienceSettings(
        stream=stream,
        audience_id=str(audience_id) if audience_id else None,
        audience_name=audience_name if not audience_id else None,
        advertiser_ids=advertiser_ids,
        identifier_fields=fields,
        sync_mode=sync_mode,
        membership_field=spec.get("membership_field", config.get("membership_field")),
        consent_field=spec.get("consent_field", config.get("consent_field")),
        min_audience_size=int(spec.get("min_audience_size", config.get("min_audience_size", 1000))),
        max_removal_fraction=float(
            spec.get("max_removal_fraction", config.get("max_removal_fraction", 0.5))
        ),
        normalization=normalization,
    )


def duplicate_audience_error(first: str, second: str, settings: AudienceSettings) -> ConfigError:
    """Two specs (or streams, named as messages name them) that would sync one TikTok audience.

    Each stream's snapshot would remove the other's people, and a person who leaves one stream
    but stays in the other would be deleted and never re-added.
    """
    msg = (
        f"{first} and {second} both sync {settings.describe_tiktok_audience()}: keep one spec "
        "per TikTok audience, since each stream's snapshot would remove the other's people"
    )
    return ConfigError(msg)


def check_distinct_audiences(
    config: Mapping[str, Any], normalization: NormalizationOptions
) -> None:
    """Refuse two audience specs that resolve to the same TikTok audience (see `tiktok_audience`).

    Resolving every spec here also reports a bad spec at start, before any input is read.
    """
    seen: dict[tuple[str, ...], str] = {}
    for key in config.get("audiences") or {}:
        settings = resolve_settings(config, key, normalization)
        if settings is None:
            continue
        first = seen.setdefault(settings.tiktok_audience, key)
        if first != key:
            raise duplicate_audience_error(f"`audiences.{first}`", f"`audiences.{key}`", settings)


# Names of settings

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


def check_setting_names(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Refuse an unknown setting name; return one warning per inert singer-sdk setting.

    Names are checked at the top level, in each audience spec and in each `identifier_fields`.
    The known names are the schema's (`schema` with the SDK's built-ins appended), so a
    setting the schema gains is known here at once. Values are the schema's business.
    """
    warnings = []
    known = schema.get("properties", {})
    for name in config:
        if name in known:
            continue
        if name not in SDK_INERT_SETTINGS:
            raise ConfigError(_unknown_setting(name, known, ""))
        warnings.append(
            f"`{name}` is a singer-sdk setting that has no effect on this target: it is ignored"
        )
    field_names = _IDENTIFIER_FIELDS_TYPE.to_dict()["properties"]
    _check_names(config.get("identifier_fields"), field_names, "identifier_fields.")
    audiences = config.get("audiences")
    if isinstance(audiences, Mapping):
        spec_names = _AUDIENCE_SPEC.to_dict()["properties"]
        for key, spec in audiences.items():
            _check_names(spec, spec_names, f"audiences.{key}.")
            if isinstance(spec, Mapping):
                fields = spec.get("identifier_fields")
                _check_names(fields, field_names, f"audiences.{key}.identifier_fields.")
    return warnings


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


# Reading the config


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
