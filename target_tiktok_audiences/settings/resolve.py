"""The checks every resolution of audience specs shares.

`check_top_level` holds the checks a schema cannot express at the top level (a token unless
`dry_run`, a usable `api_url`, a known phone region); the rest check one value of a spec
(advertiser ids, identifier fields) or compare specs (one spec per TikTok audience).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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
    return normalization_options(config)


def normalization_options(config: Mapping[str, Any]) -> NormalizationOptions:
    """How the config normalises identifiers, each setting it leaves out at its default."""
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


def overridden(spec: Mapping[str, Any], config: Mapping[str, Any], name: str) -> Any:
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


def refuse_duplicates(resolved: Iterable[tuple[str, TikTokAudienceIdentity]]) -> None:
    """Refuse two audience specs, (key, spec) in config order, of one TikTok audience.

    Two specs are one audience when their `tiktok_audience` is equal.
    """
    seen: dict[tuple[str, ...], str] = {}
    for key, spec in resolved:
        first = seen.setdefault(spec.tiktok_audience, key)
        if first != key:
            raise duplicate_audience_error(f"`audiences.{first}`", f"`audiences.{key}`", spec)
