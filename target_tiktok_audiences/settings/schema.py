"""The settings' JSON schema: every name, type, choice and default, stated once.

`--about`, Meltano and validation read `config_schema`; code that needs a default reads it back
with `setting_default` (or a nested object's with `property_default`), so no default is
written anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from singer_sdk import typing as th

from target_tiktok_audiences.identifiers import (
    DEFAULT_IDENTIFIER_FIELDS,
    EMAIL_NORMALIZATIONS,
    PHONE_FORMATS,
)

SYNC_MODES = ("snapshot", "incremental")
SNAPSHOT_ENDS = ("end_of_input", "activate_version")
LOOKALIKE_SIZES = ("NARROW", "BALANCED", "BROAD")
LOOKALIKE_OPERATING_SYSTEMS = ("ALL", "ANDROID", "IOS")

IDENTIFIER_FIELDS_TYPE = th.ObjectType(
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

# How one stream is read: in a simple-form audience spec, or in `sources.<stream>`.
_SOURCE_PROPERTIES = (
    th.Property(
        "identifier_fields",
        IDENTIFIER_FIELDS_TYPE,
        description="Field mapping for this stream (default: the top-level one).",
    ),
    th.Property("sync_mode", th.StringType(allowed_values=list(SYNC_MODES))),
    th.Property("membership_field", th.StringType),
    th.Property("consent_field", th.StringType),
)
SOURCE_KEYS = tuple(p.name for p in _SOURCE_PROPERTIES)

SOURCE_SPEC = th.ObjectType(*_SOURCE_PROPERTIES, additional_properties=False)

LOOKALIKE_SPEC = th.ObjectType(
    th.Property(
        "audience_name",
        th.StringType,
        description="Name of the lookalike audience (required; at most 128 characters).",
    ),
    th.Property(
        "location_ids",
        th.ArrayType(th.StringType),
        description="TikTok location ids the lookalike is drawn from (required, at least one).",
    ),
    th.Property(
        "audience_size",
        th.StringType(allowed_values=list(LOOKALIKE_SIZES)),
        default="BALANCED",
        description="How far the lookalike reaches.",
    ),
    th.Property(
        "mobile_os",
        th.StringType(allowed_values=list(LOOKALIKE_OPERATING_SYSTEMS)),
        default="ALL",
        description="Devices the lookalike is drawn from.",
    ),
    th.Property(
        "placements",
        th.ArrayType(th.StringType),
        default=["TikTok"],
        description="Placements the lookalike is for (`TikTok`, `Pangle`, ...).",
    ),
    th.Property(
        "include_source",
        th.BooleanType,
        default=False,
        description="Whether the lookalike also holds the source audience's people.",
    ),
    additional_properties=False,
)

AUDIENCE_SPEC = th.ObjectType(
    th.Property(
        "audience_id",
        th.StringType,
        description="An existing TikTok audience to keep in step with the stream.",
    ),
    th.Property(
        "audience_name",
        th.StringType,
        description="Name of an audience the target creates on first sync and remembers; "
        "it is never created twice. Under `split_by` it must contain `{value}`.",
    ),
    th.Property(
        "advertiser_ids",
        th.ArrayType(th.StringType),
        description="Ad accounts for this audience (default: the top-level `advertiser_ids`).",
    ),
    *_SOURCE_PROPERTIES,
    th.Property("min_audience_size", th.IntegerType(minimum=0)),
    th.Property("max_removal_fraction", th.NumberType(minimum=0, maximum=1)),
    th.Property(
        "streams",
        th.ArrayType(th.StringType),
        description="Streams whose people are members (their union); default: the key. "
        "How each is read comes from `sources`.",
    ),
    th.Property(
        "exclude_streams",
        th.ArrayType(th.StringType),
        description="Streams whose people are withheld from this audience, added to the "
        "top-level `exclude_streams`.",
    ),
    th.Property(
        "where",
        th.ObjectType(additional_properties=True),
        description="Dotted field path to a value or an array of values: only records whose "
        "fields all match are members; others count as `filtered`.",
    ),
    th.Property(
        "split_by",
        th.StringType,
        description="Dotted field path: one audience per distinct value, named by "
        "`audience_name` with `{value}` replaced.",
    ),
    th.Property(
        "share_with_advertiser_ids",
        th.ArrayType(th.StringType),
        description="Advertiser ids of the same Business Center the audience is shared with.",
    ),
    th.Property(
        "lookalike",
        LOOKALIKE_SPEC,
        description="A lookalike of this audience, created once it has 100 confirmed people.",
    ),
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
        default="https://business-api.tiktok.com/open_api/v1.3/",
        description="Base URL of the TikTok Business API; tests point it at a local fake.",
    ),
    th.Property(
        "audiences",
        th.ObjectType(additional_properties=AUDIENCE_SPEC),
        default={},
        description="Audience key to audience spec (`audience_id` or `audience_name`, plus "
        "optional overrides; `streams`, `exclude_streams`, `where`, `split_by`, "
        "`share_with_advertiser_ids` and `lookalike` compose it). Without `streams` the key is "
        "the one stream that feeds it. Empty: every stream feeds an audience named after the "
        "stream. Otherwise streams no spec names are ignored with a warning.",
    ),
    th.Property(
        "sources",
        th.ObjectType(additional_properties=SOURCE_SPEC),
        default={},
        description="Stream name to how it is read, for streams of composed audiences and "
        "exclusion streams: `identifier_fields`, `sync_mode`, `membership_field`, "
        "`consent_field`, each overriding the top level for that stream.",
    ),
    th.Property(
        "exclude_streams",
        th.ArrayType(th.StringType),
        default=[],
        description="Suppression lists for every audience: a person whose identifier hashes "
        "appear in one of these streams' latest snapshot is in no audience.",
    ),
    th.Property(
        "identifier_fields",
        IDENTIFIER_FIELDS_TYPE,
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
        default=".tiktok-audiences/membership.sqlite",
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
        description="Requests that may start in any sliding second, per process, across all "
        "threads, all at once when ready; a fraction above 1 is dropped (2.5 paces as 2), and "
        "below 1 one request starts every 1/value seconds.",
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
        "stale_after_hours",
        th.NumberType(minimum=0),
        default=0,
        description="`tiktok-audiences status` calls an audience STALE when its last successful "
        "sync is older than this many hours, and names the configured streams that have sent "
        "nothing for as long (0: never).",
    ),
    th.Property(
        "history_days",
        th.IntegerType(minimum=1),
        default=90,
        description="Days the membership store keeps each run's per-audience report and "
        "TikTok's receipts (`tiktok-audiences history`); older runs are pruned when a run "
        "starts.",
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
        default="tiktok-audiences-dry-run.jsonl",
        description="Dry run: file that receives one JSON line per planned request "
        '(`{"method", "path", "body"}`).',
    ),
).to_dict()


def property_default(schema: Mapping[str, Any], name: str) -> Any:
    """The `default` an object schema states for its property `name` (None when it states none).

    A fresh copy each time: a caller may keep or change what it gets.
    """
    default = schema["properties"][name].get("default")
    return default.copy() if isinstance(default, dict | list) else default


def setting_default(name: str) -> Any:
    """The default of the top-level setting `name`, as `config_schema` states it."""
    return property_default(config_schema, name)


def setting(config: Mapping[str, Any], name: str) -> Any:
    """The config's value of the top-level setting `name`, or its default when unset or null."""
    value = config.get(name)
    return setting_default(name) if value is None else value
