"""Per-stream settings of the simple form, and the checks every resolution shares.

`check_top_level` holds the checks a schema cannot express at the top level (a token unless
`dry_run`, a usable `api_url`, a known phone region). `AudienceSettings`, one frozen value per
stream, is what today's sink reads; `definitions.Definitions` is its successor for composed
audiences.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from target_tiktok_audiences.errors import ConfigError
from target_tiktok_audiences.identifiers import (
    DEFAULT_IDENTIFIER_FIELDS,
    FIELD_TYPES,
    NormalizationOptions,
)
from target_tiktok_audiences.settings.schema import setting
from target_tiktok_audiences.tiktok.http import token_fault

# TikTok cuts longer names to 67 characters plus "...": we do it first so the stored name matches.
MAX_AUDIENCE_NAME = 70


class TikTokAudienceIdentity:
    """Which TikTok audience a resolved spec syncs, and how messages name it.

    Invariant of every resolved spec: `audience_id` is set, or `audience_name` is (never
    both), and `advertiser_ids` holds at least one id.
    """

    audience_id: str | None
    audience_name: str | None
    advertiser_ids: tuple[str, ...]

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
        return ("name", self.advertiser_ids[0], str(self.audience_name))

    def describe_tiktok_audience(self) -> str:
        """The TikTok audience, as a message names it."""
        if self.audience_id:
            return f"TikTok audience {self.audience_id}"
        return f"TikTok audience {self.audience_name!r} in advertiser {self.advertiser_ids[0]}"

    @property
    def label(self) -> str:
        """How logs name the audience."""
        return str(self.audience_id or self.audience_name)


@dataclass(frozen=True)
class AudienceSettings(TikTokAudienceIdentity):
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


def tiktok_audience_name(name: str) -> str:
    """The name TikTok will show: over 70 characters become the first 67 plus `...`."""
    if len(name) > MAX_AUDIENCE_NAME:
        return name[: MAX_AUDIENCE_NAME - 3] + "..."
    return name


_ADVERTISER_ID = re.compile(r"^\d{1,32}$")


def check_advertisers(
    ids: Any, setting_name: str, *, may_be_empty: bool = False
) -> tuple[str, ...]:
    """The ids as given, refused with one line naming `setting_name` unless all are ids."""
    if not isinstance(ids, list) or not (ids or may_be_empty):
        msg = f"`{setting_name}` is empty: list at least one TikTok advertiser id."
        raise ConfigError(msg)
    for advertiser in ids:
        if not isinstance(advertiser, str) or not _ADVERTISER_ID.match(advertiser):
            msg = (
                f"`{setting_name}` holds {advertiser!r}, which is not an advertiser id: "
                "use the numeric id shown in TikTok Ads Manager, as a string."
            )
            raise ConfigError(msg)
    return tuple(ids)


def check_top_level(config: Mapping[str, Any]) -> NormalizationOptions:
    """Fail fast, with one line naming the setting, on what the schema cannot catch up top."""
    check_advertisers(config.get("advertiser_ids"), "advertiser_ids")
    if not config.get("dry_run") and not config.get("access_token"):
        msg = (
            "`access_token` is not set: add a TikTok long-term token (see `tiktok-audiences "
            "auth`), or set `dry_run: true` to plan requests without sending them."
        )
        raise ConfigError(msg)
    api_url = str(setting(config, "api_url"))
    if not api_url.startswith(("http://", "https://")):
        msg = f"`api_url` must start with http:// or https://, got {api_url!r}."
        raise ConfigError(msg)
    token = config.get("access_token")
    fault = token_fault(token.strip()) if isinstance(token, str) else None
    if fault:
        raise ConfigError(f"`access_token`: {fault}")
    region = str(setting(config, "phone_default_region")).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        msg = (
            f"`phone_default_region` is {region!r}, not a region phonenumbers knows: use an "
            "ISO 3166 code such as US, GB or DE."
        )
        raise ConfigError(msg)
    return NormalizationOptions(
        phone_default_region=region,
        phone_format=setting(config, "phone_format"),
        email_normalization=setting(config, "email_normalization"),
    )


def check_global_settings(config: Mapping[str, Any]) -> NormalizationOptions:
    """`check_top_level`, then every spec resolved and compared (`check_distinct_audiences`)."""
    normalization = check_top_level(config)
    check_distinct_audiences(config, normalization)
    return normalization


def identifier_fields(value: Any, setting_name: str) -> dict[str, str | None]:
    """A given `identifier_fields` merged with the default; refused when it can send nothing."""
    fields: dict[str, str | None] = dict(DEFAULT_IDENTIFIER_FIELDS)
    fields.update(value or {})
    unknown = set(fields) - set(FIELD_TYPES)
    if unknown:
        msg = (
            f"`{setting_name}` names {sorted(unknown)}: identifier types are "
            f"{', '.join(FIELD_TYPES)}."
        )
        raise ConfigError(msg)
    if not any(fields.values()):
        msg = f"`{setting_name}` maps every identifier type to null: nothing could be sent."
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
    advertiser_ids = check_advertisers(
        spec.get("advertiser_ids", config.get("advertiser_ids")),
        f"{where}.advertiser_ids" if "advertiser_ids" in spec else "advertiser_ids",
    )
    fields = identifier_fields(
        spec.get("identifier_fields", config.get("identifier_fields")),
        f"{where}.identifier_fields" if "identifier_fields" in spec else "identifier_fields",
    )
    return AudienceSettings(
        stream=stream,
        audience_id=str(audience_id) if audience_id else None,
        audience_name=audience_name if not audience_id else None,
        advertiser_ids=advertiser_ids,
        identifier_fields=fields,
        sync_mode=spec.get("sync_mode") or setting(config, "sync_mode"),
        membership_field=spec.get("membership_field", config.get("membership_field")),
        consent_field=spec.get("consent_field", config.get("consent_field")),
        min_audience_size=int(_overridden(spec, config, "min_audience_size")),
        max_removal_fraction=float(_overridden(spec, config, "max_removal_fraction")),
        normalization=normalization,
    )


def _overridden(spec: Mapping[str, Any], config: Mapping[str, Any], name: str) -> Any:
    """A spec's value of `name`, else the top level's, else the schema's default."""
    value = spec.get(name)
    return setting(config, name) if value is None else value


def duplicate_audience_error(
    first: str, second: str, settings: TikTokAudienceIdentity
) -> ConfigError:
    """Two specs (or streams, named as messages name them) that would sync one TikTok audience.

    Each stream's snapshot would remove the other's people, and a person who leaves one stream
    but stays in the other would be deleted and never re-added.
    """
    msg = (
        f"{first} and {second} both sync {settings.describe_tiktok_audience()}: keep one spec "
        "per TikTok audience, with `streams` listing every stream that feeds it (each "
        "stream's snapshot would otherwise remove the other's people)"
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
