"""The target's settings: their schema (for `--about` and Meltano) and their meaning per stream.

The JSON schema catches types and enums; `resolve_settings` adds the checks a schema cannot
express (a token unless `dry_run`, a known phone region, per-audience overrides) and turns the
config into one frozen `AudienceSettings` per stream, so the sink never reads raw config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from singer_sdk import typing as th

from target_tiktok_audiences.errors import ConfigError
from target_tiktok_audiences.identifiers import (
    DEFAULT_IDENTIFIER_FIELDS,
    FIELD_TYPES,
    NormalizationOptions,
)

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
    normalization: NormalizationOptions = field(default_factory=NormalizationOptions)

    @property
    def target_key(self) -> str:
        """Which TikTok audience this is, for the store: by id, or by name and ad accounts."""
        if self.audience_id:
            return f"id:{self.audience_id}"
        return f"name:{','.join(sorted(self.advertiser_ids))}:{self.audience_name}"

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
    region = str(config.get("phone_default_region") or "US").upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        msg = (
            f"`phone_default_region` is {region!r}, not a region phonenumbers knows: use an "
            "ISO 3166 code such as US, GB or DE."
        )
        raise ConfigError(msg)
    return NormalizationOptions(
        phone_default_region=region,
        phone_format=config.get("phone_format", "e164"),
        email_normalization=config.get("email_normalization", "standard"),
    )


def _identifier_fields(value: Any, setting: str) -> dict[str, str | None]:
    fields = dict(DEFAULT_IDENTIFIER_FIELDS)
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
        normalization=normalization,
    )


ENV_PREFIX = "TARGET_TIKTOK_AUDIENCES_"
_UNESCAPED_DOT = re.compile(r"(?<!\\)\.")


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
