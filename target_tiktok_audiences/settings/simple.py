"""The simple form's per-stream settings, as today's sink reads them: one stream, one audience.

`AudienceSettings` joins a stream's `SourceDefinition` and `AudienceDefinition` (both made by
`definitions.Resolver`) into the one value the sink takes; the sync of composed audiences works
from `Definitions` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from target_tiktok_audiences.identifiers import NormalizationOptions
from target_tiktok_audiences.settings.definitions import (
    AudienceDefinition,
    Resolver,
    SourceDefinition,
)
from target_tiktok_audiences.settings.resolve import (
    TikTokAudienceIdentity,
    check_top_level,
    refuse_duplicates,
)


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


def resolve_settings(
    config: Mapping[str, Any], stream: str, normalization: NormalizationOptions
) -> AudienceSettings | None:
    """Settings for one stream's audience, or None when `audiences` does not list the stream."""
    specs: Mapping[str, Any] = config.get("audiences") or {}
    if specs and stream not in specs:
        return None
    resolver = Resolver(config, normalization)
    return simple_settings(
        resolver.audience(stream, specs.get(stream) or {}), resolver.source(stream)
    )


def simple_settings(audience: AudienceDefinition, source: SourceDefinition) -> AudienceSettings:
    """A simple audience's settings: its definition, read as its stream is."""
    return AudienceSettings(
        stream=source.stream,
        audience_id=audience.audience_id,
        audience_name=audience.audience_name,
        advertiser_ids=audience.advertiser_ids,
        identifier_fields=source.identifier_fields,
        sync_mode=source.sync_mode,
        membership_field=source.membership_field,
        consent_field=source.consent_field,
        min_audience_size=audience.min_audience_size,
        max_removal_fraction=audience.max_removal_fraction,
        normalization=source.normalization,
    )


def check_global_settings(config: Mapping[str, Any]) -> NormalizationOptions:
    """`check_top_level`, then every spec resolved and compared (`check_distinct_audiences`)."""
    normalization = check_top_level(config)
    check_distinct_audiences(config, normalization)
    return normalization


def check_distinct_audiences(
    config: Mapping[str, Any], normalization: NormalizationOptions
) -> None:
    """Refuse two audience specs that resolve to the same TikTok audience (see `tiktok_audience`).

    Resolving every spec here also reports a bad spec at start, before any input is read.
    """
    resolved = (
        (key, resolve_settings(config, key, normalization)) for key in config.get("audiences") or {}
    )
    refuse_duplicates((key, settings) for key, settings in resolved if settings is not None)
